//! ekg's trust boundary, attacked on the real binary (issue 9): every test is one thing a
//! hostile network, a stale reflektor or a misconfiguration does, and the answer ekg owes it.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use shared::batch::{self, INGEST_PATH};
use shared::sign::{Signed, Signer, unix_ms};
use shared::{Epoch, Method, Offset, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tests::{Launch, Service};

const SECRET: &str = "ekg-trust-secret-0123456789";
const DEADLINE: Duration = Duration::from_secs(15);

/// A relayed ekg signed with [`SECRET`], plus `extra` flags.
async fn ekg(dir: &std::path::Path, extra: &[&str]) -> Service {
    Launch::new("ekg", dir)
        .unwrap()
        .args(["--secret", SECRET])
        .args(extra.iter().copied())
        .start()
        .await
        .unwrap()
}

fn record(offset: u64, room: &str, id: &str) -> Bytes {
    Record {
        offset: Offset(offset),
        timestamp_ms: unix_ms(),
        method: Method::Post,
        target: format!("/rooms/{room}/messages"),
        content_type: Some("application/json".into()),
        idempotency_key: None,
        headers: vec![],
        body: Bytes::from(format!(r#"{{"id":"{id}"}}"#)),
    }
    .to_bytes()
}

/// A batch signed with `secret` as reflektor sends it.
fn batch_request(
    c: &reqwest::Client,
    url: &str,
    epoch: u64,
    prev: u64,
    records: &[Bytes],
    secret: &str,
) -> reqwest::RequestBuilder {
    let head = records.iter().filter_map(|r| Record::peek_offset(r)).max();
    let body = batch::encode(
        Epoch(epoch),
        Offset(prev),
        head.unwrap_or(Offset(prev)),
        records,
    );
    let mut req = c
        .post(format!("{url}{INGEST_PATH}"))
        .header("content-type", batch::CONTENT_TYPE);
    for (name, value) in Signer::new(secret.as_bytes()).headers(
        "POST",
        INGEST_PATH,
        Epoch(epoch),
        Offset(prev),
        &body,
    ) {
        req = req.header(name, value);
    }
    req.body(body)
}

/// A replayed write signed for `method target` at `offset` of log 1.
fn replayed(
    c: &reqwest::Client,
    url: &str,
    method: &str,
    target: &str,
    offset: u64,
    body: &'static [u8],
) -> reqwest::RequestBuilder {
    let mut req = c.request(method.parse().unwrap(), format!("{url}{target}"));
    for (name, value) in
        Signer::new(SECRET.as_bytes()).headers(method, target, Epoch(1), Offset(offset), body)
    {
        req = req.header(name, value);
    }
    req.body(body)
}

async fn answer(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn seqs(c: &reqwest::Client, url: &str, room: &str) -> Vec<u64> {
    let page: Value = c
        .get(format!("{url}/rooms/{room}/messages?limit=200"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn ekg_refuses_to_start_unsigned_unless_told_so_explicitly() {
    let dir = tempfile::tempdir().unwrap();
    let exited = Launch::new("ekg", dir.path())
        .unwrap()
        .run_to_exit(DEADLINE)
        .await
        .unwrap();
    assert_eq!(exited.status.code(), Some(2), "{}", exited.stderr);
    let lines: Vec<&str> = exited.stderr.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {}", exited.stderr);
    assert!(lines[0].contains("refusing to start"), "{}", lines[0]);
    assert!(
        exited.stdout.is_empty(),
        "never announced: {}",
        exited.stdout
    );
    // Asked for explicitly: it starts, says so loudly, and takes unsigned writes.
    let mut svc = Launch::new("ekg", dir.path())
        .unwrap()
        .args(["--insecure-unsigned-ingest", "--cors-origin", "*"])
        .start()
        .await
        .unwrap();
    let c = reqwest::Client::new();
    let (status, _) = answer(
        c.post(svc.endpoint("/rooms/a/messages"))
            .header("x-reflektor-epoch", Epoch(1).to_string())
            .header("x-reflektor-offset", "1")
            .body("{}"),
    )
    .await;
    assert_eq!(status, 200);
    svc.terminate(DEADLINE).await.unwrap();
    let stderr = svc.stderr();
    for flag in ["--insecure-unsigned-ingest", "--cors-origin"] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("WARN") && l.contains(flag)),
            "a warning for {flag}: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_v1_or_forged_signature_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let svc = ekg(dir.path(), &[]).await;
    let c = reqwest::Client::new();
    let url = svc.url();
    let records = [record(1, "a", "m1")];
    let (status, body) = answer(batch_request(&c, &url, 1, 0, &records, "not-the-secret")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("bad_signature"))
    );
    // A v1 signature (the old format: no method, target or timestamp) is refused as such.
    let req = batch_request(&c, &url, 1, 0, &records, SECRET)
        .build()
        .unwrap();
    let v2 = req.headers()["x-reflektor-signature"].to_str().unwrap();
    let v1 = v2.replacen("v2=", "v1=", 1);
    let mut req = req;
    req.headers_mut()
        .insert("x-reflektor-signature", v1.parse().unwrap());
    let resp = c.execute(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let (status, body) = answer(c.get(format!("{url}/readyz"))).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("not_ready")));
    let (_, metrics) = answer(c.get(format!("{url}/metrics"))).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains(r#"ekg_ingest_refused_total{error="bad_signature"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_delivery_signed_outside_the_window_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let svc = ekg(dir.path(), &["--signature-window", "30s"]).await;
    let c = reqwest::Client::new();
    let body = batch::encode(Epoch(1), Offset(0), Offset(1), &[record(1, "a", "m1")]);
    let sent_at = unix_ms() - 60_000;
    let signed = Signed {
        method: "POST",
        target: INGEST_PATH,
        epoch: Epoch(1),
        offset: Offset(0),
        prev: None,
        timestamp_ms: sent_at,
    };
    let (status, answer_body) = answer(
        c.post(svc.endpoint(INGEST_PATH))
            .header("content-type", batch::CONTENT_TYPE)
            .header("x-reflektor-epoch", Epoch(1).to_string())
            .header("x-reflektor-offset", "0")
            .header("x-reflektor-timestamp", sent_at.to_string())
            .header(
                "x-reflektor-signature",
                Signer::new(SECRET.as_bytes()).sign(&signed, &body),
            )
            .body(body),
    )
    .await;
    assert_eq!(
        (status, answer_body["error"].as_str()),
        (401, Some("stale_delivery"))
    );
}

#[tokio::test]
async fn a_delivery_re_sent_against_another_path_or_method_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let svc = ekg(dir.path(), &[]).await;
    let c = reqwest::Client::new();
    let url = svc.url();
    // Captured: a signed post to room a at offset 1. Re-sent to room b: refused.
    let captured = replayed(&c, &url, "POST", "/rooms/a/messages", 1, b"{\"id\":\"m1\"}")
        .build()
        .unwrap();
    let mut redirected = captured.try_clone().unwrap();
    *redirected.url_mut() = format!("{url}/rooms/b/messages").parse().unwrap();
    assert_eq!(c.execute(redirected).await.unwrap().status().as_u16(), 401);
    let mut as_put = captured.try_clone().unwrap();
    *as_put.method_mut() = reqwest::Method::PUT;
    *as_put.url_mut() = format!("{url}/rooms/a/messages/m1").parse().unwrap();
    assert_eq!(c.execute(as_put).await.unwrap().status().as_u16(), 401);
    assert_eq!(c.execute(captured).await.unwrap().status().as_u16(), 200);
    assert_eq!(seqs(&c, &url, "a").await, vec![1]);
    assert!(seqs(&c, &url, "b").await.is_empty());
}

#[tokio::test]
async fn an_old_epoch_delivery_after_a_new_epoch_does_not_wipe_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let svc = ekg(dir.path(), &[]).await;
    let c = reqwest::Client::new();
    let url = svc.url();
    let (status, _) = answer(batch_request(
        &c,
        &url,
        1,
        0,
        &[record(1, "a", "old")],
        SECRET,
    ))
    .await;
    assert_eq!(status, 200);
    let new_log = [record(1, "a", "n1"), record(2, "a", "n2")];
    let (status, _) = answer(batch_request(&c, &url, 2, 0, &new_log, SECRET)).await;
    assert_eq!(status, 200);
    // The old log again (a stale reflektor, or a re-sent capture): refused, rooms kept.
    let (status, body) = answer(batch_request(
        &c,
        &url,
        1,
        0,
        &[record(1, "a", "x")],
        SECRET,
    ))
    .await;
    assert_eq!((status, body["error"].as_str()), (409, Some("old_epoch")));
    assert_eq!(body["epoch"], Epoch(2).to_string());
    assert_eq!(body["applied"], 2);
    assert_eq!(seqs(&c, &url, "a").await, vec![1, 2]);
}

#[tokio::test]
async fn a_gap_in_replayed_offsets_is_a_409_carrying_the_host_position() {
    let dir = tempfile::tempdir().unwrap();
    let svc = ekg(dir.path(), &[]).await;
    let c = reqwest::Client::new();
    let url = svc.url();
    let (status, _) = answer(replayed(&c, &url, "POST", "/rooms/a/messages", 1, b"{}")).await;
    assert_eq!(status, 200);
    let (status, body) = answer(replayed(&c, &url, "POST", "/rooms/a/messages", 3, b"{}")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("out_of_order"))
    );
    let ack: batch::IngestAck = serde_json::from_value(body).unwrap();
    assert_eq!((ack.applied, ack.epoch), (Offset(1), Epoch(1)));
    assert_eq!(seqs(&c, &url, "a").await, vec![1]);
}

#[tokio::test]
async fn a_body_that_is_not_utf8_is_a_400_and_consumes_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let svc = ekg(dir.path(), &[]).await;
    let c = reqwest::Client::new();
    let url = svc.url();
    let body: &'static [u8] = b"{\"id\":\"m1\",\"text\":\"caf\xe9\"}";
    let (status, answer_body) =
        answer(replayed(&c, &url, "POST", "/rooms/a/messages", 1, body)).await;
    assert_eq!(
        (status, answer_body["error"].as_str()),
        (400, Some("bad_json"))
    );
    let (status, _) = answer(replayed(&c, &url, "POST", "/rooms/a/messages", 2, b"{}")).await;
    assert_eq!(status, 200, "the next offset is in order");
    assert_eq!(seqs(&c, &url, "a").await, vec![2]);
}

/// Read until the peer closes (`Ok(bytes)`) or `limit` passes (`Err`).
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Result<Vec<u8>, ()> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return Err(()),
            Ok(Ok(0) | Err(_)) => return Ok(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_half_sent_header_is_closed_after_the_header_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let svc = ekg(dir.path(), &["--header-read-timeout", "1s"]).await;
    let mut s = TcpStream::connect(svc.addr).await.unwrap();
    s.write_all(b"POST /_reflektor/ingest HTTP/1.1\r\nHost: ekg\r\nContent-Type: appl")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    read_until_closed(&mut s, DEADLINE)
        .await
        .expect("the connection is closed, not held");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

/// Headers of a signed replayed write whose body (`len` bytes declared) is sent by the caller.
fn slow_write_head(len: usize) -> String {
    let body = vec![b' '; len];
    let headers = Signer::new(SECRET.as_bytes()).headers(
        "POST",
        "/rooms/a/messages",
        Epoch(1),
        Offset(1),
        &body,
    );
    let mut head =
        format!("POST /rooms/a/messages HTTP/1.1\r\nHost: ekg\r\nContent-Length: {len}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

#[tokio::test]
async fn a_slow_body_is_a_408_after_the_body_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let svc = ekg(dir.path(), &["--body-read-timeout", "1s"]).await;
    let mut s = TcpStream::connect(svc.addr).await.unwrap();
    s.write_all(slow_write_head(100).as_bytes()).await.unwrap();
    s.write_all(b"{  ").await.unwrap();
    let got = read_until_closed(&mut s, DEADLINE)
        .await
        .expect("answered and closed, not held");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
}

#[tokio::test]
async fn ingest_beyond_the_concurrency_bound_is_a_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let svc = ekg(
        dir.path(),
        &["--max-ingest-requests", "1", "--body-read-timeout", "30s"],
    )
    .await;
    let c = reqwest::Client::new();
    // One write holds the only slot, its body trickling in.
    let mut slow = TcpStream::connect(svc.addr).await.unwrap();
    slow.write_all(slow_write_head(100).as_bytes())
        .await
        .unwrap();
    slow.write_all(b"{").await.unwrap();
    let resp = tests::wait_for("the slot taken by the slow write", DEADLINE, async || {
        let resp = replayed(&c, &svc.url(), "POST", "/rooms/b/messages", 1, b"{}")
            .send()
            .await
            .ok()?;
        (resp.status() == 503).then_some(resp)
    })
    .await
    .unwrap();
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "overloaded");
    // The slot is free once the slow write is done with.
    drop(slow);
    tests::wait_for("the slot freed", DEADLINE, async || {
        replayed(&c, &svc.url(), "POST", "/rooms/b/messages", 1, b"{}")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await
    .unwrap();
}
