use std::collections::BTreeSet;
use std::time::Duration;

use tests::clients::assert_strictly_increasing;
use tests::stack::TOKEN;
use tests::{Signal, SseClient, Stack, WsClient, wait_for};

use crate::util::{DEADLINE, Publisher, message_seqs, url_of};

async fn host_lag(stack: &Stack, url: &str) -> Option<u64> {
    let hosts = stack.reflektor.hosts().await.ok()?;
    let list = hosts
        .as_array()
        .or_else(|| hosts["hosts"].as_array())?
        .clone();
    list.iter()
        .find(|h| h["url"].as_str().map(|u| u.trim_end_matches('/')) == Some(url))?["lag_records"]
        .as_u64()
}

/// An ekg host SIGKILLed and restarted empty is rebuilt from the log; a client that reconnects
/// with its cursor sees no gap and no duplicate.
#[tokio::test]
async fn a_host_restarted_empty_is_rebuilt_and_resumed_clients_see_no_gap() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = Stack::start(dir.path(), 2, &[], &[]).await.unwrap();
    let ws_url = format!("{}/rooms/r/ws", stack.ekgs[0].svc.ws_url());
    let first = WsClient::connect(&ws_url).await.unwrap();
    wait_for("hello", DEADLINE, || async {
        !first.of_type("hello").is_empty()
    })
    .await
    .unwrap();

    let publisher = Publisher::start(url_of(&stack.reflektor), TOKEN, "r", 400);
    wait_for("some posts", DEADLINE, || async {
        publisher.acked_count() >= 100
    })
    .await
    .unwrap();
    let before_kill = first.seqs();
    stack.ekgs[0].svc.kill().await.unwrap();
    drop(first);
    stack.ekgs[0].svc.restart().await.unwrap();
    let cursor = before_kill.last().copied().unwrap_or(0);
    let resumed = wait_for("reconnect to the restarted host", DEADLINE, || {
        let url = format!("{ws_url}?after={cursor}");
        async move { WsClient::connect(&url).await.ok() }
    })
    .await
    .unwrap();
    let acked = publisher.join().await;

    let ekg = &stack.ekgs;
    wait_for(
        "rebuilt history equals the other host's",
        DEADLINE,
        || async {
            match (
                ekg[0].all_messages("r").await,
                ekg[1].all_messages("r").await,
            ) {
                (Ok(a), Ok(b)) => a == b && a.len() == acked.len(),
                _ => false,
            }
        },
    )
    .await
    .unwrap();
    wait_for("the resumed client has everything", DEADLINE, || async {
        let mut seen: BTreeSet<u64> = before_kill.iter().copied().collect();
        seen.extend(message_seqs(&resumed.frames()));
        acked.is_subset(&seen)
    })
    .await
    .unwrap();
    let mut all = before_kill.clone();
    all.extend(resumed.seqs());
    assert_strictly_increasing(&all).unwrap();
    assert!(
        resumed.of_type("reset").is_empty(),
        "nothing was trimmed, so no reset"
    );
}

/// A host that stops answering for a while (SIGSTOP) gets its backlog in order afterwards and
/// its lag returns to zero; the other host is not held up meanwhile.
#[tokio::test]
async fn a_stopped_host_catches_up_in_order_and_its_lag_returns_to_zero() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path(), 2, &[], &["--delivery-timeout", "1s"])
        .await
        .unwrap();
    let (a, b) = (&stack.ekgs[0], &stack.ekgs[1]);
    let on_b = SseClient::connect(&format!("{}/rooms/r/sse", b.svc.url()), None)
        .await
        .unwrap();
    let on_a = WsClient::connect(&format!("{}/rooms/r/ws", a.svc.ws_url()))
        .await
        .unwrap();
    wait_for("hello", DEADLINE, || async {
        !on_b.of_type("hello").is_empty() && !on_a.of_type("hello").is_empty()
    })
    .await
    .unwrap();

    b.svc.signal(Signal::Stop).unwrap();
    let publisher = Publisher::start(url_of(&stack.reflektor), TOKEN, "r", 150);
    let acked = publisher.join().await;
    wait_for("the running host is not held up", DEADLINE, || async {
        on_a.seqs().len() >= acked.len()
    })
    .await
    .unwrap();
    let b_url = b.svc.url();
    let lag = wait_for("lag shows on the stopped host", DEADLINE, || async {
        host_lag(&stack, &b_url).await.filter(|l| *l > 0)
    })
    .await
    .unwrap();
    assert!(lag > 0);

    b.svc.signal(Signal::Cont).unwrap();
    wait_for("lag back to zero", DEADLINE, || async {
        host_lag(&stack, &b_url).await == Some(0)
    })
    .await
    .unwrap();
    wait_for("backlog at the client", DEADLINE, || async {
        on_b.seqs().len() >= acked.len()
    })
    .await
    .unwrap();
    assert_eq!(
        on_b.seqs(),
        acked.iter().copied().collect::<Vec<_>>(),
        "in order, complete, no duplicate"
    );
    assert_eq!(on_a.seqs(), on_b.seqs());
}

/// SIGTERM drains: every client gets `reconnect`, resumes on the other host with its cursor, and
/// sees no gap and no duplicate; the host exits 0.
#[tokio::test]
async fn sigterm_moves_every_client_to_the_other_host_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = Stack::start(dir.path(), 2, &["--drain-window", "1s"], &[])
        .await
        .unwrap();
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(
            WsClient::connect(&format!("{}/rooms/r/ws", stack.ekgs[0].svc.ws_url()))
                .await
                .unwrap(),
        );
    }
    let sse = SseClient::connect(&format!("{}/rooms/r/sse", stack.ekgs[0].svc.url()), None)
        .await
        .unwrap();
    for c in &clients {
        wait_for("hello", DEADLINE, || async {
            !c.of_type("hello").is_empty()
        })
        .await
        .unwrap();
    }
    wait_for("hello", DEADLINE, || async {
        !sse.of_type("hello").is_empty()
    })
    .await
    .unwrap();

    let publisher = Publisher::start(url_of(&stack.reflektor), TOKEN, "r", 300);
    wait_for("posts flowing", DEADLINE, || async {
        publisher.acked_count() >= 50
    })
    .await
    .unwrap();
    let status = stack.ekgs[0]
        .svc
        .terminate(Duration::from_secs(15))
        .await
        .unwrap();
    assert!(status.success(), "ekg exits 0 after draining: {status:?}");

    let other_ws = stack.ekgs[1].svc.ws_url();
    let mut resumed = Vec::new();
    for c in clients.iter().map(|c| &c.rec).chain([&sse.rec]) {
        assert_eq!(
            c.of_type("reconnect").len(),
            1,
            "every client was told to reconnect"
        );
        let cursor = c.last_seq().unwrap_or(0);
        let next = WsClient::connect(&format!("{other_ws}/rooms/r/ws?after={cursor}"))
            .await
            .unwrap();
        resumed.push((c.seqs(), next));
    }
    let acked = publisher.join().await;
    for (before, next) in &resumed {
        wait_for("resumed client has the rest", DEADLINE, || async {
            let mut seen: BTreeSet<u64> = before.iter().copied().collect();
            seen.extend(next.seqs());
            acked.iter().all(|o| seen.contains(o))
        })
        .await
        .unwrap();
        let mut all = before.clone();
        all.extend(next.seqs());
        assert_strictly_increasing(&all).unwrap();
    }
}
