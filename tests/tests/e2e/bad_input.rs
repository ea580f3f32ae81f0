use serde_json::Value;
use tests::stack::TOKEN;
use tests::{Stack, wait_for};

use crate::util::{DEADLINE, message};

async fn expect(resp: reqwest::Response, status: u16, what: &str) {
    let got = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(got, status, "{what}: body {body}");
    let v: Value = serde_json::from_str(&body)
        .unwrap_or_else(|_| panic!("{what}: not a JSON error body: {body:?}"));
    assert!(v["error"].is_string(), "{what}: no error field in {body}");
}

/// Malformed requests get their documented status and a JSON error; nothing is applied and
/// both services keep serving.
#[tokio::test]
async fn bad_input_gets_a_clear_answer_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path(), 1, &[], &["--max-body", "1KiB"])
        .await
        .unwrap();
    let r = stack.reflektor.svc.url();
    let e = stack.ekgs[0].svc.url();
    let c = reqwest::Client::new();

    // reflektor intake
    expect(
        c.get(format!("{r}/rooms/a/messages"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
        405,
        "GET on intake",
    )
    .await;
    expect(
        c.post(format!("{r}/rooms/a/messages"))
            .body("{}")
            .send()
            .await
            .unwrap(),
        401,
        "no token",
    )
    .await;
    expect(
        c.post(format!("{r}/rooms/a/messages"))
            .bearer_auth("wrong")
            .body("{}")
            .send()
            .await
            .unwrap(),
        401,
        "wrong token",
    )
    .await;
    let big = "x".repeat(4096);
    expect(
        c.post(format!("{r}/rooms/a/messages"))
            .bearer_auth(TOKEN)
            .body(big)
            .send()
            .await
            .unwrap(),
        413,
        "oversized",
    )
    .await;

    // ekg reads
    for path in [
        "/rooms/bad%20name/messages",
        "/rooms/a!b",
        &format!("/rooms/{}/messages", "x".repeat(129)),
    ] {
        expect(c.get(format!("{e}{path}")).send().await.unwrap(), 400, path).await;
    }
    for q in [
        "before=abc",
        "after=-1",
        "limit=0",
        "limit=201",
        "limit=ten",
        "before=1&after=2",
    ] {
        expect(
            c.get(format!("{e}/rooms/a/messages?{q}"))
                .send()
                .await
                .unwrap(),
            400,
            q,
        )
        .await;
    }
    expect(
        c.get(format!("{e}/rooms/a/ws?after=nope"))
            .send()
            .await
            .unwrap(),
        400,
        "bad ws cursor",
    )
    .await;
    expect(
        c.get(format!("{e}/rooms/a/sse?after=nope"))
            .send()
            .await
            .unwrap(),
        400,
        "bad sse cursor",
    )
    .await;

    // ekg writes without reflektor's signature, or with a forged one
    expect(
        c.post(format!("{e}/rooms/a/messages"))
            .body("{}")
            .send()
            .await
            .unwrap(),
        401,
        "unsigned write",
    )
    .await;
    let forged = shared::sign::Signer::new(b"not-the-secret");
    let batch = shared::batch::encode(shared::Epoch(1), shared::Offset(0), shared::Offset(1), &[]);
    let mut req = c
        .post(format!("{e}{}", shared::batch::INGEST_PATH))
        .header("content-type", shared::batch::CONTENT_TYPE);
    for (name, value) in forged.headers(
        "POST",
        shared::batch::INGEST_PATH,
        shared::Epoch(1),
        shared::Offset(0),
        &batch,
    ) {
        req = req.header(name, value);
    }
    let resp = req.body(batch).send().await.unwrap();
    expect(resp, 401, "forged signature").await;

    // Malformed JSON is relayed (reflektor does not read bodies) but refused by ekg and
    // dead-lettered with ekg's answer, never applied.
    let bad = c
        .post(format!("{r}/rooms/a/messages"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 202);
    let good = stack
        .reflektor
        .post("/rooms/a/messages", &message(1))
        .await
        .unwrap()
        .expect("202");
    wait_for("the good message applied", DEADLINE, || async {
        stack.ekgs[0]
            .all_messages("a")
            .await
            .map(|m| m.len() == 1)
            .unwrap_or(false)
    })
    .await
    .unwrap();
    let history = stack.ekgs[0].all_messages("a").await.unwrap();
    assert_eq!(history[0]["seq"].as_u64(), Some(good));
    // The host applies the good record of the batch before reflektor has stored the refused
    // one (it does on the host's answer): wait for the entry.
    let dead_letters = async || -> Value {
        c.get(format!("{r}/_reflektor/dead-letters"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    let entries = |dl: &Value| {
        dl.as_array()
            .or_else(|| dl["dead_letters"].as_array())
            .cloned()
            .unwrap_or_default()
    };
    let dl = wait_for("the malformed record dead-lettered", DEADLINE, async || {
        let dl = dead_letters().await;
        (!entries(&dl).is_empty()).then_some(dl)
    })
    .await
    .unwrap();
    let list = entries(&dl);
    assert_eq!(list.len(), 1, "the malformed record is dead-lettered: {dl}");
    assert_eq!(list[0]["status"].as_u64(), Some(400));

    // Both still serve.
    assert!(
        c.get(format!("{r}/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    assert!(
        c.get(format!("{e}/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
}
