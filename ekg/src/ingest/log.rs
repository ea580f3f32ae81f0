//! [`IngestLog`]: where this host stands in the log, and the rules for moving it.
//!
//! Every write, whichever way it arrives, is applied with the cursor's mutex held, so writes
//! are applied one at a time in offset order. The mutex is never held across an await: the
//! body is read and its signature checked before, the answer is sent after.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use shared::batch::{Batch, IngestAck, Rejection};
use shared::sign::Verifier;
use shared::{Epoch, Method, Offset, Record};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::apply::apply_write;
use super::auth::Trust;
use super::{IngestError, Position, RecordError};
use crate::config::{Config, Mode};
use crate::http::ApiError;
use crate::rooms::{Outcome, Rooms, Seq};
use crate::telemetry;

/// How many logs (epochs) a host remembers having left. A delivery from one of them is
/// refused (`409 old_epoch`) instead of wiping the host back into that log. Logs are replaced
/// rarely (a new reflektor data directory, a re-created stream); a handful covers every
/// delivery that can still be fresh.
pub const EPOCHS_REMEMBERED: usize = 16;

/// Applied offset and epoch, behind one mutex: holding it is what serialises applying.
#[derive(Debug)]
pub struct IngestLog {
    state: Mutex<LogState>,
    ready: AtomicBool,
    /// How deliveries are checked (relayed mode).
    pub(crate) trust: Trust,
    /// `--max-ingest-requests`: ingest requests that may read a body at once.
    permits: Arc<Semaphore>,
    max_requests: usize,
    /// `--body-read-timeout`.
    pub(crate) body_timeout: Duration,
}

#[derive(Debug, Default)]
struct LogState {
    cursor: Cursor,
    /// Epochs this host applied and then left for a newer one, newest last.
    left: VecDeque<Epoch>,
}

/// Where this host stands in the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The log being applied; [`Epoch::NONE`] before the first delivery (and in standalone mode).
    pub epoch: Epoch,
    /// The highest offset applied (standalone: the last seq assigned).
    pub applied: Offset,
}

impl Cursor {
    fn position(self) -> Position {
        Position {
            applied: self.applied,
            epoch: self.epoch,
        }
    }
}

/// What a single write (replayed or standalone) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteResult {
    /// Applied at this seq; an event was pushed or nothing needed to change.
    Applied(Seq, Outcome),
    /// A replayed offset at or below what was applied: skipped.
    Duplicate(Seq),
}

/// A replayed request's place in the log, from its (verified) delivery headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Replayed {
    pub(crate) epoch: Epoch,
    pub(crate) offset: Offset,
    /// The offset it follows; `offset - 1` unless the log has a gap there.
    pub(crate) prev: Offset,
}

impl IngestLog {
    pub fn new(config: &Config) -> IngestLog {
        let ready = matches!(config.mode, Mode::Standalone { .. });
        metrics::gauge!(telemetry::READY).set(if ready { 1.0 } else { 0.0 });
        let trust = if !config.secrets.is_empty() {
            Trust::Signed(Verifier::new(&config.secrets, config.signature_window))
        } else if config.insecure_unsigned_ingest {
            Trust::Unsigned
        } else {
            Trust::Nobody
        };
        let max_requests = config.max_ingest_requests.clamp(1, Semaphore::MAX_PERMITS);
        IngestLog {
            state: Mutex::new(LogState::default()),
            ready: AtomicBool::new(ready),
            trust,
            permits: Arc::new(Semaphore::new(max_requests)),
            max_requests,
            body_timeout: config.body_read_timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where this host stands now.
    pub fn cursor(&self) -> Cursor {
        self.lock().cursor
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

    /// A slot to read one ingest body in; held until the request is answered.
    ///
    /// # Errors
    /// [`IngestError::Overloaded`] when `--max-ingest-requests` are in flight.
    pub(crate) fn admit(&self) -> Result<OwnedSemaphorePermit, IngestError> {
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| IngestError::Overloaded(self.max_requests))
    }

    /// A delivery from `epoch`: the first adopts it; a different one later is a new log, so
    /// every room is cleared (subscribers get `reset`) and applying starts over. A log this
    /// host already left is refused: a re-sent old delivery must not wipe the host.
    fn enter_epoch(state: &mut LogState, epoch: Epoch, rooms: &Rooms) -> Result<(), IngestError> {
        let cursor = &mut state.cursor;
        if cursor.epoch == epoch {
            return Ok(());
        }
        if state.left.contains(&epoch) {
            return Err(IngestError::OldEpoch {
                old: epoch,
                current: cursor.position(),
            });
        }
        if cursor.epoch == Epoch::NONE && cursor.applied == Offset::ZERO {
            tracing::info!(%epoch, "applying log");
            cursor.epoch = epoch;
            return Ok(());
        }
        tracing::warn!(
            old = %cursor.epoch,
            new = %epoch,
            applied = %cursor.applied,
            "a new log replaces the one applied: clearing every room and starting over"
        );
        rooms.clear_for_new_log();
        if state.left.len() == EPOCHS_REMEMBERED {
            state.left.pop_front();
        }
        state.left.push_back(cursor.epoch);
        *cursor = Cursor {
            epoch,
            applied: Offset::ZERO,
        };
        metrics::counter!(telemetry::EPOCH_RESETS).increment(1);
        Ok(())
    }

    /// Apply a parsed batch (signature already checked): records in offset order, each once.
    ///
    /// A record refused on its merits is listed in the ack's `rejected` and consumes its
    /// offset. A record refused for a condition of this host (the room limit) stops the batch
    /// there: the ack's `applied` is the offset before it, so the sender sends it again; if
    /// it is the first new record, the whole batch is refused with that error (`503`), so the
    /// sender backs off.
    ///
    /// # Errors
    /// `BadBatch` when a record's offset cannot be read or offsets do not increase; `OldEpoch`;
    /// `OutOfOrder` when `prev` is above what was applied; a host condition as above. Nothing
    /// was applied.
    pub(crate) fn apply_batch(
        &self,
        rooms: &Rooms,
        max_body: usize,
        batch: &Batch,
    ) -> Result<IngestAck, IngestError> {
        let mut offsets = Vec::with_capacity(batch.records.len());
        for r in &batch.records {
            let offset = Record::peek_offset(r).ok_or_else(|| {
                IngestError::BadBatch("a record is too short to carry an offset".into())
            })?;
            if offsets.last().is_some_and(|&last| offset <= last) {
                return Err(IngestError::BadBatch(
                    "record offsets in a batch must strictly increase".into(),
                ));
            }
            offsets.push(offset);
        }
        let header = batch.header;
        let mut state = self.lock();
        IngestLog::enter_epoch(&mut state, header.epoch, rooms)?;
        rooms.note_log_head(header.head.max(offsets.last().copied().unwrap_or_default()));
        let cursor = &mut state.cursor;
        if header.prev > cursor.applied {
            return Err(IngestError::OutOfOrder(cursor.position()));
        }
        let before = cursor.applied;
        let mut rejected = Vec::new();
        for (bytes, &offset) in batch.records.iter().zip(&offsets) {
            if offset <= cursor.applied {
                continue;
            }
            let result = Record::decode(bytes.clone())
                .map_err(|e| RecordError::BadRecord(e.to_string()))
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
            match result {
                Ok(_) => {}
                Err(e) if e.is_record_fault() => rejected.push(reject(offset, &e)),
                Err(e) if cursor.applied == before => return Err(IngestError::Record(e)),
                Err(e) => {
                    tracing::warn!(%offset, error = %e, "record not applied for now; the rest of the batch waits");
                    break;
                }
            }
            cursor.applied = offset;
        }
        let position = *cursor;
        drop(state);
        metrics::counter!(telemetry::INGEST_BATCHES).increment(1);
        metrics::gauge!(telemetry::APPLIED_OFFSET).set(position.applied.0 as f64);
        if position.applied >= header.head {
            self.set_ready();
        }
        Ok(IngestAck {
            applied: position.applied,
            epoch: position.epoch,
            rejected,
        })
    }

    /// Apply one replayed request: its offset is the seq. At or below applied it is a
    /// duplicate, skipped. It must follow what was applied: its `prev` (`offset - 1` unless
    /// the log has a gap there) at or below applied, else `OutOfOrder`. A write refused on its
    /// merits still consumes its offset (reflektor dead-letters it and the next offset is in
    /// order); a refusal that is not the write's fault (the room limit) does not.
    /// Replay carries no log head, so a replay-fed host is ready from its first delivery.
    ///
    /// # Errors
    /// `OldEpoch`, `OutOfOrder`, or the write's own refusal.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn apply_replayed(
        &self,
        rooms: &Rooms,
        max_body: usize,
        at: Replayed,
        method: Method,
        path: &str,
        body: &Bytes,
        ts_ms: u64,
    ) -> Result<WriteResult, IngestError> {
        let mut state = self.lock();
        IngestLog::enter_epoch(&mut state, at.epoch, rooms)?;
        rooms.note_log_head(at.offset);
        let cursor = &mut state.cursor;
        if at.offset <= cursor.applied {
            return Ok(WriteResult::Duplicate(Seq::from(at.offset)));
        }
        if at.prev > cursor.applied {
            return Err(IngestError::OutOfOrder(cursor.position()));
        }
        let result = apply_write(
            rooms,
            max_body,
            method,
            path,
            body,
            Seq::from(at.offset),
            ts_ms,
        );
        if let Err(e) = &result
            && !e.is_record_fault()
        {
            return Err(IngestError::Record(e.clone()));
        }
        cursor.applied = at.offset;
        drop(state);
        metrics::gauge!(telemetry::APPLIED_OFFSET).set(at.offset.0 as f64);
        self.set_ready();
        match result {
            Ok(outcome) => Ok(WriteResult::Applied(Seq::from(at.offset), outcome)),
            Err(e) => {
                count_rejected(&ApiError::from(e.clone()));
                Err(IngestError::Record(e))
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
    ) -> Result<WriteResult, IngestError> {
        let mut state = self.lock();
        let cursor = &mut state.cursor;
        let seq = cursor.applied.next();
        let outcome = apply_write(rooms, max_body, method, path, body, Seq::from(seq), ts_ms)
            .inspect_err(|e| count_rejected(&ApiError::from(e.clone())))?;
        cursor.applied = seq;
        drop(state);
        rooms.note_log_head(seq);
        metrics::gauge!(telemetry::APPLIED_OFFSET).set(seq.0 as f64);
        Ok(WriteResult::Applied(Seq::from(seq), outcome))
    }
}

fn count_rejected(e: &ApiError) {
    metrics::counter!(telemetry::REJECTED_RECORDS, "status" => e.status.as_str().to_owned())
        .increment(1);
}

fn reject(offset: Offset, e: &RecordError) -> Rejection {
    let e = ApiError::from(e.clone());
    count_rejected(&e);
    tracing::debug!(%offset, status = %e.status, code = e.code, message = %e.message, "record rejected");
    Rejection {
        offset,
        status: e.status.as_u16(),
        error: format!("{}: {}", e.code, e.message),
    }
}
