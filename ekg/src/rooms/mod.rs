//! Rooms: the in-memory state ekg serves, and the fan-out of every event to its subscribers.
//!
//! # Responsibility
//! Hold every room this host knows ([`Rooms`]), apply ops to them in seq order
//! ([`Rooms::apply`]), keep their bounded history (event log for resume, message view for
//! paging: [`history`]), and hand subscribers a consistent starting point plus the live
//! stream ([`Room::subscribe`]).
//!
//! # Invariants
//! - Per room, seqs strictly increase; `head` is the newest applied (ephemeral included).
//! - Every event is encoded once ([`Frame`]: the SSE buffer and a WebSocket slice of it) and
//!   the same `Arc<Frame>` is stored, broadcast, and replayed on resume. Nothing is copied
//!   per subscriber.
//! - Apply and subscribe both run under the room's mutex. Apply stores and broadcasts in one
//!   critical section; subscribe takes its broadcast receiver and its backlog snapshot in one
//!   critical section. So every event is either in the backlog (seq <= `covered`) or arrives
//!   live (seq > `covered`): nothing falls between, and a subscriber drops live duplicates by
//!   comparing with `covered`.
//! - The broadcast channel's capacity is `--send-queue`: a receiver that falls that far behind
//!   gets `Lagged` and is disconnected by its stream (it resumes by cursor). Memory per room
//!   is bounded by that capacity plus history limits, whatever clients do.
//! - Ephemeral events advance `head` and are broadcast, never stored.
//! - A resume cursor below `trimmed_through` (the newest seq ever trimmed) has a gap: the
//!   subscriber gets `reset` with reason `history_trimmed` and the whole retained log. A cursor
//!   above `head` but within the log (this host is rebuilding, or a moment behind the host the
//!   client came from) is valid: no backlog, and live events up to the cursor are skipped. A
//!   cursor above every offset the log is known to hold (another log) gets `reset` with
//!   `cursor_ahead`.
//! - A new log (epoch) retires every room: subscribers get `reset` (`new_log`) and their live
//!   channel closes; the rooms are rebuilt from the new log.
//! - Lock order: registry entry, then room mutex. No lock is held across an await.
//! - Refusals are [`RoomError`]s, in the rooms' own terms; `http/errors.rs` maps them to HTTP
//!   and ingest decides from [`RoomError::is_op_fault`] whether a refusal is the record's.
//!
//! # Lifetime
//! Rooms are created on first write or subscribe (at most `--max-rooms`). One sweeper task
//! trims history by age and removes rooms that are empty, unsubscribed and untouched for
//! [`registry::ROOM_IDLE_AFTER`].

mod context;
mod error;
mod frame;
pub mod history;
mod name;
pub mod registry;
mod room;

#[cfg(test)]
mod tests;

pub use error::RoomError;
pub use frame::{Frame, Seq};
pub use history::{Cursor, DEFAULT_PAGE, MAX_PAGE, Page, Retention};
pub use name::{MAX_NAME_LEN, MessageId, RoomId};
pub use registry::Rooms;
pub(crate) use room::now_ms;
pub use room::{EventKind, Outcome, Room, RoomInfo, RoomOp, SubscriberGuard, Subscription};
