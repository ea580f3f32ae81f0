//! Behaviour of the log as its users see it: offsets, durability per policy, recovery,
//! corruption, segments, retention, backpressure. Disk faults: [`faults`].

mod faults;

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use shared::{Method, Offset, Record};

use super::segment::{self, HEADER_LEN};
use super::{AppendError, FsyncPolicy, Log, LogConfig, LogError, Opened, ReadError};

const DEADLINE: Duration = Duration::from_secs(10);

fn record(body: &[u8], key: Option<&str>) -> Record {
    Record {
        offset: Offset::ZERO,
        timestamp_ms: 1_700_000_000_000,
        method: Method::Post,
        target: "/rooms/lobby/messages".into(),
        content_type: Some("application/json".into()),
        idempotency_key: key.map(str::to_owned),
        headers: vec![("x-request-id".into(), "r".into())],
        body: Bytes::copy_from_slice(body),
    }
}

fn config(dir: &Path, fsync: FsyncPolicy) -> LogConfig {
    let mut cfg = LogConfig::new(dir.join("log"));
    cfg.fsync = fsync;
    cfg
}

fn open(cfg: &LogConfig) -> Opened {
    Log::open(cfg.clone()).expect("open the log")
}

fn segments(cfg: &LogConfig) -> Vec<PathBuf> {
    segment::list(&cfg.dir).unwrap().into_values().collect()
}

/// Decode what `read` returned: (offset, body).
fn decoded(records: &[Bytes]) -> Vec<(u64, Bytes)> {
    records
        .iter()
        .map(|b| {
            let r = Record::decode(b.clone()).unwrap();
            (r.offset.0, r.body)
        })
        .collect()
}

/// Read everything from `from` to the head, in as many calls as it takes.
async fn read_all(log: &Log, from: u64) -> Vec<(u64, Bytes)> {
    let mut out = Vec::new();
    let mut at = Offset(from);
    loop {
        let got = log.read(at, 97, 64 << 10).await.unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend(decoded(&got));
        at = Offset(out.last().unwrap().0 + 1);
    }
}

/// Append `n` records with bodies `b0`, `b1`, ... and return their offsets.
async fn append_n(log: &Log, n: usize, pad: usize) -> Vec<u64> {
    let mut offsets = Vec::with_capacity(n);
    for i in 0..n {
        let body = format!("b{i}{}", "x".repeat(pad));
        offsets.push(log.append(record(body.as_bytes(), None)).await.unwrap().0);
    }
    offsets
}

#[tokio::test]
async fn each_fsync_policy_appends_in_order_and_reads_back() {
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval,
        FsyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), policy);
        let Opened { log, .. } = open(&cfg);
        assert_eq!((log.head(), log.oldest()), (Offset::ZERO, Offset(1)));
        assert_eq!(
            log.read(Offset(1), 10, 1 << 20).await.unwrap(),
            Vec::<Bytes>::new()
        );

        let offsets = append_n(&log, 50, 0).await;
        assert_eq!(offsets, (1..=50).collect::<Vec<_>>(), "{policy}");
        // Under `interval` the head follows the syncer; it must get there without more appends.
        let mut head = log.watch_head();
        tokio::time::timeout(DEADLINE, head.wait_for(|h| *h == Offset(50)))
            .await
            .expect("the head reaches the last append")
            .unwrap();
        let got = read_all(&log, 1).await;
        assert_eq!(got.len(), 50);
        for (i, (offset, body)) in got.iter().enumerate() {
            assert_eq!(*offset, i as u64 + 1);
            assert_eq!(body, format!("b{i}").as_bytes());
        }
        assert_eq!(log.timestamp_of(Offset(3)).await, Some(1_700_000_000_000));
        assert_eq!(log.timestamp_of(Offset(51)).await, None);
        log.close().await.unwrap();
        assert!(matches!(
            log.append(record(b"late", None)).await,
            Err(AppendError::Closed)
        ));
    }
}

#[tokio::test]
async fn read_honours_limits_but_returns_at_least_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Never);
    let Opened { log, .. } = open(&cfg);
    append_n(&log, 10, 100).await;
    assert_eq!(log.read(Offset(1), 3, 1 << 20).await.unwrap().len(), 3);
    assert_eq!(log.read(Offset(1), 10, 1).await.unwrap().len(), 1);
    assert_eq!(
        log.read(Offset(0), 10, 1 << 20).await.unwrap().len(),
        10,
        "0 means oldest"
    );
    assert!(log.read(Offset(11), 10, 1 << 20).await.unwrap().is_empty());
    log.close().await.unwrap();
    // The same from disk after a restart (the cache starts empty).
    let Opened { log, .. } = open(&cfg);
    assert_eq!(log.read(Offset(4), 3, 1 << 20).await.unwrap().len(), 3);
    assert_eq!(log.read(Offset(4), 10, 1).await.unwrap().len(), 1);
    let got = decoded(&log.read(Offset(9), 10, 1 << 20).await.unwrap());
    assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![9, 10]);
}

#[tokio::test]
async fn reopening_keeps_the_epoch_and_continues_the_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Always);
    // `record` is stamped in 2023: reach back far enough for its keys.
    cfg.keys_window = Duration::MAX;
    let Opened { log, .. } = open(&cfg);
    let epoch = log.epoch();
    assert_ne!(epoch.0, 0);
    log.append(record(b"one", Some("k1"))).await.unwrap();
    log.append(record(b"two", None)).await.unwrap();
    log.append(record(b"three", Some("k3"))).await.unwrap();
    log.close().await.unwrap();

    let opened = open(&cfg);
    assert_eq!(opened.truncated_bytes, 0);
    let keys: Vec<_> = opened
        .recent_keys
        .iter()
        .map(|(k, o, ts)| (k.as_str(), o.0, *ts))
        .collect();
    assert_eq!(
        keys,
        vec![("k1", 1, 1_700_000_000_000), ("k3", 3, 1_700_000_000_000)]
    );
    let log = opened.log;
    assert_eq!(log.epoch(), epoch);
    assert_eq!(log.head(), Offset(3));
    assert_eq!(
        log.timestamp_of(Offset(2)).await,
        Some(1_700_000_000_000),
        "read from disk: the cache starts empty"
    );
    assert_eq!(log.append(record(b"four", None)).await.unwrap(), Offset(4));
    let bodies: Vec<_> = read_all(&log, 1).await.into_iter().map(|r| r.1).collect();
    assert_eq!(bodies, vec!["one", "two", "three", "four"]);
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_the_next_append_continues() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Always);
    let Opened { log, .. } = open(&cfg);
    append_n(&log, 5, 20).await;
    log.close().await.unwrap();
    let path = segments(&cfg).pop().unwrap();
    let len = fs::metadata(&path).unwrap().len();
    // Cut the last frame in half, as a crash in the middle of write(2) would.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 15)
        .unwrap();

    let opened = open(&cfg);
    assert!(opened.truncated_bytes > 0 && opened.truncated_bytes < len - HEADER_LEN);
    let log = opened.log;
    assert_eq!(log.head(), Offset(4));
    assert_eq!(log.append(record(b"next", None)).await.unwrap(), Offset(5));
    let got = read_all(&log, 1).await;
    assert_eq!(
        got.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(got[3].1, format!("b3{}", "x".repeat(20)).as_bytes());
    assert_eq!(got[4].1, "next");
    log.close().await.unwrap();
    assert_eq!(open(&cfg).truncated_bytes, 0, "the cut log is clean");
}

#[tokio::test]
async fn garbage_after_the_last_frame_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Never);
    let Opened { log, .. } = open(&cfg);
    append_n(&log, 3, 0).await;
    log.close().await.unwrap();
    let path = segments(&cfg).pop().unwrap();
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(&[0u8; 100]).unwrap();
    let opened = open(&cfg);
    assert_eq!(opened.truncated_bytes, 100);
    assert_eq!(opened.log.head(), Offset(3));
}

#[tokio::test]
async fn corruption_followed_by_valid_records_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Always);
    let Opened { log, .. } = open(&cfg);
    append_n(&log, 10, 30).await;
    log.close().await.unwrap();
    let path = segments(&cfg).pop().unwrap();
    let frame_len = {
        let data = fs::read(&path).unwrap();
        let (range, _) = segment::check_frame(&data[HEADER_LEN as usize..]).unwrap();
        range.end as u64
    };
    // Flip a body byte of the third record.
    let third = HEADER_LEN + 2 * frame_len;
    flip_byte(&path, third + frame_len - 3);

    match Log::open(cfg.clone()) {
        Err(LogError::Corrupt {
            segment, position, ..
        }) => {
            assert_eq!(segment, path);
            assert_eq!(position, third);
        }
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("expected Corrupt, the log opened"),
    }
    // Nothing was cut: the file is as it was.
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        HEADER_LEN + 10 * frame_len
    );
}

fn flip_byte(path: &Path, at: u64) {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut data = fs::read(path).unwrap();
    data[at as usize] ^= 0x5a;
    file.seek(SeekFrom::Start(at)).unwrap();
    file.write_all(&data[at as usize..at as usize + 1]).unwrap();
}

#[tokio::test]
async fn segments_roll_and_reads_cross_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Interval);
    cfg.segment_bytes = 4096;
    cfg.cache_bytes = 2048; // most reads go to disk
    let Opened { log, .. } = open(&cfg);
    append_n(&log, 600, 50).await;
    let mut head = log.watch_head();
    tokio::time::timeout(DEADLINE, head.wait_for(|h| *h == Offset(600)))
        .await
        .unwrap()
        .unwrap();
    let count = segments(&cfg).len();
    assert!(count > 10, "only {count} segments");
    assert_eq!(log.stats().segments, count);
    let got = read_all(&log, 1).await;
    assert_eq!(
        got.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=600).collect::<Vec<_>>()
    );
    // Start in the middle of a sealed segment, then again (now with a position hint).
    for _ in 0..2 {
        let got = decoded(&log.read(Offset(333), 5, 1 << 20).await.unwrap());
        assert_eq!(
            got.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![333, 334, 335, 336, 337]
        );
        assert_eq!(got[0].1, format!("b332{}", "x".repeat(50)).as_bytes());
    }
    log.close().await.unwrap();
    let Opened { log, .. } = open(&cfg);
    assert_eq!(read_all(&log, 1).await.len(), 600);
    assert_eq!(
        log.append(record(b"more", None)).await.unwrap(),
        Offset(601)
    );
}

#[tokio::test]
async fn a_corrupt_byte_in_a_sealed_segment_fails_the_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Never);
    cfg.segment_bytes = 2048;
    cfg.cache_bytes = 0;
    let Opened { log, .. } = open(&cfg);
    append_n(&log, 100, 40).await;
    log.close().await.unwrap();
    let first = segments(&cfg).remove(0);
    flip_byte(&first, HEADER_LEN + 200);

    // Opening does not look at sealed segments; reading does.
    let Opened { log, .. } = open(&cfg);
    match log.read(Offset(1), 1000, 1 << 20).await {
        Err(ReadError::Corrupt {
            segment, position, ..
        }) => {
            assert_eq!(segment, first);
            assert!((HEADER_LEN..=HEADER_LEN + 200).contains(&position));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn opening_does_not_scan_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Never);
    cfg.segment_bytes = 8192;
    let Opened { log, .. } = open(&cfg);
    append_n(&log, 3000, 100).await;
    log.close().await.unwrap();
    let paths = segments(&cfg);
    let total: u64 = paths.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    let active = fs::metadata(paths.last().unwrap()).unwrap().len();
    assert!(paths.len() > 30);

    let Opened { log, .. } = open(&cfg);
    assert_eq!(log.state().scanned_bytes, active);
    assert!(active * 20 < total);
    assert_eq!(log.stats().bytes, total);
    assert_eq!(log.stats().segments, paths.len());
    assert_eq!(log.head(), Offset(3000));
    assert_eq!(read_all(&log, 2990).await.len(), 11);
}

#[tokio::test]
async fn retention_deletes_only_passed_and_old_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Never);
    cfg.segment_bytes = 2048;
    let Opened { log, .. } = open(&cfg);
    append_n(&log, 200, 40).await;
    let bases: Vec<u64> = segment::list(&cfg.dir).unwrap().into_keys().collect();
    assert!(bases.len() > 5);
    let hour = Duration::from_secs(3600);

    // Inside the window (young and small): nothing goes, whatever the cursor.
    assert_eq!(log.retain(Offset(1000), hour, u64::MAX).unwrap(), 0);
    // No host has passed the first segment: nothing goes, however old.
    assert_eq!(
        log.retain(Offset(bases[1] - 1), Duration::ZERO, 0).unwrap(),
        0
    );
    assert_eq!(log.oldest(), Offset(1));

    // Hosts passed the first two segments; the size limit is exceeded.
    let deleted = log.retain(Offset(bases[2]), hour, 0).unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(log.oldest(), Offset(bases[2]));
    assert_eq!(segments(&cfg).len(), bases.len() - 2);
    match log.read(Offset(1), 10, 1 << 20).await {
        Err(ReadError::Trimmed { oldest }) => assert_eq!(oldest, Offset(bases[2])),
        other => panic!("expected Trimmed, got {other:?}"),
    }
    assert_eq!(
        log.read(Offset(bases[2]), 1, 1 << 20).await.unwrap().len(),
        1
    );

    // Everything passed and old: all sealed segments go, never the active one.
    let deleted = log
        .retain(Offset(u64::MAX), Duration::ZERO, u64::MAX)
        .unwrap();
    assert_eq!(deleted, bases.len() - 3);
    let left = segment::list(&cfg.dir).unwrap();
    assert_eq!(
        left.keys().copied().collect::<Vec<_>>(),
        vec![bases[bases.len() - 1]]
    );
    assert_eq!(log.oldest(), Offset(bases[bases.len() - 1]));
    assert_eq!(log.stats().segments, 1);
    assert_eq!(
        log.stats().bytes,
        fs::metadata(left.values().next().unwrap()).unwrap().len()
    );
    assert_eq!(
        log.append(record(b"after", None)).await.unwrap(),
        Offset(201)
    );
    log.close().await.unwrap();

    let Opened { log, .. } = open(&cfg);
    assert_eq!(log.oldest(), Offset(bases[bases.len() - 1]));
    assert_eq!(log.head(), Offset(201));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_get_unique_increasing_offsets() {
    for policy in [FsyncPolicy::Always, FsyncPolicy::Interval] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), policy);
        cfg.segment_bytes = 64 << 10;
        let Opened { log, .. } = open(&cfg);
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::with_capacity(500);
                    for i in 0..500 {
                        let body = format!("{t}:{i}");
                        let offset = log.append(record(body.as_bytes(), None)).await.unwrap();
                        mine.push((offset.0, body));
                    }
                    mine
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            let mine = task.await.unwrap();
            assert!(mine.windows(2).all(|w| w[0].0 < w[1].0), "per-task order");
            all.extend(mine);
        }
        all.sort();
        assert_eq!(
            all.iter().map(|r| r.0).collect::<Vec<_>>(),
            (1..=8000).collect::<Vec<_>>()
        );
        let mut head = log.watch_head();
        tokio::time::timeout(DEADLINE, head.wait_for(|h| *h == Offset(8000)))
            .await
            .unwrap()
            .unwrap();
        let got = read_all(&log, 1).await;
        assert_eq!(got.len(), 8000);
        for ((offset, body), (want_offset, want_body)) in got.iter().zip(&all) {
            assert_eq!((offset, body.as_ref()), (want_offset, want_body.as_bytes()));
        }
        log.close().await.unwrap();
    }
}

#[tokio::test]
async fn the_disk_quota_refuses_appends_without_using_an_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Always);
    cfg.max_disk_bytes = 1000;
    let Opened { log, .. } = open(&cfg);
    let mut accepted = 0;
    let err = loop {
        match log.append(record(&[7u8; 100], None)).await {
            Ok(offset) => {
                accepted += 1;
                assert_eq!(offset, Offset(accepted));
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(err, AppendError::QuotaFull), "{err:?}");
    assert!(accepted >= 5);
    assert!(log.stats().bytes <= 1000);
    // A record that still fits goes in with the next offset.
    let small = Record {
        headers: vec![],
        content_type: None,
        target: "/".into(),
        ..record(b"", None)
    };
    if log.stats().bytes + 8 + small.encoded_len() as u64 <= 1000 {
        assert_eq!(log.append(small).await.unwrap(), Offset(accepted + 1));
    }
}

#[tokio::test]
async fn a_record_too_large_for_the_wire_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Opened { log, .. } = open(&config(dir.path(), FsyncPolicy::Never));
    let mut r = record(b"x", None);
    r.target = "/".repeat(70_000);
    assert!(matches!(log.append(r).await, Err(AppendError::TooLarge)));
    assert_eq!(log.append(record(b"ok", None)).await.unwrap(), Offset(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_append_queue_answers_busy() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Never);
    cfg.append_queue = 1;
    let Opened { log, .. } = open(&cfg);

    // Stall the writer: it takes the cache lock after every write.
    let state = log.state().clone();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let staller = std::thread::spawn(move || {
        let _guard = super::state::lock(&state.cache);
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv();
    });
    locked_rx.recv().unwrap();

    // The stalled writer holds one batch (what was queued when it woke up) and the queue holds
    // one more, so within a few appends the queue refuses. Each append is polled once: its
    // try_send happens then; the record stays queued even though the future is dropped.
    let mut queued = 0;
    let busy = loop {
        match log.append(record(b"x", None)).now_or_never() {
            None => queued += 1,
            Some(result) => break result,
        }
        assert!(queued <= 3, "the queue never filled");
    };
    assert!(matches!(busy, Err(AppendError::Busy)), "{busy:?}");
    release_tx.send(()).unwrap();
    staller.join().unwrap();
    let mut head = log.watch_head();
    tokio::time::timeout(DEADLINE, head.wait_for(|h| *h == Offset(queued)))
        .await
        .expect("the queued appends are written")
        .unwrap();
    assert_eq!(
        log.append(record(b"y", None)).await.unwrap(),
        Offset(queued + 1),
        "the refused append used no offset"
    );
}

#[tokio::test]
async fn close_writes_and_syncs_everything_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Interval);
    cfg.fsync_interval = Duration::from_secs(3600); // only close syncs after the first
    let Opened { log, .. } = open(&cfg);
    append_n(&log, 20, 0).await;
    log.close().await.unwrap();
    assert_eq!(log.head(), Offset(20));
    log.close().await.unwrap();
    let Opened { log, .. } = open(&cfg);
    assert_eq!(log.head(), Offset(20));
}

#[tokio::test]
async fn a_log_open_elsewhere_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Never);
    let Opened { log, .. } = open(&cfg);
    // A second open stands in for a second process: the lock is per open file.
    match Log::open(cfg.clone()) {
        Err(LogError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
        Err(other) => panic!("expected WouldBlock, got {other}"),
        Ok(_) => panic!("the log opened twice"),
    }
    log.close().await.unwrap();
    drop(log);
    assert_eq!(
        open(&cfg).log.head(),
        Offset::ZERO,
        "the lock goes with the log"
    );
}

#[tokio::test]
async fn a_log_without_its_meta_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Never);
    let Opened { log, .. } = open(&cfg);
    append_n(&log, 1, 0).await;
    log.close().await.unwrap();
    fs::remove_file(cfg.dir.join("meta")).unwrap();
    assert!(matches!(Log::open(cfg), Err(LogError::BadMeta(_))));
}

/// Measurements, not tests: run with
/// `REFLEKTOR_LOG_MEASURE=1 cargo nextest run -p reflektor --run-ignored ignored-only --no-capture log::tests::measure`
/// (without the variable they return at once, so `--run-ignored all` stays quick).
mod measure {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use super::*;

    const TASKS: usize = 64;

    fn enabled() -> bool {
        let on = std::env::var_os("REFLEKTOR_LOG_MEASURE").is_some();
        if !on {
            println!("set REFLEKTOR_LOG_MEASURE=1 to measure");
        }
        on
    }
    const RUN_FOR: Duration = Duration::from_secs(3);
    /// Bound on appends per task, whatever the speed.
    const MAX_PER_TASK: usize = 200_000;

    /// 64 tasks append 512-byte records for a few seconds; prints records/s and latencies.
    async fn throughput(policy: FsyncPolicy) {
        let dir = tempfile::tempdir().unwrap();
        let Opened { log, .. } = open(&config(dir.path(), policy));
        let stop = Arc::new(AtomicBool::new(false));
        let body = Bytes::from(vec![b'x'; 512]);
        let start = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let (log, stop, body) = (log.clone(), stop.clone(), body.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while !stop.load(Ordering::Relaxed) && latencies.len() < MAX_PER_TASK {
                        let mut r = record(b"", None);
                        r.body = body.clone();
                        let t = Instant::now();
                        match log.append(r).await {
                            Ok(_) => latencies.push(t.elapsed().as_micros() as u64),
                            Err(AppendError::Busy) => tokio::task::yield_now().await,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    latencies
                })
            })
            .collect();
        tokio::time::sleep(RUN_FOR).await;
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        let elapsed = start.elapsed().as_secs_f64();
        log.close().await.unwrap();
        all.sort_unstable();
        let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
        println!(
            "fsync={policy}: {} records in {elapsed:.2}s = {:.0} rec/s; latency p50 {} us, p99 {} us, max {} us",
            all.len(),
            all.len() as f64 / elapsed,
            pct(0.50),
            pct(0.99),
            pct(1.0),
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement"]
    async fn measure_append_throughput() {
        if !enabled() {
            return;
        }
        throughput(FsyncPolicy::Always).await;
        throughput(FsyncPolicy::Interval).await;
        throughput(FsyncPolicy::Never).await;
    }

    /// Writes ~1 GiB under `never`, then times opening it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement"]
    async fn measure_open_of_a_1_gib_log() {
        if !enabled() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), FsyncPolicy::Never);
        let Opened { log, .. } = open(&cfg);
        let body = Bytes::from(vec![b'x'; 512]);
        let per_task = (1usize << 30) / 570 / TASKS;
        let start = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let (log, body) = (log.clone(), body.clone());
                tokio::spawn(async move {
                    let mut done = 0;
                    while done < per_task {
                        let mut r = record(b"", None);
                        r.body = body.clone();
                        match log.append(r).await {
                            Ok(_) => done += 1,
                            Err(AppendError::Busy) => tokio::task::yield_now().await,
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        log.close().await.unwrap();
        let stats = log.stats();
        println!(
            "wrote {} records, {} bytes in {} segments in {:.2}s",
            stats.head,
            stats.bytes,
            stats.segments,
            start.elapsed().as_secs_f64()
        );
        drop(log);

        let start = Instant::now();
        let Opened { log, .. } = open(&cfg);
        let opened = start.elapsed();
        println!(
            "opened in {:.1} ms, scanned {} bytes (active segment only), head {}",
            opened.as_secs_f64() * 1000.0,
            log.state().scanned_bytes,
            log.head()
        );
        let start = Instant::now();
        let got = log.read(Offset(1), 1000, 1 << 20).await.unwrap();
        println!(
            "first read from the oldest sealed segment: {} records in {:.2} ms",
            got.len(),
            start.elapsed().as_secs_f64() * 1000.0
        );
    }
}

/// Set in the child process of [`nothing_acknowledged_is_lost_when_the_process_is_killed`].
const KILL_DIR_ENV: &str = "REFLEKTOR_LOG_TEST_KILL_DIR";
const KILL_POLICY_ENV: &str = "REFLEKTOR_LOG_TEST_KILL_POLICY";

/// Run in a child process: append until killed, printing each acknowledged offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by nothing_acknowledged_is_lost_when_the_process_is_killed"]
async fn append_until_killed() {
    let (Ok(dir), Ok(policy)) = (std::env::var(KILL_DIR_ENV), std::env::var(KILL_POLICY_ENV))
    else {
        return;
    };
    let mut cfg = LogConfig::new(PathBuf::from(dir));
    cfg.fsync = policy.parse().unwrap();
    cfg.segment_bytes = 256 << 10;
    let Opened { log, .. } = open(&cfg);
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                for i in 0..1_000_000u64 {
                    let body = format!("{t}:{i}:{}", "y".repeat(200));
                    match log.append(record(body.as_bytes(), None)).await {
                        Ok(offset) => println!("acked {offset}"),
                        Err(AppendError::Busy) => tokio::task::yield_now().await,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn nothing_acknowledged_is_lost_when_the_process_is_killed() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    for policy in [FsyncPolicy::Always, FsyncPolicy::Interval] {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join("log");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "log::embedded::tests::append_until_killed",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(KILL_DIR_ENV, &log_dir)
            .env(KILL_POLICY_ENV, policy.as_str())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut acked = Vec::new();
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(offset) = line.strip_prefix("acked ") {
                acked.push(offset.parse::<u64>().unwrap());
                if acked.len() == 3000 {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL: no close, no flush
        child.wait().unwrap();
        assert_eq!(acked.len(), 3000, "{policy}: the child stopped early");

        let Opened { log, .. } = open(&LogConfig {
            fsync: policy,
            ..LogConfig::new(log_dir)
        });
        let newest = *acked.iter().max().unwrap();
        assert!(
            log.head().0 >= newest,
            "{policy}: head {} < acked {newest}",
            log.head()
        );
        let got = read_all(&log, 1).await;
        assert_eq!(got.len() as u64, log.head().0, "{policy}");
        for (i, (offset, _)) in got.iter().enumerate() {
            assert_eq!(*offset, i as u64 + 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_following_the_head_from_disk_sees_every_record_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Never);
    cfg.segment_bytes = 16 << 10;
    cfg.cache_bytes = 0; // every read goes to the segment files the writer is appending to
    let Opened { log, .. } = open(&cfg);
    const TOTAL: u64 = 4000;
    let reader = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut head = log.watch_head();
            let mut next = 1;
            while next <= TOTAL {
                let got = log.read(Offset(next), 50, 16 << 10).await.unwrap();
                if got.is_empty() {
                    tokio::time::timeout(DEADLINE, head.wait_for(|h| h.0 >= next))
                        .await
                        .expect("the head moves")
                        .unwrap();
                    continue;
                }
                for (offset, body) in decoded(&got) {
                    assert_eq!(offset, next);
                    assert!(body.starts_with(b"t"));
                    next += 1;
                }
            }
        })
    };
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                for i in 0..TOTAL / 8 {
                    let body = format!("t{t}:{i}:{}", "z".repeat(60));
                    log.append(record(body.as_bytes(), None)).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    tokio::time::timeout(DEADLINE, reader)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_segment_created_just_before_a_crash_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Always);
    cfg.segment_bytes = 1024;
    let Opened { log, .. } = open(&cfg);
    append_n(&log, 40, 30).await;
    log.close().await.unwrap();
    // The roll created the next segment, but its header never reached the disk.
    fs::File::create(cfg.dir.join(segment::file_name(41))).unwrap();

    let opened = open(&cfg);
    assert_eq!(opened.truncated_bytes, 0);
    let log = opened.log;
    assert_eq!(log.head(), Offset(40));
    assert_eq!(log.append(record(b"41", None)).await.unwrap(), Offset(41));
    let got = read_all(&log, 1).await;
    assert_eq!(
        got.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=41).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn under_interval_appends_answer_after_write_and_readers_wait_for_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Interval);
    cfg.fsync_interval = Duration::from_secs(3600);
    let Opened { log, .. } = open(&cfg);
    // An idle syncer syncs the first write at once...
    assert_eq!(log.append(record(b"1", None)).await.unwrap(), Offset(1));
    let mut head = log.watch_head();
    tokio::time::timeout(DEADLINE, head.wait_for(|h| *h == Offset(1)))
        .await
        .unwrap()
        .unwrap();
    // ...and then not for an hour: these answer without it, but stay invisible to readers.
    append_n(&log, 5, 0).await;
    assert_eq!(log.head(), Offset(1));
    assert_eq!(log.read(Offset(2), 10, 1 << 20).await.unwrap().len(), 0);
    log.close().await.unwrap();
    assert_eq!(log.head(), Offset(6), "close syncs and publishes");
    assert_eq!(log.read(Offset(2), 10, 1 << 20).await.unwrap().len(), 5);
}
