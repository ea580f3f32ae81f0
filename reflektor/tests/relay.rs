//! reflektor end to end: the real binary relaying to a recording host.
//!
//! - order and batching (`records_reach_a_host_in_order`, `a_backlog_goes_out_in_big_batches`)
//! - retries (`a_failing_host_gets_everything_once_it_recovers`)
//! - dead letters (`a_refused_record_is_dead_lettered_alone_and_can_be_redriven`)
//! - idempotency, error answers, rewind, restart and SIGTERM.

mod common;

use std::time::Duration;

use common::{Behaviour, RecordingHost, get_json, post_id, start_reflektor, strictly_increasing};
use serde_json::Value;
use tests::wait_for;

const WAIT: Duration = Duration::from_secs(15);

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_a_host_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let host = RecordingHost::start().await;
    let r = start_reflektor(
        &dir.path().join("r"),
        &["--host", &host.url, "--secret", "s"],
    )
    .await;
    let mut tasks = Vec::new();
    for c in 0..4 {
        let url = r.endpoint("/rooms/a/messages?c=1");
        tasks.push(tokio::spawn(async move {
            let client = client();
            let mut ids = Vec::new();
            for i in 0..50 {
                ids.push(post_id(&client, &url, format!("{{\"c\":{c},\"i\":{i}}}")).await);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        let mine = t.await.unwrap();
        assert!(strictly_increasing(&mine), "one client's ids increase");
        ids.extend(mine);
    }
    wait_for("all 200 records delivered", WAIT, async || {
        host.has_all(&ids)
    })
    .await
    .unwrap();
    let got = host.offsets();
    assert!(strictly_increasing(&got), "host received in offset order");
    assert_eq!(got.len(), 200);
    host.with(|s| {
        assert!(s.gaps.is_empty());
        assert!(s.signed > 0, "deliveries are signed");
        assert_eq!(s.received[0].target, "/rooms/a/messages?c=1");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_goes_out_in_big_batches() {
    let dir = tempfile::tempdir().unwrap();
    let host = RecordingHost::start().await;
    host.with(|s| {
        s.slow = Duration::from_millis(500);
        s.slow_requests = 1;
    });
    let r = start_reflektor(&dir.path().join("r"), &["--host", &host.url]).await;
    let client = client();
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(post_id(&client, &r.endpoint("/x"), format!("{i}")).await);
    }
    wait_for("the backlog delivered", WAIT, async || host.has_all(&ids))
        .await
        .unwrap();
    let sizes = host.with(|s| s.batch_sizes.clone());
    assert!(
        sizes.iter().any(|n| *n >= 50),
        "a backlog should travel in big batches: {sizes:?}"
    );
    assert!(strictly_increasing(&host.offsets()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_host_gets_everything_once_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let host = RecordingHost::start().await;
    host.with(|s| s.behaviour = Some(Behaviour::FailWith(503)));
    let r = start_reflektor(&dir.path().join("r"), &["--host", &host.url]).await;
    let client = client();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(post_id(&client, &r.endpoint("/x"), format!("{i}")).await);
    }
    wait_for("a few failed attempts", WAIT, async || {
        host.with(|s| s.requests >= 3)
    })
    .await
    .unwrap();
    // Under `--fsync interval` a record is visible to delivery (and counted in the lag) at
    // the next fsync, a few ms after its 202: wait for the lag to cover all 20.
    let hosts = wait_for("the lag to cover all 20", WAIT, async || {
        let hosts: Value = get_json(&client, r.endpoint("/_reflektor/hosts")).await;
        (hosts["hosts"][0]["lag_records"] == 20).then_some(hosts)
    })
    .await
    .unwrap();
    let h = &hosts["hosts"][0];
    assert_eq!(h["lag_records"], 20, "{hosts}");
    assert_eq!(h["healthy"], false, "{hosts}");
    assert!(h["last_error"].as_str().unwrap().contains("503"), "{hosts}");
    assert!(h["retries"].as_u64().unwrap() >= 2, "{hosts}");
    assert!(host.offsets().is_empty());
    host.with(|s| s.behaviour = Some(Behaviour::Normal));
    wait_for("delivery after recovery", WAIT, async || host.has_all(&ids))
        .await
        .unwrap();
    assert_eq!(host.offsets(), ids);
    let metrics = client
        .get(r.endpoint("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("reflektor_delivery_retries_total"),
        "{metrics}"
    );
    assert!(metrics.contains("reflektor_intake_requests_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_is_dead_lettered_alone_and_can_be_redriven() {
    let dir = tempfile::tempdir().unwrap();
    let batch = RecordingHost::start().await;
    let replay = RecordingHost::start().await;
    for h in [&batch, &replay] {
        h.with(|s| {
            s.poison.insert(b"poison".to_vec());
            // The first request waits so the next three records travel together.
            s.slow = Duration::from_millis(300);
            s.slow_requests = 1;
        });
    }
    let r = start_reflektor(
        &dir.path().join("r"),
        &["--host", &batch.url, "--replay-host", &replay.url],
    )
    .await;
    let client = client();
    let url = r.endpoint("/rooms/a/messages");
    let first = post_id(&client, &url, "first".into()).await;
    let a = post_id(&client, &url, "a".into()).await;
    let bad = post_id(&client, &url, "poison".into()).await;
    let b = post_id(&client, &url, "b".into()).await;
    for h in [&batch, &replay] {
        wait_for("good records delivered", WAIT, async || {
            h.has_all(&[first, a, b])
        })
        .await
        .unwrap();
        assert_eq!(h.offsets(), vec![first, a, b]);
    }
    let list: Value = get_json(&client, r.endpoint("/_reflektor/dead-letters")).await;
    let entries = list["dead_letters"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{list}");
    for e in entries {
        assert_eq!(e["offset"], bad, "{list}");
        assert_eq!(e["status"], 400);
        assert!(e["error"].as_str().unwrap().contains("poison"));
        assert_eq!(e["target"], "/rooms/a/messages");
    }
    let replay_entry = entries
        .iter()
        .find(|e| e["host_url"] == replay.url.as_str())
        .unwrap();
    let id = replay_entry["id"].as_u64().unwrap();
    let redrive = r.endpoint(&format!("/_reflektor/dead-letters/{id}/redrive"));
    // Still refused: the entry stays.
    let resp = client.post(&redrive).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "upstream_failed");
    replay.with(|s| s.poison.clear());
    let resp = client.post(&redrive).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(replay.has_all(&[bad]));
    let list: Value = get_json(&client, r.endpoint("/_reflektor/dead-letters")).await;
    assert_eq!(list["dead_letters"].as_array().unwrap().len(), 1, "{list}");
    let resp = client.post(&redrive).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_is_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let host = RecordingHost::start().await;
    let r = start_reflektor(&dir.path().join("r"), &["--replay-host", &host.url]).await;
    let client = client();
    let send = || {
        client
            .post(r.endpoint("/pay"))
            .header("idempotency-key", "order-7")
            .body("charge")
            .send()
    };
    let (one, two) = tokio::join!(send(), send());
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!((one.status().as_u16(), two.status().as_u16()), (202, 202));
    let replayed = [&one, &two]
        .iter()
        .filter(|r| r.headers().get("idempotency-replayed").is_some())
        .count();
    assert_eq!(replayed, 1);
    let (a, b): (Value, Value) = (one.json().await.unwrap(), two.json().await.unwrap());
    assert_eq!(a, b);
    let third = send().await.unwrap();
    assert_eq!(third.headers()["idempotency-replayed"], "true");
    let marker = post_id(&client, &r.endpoint("/after"), "x".into()).await;
    wait_for("the marker delivered", WAIT, async || {
        host.has_all(&[marker])
    })
    .await
    .unwrap();
    host.with(|s| {
        assert_eq!(s.received.len(), 2);
        assert_eq!(s.received[0].idempotency_key.as_deref(), Some("order-7"));
        assert_eq!(s.received[0].method, "POST");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let r = start_reflektor(
        &dir.path().join("r"),
        &["--token", "t0k", "--max-body", "16"],
    )
    .await;
    let client = client();
    let check = |resp: reqwest::Response, status: u16, code: &'static str| async move {
        assert_eq!(resp.status(), status);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"], code, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    };
    let resp = client
        .get(r.endpoint("/x"))
        .bearer_auth("t0k")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["allow"], "POST, PUT, PATCH, DELETE");
    check(resp, 405, "method_not_allowed").await;
    let resp = client
        .post(r.endpoint("/x"))
        .body("{}")
        .send()
        .await
        .unwrap();
    check(resp, 401, "unauthorized").await;
    let resp = client
        .post(r.endpoint("/x"))
        .bearer_auth("t0k")
        .body(vec![b'x'; 17])
        .send()
        .await
        .unwrap();
    check(resp, 413, "body_too_large").await;
    let resp = client
        .patch(r.endpoint("/x"))
        .bearer_auth("t0k")
        .body("ok")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let health = client.get(r.endpoint("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_quota_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let r = start_reflektor(&dir.path().join("r"), &["--max-disk-bytes", "4KiB"]).await;
    let client = client();
    let mut refused = None;
    for _ in 0..100 {
        let resp = client
            .post(r.endpoint("/x"))
            .body(vec![b'x'; 512])
            .send()
            .await
            .unwrap();
        if resp.status() == 503 {
            refused = Some(resp);
            break;
        }
        assert_eq!(resp.status(), 202);
    }
    let resp = refused.expect("the quota should fill within 50 KiB");
    assert_eq!(resp.headers()["retry-after"], "1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "overloaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_lost_its_state_is_rewound_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let host = RecordingHost::start().await;
    let r = start_reflektor(&dir.path().join("r"), &["--host", &host.url]).await;
    let client = client();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(post_id(&client, &r.endpoint("/x"), format!("{i}")).await);
    }
    wait_for("first records", WAIT, async || host.has_all(&ids))
        .await
        .unwrap();
    host.lose_state();
    ids.push(post_id(&client, &r.endpoint("/x"), "after".into()).await);
    wait_for("the rebuilt host has everything again", WAIT, async || {
        host.offsets().len() == 7
    })
    .await
    .unwrap();
    let got = host.offsets();
    assert_eq!(&got[..3], &ids[..3]);
    assert_eq!(&got[3..], &ids[..], "the whole log again, in order");
    assert!(host.with(|s| s.rewinds_answered) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_and_a_restart_resumes_at_the_saved_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("r");
    let host = RecordingHost::start().await;
    let mut r = start_reflektor(&data, &["--replay-host", &host.url]).await;
    let client = client();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(post_id(&client, &r.endpoint("/x"), format!("{i}")).await);
    }
    wait_for("first records", WAIT, async || host.has_all(&ids))
        .await
        .unwrap();
    let status = r.terminate(Duration::from_secs(12)).await.unwrap();
    assert!(status.success(), "exit status {status:?}\n{}", r.stderr());
    let saved: Value =
        serde_json::from_slice(&std::fs::read(data.join("hosts.json")).unwrap()).unwrap();
    assert_eq!(saved["hosts"][0]["cursor"], ids[4] + 1, "{saved}");

    let r = start_reflektor(&data, &["--replay-host", &host.url]).await;
    let next = post_id(&client, &r.endpoint("/x"), "next".into()).await;
    assert_eq!(next, ids[4] + 1, "offsets continue after a restart");
    wait_for("the new record", WAIT, async || host.has_all(&[next]))
        .await
        .unwrap();
    let mut want = ids.clone();
    want.push(next);
    assert_eq!(
        host.offsets(),
        want,
        "nothing sent twice after a clean restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_can_be_added_at_runtime_and_start_from_the_oldest_record() {
    let dir = tempfile::tempdir().unwrap();
    let r = start_reflektor(&dir.path().join("r"), &[]).await;
    let client = client();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(post_id(&client, &r.endpoint("/x"), format!("{i}")).await);
    }
    let host = RecordingHost::start().await;
    let resp = client
        .post(r.endpoint("/_reflektor/hosts"))
        .json(&serde_json::json!({"url": host.url, "mode": "batch"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    wait_for("the new host catches up", WAIT, async || host.has_all(&ids))
        .await
        .unwrap();
    let resp = client
        .post(r.endpoint("/_reflektor/hosts"))
        .json(&serde_json::json!({"url": host.url}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
}
