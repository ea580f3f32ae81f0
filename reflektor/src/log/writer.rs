//! The writer thread: owns the active segment, batches appends, writes them, hands them to
//! the syncers. See the module docs for the protocol per fsync policy.

use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::thread::{self, JoinHandle};

use bytes::BytesMut;
use shared::{Offset, Record};
use tracing::error;

use super::handle::{State, lock, write_lock};
use super::recovery::HINT_EVERY;
use super::segment::{self, FRAME_HEADER_LEN, HEADER_LEN, SegmentEntry};
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
                let _ = p.reply.send(Err(AppendError::Io(why.clone())));
            }
            return;
        }
        if self.len >= self.state.cfg.segment_bytes
            && self.len > HEADER_LEN
            && let Err(e) = self.roll()
        {
            let why = format!("sealing segment {}: {e}", self.base);
            self.state.fail(why.clone());
            for p in batch {
                let _ = p.reply.send(Err(AppendError::Io(why.clone())));
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

        if let Err(e) = (&*self.file).write_all(&buf) {
            let mut why = format!("writing segment {}: {e}", self.base);
            error!(error = %why, "log write failed");
            // Take back whatever part of the batch made it, so offsets stay consecutive.
            if let Err(e) = self.file.set_len(self.len) {
                why = format!("{why}; rolling back failed: {e}");
                self.state.fail(why.clone());
            }
            for (_, reply) in accepted {
                let _ = reply.send(Err(AppendError::Io(why.clone())));
            }
            return;
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

    /// Seal the active segment and start the next one at `self.next`.
    fn roll(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let (file, path) = segment::create(&self.state.cfg.dir, self.state.epoch, self.next)?;
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
        let synced = self.file.sync_data();
        if synced.is_ok() {
            self.state.publish_head(self.next - 1);
        }
        synced
    }
}
