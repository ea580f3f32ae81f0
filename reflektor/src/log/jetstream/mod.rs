//! The log in a NATS JetStream stream: cluster mode (`--nats`).
//!
//! Several reflektor instances share one replicated stream; any of them accepts intake, and
//! losing a machine (a NATS node or a reflektor instance) loses no acknowledged record.
//!
//! # Stream
//!
//! One stream (`--stream`, default `reflektor`) holding one subject,
//! `reflektor.<stream>.records`, created on first start with:
//!
//! | setting | value |
//! |---|---|
//! | storage, retention, discard | file, limits, old |
//! | replicas | `--replicas` (default 3) |
//! | `max_age`, `max_bytes` | `--retention`, `--retention-bytes` |
//! | `duplicate_window` | `--dedupe-window` |
//!
//! An existing stream must have exactly these settings; otherwise opening fails and names every
//! difference ([`JetStreamError::Mismatch`]). reflektor never changes a stream an operator made.
//!
//! # Records, offsets, epoch
//!
//! - A message's payload is exactly `shared::Record::encode` output with offset 0: the offset is
//!   not known before JetStream assigns the message its **stream sequence**, which *is* the
//!   offset. Readers write the sequence into the record's offset field (one copy per record per
//!   instance, in the follower, not per host).
//! - Sequences are assigned by the stream's leader, so offsets are unique and increasing across
//!   every instance. Nothing deletes single messages, so they are consecutive; retention removes
//!   them oldest first.
//! - `Idempotency-Key` travels as `Nats-Msg-Id` (hex when it is not printable ASCII): a repeat
//!   within the duplicate window, sent to any instance, is acknowledged with the first
//!   message's sequence and `duplicate: true`, and stores nothing.
//! - The **epoch** is a hash of the stream's name and creation time ([`stream::epoch_of`]).
//!   Every instance derives the same one; a stream deleted and created again is a new log to
//!   every host. A running instance that sees its stream replaced stops
//!   ([`JetStreamLog::replaced`]): its cursors and idempotency window belong to the old log.
//!
//! # Durability
//!
//! `append` resolves when JetStream acknowledged the message, which it does once a quorum of
//! the stream's replicas (2 of 3) stored it. Each replica writes to its file store at once and
//! leaves flushing to the OS, syncing every `sync_interval` (nats-server's `jetstream.sync_interval`,
//! default 2 min; `always` syncs every write). So a 202 survives the loss of any one node and any
//! process crash; it is lost only if a quorum of nodes loses power within the sync interval.
//!
//! # Reading
//!
//! One **follower** per instance (an ordered pull consumer from the head at open) receives
//! every stored record once, puts it into a cache bounded by `cache_bytes`, and moves the head.
//! Records appear there only once stored by a quorum, so a host never sees a record the stream
//! could lose. [`JetStreamLog::read`] serves from the cache; older records (a host catching up,
//! or taken over from another instance) come from a pull consumer positioned at the read's
//! start, kept open for the next read from where it stopped (at most 32 such readers, dropped
//! when idle for 20 s).
//!
//! A background task looks up the stream's state every second: the oldest retained sequence
//! (retention may have removed records; a read below it is `Trimmed`), its size, and its
//! creation time.
//!
//! # Limits
//!
//! - At most `max_pending_appends` publishes wait for acknowledgement; beyond that an append is
//!   `Busy` (503 with `Retry-After`), never an unbounded queue.
//! - A record must fit the servers' `max_payload` (1 MiB by default in nats-server):
//!   [`JetStreamLog::max_body_bytes`] is what intake then accepts.
//! - Every request to JetStream is bounded by `request_timeout`; an append that is not
//!   acknowledged in time is `Unavailable` (503): it may or may not be stored, and the client's
//!   retry with the same `Idempotency-Key` gets one record.

mod config;
mod handle;
mod stream;

#[cfg(test)]
mod tests;

pub use config::{JetStreamConfig, MAX_STREAM_NAME, validate_stream_name};
pub use handle::JetStreamLog;

/// Why the JetStream log could not be opened or closed: each is a clear error at start.
#[derive(Debug, thiserror::Error)]
pub enum JetStreamError {
    /// No NATS server could be reached.
    #[error("{0}")]
    Connect(String),
    /// The stream exists with other settings than the flags ask for.
    #[error("stream {stream} exists with other settings: {}; change the flags or the stream (nats stream edit), reflektor does not", differences.join("; "))]
    Mismatch {
        stream: String,
        differences: Vec<String>,
    },
    /// JetStream refused to create the stream (too few nodes for the replicas, no JetStream).
    #[error("{0}")]
    Create(String),
    /// JetStream did not answer or answered with an error.
    #[error("{0}")]
    Request(String),
}
