use tests::clients::assert_strictly_increasing;
use tests::stack::TOKEN;
use tests::{SseClient, Stack, WsClient, wait_for};

use crate::util::{DEADLINE, Publisher, message_seqs, url_of};

/// Several SIGKILLs of reflektor while posts keep coming: every acknowledged post reaches every
/// client, in order, and no client sees a duplicate.
#[tokio::test]
async fn every_acknowledged_post_survives_repeated_reflektor_kills() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = Stack::start(dir.path(), 2, &[], &["--fsync", "interval"])
        .await
        .unwrap();
    let ws = WsClient::connect(&format!("{}/rooms/r/ws", stack.ekgs[0].svc.ws_url()))
        .await
        .unwrap();
    let sse = SseClient::connect(&format!("{}/rooms/r/sse", stack.ekgs[1].svc.url()), None)
        .await
        .unwrap();
    for c in [&ws.rec, &sse.rec] {
        wait_for("hello", DEADLINE, || async {
            !c.of_type("hello").is_empty()
        })
        .await
        .unwrap();
    }

    let url = url_of(&stack.reflektor);
    let publisher = Publisher::start(url, TOKEN, "r", 600);
    for kill in 1..=3u64 {
        let target = kill * 120;
        wait_for("acknowledged posts", DEADLINE, || async {
            publisher.acked_count() >= target
        })
        .await
        .unwrap();
        stack.reflektor.svc.kill().await.unwrap();
        stack.reflektor.svc.restart().await.unwrap();
    }
    let acked = publisher.join().await;
    assert_eq!(
        acked.len(),
        600,
        "every message was eventually acknowledged"
    );

    for c in [&ws.rec, &sse.rec] {
        let have_all = || async {
            let seen: std::collections::BTreeSet<u64> =
                message_seqs(&c.frames()).into_iter().collect();
            acked.is_subset(&seen)
        };
        wait_for(
            "every acknowledged offset at the client",
            DEADLINE,
            have_all,
        )
        .await
        .unwrap();
        let seqs = c.seqs();
        assert_strictly_increasing(&seqs).unwrap();
    }
    let a = stack.ekgs[0].all_messages("r").await.unwrap();
    assert_eq!(a, stack.ekgs[1].all_messages("r").await.unwrap());
    let ids: Vec<String> = a
        .iter()
        .map(|m| m["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "idempotent retries never stored a message twice"
    );
}
