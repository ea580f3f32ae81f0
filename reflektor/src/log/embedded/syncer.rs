//! The syncer threads: `fdatasync` off the write path, then publish the head (and, under
//! `always`, answer the appends the sync covered).
//!
//! The writer reports each written batch here: the newest offset written, and under `always`
//! the appends waiting for durability. A syncer that finds written data no started sync covers
//! takes that mark, `fdatasync`s the active segment, and reports the result. Under `always`
//! several syncers run, so a new sync starts as soon as a batch is written even while an
//! earlier one is still in flight: each `fdatasync` covers everything written before it
//! started, and concurrent ones overlap in the device (measured here: 1 thread ~500 syncs/s,
//! 4 threads ~4000/s on the same file). Under `interval` one syncer starts a sync at most every
//! `fsync_interval`. The writer's own syncs (sealing a segment, closing) take part the same way.
//!
//! # When a successful sync counts
//!
//! Linux reports a failed write-back once per open file, to whichever `fdatasync` checks
//! first. When two syncs of the same file overlap, the one that covered the lost page may
//! return success while the other gets the error. So a successful sync is *final* only once
//! every sync that was in flight when it returned has returned too, all of them successfully.
//! Each sync takes a ticket when it starts; a success is recorded with the last ticket handed
//! out when it returned, and becomes final when no sync with a ticket at or below that one is
//! still in flight. Only then is the head published and are the appends up to its mark
//! answered. A sync that started after it returned cannot hold the error of a page it covered:
//! that error would have been reported to it, or to a sync that overlapped it.
//!
//! Any failed sync stops the log for good (see [`State::fail`]): every append still waiting is
//! answered with [`AppendError::Failed`], and no record is acknowledged or made visible after
//! it, in any syncer.

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use shared::Offset;
use tokio::sync::oneshot;

use super::state::{State, lock};
use super::{AppendError, FsyncPolicy};

/// Syncers under `always`: how many `fdatasync`s may be in flight at once.
const ALWAYS_SYNCERS: usize = 4;
/// Written batches waiting for a sync before the writer waits (under `always`).
const MAX_WAITING_BATCHES: usize = 1024;

pub(super) type Reply = oneshot::Sender<Result<Offset, AppendError>>;

/// A written batch's appends, answered once a final sync covers `upto`.
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
    /// The last ticket handed to a sync.
    last_ticket: u64,
    /// Tickets of the syncs started whose result is not recorded yet.
    in_flight: BTreeSet<u64>,
    /// Successful syncs not final yet: (last ticket handed out when it returned, its mark).
    succeeded: Vec<(u64, u64)>,
    /// Newest mark a final sync covered: the head published.
    synced: u64,
}

/// A sync in flight: hand it back to [`SyncQueue::end`] with the result.
pub(super) struct Ticket {
    ticket: u64,
    mark: u64,
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

    /// The writer is about to sync a file that holds everything written so far (sealing a
    /// segment, closing): take a ticket covering it, so syncers need not sync it again.
    pub(super) fn begin(&self) -> Ticket {
        let mut pending = self.guard();
        let mark = pending.written;
        pending.started = pending.started.max(mark);
        take_ticket(&mut pending, mark)
    }

    /// Record how the sync of `ticket` ended; publish and answer what became final.
    pub(super) fn end(&self, state: &State, ticket: Ticket, result: io::Result<()>) {
        let mut answers = Vec::new();
        let mut publish = None;
        let failure = {
            let mut pending = self.guard();
            pending.in_flight.remove(&ticket.ticket);
            match result {
                Ok(()) => {
                    let returned_at = pending.last_ticket;
                    pending.succeeded.push((returned_at, ticket.mark));
                }
                Err(e) => state.fail(format!("fdatasync of a log segment failed: {e}")),
            }
            let failure = state.failure();
            if failure.is_some() {
                pending.succeeded.clear();
                answers.extend(pending.waiting.drain(..).flat_map(|w| w.replies));
            } else {
                let oldest_running = pending.in_flight.first().copied().unwrap_or(u64::MAX);
                let mut last_final = None;
                pending.succeeded.retain(|&(returned_at, mark)| {
                    let is_final = returned_at < oldest_running;
                    if is_final {
                        last_final = last_final.max(Some(mark));
                    }
                    !is_final
                });
                if let Some(mark) = last_final.filter(|m| *m > pending.synced) {
                    pending.synced = mark;
                    publish = Some(mark);
                    while pending.waiting.front().is_some_and(|w| w.upto <= mark) {
                        answers.extend(
                            pending
                                .waiting
                                .pop_front()
                                .into_iter()
                                .flat_map(|w| w.replies),
                        );
                    }
                }
            }
            failure
        };
        self.space.notify_all();
        match failure {
            Some(why) => {
                for (reply, _) in answers {
                    let _ = reply.send(Err(AppendError::Failed(why.clone())));
                }
            }
            None => {
                if let Some(mark) = publish {
                    state.publish_head(mark);
                }
                for (reply, offset) in answers {
                    let _ = reply.send(Ok(offset));
                }
            }
        }
    }
}

fn take_ticket(pending: &mut Pending, mark: u64) -> Ticket {
    pending.last_ticket += 1;
    let ticket = pending.last_ticket;
    pending.in_flight.insert(ticket);
    Ticket { ticket, mark }
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
            last_ticket: 0,
            in_flight: BTreeSet::new(),
            succeeded: Vec::new(),
            synced: written,
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
        while let Some(ticket) = self.next_sync(last_start) {
            last_start = Some(Instant::now());
            // The active segment holds everything up to the mark, or the writer synced the
            // sealed segment that does before making the new one active.
            let file = lock(&self.state.active).clone();
            let result = self.state.cfg.fs.sync_data(&file);
            self.queue.end(&self.state, ticket, result);
        }
    }

    /// Wait for written data no started sync covers, claim it; `None` once closed and done.
    fn next_sync(&self, last_start: Option<Instant>) -> Option<Ticket> {
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
                let mark = pending.written;
                pending.started = mark;
                return Some(take_ticket(&mut pending, mark));
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
}
