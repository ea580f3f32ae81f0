//! The JetStream log against a real single-node NATS server on loopback (each test starts its
//! own, with its own port and store directory).

use std::time::Duration;

use bytes::Bytes;
use shared::{Method, Offset, Record};
use tests::nats::NatsCluster;

use super::{JetStreamConfig, JetStreamError, JetStreamLog};
use crate::log::{AppendError, ReadError};

fn record(body: &str, key: Option<&str>) -> Record {
    Record {
        offset: Offset::ZERO,
        timestamp_ms: 1_700_000_000_000,
        method: Method::Post,
        target: "/rooms/a/messages".into(),
        content_type: Some("application/json".into()),
        idempotency_key: key.map(str::to_owned),
        headers: vec![],
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}

fn config(nats: &NatsCluster) -> JetStreamConfig {
    let mut cfg = JetStreamConfig::new(vec![nats.nodes[0].url()]);
    cfg.replicas = 1;
    cfg.request_timeout = Duration::from_secs(3);
    cfg
}

async fn open(cfg: &JetStreamConfig) -> JetStreamLog {
    JetStreamLog::open(cfg.clone()).await.unwrap().0
}

fn decoded(records: &[Bytes]) -> Vec<(u64, String)> {
    records
        .iter()
        .map(|r| {
            let r = Record::decode(r.clone()).unwrap();
            (r.offset.0, String::from_utf8(r.body.to_vec()).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn offsets_are_stream_sequences_and_reads_carry_them() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(dir.path(), 1).await.unwrap();
    let log = open(&config(&nats)).await;
    let mut head_rx = log.watch_head();
    for i in 1..=5u64 {
        let (offset, duplicate) = log.append(record(&format!("m{i}"), None)).await.unwrap();
        assert_eq!((offset, duplicate), (Offset(i), false));
    }
    // The head moves once the follower saw the stored records.
    tokio::time::timeout(
        Duration::from_secs(5),
        head_rx.wait_for(|h| *h == Offset(5)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((log.oldest(), log.head()), (Offset(1), Offset(5)));
    let all = log.read(Offset(2), 100, 1 << 20).await.unwrap();
    assert_eq!(
        decoded(&all),
        (2..=5).map(|i| (i, format!("m{i}"))).collect::<Vec<_>>()
    );
    let two = log.read(Offset(1), 2, 1 << 20).await.unwrap();
    assert_eq!(decoded(&two), vec![(1, "m1".into()), (2, "m2".into())]);
    assert!(log.read(Offset(6), 10, 1 << 20).await.unwrap().is_empty());
    assert_eq!(log.timestamp_of(Offset(3)).await, Some(1_700_000_000_000));
    log.close().await.unwrap();
    assert!(matches!(
        log.append(record("late", None)).await,
        Err(AppendError::Closed)
    ));
}

#[tokio::test]
async fn older_records_are_read_from_the_stream_in_bounded_batches() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(dir.path(), 1).await.unwrap();
    let mut cfg = config(&nats);
    // No cache: every read goes to the stream.
    cfg.cache_bytes = 0;
    let log = open(&cfg).await;
    for i in 1..=50u64 {
        log.append(record(&format!("{i:04}"), None)).await.unwrap();
    }
    let mut head_rx = log.watch_head();
    tokio::time::timeout(
        Duration::from_secs(5),
        head_rx.wait_for(|h| *h == Offset(50)),
    )
    .await
    .unwrap()
    .unwrap();
    let mut from = Offset(1);
    let mut seen = Vec::new();
    while from <= log.head() {
        let got = log.read(from, 7, 1 << 20).await.unwrap();
        assert!(!got.is_empty() && got.len() <= 7);
        let d = decoded(&got);
        from = Offset(d.last().unwrap().0 + 1);
        seen.extend(d);
    }
    assert_eq!(
        seen,
        (1..=50).map(|i| (i, format!("{i:04}"))).collect::<Vec<_>>()
    );
    // The byte bound stops a batch after the first record that passes it.
    let one_record = log.read(Offset(10), 100, 1).await.unwrap();
    assert_eq!(decoded(&one_record), vec![(10, "0010".into())]);
}

#[tokio::test]
async fn one_idempotency_key_is_one_record_across_instances() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(dir.path(), 1).await.unwrap();
    let cfg = config(&nats);
    let a = open(&cfg).await;
    let b = open(&cfg).await;
    assert_eq!(a.epoch(), b.epoch(), "both instances derive the same epoch");
    a.append(record("before", None)).await.unwrap();
    let first = a.append(record("x", Some("order-1"))).await.unwrap();
    let again = b.append(record("x", Some("order-1"))).await.unwrap();
    let other = b.append(record("y", Some("order 2 é"))).await.unwrap();
    assert_eq!(first, (Offset(2), false));
    assert_eq!(again, (Offset(2), true), "the repeat answers the first id");
    assert_eq!(other, (Offset(3), false));
    assert_eq!(
        b.append(record("y", Some("order 2 é"))).await.unwrap(),
        (Offset(3), true)
    );
}

#[tokio::test]
async fn a_stream_with_other_settings_is_refused_and_every_difference_named() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(dir.path(), 1).await.unwrap();
    let cfg = config(&nats);
    let log = open(&cfg).await;
    let epoch = log.epoch();
    log.close().await.unwrap();
    // Opened again with the same flags: the same log.
    let again = open(&cfg).await;
    assert_eq!(again.epoch(), epoch);
    let mut other = cfg.clone();
    other.max_age = Duration::from_secs(3600);
    other.duplicate_window = Duration::from_secs(60);
    let err = match JetStreamLog::open(other).await {
        Err(e) => e,
        Ok(_) => panic!("a stream with other settings was accepted"),
    };
    assert!(matches!(err, JetStreamError::Mismatch { .. }));
    let text = err.to_string();
    assert!(text.contains("--retention asks for 1h"), "{text}");
    assert!(text.contains("--dedupe-window asks for 1m"), "{text}");
}

#[tokio::test]
async fn no_reachable_server_and_too_few_nodes_are_errors_not_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(dir.path(), 1).await.unwrap();
    // A port nothing listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let mut nowhere = JetStreamConfig::new(vec![format!("nats://127.0.0.1:{port}")]);
    nowhere.request_timeout = Duration::from_secs(2);
    let started = std::time::Instant::now();
    let err = JetStreamLog::open(nowhere).await.err().unwrap();
    assert!(matches!(err, JetStreamError::Connect(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let mut three = config(&nats);
    three.replicas = 3;
    let err = JetStreamLog::open(three).await.err().unwrap();
    assert!(matches!(err, JetStreamError::Create(_)), "{err}");
    assert!(err.to_string().contains("3 replicas"), "{err}");
}

#[tokio::test]
async fn a_recreated_stream_is_a_new_epoch_and_the_old_log_stops() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(dir.path(), 1).await.unwrap();
    let cfg = config(&nats);
    let (log, js) = JetStreamLog::open(cfg.clone()).await.unwrap();
    log.append(record("old", None)).await.unwrap();
    js.delete_stream(&cfg.stream).await.unwrap();
    js.create_stream(super::stream::wanted(&cfg)).await.unwrap();
    let why = tokio::time::timeout(Duration::from_secs(10), log.replaced())
        .await
        .expect("the replaced stream was noticed");
    assert!(why.contains("new log"), "{why}");
    assert!(matches!(
        log.append(record("after", None)).await,
        Err(AppendError::Unavailable(_)) | Ok(_)
    ));
    let fresh = open(&cfg).await;
    assert_ne!(fresh.epoch(), log.epoch());
}

#[tokio::test]
async fn records_removed_by_retention_are_reported_as_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(dir.path(), 1).await.unwrap();
    let mut cfg = config(&nats);
    cfg.max_bytes = 2048;
    cfg.cache_bytes = 0;
    let log = open(&cfg).await;
    for i in 0..40 {
        log.append(record(&format!("{i:0100}"), None))
            .await
            .unwrap();
    }
    tests::wait_for(
        "retention removed the oldest records",
        Duration::from_secs(5),
        async || {
            matches!(
                log.read(Offset(1), 10, 1 << 20).await,
                Err(ReadError::Trimmed { oldest }) if oldest > Offset(1)
            )
        },
    )
    .await
    .unwrap();
    let oldest = log.oldest();
    let got = log.read(oldest, 100, 1 << 20).await.unwrap();
    assert_eq!(decoded(&got).first().unwrap().0, oldest.0);
    assert_eq!(decoded(&got).last().unwrap().0, 40);
}
