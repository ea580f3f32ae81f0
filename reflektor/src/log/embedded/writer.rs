//! The writer thread: owns the active segment, batches appends, writes them, hands them to
//! the syncers. See the module docs for the protocol per fsync policy.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::thread::{self, JoinHandle};

use bytes::BytesMut;
use shared::{Offset, Record};
use tracing::{debug, error, info};

use super::recovery::HINT_EVERY;
use super::segment::{self, FRAME_HEADER_LEN, HEADER_LEN, SegmentEntry};
use super::state::{State, lock, write_lock};
use super::syncer::{self, Reply, SyncQueue};
use super::{AppendError, FsyncPolicy};

/// The writer stops draining the queue into one batch once it holds this many record bytes.
pub(super) const MAX_BATCH_BYTES: usize = 4 << 20;

/// What appenders send the writer.
pub(super) enum Command {
    Append(Pending),
    /// Write what is queued before this, `fdatasync`, and stop.
    Shutdown,
}

pub(super) struct Pending {
    pub(super) record: Record,
    pub(super) reply: Reply,
}

/// The active segment as recovery left it.
pub(super) struct Active {
    pub(super) file: Arc<File>,
    pub(super) base: u64,
    pub(super) len: u64,
    pub(super) next: u64,
}

/// The log's threads, joined by `close`.
pub(super) struct Threads {
    /// Ends with the result of the final `fdatasync`.
    pub(super) writer: JoinHandle<io::Result<()>>,
    /// None under `never`.
    pub(super) syncers: Vec<JoinHandle<()>>,
}

/// Start the writer (and, unless the policy is `never`, the syncers).
pub(super) fn spawn(
    state: Arc<State>,
    append_rx: Receiver<Command>,
    active: Active,
) -> io::Result<Threads> {
    let syncer::Syncers {
        queue: sync,
        handles: syncers,
    } = syncer::spawn(&state, active.next - 1)?;
    let sync_on_error = sync.clone();
    let writer = Writer {
        last_hint: active.len,
        file: active.file,
        base: active.base,
        len: active.len,
        next: active.next,
        state,
        append_rx,
        sync,
        refusing: false,
    };
    let handle = thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || writer.run())
        .inspect_err(|_| {
            if let Some(sync) = sync_on_error {
                sync.close();
            }
        })?;
    Ok(Threads {
        writer: handle,
        syncers,
    })
}

struct Writer {
    state: Arc<State>,
    append_rx: Receiver<Command>,
    /// `None` under `never`.
    sync: Option<Arc<SyncQueue>>,
    file: Arc<File>,
    /// Base offset of the active segment.
    base: u64,
    /// Bytes written to the active segment.
    len: u64,
    /// Offset the next record gets.
    next: u64,
    /// File position of the last reader hint left in this segment.
    last_hint: u64,
    /// The last write or attempt to start a segment failed and was taken back (logged once,
    /// until a write succeeds).
    refusing: bool,
}

impl Writer {
    fn run(mut self) -> io::Result<()> {
        let mut shutdown = false;
        let mut batch = Vec::new();
        while !shutdown {
            let Ok(first) = self.append_rx.recv() else {
                break; // every handle is gone
            };
            let mut bytes = 0;
            let mut command = Some(first);
            while let Some(next) = command.take() {
                match next {
                    Command::Append(p) => {
                        bytes += p.record.encoded_len();
                        batch.push(p);
                    }
                    Command::Shutdown => shutdown = true,
                }
                if !shutdown && bytes < MAX_BATCH_BYTES {
                    command = self.append_rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit(std::mem::take(&mut batch));
            }
        }
        self.finish()
    }

    /// Write one batch and hand it on per policy.
    fn commit(&mut self, batch: Vec<Pending>) {
        if let Some(why) = self.state.failure() {
            for p in batch {
                let _ = p.reply.send(Err(AppendError::Failed(why.clone())));
            }
            return;
        }
        if self.len >= self.state.cfg.segment_bytes
            && self.len > HEADER_LEN
            && let Err(e) = self.roll()
        {
            let error = match e {
                RollError::Sync(why) => AppendError::Failed(why),
                RollError::Create(why) => AppendError::Unavailable(why),
            };
            for p in batch {
                let _ = p.reply.send(Err(error.clone()));
            }
            return;
        }
        if self.len - self.last_hint >= HINT_EVERY {
            self.state.add_hint(self.next, self.base, self.len);
            self.last_hint = self.len;
        }

        let capacity: usize = batch
            .iter()
            .map(|p| FRAME_HEADER_LEN + p.record.encoded_len())
            .sum();
        let mut buf = BytesMut::with_capacity(capacity);
        let mut accepted = Vec::with_capacity(batch.len());
        let used = self.state.total_bytes.load(Ordering::Relaxed);
        let quota = self.state.cfg.max_disk_bytes;
        for Pending { mut record, reply } in batch {
            let frame = (FRAME_HEADER_LEN + record.encoded_len()) as u64;
            if used + buf.len() as u64 + frame > quota {
                let _ = reply.send(Err(AppendError::QuotaFull));
                continue;
            }
            record.offset = Offset(self.next + accepted.len() as u64);
            let range = segment::put_frame(&mut buf, &record);
            accepted.push((range, reply));
        }
        if accepted.is_empty() {
            return;
        }

        let fs = &self.state.cfg.fs;
        if let Err(e) = fs.write_all(&self.file, &buf) {
            let why = format!("writing segment {}: {e}", self.base);
            // Take back whatever part of the batch made it, so offsets stay consecutive.
            let error = match fs.set_len(&self.file, self.len) {
                Ok(()) => {
                    self.refusing(&why, "a log write failed and was taken back");
                    AppendError::Unavailable(why)
                }
                Err(e) => {
                    let why = format!("{why}; taking it back failed: {e}");
                    self.state.fail(why.clone());
                    AppendError::Failed(why)
                }
            };
            for (_, reply) in accepted {
                let _ = reply.send(Err(error.clone()));
            }
            return;
        }

        if self.refusing {
            info!("the log takes writes again");
            self.refusing = false;
        }
        let first = self.next;
        self.next += accepted.len() as u64;
        self.len += buf.len() as u64;
        self.state
            .total_bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        let upto = self.next - 1;
        let buf = buf.freeze();
        {
            let mut cache = lock(&self.state.cache);
            for (i, (range, _)) in accepted.iter().enumerate() {
                cache.push(first + i as u64, buf.slice(range.clone()));
            }
        }

        let offsets = (first..).map(Offset);
        if self.state.cfg.fsync != FsyncPolicy::Always
            && let Some(why) = self.state.failure()
        {
            // A sync failed while this batch was written: acknowledge nothing after it.
            for (_, reply) in accepted {
                let _ = reply.send(Err(AppendError::Failed(why.clone())));
            }
            return;
        }
        match self.state.cfg.fsync {
            FsyncPolicy::Never => {
                self.state.publish_head(upto);
                for ((_, reply), offset) in accepted.into_iter().zip(offsets) {
                    let _ = reply.send(Ok(offset));
                }
            }
            FsyncPolicy::Interval => {
                for ((_, reply), offset) in accepted.into_iter().zip(offsets) {
                    let _ = reply.send(Ok(offset));
                }
                if let Some(sync) = &self.sync {
                    sync.written(upto, Vec::new());
                }
            }
            FsyncPolicy::Always => {
                let replies = accepted
                    .into_iter()
                    .zip(offsets)
                    .map(|((_, reply), offset)| (reply, offset))
                    .collect();
                if let Some(sync) = &self.sync {
                    sync.written(upto, replies);
                }
            }
        }
    }

    /// A write or a new segment failed and was taken back: appends are refused until one
    /// succeeds. Logged once (ERROR: the operator has to make room), not per batch.
    fn refusing(&mut self, why: &str, what: &str) {
        if self.refusing {
            debug!(error = %why, "{what}");
        } else {
            error!(error = %why, "{what}; appends are refused (503) until the disk takes writes again");
            self.refusing = true;
        }
    }

    /// `fdatasync` the active segment on the writer thread (sealing, closing), taking part in
    /// the syncers' protocol so a failure stops every acknowledgement it may cover.
    fn sync_active(&self) -> io::Result<()> {
        let fs = &self.state.cfg.fs;
        match &self.sync {
            Some(sync) => {
                let ticket = sync.begin();
                let result = fs.sync_data(&self.file);
                let copy = result
                    .as_ref()
                    .copied()
                    .map_err(|e| io::Error::new(e.kind(), e.to_string()));
                sync.end(&self.state, ticket, result);
                copy
            }
            None => {
                let result = fs.sync_data(&self.file);
                if let Err(e) = &result {
                    self.state
                        .fail(format!("fdatasync of segment {} failed: {e}", self.base));
                }
                result
            }
        }
    }

    /// Seal the active segment and start the next one at `self.next`.
    ///
    /// A failed `fdatasync` of the sealed segment stops the log ([`RollError::Sync`]). A
    /// failure to create the next segment (the disk is full) leaves the log as it was, with no
    /// half-made file behind: the next batch tries again ([`RollError::Create`]).
    fn roll(&mut self) -> Result<(), RollError> {
        self.sync_active()
            .map_err(|e| RollError::Sync(format!("sealing segment {}: {e}", self.base)))?;
        let dir = &self.state.cfg.dir;
        let fs = self.state.cfg.fs.as_ref();
        let created = match segment::create(fs, dir, self.state.epoch, self.next) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Nothing lives beyond the active segment but what an earlier failed roll
                // could not delete.
                let stale = dir.join(segment::file_name(self.next));
                fs.remove_file(&stale)
                    .and_then(|()| segment::create(fs, dir, self.state.epoch, self.next))
            }
            other => other,
        };
        let (file, path) = match created {
            Ok(created) => created,
            Err(e) => {
                let why = format!("creating segment {}: {e}", self.next);
                self.refusing(&why, "cannot start a new log segment");
                return Err(RollError::Create(why));
            }
        };
        let file = Arc::new(file);
        {
            let mut segments = write_lock(&self.state.segments);
            if let Some(sealed) = segments.get_mut(&self.base) {
                sealed.bytes = self.len;
            }
            segments.insert(
                self.next,
                SegmentEntry {
                    path,
                    bytes: HEADER_LEN,
                },
            );
        }
        // Everything in the sealed segment is durable before the syncer can see the new one.
        *lock(&self.state.active) = file.clone();
        self.state
            .total_bytes
            .fetch_add(HEADER_LEN, Ordering::Relaxed);
        self.file = file;
        self.base = self.next;
        self.len = HEADER_LEN;
        self.last_hint = HEADER_LEN;
        Ok(())
    }

    /// Shutdown: refuse what is still queued, `fdatasync`, publish the head, let the syncer end.
    fn finish(self) -> io::Result<()> {
        loop {
            match self.append_rx.try_recv() {
                Ok(Command::Append(p)) => {
                    let _ = p.reply.send(Err(AppendError::Closed));
                }
                Ok(Command::Shutdown) => {}
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        // The syncers sync and answer what was written, then stop.
        if let Some(sync) = &self.sync {
            sync.close();
        }
        if let Some(why) = self.state.failure() {
            return Err(io::Error::other(why));
        }
        let synced = self.sync_active();
        if synced.is_ok() && self.sync.is_none() {
            self.state.publish_head(self.next - 1);
        }
        synced
    }
}

/// Why a segment could not be sealed and the next one started.
enum RollError {
    /// The sealed segment's `fdatasync` failed: the log has stopped.
    Sync(String),
    /// The next segment could not be created; nothing changed.
    Create(String),
}
