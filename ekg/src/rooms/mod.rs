//! Rooms: the in-memory state ekg serves, and the fan-out of every event to its subscribers.
//! This module knows nothing of sockets, transports or HTTP: a subscriber is anything that
//! implements [`Subscriber`].
//!
//! # Responsibility
//! Hold every room this host knows ([`Rooms`]), apply ops to them in seq order
//! ([`Rooms::apply`]), keep their bounded history (event log for resume, message view for
//! paging: [`history`]), give each new subscriber a consistent start ([`Rooms::subscribe`]),
//! and hand every event to the room's subscribers ([`fanout`]).
//!
//! # Structure
//! - `registry.rs`: [`Rooms`] (the map of rooms), [`Subscription`] (a subscriber's place in a
//!   room; dropping it leaves), the fan-out workers and the sweeper.
//! - `room.rs`: [`Room`] (head, history, subscriber list, pending frames) and the apply path.
//! - `fanout.rs`: [`Subscriber`], [`Delivery`], and the queue of rooms with frames to hand out.
//! - `context.rs`: what rooms and the registry share (limits, the room count, gauges), so
//!   neither imports the other.
//! - `history.rs`, `name.rs`: the retained past, and validated names. Frames are `crate::wire`.
//!
//! # Invariants
//! - Per room, seqs strictly increase; `head` is the newest applied (ephemeral included).
//! - Every event is encoded once ([`Frame`]) and the same `Arc<Frame>` is stored, handed to
//!   every subscriber and replayed on resume. Nothing is copied per subscriber.
//! - Apply and subscribe both run under the room's mutex. Subscribe hands the new subscriber
//!   its start (`hello`, optional `reset`, the retained events after its cursor) and joins the
//!   room's list in one critical section; apply stores an event and appends its frame to the
//!   room's `pending` frames in one critical section. So every event is either in a
//!   subscriber's start (seq <= the head it saw) or reaches it live: nothing falls between.
//!   Live frames at or below the head a subscriber started from are not handed to it.
//! - One fan-out per room at a time (the room's `scheduled` flag): frames reach every
//!   subscriber in seq order, and a subscriber of several rooms gets each room's frames in
//!   order. The room's lock is held to take the pending frames and the subscriber list, never
//!   while frames go out.
//! - The rooms hold no per-subscriber queue and no preallocated ring: a room without
//!   subscribers costs its history only, and a frame applied while nobody subscribes is only
//!   stored. The bound on what a slow client can make the host hold is the subscriber's own
//!   (streams' send queue).
//! - Ephemeral events advance `head` and are handed out, never stored.
//! - A resume cursor below `trimmed_through` (the newest seq ever trimmed) has a gap: the
//!   subscriber gets `reset` with reason `history_trimmed` and the whole retained log. A cursor
//!   above `head` but within the log (this host is rebuilding, or a moment behind the host the
//!   client came from) is valid: no backlog, and live events up to the cursor are skipped. A
//!   cursor above every offset the log is known to hold (another log) gets `reset` with
//!   `cursor_ahead`.
//! - A new log (epoch) retires every room: after any pending frame, subscribers get `reset`
//!   (`new_log`) and [`Delivery::End`]; the rooms are rebuilt from the new log.
//! - Lock order: registry entry, then room mutex, then (inside [`Subscriber::deliver`] during a
//!   subscribe) the subscriber's own lock. No lock is held across an await.
//! - Refusals are [`RoomError`]s, in the rooms' own terms; `http/errors.rs` maps them to HTTP
//!   and ingest decides from [`RoomError::is_op_fault`] whether a refusal is the record's.
//!
//! # Lifetime and limits
//! - Readers never create full rooms. A subscription to a room that has no events creates an
//!   empty room that holds no slot of `--max-rooms`; the last subscriber to leave removes it.
//!   So reading costs only the connection, and a write is never refused because readers came
//!   first.
//! - `--max-rooms` bounds the rooms that hold events: a room takes a slot with its first event
//!   (a write that would need one more is refused `too_many_rooms`, and leaves nothing behind)
//!   and gives it back when it is removed.
//! - One sweeper task trims history by age and removes rooms that are empty, unsubscribed and
//!   untouched for [`registry::ROOM_IDLE_AFTER`].
//!
//! # Memory
//! A room holding one short message (a 100-byte body) costs about 1.3 KB: the room, its map
//! entry, the event-log and message-view slots, the id index and the one encoded frame
//! (measured as in `BENCHMARKS.md`, "Rooms"). Before this design every
//! room also preallocated a broadcast ring of `--send-queue` slots: 34 KB per room.

mod context;
mod error;
mod fanout;
pub mod history;
mod name;
pub mod registry;
mod room;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use crate::wire::{Frame, Seq};
pub use error::RoomError;
pub use fanout::{Delivery, Subscriber};
pub use history::{Cursor, DEFAULT_PAGE, MAX_PAGE, Page, Retention};
pub use name::{MAX_NAME_LEN, MessageId, RoomId};
pub use registry::{Rooms, Subscription};
pub(crate) use room::now_ms;
pub use room::{EventKind, Outcome, Room, RoomInfo, RoomOp};
