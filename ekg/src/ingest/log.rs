//! [`IngestLog`]: where this host stands in the log, and the rules for moving it.
//!
//! Every write, whichever way it arrives, is applied with the cursor's mutex held, so writes
//! are applied one at a time in offset order. The mutex is never held across an await: the
//! body is read and its signature checked before, the answer is sent after.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use shared::batch::{Batch, IngestAck, Rejection};
use shared::sign::{DEFAULT_FRESHNESS, Verifier};
use shared::{Epoch, Method, Offset, Record};

use super::apply::apply_write;
use crate::config::{Config, Mode};
use crate::http::ApiError;
use crate::rooms::{Outcome, Rooms, Seq};
use crate::telemetry;

/// Applied offset and epoch, behind one mutex: holding it is what serialises applying.
#[derive(Debug)]
pub struct IngestLog {
    cursor: Mutex<Cursor>,
    ready: AtomicBool,
    /// Checks reflektor signatures when `--secret` is set.
    pub(crate) verifier: Option<Verifier>,
}

/// Where this host stands in the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The log being applied; [`Epoch::NONE`] before the first delivery (and in standalone mode).
    pub epoch: Epoch,
    /// The highest offset applied (standalone: the last seq assigned).
    pub applied: Offset,
}

/// What a single write (replayed or standalone) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteResult {
    /// Applied at this seq; an event was pushed or nothing needed to change.
    Applied(Seq, Outcome),
    /// A replayed offset at or below what was applied: skipped.
    Duplicate(Seq),
}

impl IngestLog {
    pub fn new(config: &Config) -> IngestLog {
        let ready = matches!(config.mode, Mode::Standalone { .. });
        metrics::gauge!(telemetry::READY).set(if ready { 1.0 } else { 0.0 });
        IngestLog {
            cursor: Mutex::new(Cursor::default()),
            ready: AtomicBool::new(ready),
            verifier: config
                .secret
                .as_deref()
                .map(|s| Verifier::new([s], DEFAULT_FRESHNESS)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cursor> {
        self.cursor.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where this host stands now.
    pub fn cursor(&self) -> Cursor {
        *self.lock()
    }

    /// Caught up with the log since start (standalone: always).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub(crate) fn set_ready(&self) {
        if !self.ready.swap(true, Ordering::Relaxed) {
            tracing::info!("caught up with the log: ready");
            metrics::gauge!(telemetry::READY).set(1.0);
        }
    }

    /// A delivery from `epoch`: the first adopts it; a different one later is a new log, so
    /// every room is cleared (subscribers get `reset`) and applying starts over.
    fn enter_epoch(cursor: &mut Cursor, epoch: Epoch, rooms: &Rooms) {
        if cursor.epoch == epoch {
            return;
        }
        if cursor.epoch == Epoch::NONE && cursor.applied == Offset::ZERO {
            tracing::info!(%epoch, "applying log");
            cursor.epoch = epoch;
            return;
        }
        tracing::warn!(
            old = %cursor.epoch,
            new = %epoch,
            applied = %cursor.applied,
            "a new log replaces the one applied: clearing every room and starting over"
        );
        rooms.clear_for_new_log();
        *cursor = Cursor {
            epoch,
            applied: Offset::ZERO,
        };
        metrics::counter!(telemetry::EPOCH_RESETS).increment(1);
    }

    /// Apply a parsed batch (signature already checked): records in offset order, each once.
    /// Returns `Err(ack)` (answer 409) when `prev` is above what was applied.
    ///
    /// # Errors
    /// `400` when a record's offset cannot be read or offsets do not increase: nothing applied.
    pub(crate) fn apply_batch(
        &self,
        rooms: &Rooms,
        max_body: usize,
        batch: &Batch,
    ) -> Result<Result<IngestAck, IngestAck>, ApiError> {
        let mut offsets = Vec::with_capacity(batch.records.len());
        for r in &batch.records {
            let offset = Record::peek_offset(r).ok_or_else(|| {
                ApiError::bad_request("bad_batch", "a record is too short to carry an offset")
            })?;
            if offsets.last().is_some_and(|&last| offset <= last) {
                return Err(ApiError::bad_request(
                    "bad_batch",
                    "record offsets in a batch must strictly increase",
                ));
            }
            offsets.push(offset);
        }
        let header = batch.header;
        let mut cursor = self.lock();
        IngestLog::enter_epoch(&mut cursor, header.epoch, rooms);
        rooms.note_log_head(header.head.max(offsets.last().copied().unwrap_or_default()));
        if header.prev > cursor.applied {
            return Ok(Err(IngestAck {
                applied: cursor.applied,
                epoch: cursor.epoch,
                rejected: Vec::new(),
            }));
        }
        let mut rejected = Vec::new();
        for (bytes, &offset) in batch.records.iter().zip(&offsets) {
            if offset <= cursor.applied {
                continue;
            }
            let result = Record::decode(bytes.clone())
                .map_err(|e| ApiError::bad_request("bad_record", e.to_string()))
                .and_then(|rec| {
                    apply_write(
                        rooms,
                        max_body,
                        rec.method,
                        rec.path(),
                        &rec.body,
                        Seq::from(offset),
                        rec.timestamp_ms,
                    )
                });
            if let Err(e) = result {
                rejected.push(reject(offset, &e));
            }
            cursor.applied = offset;
        }
        metrics::counter!(telemetry::INGEST_BATCHES).increment(1);
        metrics::gauge!(telemetry::APPLIED_OFFSET).set(cursor.applied.0 as f64);
        if cursor.applied >= header.head {
            self.set_ready();
        }
        Ok(Ok(IngestAck {
            applied: cursor.applied,
            epoch: cursor.epoch,
            rejected,
        }))
    }

    /// Apply one replayed request: its offset is the seq; at or below applied it is skipped.
    /// A write refused on its merits (4xx) still consumes its offset (reflektor dead-letters it
    /// and moves on); a 503 does not, so reflektor's retry applies it later.
    /// Replay carries no log head, so a replay-fed host is ready from its first delivery.
    ///
    /// # Errors
    /// The write's own refusal.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn apply_replayed(
        &self,
        rooms: &Rooms,
        max_body: usize,
        epoch: Epoch,
        offset: Offset,
        method: Method,
        path: &str,
        body: &Bytes,
        ts_ms: u64,
    ) -> Result<WriteResult, ApiError> {
        let mut cursor = self.lock();
        IngestLog::enter_epoch(&mut cursor, epoch, rooms);
        rooms.note_log_head(offset);
        if offset <= cursor.applied {
            return Ok(WriteResult::Duplicate(Seq::from(offset)));
        }
        let result = apply_write(
            rooms,
            max_body,
            method,
            path,
            body,
            Seq::from(offset),
            ts_ms,
        );
        if let Err(e) = &result
            && e.status.is_server_error()
        {
            // A passing condition (the room limit): leave the offset for reflektor's retry.
            return Err(e.clone());
        }
        cursor.applied = offset;
        metrics::gauge!(telemetry::APPLIED_OFFSET).set(offset.0 as f64);
        drop(cursor);
        self.set_ready();
        match result {
            Ok(outcome) => Ok(WriteResult::Applied(Seq::from(offset), outcome)),
            Err(e) => {
                count_rejected(&e);
                Err(e)
            }
        }
    }

    /// Apply one standalone write at the next seq of this host's own counter. A refused write
    /// takes no seq.
    ///
    /// # Errors
    /// The write's own refusal.
    pub(crate) fn apply_standalone(
        &self,
        rooms: &Rooms,
        max_body: usize,
        method: Method,
        path: &str,
        body: &Bytes,
        ts_ms: u64,
    ) -> Result<WriteResult, ApiError> {
        let mut cursor = self.lock();
        let seq = cursor.applied.next();
        let outcome = apply_write(rooms, max_body, method, path, body, Seq::from(seq), ts_ms)
            .inspect_err(count_rejected)?;
        cursor.applied = seq;
        rooms.note_log_head(seq);
        metrics::gauge!(telemetry::APPLIED_OFFSET).set(seq.0 as f64);
        Ok(WriteResult::Applied(Seq::from(seq), outcome))
    }
}

fn count_rejected(e: &ApiError) {
    metrics::counter!(telemetry::REJECTED_RECORDS, "status" => e.status.as_str().to_owned())
        .increment(1);
}

fn reject(offset: Offset, e: &ApiError) -> Rejection {
    count_rejected(e);
    tracing::debug!(%offset, status = %e.status, code = e.code, message = %e.message, "record rejected");
    Rejection {
        offset,
        status: e.status.as_u16(),
        error: format!("{}: {}", e.code, e.message),
    }
}
