//! The durable, append-only log every accepted request goes into, behind one interface with two
//! backends.
//!
//! Intake appends records; the log gives each one an [`Offset`] (strictly increasing, never
//! reused within one log, which an [`Epoch`] names) and answers once the record is durable.
//! Delivery workers read records back in offset order and wait on the head; retention removes
//! the oldest records. Intake, delivery and operations call [`Log`] and never know which
//! backend runs; a `match` in each method shows every case.
//!
//! | | [`embedded`] (default) | [`jetstream`] (`--nats`) |
//! |---|---|---|
//! | where | segment files in `<data-dir>/log` | a replicated JetStream stream |
//! | writers | one process (it locks the directory) | every instance of the cluster |
//! | offset | next in the file | the stream sequence |
//! | the 202 means | durable per `--fsync` | stored by a quorum of replicas |
//! | `Idempotency-Key` | intake's window ([`crate::intake::Dedupe`]) | the same, plus JetStream's duplicate window across instances |
//! | epoch | random, in `meta` | derived from the stream's name and creation time |
//! | retention | segments every host has passed and outside `--retention` | stream limits (`max_age`, `max_bytes`) |
//!
//! Each backend's `mod.rs` documents its formats and invariants. Both keep the recent records
//! in one [`cache`] shape (consecutive offsets, bounded by bytes) so a read of the tail costs
//! no I/O.
//!
//! # Invariants every backend keeps
//!
//! - A record is visible to readers ([`Log::head`], [`Log::read`], [`Log::watch_head`]) only
//!   once it is durable by the backend's measure: a host never sees a record the log could take
//!   back.
//! - Offsets are consecutive in practice; a read below [`Log::oldest`] is
//!   [`ReadError::Trimmed`], and corrupt data is [`ReadError::Corrupt`], never skipped.
//! - No lock is held across an `.await`, and nothing on the runtime blocks on a disk.

mod cache;
pub mod embedded;
mod error;
pub mod jetstream;

use std::time::Duration;

use bytes::Bytes;
use shared::{Epoch, Offset, Record};
use tokio::sync::watch;

#[cfg(test)]
pub(crate) use embedded::faulty;
pub use embedded::{Filesystem, StdFilesystem};
pub use embedded::{FsyncPolicy, LogConfig, Opened, ParseFsyncPolicyError};
pub use error::{AppendError, LogError, ReadError};
pub use jetstream::{JetStreamConfig, JetStreamLog};

/// A snapshot for metrics and the operations API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogStats {
    /// Segment files (0 for JetStream, which keeps its own).
    pub segments: usize,
    /// Bytes the log holds on disk (for JetStream, on each replica).
    pub bytes: u64,
    pub oldest: Offset,
    pub head: Offset,
}

/// The log reflektor runs on. Cheap to clone; every clone is the same log.
#[derive(Clone)]
pub enum Log {
    /// Segment files on this machine.
    Embedded(embedded::Log),
    /// A JetStream stream shared by every instance of a cluster.
    JetStream(JetStreamLog),
}

impl From<embedded::Log> for Log {
    fn from(log: embedded::Log) -> Log {
        Log::Embedded(log)
    }
}

impl From<JetStreamLog> for Log {
    fn from(log: JetStreamLog) -> Log {
        Log::JetStream(log)
    }
}

impl Log {
    pub fn epoch(&self) -> Epoch {
        match self {
            Log::Embedded(l) => l.epoch(),
            Log::JetStream(l) => l.epoch(),
        }
    }

    /// Append one record; the log assigns its offset. Resolves once the record is durable.
    /// The flag is true when the backend recognised the record's `Idempotency-Key` as a repeat
    /// and answered the first record's offset without storing anything (JetStream's duplicate
    /// window; the embedded log leaves repeats to intake's window).
    ///
    /// # Errors
    /// See [`AppendError`]; none of them means the record is stored, except where the variant
    /// says it may be.
    pub async fn append(&self, record: Record) -> Result<(Offset, bool), AppendError> {
        match self {
            Log::Embedded(l) => l.append(record).await.map(|o| (o, false)),
            Log::JetStream(l) => l.append(record).await,
        }
    }

    /// Why the log takes no appends (a failed `fdatasync`, a deleted stream), if it does not.
    pub fn failure(&self) -> Option<String> {
        match self {
            Log::Embedded(l) => l.failure(),
            Log::JetStream(l) => l.unavailable(),
        }
    }

    /// Newest offset readers may see; `Offset::ZERO` when the log is empty.
    pub fn head(&self) -> Offset {
        match self {
            Log::Embedded(l) => l.head(),
            Log::JetStream(l) => l.head(),
        }
    }

    /// Oldest retained offset (`head() + 1` when the log is empty).
    pub fn oldest(&self) -> Offset {
        match self {
            Log::Embedded(l) => l.oldest(),
            Log::JetStream(l) => l.oldest(),
        }
    }

    /// Watch the visible head; it changes each time new records become visible.
    pub fn watch_head(&self) -> watch::Receiver<Offset> {
        match self {
            Log::Embedded(l) => l.watch_head(),
            Log::JetStream(l) => l.watch_head(),
        }
    }

    /// Up to `max_records` / `max_bytes` (at least one record when any is available) encoded
    /// records with offset `>= from` and `<= head()`, in order; empty when there is nothing new.
    ///
    /// # Errors
    /// See [`ReadError`].
    pub async fn read(
        &self,
        from: Offset,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Bytes>, ReadError> {
        match self {
            Log::Embedded(l) => l.read(from, max_records, max_bytes).await,
            Log::JetStream(l) => l.read(from, max_records, max_bytes).await,
        }
    }

    /// Acceptance time (Unix ms) of the record at `offset`, if it is retained and visible.
    pub async fn timestamp_of(&self, offset: Offset) -> Option<u64> {
        match self {
            Log::Embedded(l) => l.timestamp_of(offset).await,
            Log::JetStream(l) => l.timestamp_of(offset).await,
        }
    }

    pub fn stats(&self) -> LogStats {
        match self {
            Log::Embedded(l) => l.stats(),
            Log::JetStream(l) => l.stats(),
        }
    }

    /// Remove what every host has passed (`< min_cursor`) and the retention window allows.
    /// The embedded log deletes whole segments (file I/O: call it from a blocking context);
    /// JetStream applies its stream limits by itself, so this does nothing there.
    ///
    /// # Errors
    /// [`LogError::Io`] when a segment could not be inspected or deleted.
    pub fn retain(
        &self,
        min_cursor: Offset,
        max_age: Duration,
        max_bytes: u64,
    ) -> Result<usize, LogError> {
        match self {
            Log::Embedded(l) => l.retain(min_cursor, max_age, max_bytes),
            Log::JetStream(_) => Ok(0),
        }
    }

    /// Stop taking appends and make everything appended durable (the embedded log syncs; the
    /// JetStream log stops following its stream and flushes the connection).
    ///
    /// # Errors
    /// The final sync or flush failed.
    pub async fn close(&self) -> Result<(), LogError> {
        match self {
            Log::Embedded(l) => l.close().await,
            Log::JetStream(l) => l
                .close()
                .await
                .map_err(|e| LogError::JetStream(e.to_string())),
        }
    }

    /// The JetStream log, when that is the backend.
    pub fn jetstream(&self) -> Option<&JetStreamLog> {
        match self {
            Log::JetStream(l) => Some(l),
            Log::Embedded(_) => None,
        }
    }
}
