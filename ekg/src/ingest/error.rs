//! Why ingest refused something, in ingest's own terms: [`IngestError`] for a whole delivery
//! (a batch, a replayed request, a standalone write) and [`RecordError`] for one write in it.
//! `http/errors.rs` turns them into HTTP answers, once.
//!
//! The question reflektor acts on, "is this refusal the record's fault?", is answered here by
//! [`RecordError::is_record_fault`] and nowhere else: a record refused on its merits consumes
//! its offset (reflektor dead-letters it and the next offset is in order); a refusal that is
//! not the record's fault (this host's room limit) leaves the offset for a retry.

use std::time::Duration;

use shared::sign::SignatureError;
use shared::{Epoch, Offset};

use crate::rooms::RoomError;

/// Why one write (a record of a batch, a replayed request, a standalone write) was refused.
/// Nothing of it was applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A batch record whose encoding does not decode.
    #[error("the record cannot be decoded: {0}")]
    BadRecord(String),
    /// A path outside the room write API.
    #[error("not a room write API path")]
    NoRoute,
    /// A method the room write API does not take on this path.
    #[error("{method} is not part of the room write API for {path}")]
    MethodNotAllowed { method: &'static str, path: String },
    /// A body over `--max-message-bytes`.
    #[error("the body is {len} bytes; the limit is {max}")]
    TooLarge { len: usize, max: usize },
    /// A body that is not UTF-8 (JSON is UTF-8; every transport must carry the same text).
    #[error("the body is not valid UTF-8")]
    NotUtf8,
    /// A body that is not the JSON the endpoint takes.
    #[error("{0}")]
    BadJson(String),
    /// A message `"id"` that is neither a string nor an integer.
    #[error("a message's \"id\" is a string or an integer")]
    BadIdType,
    /// An event whose `"type"` is empty or too long.
    #[error("an event's \"type\" is a string of 1-128 characters")]
    BadEventType,
    /// The room refused it (bad name, unknown message, duplicate id, room limit...).
    #[error(transparent)]
    Room(#[from] RoomError),
}

impl RecordError {
    /// Whether the write itself is at fault, so applying it again can never succeed: it
    /// consumes its offset and reflektor dead-letters it. `false` for a condition of this host
    /// (the room limit): the offset is not consumed and the write is retried later.
    pub fn is_record_fault(&self) -> bool {
        match self {
            RecordError::Room(e) => e.is_op_fault(),
            RecordError::BadRecord(_)
            | RecordError::NoRoute
            | RecordError::MethodNotAllowed { .. }
            | RecordError::TooLarge { .. }
            | RecordError::NotUtf8
            | RecordError::BadJson(_)
            | RecordError::BadIdType
            | RecordError::BadEventType => true,
        }
    }
}

/// Where a host stands in the log, as told to a sender that is out of step with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub applied: Offset,
    pub epoch: Epoch,
}

/// Why a delivery (or a standalone write) was refused as a whole. Nothing was applied, and no
/// offset was consumed, except for [`IngestError::Record`] when the record is at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// A reflektor batch sent to a standalone host.
    #[error("this host runs standalone and assigns its own seqs; it takes no reflektor log")]
    Standalone,
    /// A write on a relayed host without reflektor's delivery headers.
    #[error(
        "writes come through reflektor (X-Reflektor-* headers) or, on a standalone host, with a token"
    )]
    NotRelayed,
    /// No secret is configured and unsigned ingest was not allowed explicitly.
    #[error("this host has no secret configured and does not accept unsigned deliveries")]
    NoSecret,
    /// A delivery header is missing or malformed.
    #[error("{0}")]
    BadDeliveryHeaders(&'static str),
    /// The signature header is missing.
    #[error(
        "a reflektor signature is required (X-Reflektor-Epoch, -Offset, -Timestamp, -Signature)"
    )]
    SignatureRequired,
    /// The signature is malformed (a `v1=` one included) or made with no configured secret, or
    /// the signed epoch and offset are not the batch's.
    #[error("the reflektor signature is refused: {0}")]
    BadSignature(String),
    /// A valid signature whose timestamp is outside `--signature-window`.
    #[error(
        "the delivery was sent {skew_ms} ms away from this host's clock; the window is {window_ms} ms"
    )]
    StaleDelivery { skew_ms: u64, window_ms: u64 },
    /// Standalone writes: no or a wrong bearer token.
    #[error("{0}")]
    BadToken(&'static str),
    /// A batch whose `Content-Type` is not the batch format's.
    #[error("a batch is sent as {expected}")]
    UnsupportedMediaType { expected: &'static str },
    /// The declared or actual body is over the limit of this endpoint.
    #[error("the body is over the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// The body did not arrive within `--body-read-timeout`.
    #[error("the body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    /// The client broke off the body.
    #[error("the body could not be read: {0}")]
    BodyAborted(String),
    /// `--max-ingest-requests` ingest requests are in flight.
    #[error("{0} ingest requests are in flight; retry shortly")]
    Overloaded(usize),
    /// A batch whose framing is broken: nothing in it can be trusted.
    #[error("the batch cannot be parsed: {0}")]
    BadBatch(String),
    /// The delivery would skip offsets: its `prev` is above what this host applied. The sender
    /// resends from `applied + 1`.
    #[error("the delivery would skip offsets: this host has applied {} of log {}", .0.applied, .0.epoch)]
    OutOfOrder(Position),
    /// A delivery from a log (epoch) this host has already left for a newer one: refused, so a
    /// re-sent old delivery cannot wipe the host back into an old log.
    #[error("log {old} was replaced on this host by log {}; deliveries from it are refused", .current.epoch)]
    OldEpoch { old: Epoch, current: Position },
    /// The one write of a replayed request or standalone write was refused.
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl From<RoomError> for IngestError {
    fn from(e: RoomError) -> IngestError {
        IngestError::Record(RecordError::Room(e))
    }
}

impl From<SignatureError> for IngestError {
    fn from(e: SignatureError) -> IngestError {
        match e {
            SignatureError::Stale { skew_ms, window_ms } => {
                IngestError::StaleDelivery { skew_ms, window_ms }
            }
            SignatureError::Malformed | SignatureError::Mismatch => {
                IngestError::BadSignature(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use shared::WireError;

    use super::*;
    use crate::rooms::{MessageId, RoomId};

    #[test]
    fn a_record_is_at_fault_for_everything_but_the_room_limit() {
        let room = RoomId::parse("a").unwrap();
        let id = MessageId::parse("m").unwrap();
        let at_fault = [
            RecordError::BadRecord(WireError::BadMethod(9).to_string()),
            RecordError::NoRoute,
            RecordError::MethodNotAllowed {
                method: "PATCH",
                path: "/rooms/a/messages/1".into(),
            },
            RecordError::TooLarge { len: 2, max: 1 },
            RecordError::NotUtf8,
            RecordError::BadJson("x".into()),
            RecordError::BadIdType,
            RecordError::BadEventType,
            RecordError::Room(RoomError::BadRoomName),
            RecordError::Room(RoomError::UnknownMessage {
                room: room.clone(),
                id: id.clone(),
            }),
            RecordError::Room(RoomError::DuplicateId { room, id }),
        ];
        for e in at_fault {
            assert!(e.is_record_fault(), "{e:?}");
        }
        assert!(!RecordError::Room(RoomError::TooManyRooms { max: 1 }).is_record_fault());
    }

    #[test]
    fn a_stale_signature_is_told_apart_from_a_forged_one() {
        assert_eq!(
            IngestError::from(SignatureError::Stale {
                skew_ms: 9,
                window_ms: 1
            }),
            IngestError::StaleDelivery {
                skew_ms: 9,
                window_ms: 1
            }
        );
        assert!(matches!(
            IngestError::from(SignatureError::Mismatch),
            IngestError::BadSignature(_)
        ));
    }
}
