//! The log under disk faults, injected through [`FaultyFs`]: failed `fdatasync`s, a full disk
//! while writing or starting a segment, segments that vanished, and the idempotency keys that
//! come back after a restart.

use std::sync::Arc;

use super::super::io::faulty::{EIO, ENOSPC, FaultyFs, Gate, Op, Step};
use super::*;

fn faulty_config(dir: &Path, fsync: FsyncPolicy) -> (LogConfig, Arc<FaultyFs>) {
    let fs = Arc::new(FaultyFs::default());
    let mut cfg = config(dir, fsync);
    cfg.fs = fs.clone();
    (cfg, fs)
}

/// Poll `cond` until it holds; panic after [`DEADLINE`].
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn now_ms() -> u64 {
    shared::sign::unix_ms()
}

/// A record accepted now, with an idempotency key.
fn keyed(key: &str) -> Record {
    Record {
        timestamp_ms: now_ms(),
        ..record(key.as_bytes(), Some(key))
    }
}

/// Append records until one is refused; the offsets accepted and the refusal.
async fn append_until_refused(log: &Log, pad: usize) -> (Vec<u64>, AppendError) {
    let mut accepted = Vec::new();
    loop {
        let body = format!("{}{}", accepted.len(), "x".repeat(pad));
        match log.append(record(body.as_bytes(), None)).await {
            Ok(offset) => accepted.push(offset.0),
            Err(e) => return (accepted, e),
        }
        assert!(accepted.len() < 10_000, "nothing was refused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fdatasync_in_one_syncer_stops_what_a_concurrent_successful_one_would_acknowledge()
{
    let dir = tempfile::tempdir().unwrap();
    let (cfg, fs) = faulty_config(dir.path(), FsyncPolicy::Always);
    let Opened { log, .. } = open(&cfg);
    // The first sync is held in the kernel, so to speak, while its write-back fails; a second
    // sync of the same file meanwhile returns success, as Linux does once the error was
    // reported to someone else.
    let gate = Arc::new(Gate::default());
    let synced_before = fs.returned(Op::SyncData); // creating the first segment syncs
    fs.next(Op::SyncData, Step::HoldThenFail(gate.clone(), EIO));
    let first = tokio::spawn({
        let log = log.clone();
        async move { log.append(record(b"first", None)).await }
    });
    let held = gate.clone();
    let entered = tokio::task::spawn_blocking(move || held.wait_entered(DEADLINE))
        .await
        .unwrap();
    assert!(entered, "the first sync started");
    let second = tokio::spawn({
        let log = log.clone();
        async move { log.append(record(b"second", None)).await }
    });
    let fs2 = fs.clone();
    let returned = tokio::task::spawn_blocking(move || {
        fs2.wait_returned(Op::SyncData, synced_before + 1, DEADLINE)
    })
    .await
    .unwrap();
    assert!(returned, "the second sync returned");
    assert!(
        !second.is_finished() && !first.is_finished(),
        "nothing is acknowledged while an overlapping sync is still in flight"
    );
    gate.open();
    for append in [first, second] {
        let result = tokio::time::timeout(DEADLINE, append)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(result, Err(AppendError::Failed(_))), "{result:?}");
    }
    assert_eq!(log.head(), Offset::ZERO, "nothing became visible");
    assert!(log.failure().is_some());
    assert!(matches!(
        log.append(record(b"later", None)).await,
        Err(AppendError::Failed(_))
    ));
    assert!(log.close().await.is_err(), "close reports the failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_overlapping_successful_syncs_every_append_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, fs) = faulty_config(dir.path(), FsyncPolicy::Always);
    let Opened { log, .. } = open(&cfg);
    let mut appends = Vec::new();
    for i in 0..200 {
        let log = log.clone();
        appends.push(tokio::spawn(async move {
            log.append(record(format!("{i}").as_bytes(), None)).await
        }));
    }
    let mut offsets = Vec::new();
    for a in appends {
        offsets.push(a.await.unwrap().unwrap().0);
    }
    offsets.sort_unstable();
    assert_eq!(offsets, (1..=200).collect::<Vec<_>>());
    assert_eq!(log.head(), Offset(200));
    assert!(fs.returned(Op::SyncData) >= 1);
    log.close().await.unwrap();
}

#[tokio::test]
async fn under_interval_a_failed_sync_stops_appends_and_publishes_nothing_it_covered() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, fs) = faulty_config(dir.path(), FsyncPolicy::Interval);
    let Opened { log, .. } = open(&cfg);
    let synced_before = fs.returned(Op::SyncData);
    fs.next(Op::SyncData, Step::Fail(EIO));
    // Answered after write(2), as `interval` promises; the sync that follows fails.
    assert_eq!(log.append(record(b"1", None)).await.unwrap(), Offset(1));
    wait_until("the sync failed", || log.failure().is_some()).await;
    assert_eq!(fs.returned(Op::SyncData), synced_before + 1);
    let refused = log.append(record(b"2", None)).await;
    assert!(
        matches!(refused, Err(AppendError::Failed(_))),
        "{refused:?}"
    );
    assert_eq!(log.head(), Offset::ZERO);
    assert_eq!(log.read(Offset(1), 10, 1 << 20).await.unwrap().len(), 0);
    assert!(log.failure().unwrap().contains("fdatasync"));
}

#[tokio::test]
async fn a_failed_sync_while_sealing_a_segment_stops_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, fs) = faulty_config(dir.path(), FsyncPolicy::Never);
    cfg.segment_bytes = 1024;
    let Opened { log, .. } = open(&cfg);
    fs.fail_always(Op::SyncData, EIO);
    let (accepted, refused) = append_until_refused(&log, 40).await;
    assert!(!accepted.is_empty());
    assert!(matches!(refused, AppendError::Failed(_)), "{refused:?}");
    fs.heal(Op::SyncData);
    assert!(
        matches!(
            log.append(record(b"x", None)).await,
            Err(AppendError::Failed(_))
        ),
        "a failed sync is not forgotten when the disk answers again"
    );
}

#[tokio::test]
async fn a_full_disk_when_starting_a_segment_refuses_appends_until_there_is_room_again() {
    for fault in [Op::CreateNew, Op::Write, Op::SyncDir] {
        let dir = tempfile::tempdir().unwrap();
        let (mut cfg, fs) = faulty_config(dir.path(), FsyncPolicy::Always);
        cfg.segment_bytes = 1024;
        let Opened { log, .. } = open(&cfg);
        // Fill the active segment; the next append has to start a new one.
        let mut accepted = Vec::new();
        while log.stats().bytes < cfg.segment_bytes {
            accepted.push(log.append(record(b"fill", None)).await.unwrap().0);
        }
        fs.fail_always(fault, ENOSPC);
        let refused = log.append(record(b"x", None)).await.unwrap_err();
        assert!(
            matches!(refused, AppendError::Unavailable(_)),
            "{fault:?}: {refused:?}"
        );
        assert!(
            log.failure().is_none(),
            "{fault:?}: a full disk is not fatal"
        );
        // Still full: still refused, still not fatal.
        assert!(matches!(
            log.append(record(b"x", None)).await,
            Err(AppendError::Unavailable(_))
        ));
        assert_eq!(
            segments(&cfg).len(),
            1,
            "{fault:?}: no half-made segment is left behind"
        );
        fs.heal(fault);
        let next = accepted.last().unwrap() + 1;
        assert_eq!(
            log.append(record(b"room again", None)).await.unwrap(),
            Offset(next),
            "{fault:?}: the refused appends used no offset"
        );
        assert_eq!(segments(&cfg).len(), 2);
        let got = read_all(&log, 1).await;
        assert_eq!(
            got.iter().map(|r| r.0).collect::<Vec<_>>(),
            (1..=next).collect::<Vec<_>>()
        );
        log.close().await.unwrap();
        assert_eq!(open(&cfg).log.head(), Offset(next));
    }
}

#[tokio::test]
async fn a_segment_a_failed_roll_could_not_delete_is_replaced_by_the_next_roll() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, fs) = faulty_config(dir.path(), FsyncPolicy::Always);
    cfg.segment_bytes = 1024;
    let Opened { log, .. } = open(&cfg);
    fs.next(Op::SyncDir, Step::Fail(ENOSPC));
    fs.next(Op::Remove, Step::Fail(EIO));
    let (accepted, refused) = append_until_refused(&log, 40).await;
    assert!(
        matches!(refused, AppendError::Unavailable(_)),
        "{refused:?}"
    );
    assert_eq!(segments(&cfg).len(), 2, "the failed roll left its file");
    let next = accepted.last().unwrap() + 1;
    assert_eq!(
        log.append(record(b"again", None)).await.unwrap(),
        Offset(next)
    );
    assert_eq!(read_all(&log, 1).await.len() as u64, next);
}

#[tokio::test]
async fn a_failed_write_is_taken_back_and_uses_no_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, fs) = faulty_config(dir.path(), FsyncPolicy::Always);
    let Opened { log, .. } = open(&cfg);
    append_n(&log, 2, 0).await;
    fs.next(Op::Write, Step::Partial(5, ENOSPC));
    let refused = log.append(record(b"torn", None)).await;
    assert!(
        matches!(refused, Err(AppendError::Unavailable(_))),
        "{refused:?}"
    );
    assert_eq!(log.append(record(b"3", None)).await.unwrap(), Offset(3));
    log.close().await.unwrap();
    let opened = open(&cfg);
    assert_eq!(
        opened.truncated_bytes, 0,
        "the partial write was taken back"
    );
    let got = read_all(&opened.log, 1).await;
    assert_eq!(got.last().unwrap(), &(3, Bytes::from_static(b"3")));
}

#[tokio::test]
async fn a_failed_write_that_cannot_be_taken_back_stops_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, fs) = faulty_config(dir.path(), FsyncPolicy::Always);
    let Opened { log, .. } = open(&cfg);
    append_n(&log, 1, 0).await;
    fs.next(Op::Write, Step::Partial(5, EIO));
    fs.next(Op::SetLen, Step::Fail(EIO));
    let refused = log.append(record(b"torn", None)).await;
    assert!(
        matches!(refused, Err(AppendError::Failed(_))),
        "{refused:?}"
    );
    assert!(matches!(
        log.append(record(b"x", None)).await,
        Err(AppendError::Failed(_))
    ));
    assert_eq!(log.head(), Offset(1));
}

#[tokio::test]
async fn a_segment_that_cannot_be_opened_is_a_read_error_not_an_empty_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, fs) = faulty_config(dir.path(), FsyncPolicy::Always);
    cfg.cache_bytes = 0;
    let Opened { log, .. } = open(&cfg);
    append_n(&log, 3, 0).await;
    fs.next(Op::OpenRead, Step::Fail(EIO));
    let read = log.read(Offset(1), 10, 1 << 20).await;
    assert!(matches!(read, Err(ReadError::Io(_))), "{read:?}");
    assert_eq!(log.read(Offset(1), 10, 1 << 20).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_log_whose_segments_were_removed_starts_a_new_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Always);
    let Opened { log, .. } = open(&cfg);
    let old = log.epoch();
    append_n(&log, 3, 0).await;
    log.close().await.unwrap();
    drop(log);
    for segment in segments(&cfg) {
        fs::remove_file(segment).unwrap();
    }
    assert!(cfg.dir.join("meta").exists());
    let Opened { log, .. } = open(&cfg);
    assert_ne!(
        log.epoch(),
        old,
        "offsets start over, so the log must not keep its name"
    );
    assert_eq!(log.append(record(b"1", None)).await.unwrap(), Offset(1));
    let new = log.epoch();
    log.close().await.unwrap();
    drop(log);
    let Opened { log, .. } = open(&cfg);
    assert_eq!(log.epoch(), new, "a log with segments keeps its epoch");
}

#[tokio::test]
async fn idempotency_keys_of_sealed_segments_within_the_window_come_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Always);
    cfg.segment_bytes = 1024;
    let Opened { log, .. } = open(&cfg);
    for i in 0..60 {
        log.append(keyed(&format!("key-{i:02}"))).await.unwrap();
    }
    log.close().await.unwrap();
    drop(log);
    let count = segments(&cfg).len();
    assert!(count >= 4, "only {count} segments");

    let opened = open(&cfg);
    let keys: Vec<String> = opened.recent_keys.iter().map(|k| k.0.clone()).collect();
    assert_eq!(
        keys,
        (0..60).map(|i| format!("key-{i:02}")).collect::<Vec<_>>(),
        "every key of the window, oldest first, from every segment"
    );
    assert_eq!(opened.recent_keys[7].1, Offset(8));
    opened.log.close().await.unwrap();
    drop(opened);

    // The oldest segment was last written long ago: its keys are out of the window.
    let first = segments(&cfg)[0].clone();
    fs::File::options()
        .write(true)
        .open(&first)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let opened = open(&cfg);
    assert!(opened.recent_keys.len() < 60);
    assert_eq!(opened.recent_keys.last().unwrap().0, "key-59");
    opened.log.close().await.unwrap();
    drop(opened);

    // A byte bound keeps the newest keys.
    cfg.keys_max_bytes = 10 * (6 + 16);
    let opened = open(&cfg);
    let keys: Vec<String> = opened.recent_keys.iter().map(|k| k.0.clone()).collect();
    assert_eq!(
        keys,
        (50..60).map(|i| format!("key-{i:02}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn keys_older_than_the_window_are_not_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Always);
    let Opened { log, .. } = open(&cfg);
    // `record` carries a timestamp from 2023: far outside the window.
    log.append(record(b"old", Some("old"))).await.unwrap();
    log.append(keyed("new")).await.unwrap();
    log.close().await.unwrap();
    drop(log);
    let opened = open(&cfg);
    assert_eq!(
        opened
            .recent_keys
            .iter()
            .map(|k| k.0.as_str())
            .collect::<Vec<_>>(),
        vec!["new"]
    );
}
