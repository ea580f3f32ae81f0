//! [`RoomError`]: why a room refused a name, an op or a new room, in the rooms' own terms.
//! The HTTP status each one becomes is decided once, in `http/errors.rs`.

use super::name::{MessageId, RoomId};
use crate::wire::Seq;

/// Why a room lookup or an op was refused. A refused op changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// A room name outside `[A-Za-z0-9_.:-]{1,128}`.
    #[error("room names are 1-128 characters of A-Z a-z 0-9 _ . : -")]
    BadRoomName,
    /// A message id outside `[A-Za-z0-9_.:-]{1,128}`.
    #[error("message ids are 1-128 characters of A-Z a-z 0-9 _ . : -")]
    BadMessageId,
    /// The op's seq is not above the room's head. Ingest applies each offset once and in
    /// order, so this means the op was already applied in another form; it can never apply.
    #[error("seq {seq} is not above the room's head {head}")]
    StaleSeq { seq: Seq, head: Seq },
    /// A `POST` with the id of a message the room holds.
    #[error("message {id} already exists in room {room}")]
    DuplicateId { room: RoomId, id: MessageId },
    /// A `PUT` of a message the room does not hold (never posted, deleted or trimmed).
    #[error("no message {id} in room {room}")]
    UnknownMessage { room: RoomId, id: MessageId },
    /// A write that would open a room while the host holds `--max-rooms` rooms with events
    /// (rooms only read or streamed do not count).
    #[error("this host holds its limit of {max} rooms with events")]
    TooManyRooms { max: usize },
}

impl RoomError {
    /// Whether the op itself is at fault: the same op can never succeed, wherever and
    /// whenever it is applied. `false` for a condition of this host (the room limit), which
    /// may pass.
    pub fn is_op_fault(&self) -> bool {
        match self {
            RoomError::BadRoomName
            | RoomError::BadMessageId
            | RoomError::StaleSeq { .. }
            | RoomError::DuplicateId { .. }
            | RoomError::UnknownMessage { .. } => true,
            RoomError::TooManyRooms { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_room_limit_is_a_condition_of_the_host() {
        let room = RoomId::parse("a").unwrap();
        let id = MessageId::parse("m").unwrap();
        for e in [
            RoomError::BadRoomName,
            RoomError::BadMessageId,
            RoomError::StaleSeq {
                seq: Seq(1),
                head: Seq(2),
            },
            RoomError::DuplicateId {
                room: room.clone(),
                id: id.clone(),
            },
            RoomError::UnknownMessage { room, id },
        ] {
            assert!(e.is_op_fault(), "{e:?}");
        }
        assert!(!RoomError::TooManyRooms { max: 3 }.is_op_fault());
    }
}
