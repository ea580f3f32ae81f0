//! Ingest: how events get into rooms.
//!
//! # Sources
//! - **Batches** from reflektor at `POST /_reflektor/ingest` (`shared::batch`): signed with
//!   the batch's `prev` as the offset when `--secret` is set.
//! - **Replayed requests** from reflektor (`--replay-host`): the original room write request
//!   with `X-Reflektor-Epoch`/`-Offset`/`-Signature`; the offset is the seq.
//! - **Standalone writes** (`--standalone --token T`): the room write API with
//!   `Authorization: Bearer T`; this host assigns seqs from its own counter.
//!
//! All three go through [`parse::parse_write`] and `apply::apply_write`: one code path from
//! a request to a room op. Any other write is `401`.
//!
//! # Invariants
//! - Writes apply one at a time, in offset order, under the [`IngestLog`] mutex (never held
//!   across an await).
//! - Each offset applies exactly once: anything at or below `applied` is skipped.
//! - A batch whose `prev` is above `applied` is refused whole (`409` with the ack): the sender
//!   rewinds to `applied + 1`, so a host that restarted empty is rebuilt, never skips records.
//! - A bad record (bad path, bad JSON, unknown message id) is rejected on its own and still
//!   consumes its offset; the others apply. A record is applied entirely or not at all.
//! - The first delivery adopts its epoch. A different epoch later is a new log: every room is
//!   cleared, subscribers get a `reset`, and applying starts from zero.
//! - Readiness: ready once `applied` reaches the `head` of a batch or heartbeat (a replay-fed
//!   host: at its first delivery; standalone: at once).

mod apply;
mod auth;
mod handlers;
mod log;
pub mod parse;

#[cfg(test)]
mod tests;

pub use handlers::MAX_BATCH_BYTES;
pub(crate) use handlers::{ingest_batch, write};
pub use log::{Cursor, IngestLog, WriteResult};
