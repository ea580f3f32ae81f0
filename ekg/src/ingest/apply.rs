//! The one path from a write request to a room op, shared by batch ingest, replayed requests
//! and standalone writes.

use bytes::Bytes;
use shared::Method;

use super::RecordError;
use super::parse::parse_write;
use crate::rooms::{Outcome, Rooms, Seq};
use crate::telemetry;

/// Parse and apply one write at `seq`. Nothing is changed when it fails.
///
/// # Errors
/// Why the write was refused; [`RecordError::is_record_fault`] says whether it was its own.
pub(crate) fn apply_write(
    rooms: &Rooms,
    max_body: usize,
    method: Method,
    path: &str,
    body: &Bytes,
    seq: Seq,
    ts_ms: u64,
) -> Result<Outcome, RecordError> {
    let (room, op) = parse_write(method, path, body, max_body)?;
    let outcome = rooms.apply(&room, seq, ts_ms, &op)?;
    if let Outcome::Pushed(kind) = outcome {
        metrics::counter!(telemetry::EVENTS_APPLIED, "kind" => kind.as_str()).increment(1);
    }
    Ok(outcome)
}
