//! [`Log`]: the embedded log's handle; what it shares with its threads is in [`super::state`].

use std::collections::BTreeMap;
use std::fs::{File, TryLockError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use shared::{Epoch, Offset, Record};
use tokio::sync::{oneshot, watch};

use super::segment::{self, FRAME_HEADER_LEN};
use super::state::{State, lock, read_lock};
use super::writer::{self, Command, Pending, Threads};
use super::{AppendError, LogConfig, LogError, LogStats, ReadError, reader, recovery, retention};

/// Locked while a process has the log open.
const LOCK_FILE: &str = "lock";

/// Cheap to clone; every clone is the same log.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

/// What [`Log::open`] found.
pub struct Opened {
    pub log: Log,
    /// Idempotency keys of the records accepted within `keys_window`, oldest first:
    /// (key, offset, timestamp_ms), so intake can rebuild its dedupe window after a restart.
    /// At most `keys_max_bytes` of them (the newest).
    pub recent_keys: Vec<(String, Offset, u64)>,
    /// Bytes cut from a torn tail during recovery (0 when the log was clean).
    pub truncated_bytes: u64,
}

/// Owned by the handles only: dropping the last handle drops `append_tx`, which ends the
/// writer thread (after it has written what was queued).
struct Inner {
    state: Arc<State>,
    append_tx: SyncSender<Command>,
    /// Set by `close`: appends fail with `Closed` from then on.
    closed: AtomicBool,
    threads: Mutex<Option<Threads>>,
}

/// Take `<dir>/lock` so no other process writes this log at the same time.
fn lock_dir(dir: &std::path::Path) -> Result<File, LogError> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(segment::at(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(LogError::Io(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            format!("{}: the log is open in another process", dir.display()),
        ))),
        Err(TryLockError::Error(e)) => Err(segment::at(&path)(e).into()),
    }
}

impl Log {
    /// Open the log in `cfg.dir`, creating it (and its epoch) on first use. Only the active
    /// segment is scanned; a torn tail is cut off.
    ///
    /// # Errors
    /// [`LogError::Corrupt`] when damaged data is followed by valid records,
    /// [`LogError::BadMeta`] when the epoch cannot be read, [`LogError::Io`] otherwise.
    pub fn open(cfg: LogConfig) -> Result<Opened, LogError> {
        std::fs::create_dir_all(&cfg.dir).map_err(segment::at(&cfg.dir))?;
        let dir_lock = lock_dir(&cfg.dir)?;
        let found = segment::list(&cfg.dir)?;
        let fs = cfg.fs.clone();
        let epoch = super::meta::load_or_create(fs.as_ref(), &cfg.dir, !found.is_empty())?;
        let keys = recovery::KeysWanted {
            window: cfg.keys_window,
            max_bytes: cfg.keys_max_bytes,
        };
        let rec = recovery::recover(fs.as_ref(), &cfg.dir, epoch, found, keys)?;

        let oldest = rec
            .segments
            .keys()
            .next()
            .copied()
            .unwrap_or(rec.active_base);
        let head = rec.next - 1;
        let active = Arc::new(rec.active);
        let mut hints = BTreeMap::new();
        for (offset, position) in rec.hints {
            hints.insert(offset, (rec.active_base, position));
        }
        let state = Arc::new(State::new(
            cfg,
            epoch,
            rec.segments,
            rec.total_bytes,
            head,
            oldest,
            hints,
            active.clone(),
            dir_lock,
            rec.scanned_bytes,
        ));

        let (append_tx, append_rx) = mpsc::sync_channel(state.cfg.append_queue.max(1));
        let threads = writer::spawn(
            state.clone(),
            append_rx,
            writer::Active {
                file: active,
                base: rec.active_base,
                len: rec.active_len,
                next: rec.next,
            },
        )?;
        let log = Log {
            inner: Arc::new(Inner {
                state,
                append_tx,
                closed: AtomicBool::new(false),
                threads: Mutex::new(Some(threads)),
            }),
        };
        Ok(Opened {
            log,
            recent_keys: rec.recent_keys,
            truncated_bytes: rec.truncated_bytes,
        })
    }

    pub fn epoch(&self) -> Epoch {
        self.inner.state.epoch
    }

    /// Append one record; the log assigns `record.offset`. Resolves once the record is durable
    /// per policy (see the module docs). Never blocks the runtime.
    ///
    /// # Errors
    /// `Busy` when the append queue is full, `QuotaFull`, `Closed`, `TooLarge` when the record
    /// does not fit the wire format, `Unavailable` when the disk refused the write or a new
    /// segment (it recovers by itself), `Failed` once the log has stopped.
    pub async fn append(&self, record: Record) -> Result<Offset, AppendError> {
        let state = &self.inner.state;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(AppendError::Closed);
        }
        if let Some(why) = state.failure() {
            return Err(AppendError::Failed(why));
        }
        let frame = FRAME_HEADER_LEN + record.encoded_len();
        if record.validate().is_err() || u32::try_from(frame).is_err() {
            return Err(AppendError::TooLarge);
        }
        if state.total_bytes.load(Ordering::Relaxed) + frame as u64 > state.cfg.max_disk_bytes {
            return Err(AppendError::QuotaFull);
        }
        let (reply, done) = oneshot::channel();
        match self
            .inner
            .append_tx
            .try_send(Command::Append(Pending { record, reply }))
        {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(AppendError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(AppendError::Closed),
        }
        // The writer drops the reply only when it stops before handling the record.
        done.await.unwrap_or(Err(AppendError::Closed))
    }

    /// Why the log stopped accepting appends (a failed `fdatasync`, or a failed write that
    /// could not be taken back); `None` while it works. It does not recover without a restart:
    /// `/readyz` reports it.
    pub fn failure(&self) -> Option<String> {
        self.inner.state.failure()
    }

    /// Newest offset readers may see; `Offset::ZERO` when the log is empty.
    pub fn head(&self) -> Offset {
        self.inner.state.head()
    }

    /// Oldest retained offset (`head() + 1` when the log is empty).
    pub fn oldest(&self) -> Offset {
        self.inner.state.oldest()
    }

    /// Watch the visible head; it changes each time new records become visible.
    pub fn watch_head(&self) -> watch::Receiver<Offset> {
        self.inner.state.watch_head()
    }

    /// Up to `max_records` / `max_bytes` (at least one record when any is available) encoded
    /// records with offset `>= from` and `<= head()`, in order; empty when there is nothing new.
    /// `from` of zero means "from the oldest".
    ///
    /// # Errors
    /// `Trimmed` when `from` is below `oldest()`, `Corrupt` when a stored frame fails its
    /// checks, `Io` when the disk read failed.
    pub async fn read(
        &self,
        from: Offset,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Bytes>, ReadError> {
        let state = &self.inner.state;
        let from = from.max(Offset(1));
        let head = state.head();
        let oldest = state.oldest();
        if from < oldest {
            return Err(ReadError::Trimmed { oldest });
        }
        if from > head || max_records == 0 {
            return Ok(Vec::new());
        }
        if let Some(records) = lock(&state.cache).read(from, head, max_records, max_bytes) {
            return Ok(records);
        }
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            reader::read(&state, from, head, max_records, max_bytes)
        })
        .await
        .map_err(|e| ReadError::Io(format!("disk read task failed: {e}")))?
    }

    /// Acceptance time (Unix ms) of the record at `offset`, if it is retained and visible.
    pub async fn timestamp_of(&self, offset: Offset) -> Option<u64> {
        let state = &self.inner.state;
        if offset < state.oldest() || offset > state.head() || offset == Offset::ZERO {
            return None;
        }
        let cached = lock(&state.cache).get(offset);
        let record = match cached {
            Some(record) => record,
            None => self.read(offset, 1, 0).await.ok()?.into_iter().next()?,
        };
        Record::peek_timestamp_ms(&record)
    }

    pub fn stats(&self) -> LogStats {
        let state = &self.inner.state;
        LogStats {
            segments: read_lock(&state.segments).len(),
            bytes: state.total_bytes.load(Ordering::Relaxed),
            oldest: state.oldest(),
            head: state.head(),
        }
    }

    /// Delete whole sealed segments whose records are all `< min_cursor` AND that fall outside
    /// the retention window (newest record older than `max_age`, or the log larger than
    /// `max_bytes`). Never deletes the active segment. Returns how many were deleted. Does file
    /// I/O (unlink, directory fsync): call it from a blocking context.
    ///
    /// # Errors
    /// [`LogError::Io`] when a segment could not be inspected or deleted.
    pub fn retain(
        &self,
        min_cursor: Offset,
        max_age: Duration,
        max_bytes: u64,
    ) -> Result<usize, LogError> {
        retention::retain(&self.inner.state, min_cursor, max_age, max_bytes)
    }

    /// Stop accepting appends, write and `fdatasync` everything queued, stop the threads.
    /// Later calls return at once.
    ///
    /// # Errors
    /// [`LogError::Io`] when the final `fdatasync` failed.
    pub async fn close(&self) -> Result<(), LogError> {
        self.inner.closed.store(true, Ordering::Release);
        let Some(threads) = lock(&self.inner.threads).take() else {
            return Ok(());
        };
        let append_tx = self.inner.append_tx.clone();
        let joined = tokio::task::spawn_blocking(move || {
            // Blocks only until the writer makes room; it is draining the queue.
            let _ = append_tx.send(Command::Shutdown);
            let written = threads.writer.join();
            for syncer in threads.syncers {
                let _ = syncer.join();
            }
            written
        })
        .await
        .map_err(|e| LogError::Io(std::io::Error::other(e.to_string())))?;
        // Nothing writes to the directory any more: another open may take it.
        self.inner.state.release_dir_lock();
        match joined {
            Ok(result) => result.map_err(LogError::Io),
            Err(_) => Err(LogError::Io(std::io::Error::other(
                "the log writer thread panicked",
            ))),
        }
    }

    #[cfg(test)]
    pub(super) fn state(&self) -> &Arc<State> {
        &self.inner.state
    }
}
