use serde_json::json;
use tests::clients::assert_strictly_increasing;
use tests::{SseClient, Stack, WsClient, wait_for};

use crate::util::{DEADLINE, message};

#[tokio::test]
async fn a_post_reaches_websocket_and_sse_clients_on_two_hosts_with_the_same_seq() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path(), 2, &[], &[]).await.unwrap();
    let (a, b) = (&stack.ekgs[0], &stack.ekgs[1]);
    let ws_a = WsClient::connect(&format!("{}/rooms/lobby/ws", a.svc.ws_url()))
        .await
        .unwrap();
    let sse_a = SseClient::connect(&format!("{}/rooms/lobby/sse", a.svc.url()), None)
        .await
        .unwrap();
    let ws_b = WsClient::connect(&format!("{}/rooms/lobby/ws", b.svc.ws_url()))
        .await
        .unwrap();
    let sse_b = SseClient::connect(&format!("{}/rooms/lobby/sse", b.svc.url()), None)
        .await
        .unwrap();
    for c in [&ws_a.rec, &sse_a.rec, &ws_b.rec, &sse_b.rec] {
        wait_for("hello", DEADLINE, || async {
            !c.of_type("hello").is_empty()
        })
        .await
        .unwrap();
    }

    let mut ids = Vec::new();
    for n in 1..=20 {
        ids.push(
            stack
                .reflektor
                .post("/rooms/lobby/messages", &message(n))
                .await
                .unwrap()
                .expect("202"),
        );
    }
    let edit = stack
        .reflektor
        .send(
            reqwest::Method::PUT,
            "/rooms/lobby/messages/m3",
            Some(&json!({"user": "ada", "text": "edited"})),
        )
        .await
        .unwrap()
        .expect("202");
    let del = stack
        .reflektor
        .send(reqwest::Method::DELETE, "/rooms/lobby/messages/m4", None)
        .await
        .unwrap()
        .expect("202");

    let mut expected = ids.clone();
    expected.extend([edit, del]);
    for c in [&ws_a.rec, &sse_a.rec, &ws_b.rec, &sse_b.rec] {
        wait_for("all events", DEADLINE, || async {
            c.seqs().len() >= expected.len()
        })
        .await
        .unwrap();
        assert_eq!(
            c.seqs(),
            expected,
            "every client sees every offset as its seq, in order"
        );
        assert_strictly_increasing(&c.seqs()).unwrap();
        let first = &c.of_type("message")[0];
        assert_eq!(first["id"], "m1");
        assert_eq!(first["data"]["text"], "message 1");
        assert_eq!(c.of_type("update")[0]["data"]["text"], "edited");
        assert_eq!(c.of_type("delete")[0]["id"], "m4");
    }

    let page_a = a.get_json("/rooms/lobby/messages?limit=5").await.unwrap();
    let page_b = b.get_json("/rooms/lobby/messages?limit=5").await.unwrap();
    assert_eq!(page_a, page_b, "the newest page is identical on both hosts");
    let before = page_a["next_before"]
        .as_u64()
        .expect("a cursor for the next page back");
    let older_a = a
        .get_json(&format!("/rooms/lobby/messages?limit=5&before={before}"))
        .await
        .unwrap();
    let older_b = b
        .get_json(&format!("/rooms/lobby/messages?limit=5&before={before}"))
        .await
        .unwrap();
    assert_eq!(
        older_a, older_b,
        "a cursor from one host pages identically on the other"
    );
    let all = a.all_messages("lobby").await.unwrap();
    assert_eq!(all, b.all_messages("lobby").await.unwrap());
    assert_eq!(all.len(), 19, "the deleted message is gone");
    assert!(all.iter().all(|m| m["id"] != "m4"));
    let m3 = all.iter().find(|m| m["id"] == "m3").unwrap();
    assert_eq!(m3["data"]["text"], "edited", "the edit shows in history");
}
