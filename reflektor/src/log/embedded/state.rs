//! [`State`]: what the embedded log's handles, writer thread and syncer threads share, and the
//! lock helpers every file of the log uses. It imports nothing of the log's threads, so the
//! writer, reader, syncer and retention files depend on it and not on each other.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use shared::{Epoch, Offset};
use tokio::sync::watch;

use super::LogConfig;
use super::cache::Cache;
use super::segment::SegmentEntry;

/// Most reader position hints kept (the writer leaves one per MiB written).
const MAX_HINTS: usize = 1 << 16;

/// Shared by the handles, the writer thread and the syncer threads.
pub(super) struct State {
    pub(super) cfg: LogConfig,
    pub(super) epoch: Epoch,
    /// Every segment by base offset; the last one is active. Short critical sections only.
    pub(super) segments: RwLock<BTreeMap<u64, SegmentEntry>>,
    /// Size of all segment files (the quota counts this).
    pub(super) total_bytes: AtomicU64,
    /// Newest offset readers may see.
    head: AtomicU64,
    head_tx: watch::Sender<Offset>,
    /// Oldest retained offset.
    pub(super) oldest: AtomicU64,
    pub(super) cache: Mutex<Cache>,
    /// Reader position hints: offset -> (segment base, file position of that offset's frame).
    hints: Mutex<BTreeMap<u64, (u64, u64)>>,
    /// The active segment, for the syncer (the writer swaps it when rolling).
    pub(super) active: Mutex<Arc<File>>,
    /// Set when a write could not be taken back or an `fdatasync` failed: the log no longer
    /// accepts appends, acknowledges or publishes anything (see the module docs).
    failed: Mutex<Option<String>>,
    has_failed: AtomicBool,
    /// Held open until the log is closed: its lock keeps a second process out of `dir`.
    dir_lock: Mutex<Option<File>>,
    /// Bytes read by recovery when this log was opened.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) scanned_bytes: u64,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn read_lock<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn write_lock<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    pub(super) fn head(&self) -> Offset {
        Offset(self.head.load(Ordering::Acquire))
    }

    pub(super) fn oldest(&self) -> Offset {
        Offset(self.oldest.load(Ordering::Acquire))
    }

    /// Make records up to `head` visible to readers (never moves backwards).
    pub(super) fn publish_head(&self, head: u64) {
        let previous = self.head.fetch_max(head, Ordering::AcqRel);
        if head > previous {
            self.head_tx.send_if_modified(|visible| {
                if head > visible.0 {
                    *visible = Offset(head);
                    true
                } else {
                    false
                }
            });
        }
    }

    pub(super) fn failure(&self) -> Option<String> {
        if self.has_failed.load(Ordering::Acquire) {
            lock(&self.failed).clone()
        } else {
            None
        }
    }

    /// Stop accepting appends for good.
    pub(super) fn fail(&self, why: String) {
        tracing::error!(error = %why, "the log stopped accepting appends");
        let mut failed = lock(&self.failed);
        if failed.is_none() {
            *failed = Some(why);
        }
        self.has_failed.store(true, Ordering::Release);
    }

    pub(super) fn add_hint(&self, offset: u64, base: u64, position: u64) {
        let mut hints = lock(&self.hints);
        hints.insert(offset, (base, position));
        while hints.len() > MAX_HINTS {
            hints.pop_first();
        }
    }

    /// Where to start scanning segment `base` for `offset`: (offset, position) of the nearest
    /// known frame at or before it.
    pub(super) fn hint(&self, base: u64, offset: u64) -> Option<(u64, u64)> {
        let hints = lock(&self.hints);
        hints
            .range(base..=offset)
            .next_back()
            .filter(|(_, (b, _))| *b == base)
            .map(|(o, (_, pos))| (*o, *pos))
    }

    pub(super) fn drop_hints_below(&self, offset: u64) {
        let mut hints = lock(&self.hints);
        *hints = hints.split_off(&offset);
    }
}

impl State {
    /// The state of a log just recovered: `head` visible, nothing failed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        cfg: LogConfig,
        epoch: Epoch,
        segments: BTreeMap<u64, SegmentEntry>,
        total_bytes: u64,
        head: u64,
        oldest: u64,
        hints: BTreeMap<u64, (u64, u64)>,
        active: Arc<File>,
        dir_lock: File,
        scanned_bytes: u64,
    ) -> State {
        let (head_tx, _) = watch::channel(Offset(head));
        State {
            epoch,
            segments: RwLock::new(segments),
            total_bytes: AtomicU64::new(total_bytes),
            head: AtomicU64::new(head),
            head_tx,
            oldest: AtomicU64::new(oldest),
            cache: Mutex::new(Cache::new(cfg.cache_bytes)),
            hints: Mutex::new(hints),
            active: Mutex::new(active),
            failed: Mutex::new(None),
            has_failed: AtomicBool::new(false),
            scanned_bytes,
            dir_lock: Mutex::new(Some(dir_lock)),
            cfg,
        }
    }

    /// Watch the visible head.
    pub(super) fn watch_head(&self) -> watch::Receiver<Offset> {
        self.head_tx.subscribe()
    }

    /// Let another process open the directory (nothing writes to it any more).
    pub(super) fn release_dir_lock(&self) {
        lock(&self.dir_lock).take();
    }
}
