//! Ingest: how events get into rooms.
//!
//! # Sources
//! - **Batches** from reflektor at `POST /_reflektor/ingest` (`shared::batch`), signed with
//!   the batch's `prev` as the offset.
//! - **Replayed requests** from reflektor (`--replay-host`): the original room write request
//!   with `X-Reflektor-Epoch`/`-Offset`/`-Timestamp`/`-Signature` (and `-Prev` after a gap in
//!   the log); the offset is the seq.
//! - **Standalone writes** (`--standalone --token T`): the room write API with
//!   `Authorization: Bearer T`; this host assigns seqs from its own counter.
//!
//! All three go through [`parse::parse_write`] and `apply::apply_write`: one code path from
//! a request to a room op. Any other write is `401`.
//!
//! # Trust (`auth.rs`, [`Trust`])
//! A relayed host verifies signature v2 (`shared::sign`) with any of its secrets (rotation)
//! and refuses a delivery sent outside `--signature-window`. Without a secret it takes nothing
//! unless `--insecure-unsigned-ingest` was given (then anyone may write). A body is read only
//! after everything the headers can tell was checked (mode, credentials, delivery headers,
//! timestamp, content type, declared length), inside one of `--max-ingest-requests` slots
//! (`503 overloaded` beyond) and under `--body-read-timeout` (`408`).
//!
//! # Errors (`error.rs`)
//! [`IngestError`] refuses a whole delivery; [`RecordError`] one write.
//! [`RecordError::is_record_fault`] is the one decision between "this record is bad"
//! (consumes its offset, dead-lettered by reflektor) and "this host cannot take it now" (no
//! offset consumed, retried). `http/errors.rs` maps both to HTTP.
//!
//! # Invariants
//! - Writes apply one at a time, in offset order, under the [`IngestLog`] mutex (never held
//!   across an await).
//! - Each offset applies exactly once: anything at or below `applied` is a duplicate, skipped.
//! - Nothing skips an offset: a batch whose `prev` is above `applied`, or a replayed request
//!   whose `prev` (`offset - 1`, or its signed `X-Reflektor-Prev`) is above `applied`, is
//!   refused whole (`409 out_of_order` with `applied` and `epoch`); the sender resends from
//!   `applied + 1`, so a host that restarted empty is rebuilt, never skips records.
//! - A record refused on its merits (bad path, bad JSON, unknown message id...) is rejected on
//!   its own and consumes its offset; the others apply. A record refused for a condition of
//!   this host (the room limit) consumes nothing: a batch stops before it, a replayed request
//!   is answered `503`. A record is applied entirely or not at all.
//! - The first delivery adopts its epoch. A different epoch later is a new log: every room is
//!   cleared, subscribers get a `reset`, and applying starts from zero. The last
//!   [`EPOCHS_REMEMBERED`] epochs left are remembered: a delivery from one of them is refused
//!   (`409 old_epoch`), so a re-sent old delivery cannot wipe the host.
//! - Readiness: ready once `applied` reaches the `head` of a batch or heartbeat (a replay-fed
//!   host: at its first delivery; standalone: at once).

mod apply;
mod auth;
mod error;
mod handlers;
mod log;
pub mod parse;

#[cfg(test)]
mod tests;

pub use auth::Trust;
pub use error::{IngestError, Position, RecordError};
pub use handlers::{MAX_BATCH_BYTES, MAX_REPLAYED_BYTES};
pub(crate) use handlers::{ingest_batch, write};
pub use log::{Cursor, EPOCHS_REMEMBERED, IngestLog, WriteResult};
