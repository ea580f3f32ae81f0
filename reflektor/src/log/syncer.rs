//! The syncer threads: `fdatasync` off the write path, then publish the head (and, under
//! `always`, answer the appends the sync covered).
//!
//! The writer reports each written batch here: the newest offset written, and under `always`
//! the appends waiting for durability. A syncer that finds written data no started sync covers
//! takes that mark, `fdatasync`s the active segment, then publishes the mark as the head and
//! answers every waiting append up to it. Under `always` several syncers run, so a new sync
//! starts as soon as a batch is written even while an earlier one is still in flight: each
//! `fdatasync` covers everything written before it started, and concurrent ones overlap in the
//! device (measured here: 1 thread ~500 syncs/s, 4 threads ~4000/s on the same file). Under
//! `interval` one syncer starts a sync at most every `fsync_interval`.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use shared::Offset;
use tokio::sync::oneshot;

use super::handle::{State, lock};
use super::{AppendError, FsyncPolicy};

/// Syncers under `always`: how many `fdatasync`s may be in flight at once.
const ALWAYS_SYNCERS: usize = 4;
/// Written batches waiting for a sync before the writer waits (under `always`).
const MAX_WAITING_BATCHES: usize = 1024;

pub(super) type Reply = oneshot::Sender<Result<Offset, AppendError>>;

/// A written batch's appends, answered once a sync covers `upto`.
struct Waiting {
    upto: u64,
    replies: Vec<(Reply, Offset)>,
}

/// What the writer and the syncers share.
pub(super) struct SyncQueue {
    inner: Mutex<Pending>,
    /// Syncers wait here for new written data (or shutdown).
    work: Condvar,
    /// The writer waits here when too many batches wait for a sync.
    space: Condvar,
}

struct Pending {
    waiting: VecDeque<Waiting>,
    /// Newest offset written.
    written: u64,
    /// Newest offset a started sync covers.
    started: u64,
    closed: bool,
}

impl SyncQueue {
    fn guard(&self) -> MutexGuard<'_, Pending> {
        lock(&self.inner)
    }

    /// A batch up to `upto` is written; `replies` wait for it to be durable.
    pub(super) fn written(&self, upto: u64, replies: Vec<(Reply, Offset)>) {
        let mut pending = self.guard();
        while pending.waiting.len() >= MAX_WAITING_BATCHES && !pending.closed {
            pending = self
                .space
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if !replies.is_empty() {
            pending.waiting.push_back(Waiting { upto, replies });
        }
        pending.written = pending.written.max(upto);
        drop(pending);
        self.work.notify_one();
    }

    /// No more batches: syncers finish what is written, then stop.
    pub(super) fn close(&self) {
        self.guard().closed = true;
        self.work.notify_all();
        self.space.notify_all();
    }
}

/// The running syncers.
pub(super) struct Syncers {
    /// Where the writer reports written batches; `None` under `never`.
    pub(super) queue: Option<Arc<SyncQueue>>,
    pub(super) handles: Vec<JoinHandle<()>>,
}

/// Start the syncers for `policy` (none under `never`).
pub(super) fn spawn(state: &Arc<State>, written: u64) -> io::Result<Syncers> {
    let (count, interval) = match state.cfg.fsync {
        FsyncPolicy::Never => {
            return Ok(Syncers {
                queue: None,
                handles: Vec::new(),
            });
        }
        FsyncPolicy::Always => (ALWAYS_SYNCERS, None),
        FsyncPolicy::Interval => (1, Some(state.cfg.fsync_interval)),
    };
    let queue = Arc::new(SyncQueue {
        inner: Mutex::new(Pending {
            waiting: VecDeque::new(),
            written,
            started: written,
            closed: false,
        }),
        work: Condvar::new(),
        space: Condvar::new(),
    });
    let mut handles = Vec::with_capacity(count);
    for i in 0..count {
        let syncer = Syncer {
            state: state.clone(),
            queue: queue.clone(),
            interval,
        };
        let handle = thread::Builder::new()
            .name(format!("log-syncer-{i}"))
            .spawn(move || syncer.run());
        match handle {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                queue.close();
                return Err(e);
            }
        }
    }
    Ok(Syncers {
        queue: Some(queue),
        handles,
    })
}

struct Syncer {
    state: Arc<State>,
    queue: Arc<SyncQueue>,
    /// Least time between the starts of two syncs (`interval` policy).
    interval: Option<Duration>,
}

impl Syncer {
    fn run(self) {
        let mut last_start: Option<Instant> = None;
        while let Some(mark) = self.next_mark(last_start) {
            last_start = Some(Instant::now());
            self.sync(mark);
        }
    }

    /// Wait for written data no started sync covers, claim it; `None` once closed and done.
    fn next_mark(&self, last_start: Option<Instant>) -> Option<u64> {
        let mut pending = self.queue.guard();
        loop {
            if pending.written > pending.started {
                let deadline = self.interval.zip(last_start).map(|(i, l)| l + i);
                match deadline {
                    Some(deadline) if !pending.closed && Instant::now() < deadline => {
                        let wait = deadline.saturating_duration_since(Instant::now());
                        pending = self
                            .queue
                            .work
                            .wait_timeout(pending, wait)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                        continue;
                    }
                    _ => {}
                }
                pending.started = pending.written;
                return Some(pending.written);
            }
            if pending.closed {
                return None;
            }
            pending = self
                .queue
                .work
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// `fdatasync` the active segment: it holds everything up to `mark`, or the writer synced
    /// the sealed segment that does before making the new one active.
    fn sync(&self, mark: u64) {
        let file = lock(&self.state.active).clone();
        let result = file.sync_data();
        let done: Vec<Waiting> = {
            let mut pending = self.queue.guard();
            let mut done = Vec::new();
            while pending.waiting.front().is_some_and(|w| w.upto <= mark) {
                done.extend(pending.waiting.pop_front());
            }
            done
        };
        self.queue.space.notify_one();
        if let Err(e) = result {
            self.state
                .fail(format!("fdatasync of the active segment failed: {e}"));
        }
        match self.state.failure() {
            None => {
                self.state.publish_head(mark);
                for (reply, offset) in done.into_iter().flat_map(|w| w.replies) {
                    let _ = reply.send(Ok(offset));
                }
            }
            Some(why) => {
                for (reply, _) in done.into_iter().flat_map(|w| w.replies) {
                    let _ = reply.send(Err(AppendError::Io(why.clone())));
                }
            }
        }
    }
}
