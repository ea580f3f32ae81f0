//! [`Room`]: one room's head, history and subscriber list, and its fan-out.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use super::RoomError;
use super::context::Context;
use super::fanout::{Delivery, Subscriber};
use super::history::{Cursor, Delta, History, Page};
use super::name::{MessageId, RoomId};
use crate::wire::{Frame, Seq};

/// One change to a room, already parsed and validated as far as it can be without the room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomOp {
    /// A new message. `data` is the posted JSON object; `id` its `"id"` field, if any.
    Post { id: Option<MessageId>, data: Bytes },
    /// Replace a message's data.
    Put { id: MessageId, data: Bytes },
    /// Remove a message from history (no event if it is already gone).
    Delete { id: MessageId },
    /// A custom event; `data` is any JSON value.
    Event {
        name: String,
        data: Bytes,
        ephemeral: bool,
    },
}

/// What applying an op did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An event was pushed (and stored unless ephemeral).
    Pushed(EventKind),
    /// Nothing changed (deleting a message that is already gone).
    Unchanged,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Message,
    Update,
    Delete,
    Event,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Message => "message",
            EventKind::Update => "update",
            EventKind::Delete => "delete",
            EventKind::Event => "event",
        }
    }
}

/// Why [`Room::apply`] did nothing.
#[derive(Debug)]
pub(crate) enum ApplyError {
    /// The room was removed from the registry; apply to the room that replaces it.
    Retired,
    /// Refused on its merits.
    Refused(RoomError),
}

/// What `GET /rooms/{room}` shows.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RoomInfo {
    pub room: String,
    pub head: Seq,
    pub oldest: Seq,
    pub messages: usize,
    pub subscribers: usize,
}

/// One room. Shared as `Arc<Room>`; all state sits behind one std mutex that is only held
/// for in-memory work (never across an await, never while frames go out to subscribers,
/// except for a new subscriber's own start).
pub struct Room {
    id: RoomId,
    state: Mutex<RoomState>,
    /// When the room was last looked up or changed (Unix ms); the sweeper spares recent rooms.
    touched_ms: AtomicU64,
    ctx: Arc<Context>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// One subscription in a room's list.
#[derive(Clone)]
struct Sub {
    key: u64,
    /// Live frames with a seq at or below this were covered by the subscription's start (or
    /// by the client's cursor): they are not handed to it.
    skip_through: Seq,
    to: Arc<dyn Subscriber>,
}

struct RoomState {
    history: History,
    /// The newest seq applied to this room (ephemeral events included).
    head: Seq,
    /// Subscriptions on this host. Copied on write: a fan-out works on the list as it was when
    /// it took its frames, while subscribers come and go.
    subs: Arc<Vec<Sub>>,
    /// Key of the next subscription.
    next_key: u64,
    /// Frames applied while the room had subscribers and not yet handed to them, in seq order.
    pending: Vec<Arc<Frame>>,
    /// The room is in the fan-out queue or being handed out. At most one fan-out per room at a
    /// time: that is what keeps every subscriber's frames in seq order.
    scheduled: bool,
    /// The room has taken events and counts against `--max-rooms`.
    held: bool,
    /// The room was removed from the registry: no new op or subscriber. Ops and subscribes
    /// that find it go to the room that replaces it.
    retired: bool,
    /// A new log retired the room while it had subscribers: they still get a `reset` and the
    /// end of their subscription from the fan-out, after any pending frame.
    end_owed: bool,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Room {
    pub(crate) fn new(id: RoomId, ctx: Arc<Context>) -> Room {
        Room {
            id,
            state: Mutex::new(RoomState {
                history: History::default(),
                head: Seq::ZERO,
                subs: Arc::default(),
                next_key: 0,
                pending: Vec::new(),
                scheduled: false,
                held: false,
                retired: false,
                end_owed: false,
            }),
            touched_ms: AtomicU64::new(now_ms()),
            ctx,
        }
    }

    fn lock(&self) -> MutexGuard<'_, RoomState> {
        // The state is consistent between statements; a panic elsewhere must not stop the room.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn touch(&self) {
        self.touched_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn id(&self) -> &RoomId {
        &self.id
    }

    /// The newest seq applied to this room.
    pub fn head(&self) -> Seq {
        self.lock().head
    }

    /// Subscribers on this host.
    pub fn subscribers(&self) -> usize {
        self.lock().subs.len()
    }

    fn oldest(state: &RoomState) -> Seq {
        state
            .history
            .oldest()
            .unwrap_or(Seq(state.head.0.saturating_add(1)))
    }

    pub fn info(&self) -> RoomInfo {
        let state = self.lock();
        RoomInfo {
            room: self.id.to_string(),
            head: state.head,
            oldest: Room::oldest(&state),
            messages: state.history.message_count(),
            subscribers: state.subs.len(),
        }
    }

    /// Subscribe `to`: in one critical section with every apply, hand it its start (`hello`,
    /// then a `reset` when the cursor cannot be honoured, then the backlog) and add it to the
    /// room's list, so every later event reaches it live and none falls between.
    ///
    /// `after = None`: no backlog. `after = Some(s)`: every retained event with seq > s; a
    /// `reset` first when events after `s` were trimmed (backlog then starts at the oldest
    /// retained) or when `s` is above every offset the log is known to hold (a cursor from
    /// another log: no backlog). A cursor above this room's head but within the log is valid:
    /// this host is still applying up to it, so live events up to `s` are skipped.
    ///
    /// Returns the subscription's key, or `None` if the room is retired (subscribe to the room
    /// that replaces it).
    pub(crate) fn try_subscribe(&self, after: Option<Seq>, to: Arc<dyn Subscriber>) -> Option<u64> {
        self.touch();
        let mut state = self.lock();
        if state.retired {
            return None;
        }
        let mut skip_through = state.head;
        let (reset, backlog) = match after {
            None => (None, Vec::new()),
            // Ahead of this room but not of the log: this host has not applied that far yet.
            // Nothing to replay; live events up to the cursor are duplicates for this client.
            Some(s) if s > state.head && s.0 <= self.ctx.log_head.load(Ordering::Relaxed) => {
                skip_through = s;
                (None, Vec::new())
            }
            Some(s) if s > state.head => (
                Some(reset_frame("cursor_ahead", Room::oldest(&state))),
                Vec::new(),
            ),
            Some(s) if state.history.trimmed_through() > s => (
                Some(reset_frame("history_trimmed", Room::oldest(&state))),
                state.history.events_after(Seq::ZERO),
            ),
            Some(s) => (None, state.history.events_after(s)),
        };
        let hello = format!(
            r#"{{"type":"hello","room":"{}","head":{},"oldest":{}}}"#,
            self.id,
            state.head,
            Room::oldest(&state)
        );
        let mut start = Vec::with_capacity(backlog.len() + 2);
        start.push(Arc::new(Frame::control(&hello, "hello")));
        start.extend(reset);
        start.extend(backlog);
        to.deliver(&self.id, Delivery::Start(&start));
        let key = state.next_key;
        state.next_key += 1;
        Arc::make_mut(&mut state.subs).push(Sub {
            key,
            skip_through,
            to,
        });
        Some(key)
    }

    /// End the subscription `key` (no frame reaches it once this returns, except from a
    /// fan-out already under way). Returns whether the room is now disposable: no subscriber,
    /// never written, nothing retained.
    pub(crate) fn unsubscribe(&self, key: u64) -> bool {
        self.touch();
        let mut state = self.lock();
        if let Some(i) = state.subs.iter().position(|s| s.key == key) {
            Arc::make_mut(&mut state.subs).swap_remove(i);
        }
        state.subs.is_empty() && !state.held && state.history.is_empty()
    }

    /// Apply one op at `seq`: check it against the room, then store it and queue its frame for
    /// the subscribers, all under the lock (so a concurrent subscribe sees it either in its
    /// start or live). A refused op changes nothing. The first event a room takes counts it
    /// against `--max-rooms`.
    ///
    /// Returns what the op did, and whether the caller must queue the room for fan-out.
    pub(crate) fn apply(
        &self,
        seq: Seq,
        ts_ms: u64,
        op: &RoomOp,
    ) -> Result<(Outcome, bool), ApplyError> {
        let mut state = self.lock();
        if state.retired {
            return Err(ApplyError::Retired);
        }
        if seq <= state.head {
            return Err(ApplyError::Refused(RoomError::StaleSeq {
                seq,
                head: state.head,
            }));
        }
        // Check the op and build its frame without changing anything.
        let (kind, frame, change) = match op {
            RoomOp::Post { id, data } => {
                let id = match id {
                    Some(id) => id.clone(),
                    None => MessageId::parse(&seq.to_string()).map_err(ApplyError::Refused)?,
                };
                if state.history.contains_message(&id) {
                    return Err(ApplyError::Refused(RoomError::DuplicateId {
                        room: self.id.clone(),
                        id,
                    }));
                }
                let frame = Arc::new(
                    Frame::event(
                        seq,
                        "message",
                        &message_json("message", seq, &id, Some(data), ts_ms, None),
                    )
                    .accepted_at(ts_ms),
                );
                let json = Bytes::from(frame.ws.clone());
                (EventKind::Message, frame, Change::Post(id, json))
            }
            RoomOp::Put { id, data } => {
                let Some((origin, origin_ts)) = state.history.message_origin(id) else {
                    return Err(ApplyError::Refused(unknown_message(&self.id, id)));
                };
                let view = message_json("message", origin, id, Some(data), origin_ts, Some(seq));
                let frame = Frame::event(
                    seq,
                    "update",
                    &message_json("update", seq, id, Some(data), ts_ms, None),
                )
                .accepted_at(ts_ms);
                (
                    EventKind::Update,
                    Arc::new(frame),
                    Change::Put(id, Bytes::from(view)),
                )
            }
            RoomOp::Delete { id } => {
                if !state.history.contains_message(id) {
                    return Ok((Outcome::Unchanged, false));
                }
                let frame = Frame::event(
                    seq,
                    "delete",
                    &message_json("delete", seq, id, None, ts_ms, None),
                )
                .accepted_at(ts_ms);
                (EventKind::Delete, Arc::new(frame), Change::Delete(id))
            }
            RoomOp::Event {
                name,
                data,
                ephemeral,
            } => {
                let frame = Frame::event(
                    seq,
                    "event",
                    &event_json(seq, name, data, *ephemeral, ts_ms),
                )
                .accepted_at(ts_ms);
                let change = if *ephemeral {
                    Change::Ephemeral
                } else {
                    Change::Event
                };
                (EventKind::Event, Arc::new(frame), change)
            }
        };
        if !state.held {
            if !self.ctx.claim_room() {
                return Err(ApplyError::Refused(RoomError::TooManyRooms {
                    max: self.ctx.max_rooms,
                }));
            }
            state.held = true;
        }
        let mut delta = Delta::default();
        let store = !matches!(change, Change::Ephemeral);
        match change {
            Change::Post(id, json) => {
                add(&mut delta, state.history.push_message(seq, ts_ms, id, json))
            }
            Change::Put(id, view) => {
                state.history.replace_message(id, view);
            }
            Change::Delete(id) => {
                if let Some(d) = state.history.delete_message(id) {
                    add(&mut delta, d);
                }
            }
            Change::Event | Change::Ephemeral => {}
        }
        if store {
            add(
                &mut delta,
                state.history.push_event(ts_ms, Arc::clone(&frame)),
            );
        }
        state.head = seq;
        add(&mut delta, state.history.trim(self.ctx.retention, now_ms()));
        // Without subscribers the frame goes nowhere now; whoever subscribes later starts
        // after it (or gets it from history).
        let schedule = if state.subs.is_empty() {
            false
        } else {
            state.pending.push(frame);
            !std::mem::replace(&mut state.scheduled, true)
        };
        drop(state);
        self.ctx.record(delta);
        self.touch();
        Ok((Outcome::Pushed(kind), schedule))
    }

    /// Hand every pending frame to every subscriber, until none is left. Only the fan-out
    /// worker that took the room off the queue calls this (the room's `scheduled` flag makes
    /// it the only one), so each subscriber gets the room's frames in seq order. The room's
    /// lock is held only to take the frames and the subscriber list, never while they go out.
    pub(crate) fn flush(&self) {
        let mut frames: Vec<Arc<Frame>> = Vec::new();
        loop {
            let (subs, end) = {
                let mut state = self.lock();
                if !state.pending.is_empty() {
                    // The emptied buffer goes back for the next frames: no allocation per round.
                    std::mem::swap(&mut frames, &mut state.pending);
                    (Arc::clone(&state.subs), false)
                } else if state.end_owed {
                    state.end_owed = false;
                    frames.push(reset_frame("new_log", Seq(1)));
                    (std::mem::take(&mut state.subs), true)
                } else {
                    state.scheduled = false;
                    return;
                }
            };
            for sub in subs.iter() {
                if end {
                    sub.to.deliver(&self.id, Delivery::End(&frames));
                    continue;
                }
                let from = frames.partition_point(|f| f.seq.is_some_and(|s| s <= sub.skip_through));
                if from < frames.len() {
                    sub.to.deliver(&self.id, Delivery::Live(&frames[from..]));
                }
            }
            frames.clear();
        }
    }

    /// Drop history past the retention limits (the sweeper calls this for idle rooms).
    pub(crate) fn trim(&self, now_ms: u64) {
        let delta = self.lock().history.trim(self.ctx.retention, now_ms);
        self.ctx.record(delta);
    }

    /// Retire the room if it holds nothing, nobody watches it and it was not touched since
    /// `idle_before` (Unix ms). Called by the sweeper with the registry entry locked.
    pub(crate) fn retire_if_idle(&self, idle_before: u64) -> bool {
        if self.touched_ms.load(Ordering::Relaxed) >= idle_before {
            return false;
        }
        let mut state = self.lock();
        if !state.subs.is_empty() || state.scheduled || !state.history.is_empty() {
            return false;
        }
        self.retire(&mut state);
        true
    }

    /// Retire the room if nobody watches it and it never took an event (a room only readers
    /// opened). Called with the registry entry locked when its last subscriber leaves.
    pub(crate) fn retire_if_disposable(&self) -> bool {
        let mut state = self.lock();
        if !state.subs.is_empty() || state.held || state.scheduled || !state.history.is_empty() {
            return false;
        }
        self.retire(&mut state);
        true
    }

    fn retire(&self, state: &mut RoomState) {
        state.retired = true;
        if std::mem::replace(&mut state.held, false) {
            self.ctx.release_room();
        }
    }

    /// Retire the room because a new log replaces every room: history is dropped; the
    /// subscribers get a `reset` after any pending frame, then their subscription ends.
    /// Returns whether the caller must queue the room for fan-out.
    pub(crate) fn retire_for_new_log(&self) -> bool {
        let mut state = self.lock();
        let delta = state.history.clear();
        self.retire(&mut state);
        let schedule = if state.subs.is_empty() {
            false
        } else {
            state.end_owed = true;
            !std::mem::replace(&mut state.scheduled, true)
        };
        drop(state);
        self.ctx.record(delta);
        schedule
    }

    /// A page of messages. `limit` is 1..=MAX_PAGE.
    pub fn page(&self, cursor: Cursor, limit: usize) -> Page {
        self.lock().history.page(cursor, limit)
    }

    /// Retained events and messages (for measurements and tests).
    pub fn retained(&self) -> (usize, usize) {
        let state = self.lock();
        (state.history.event_count(), state.history.message_count())
    }
}

/// How an accepted op changes the room's history.
enum Change<'a> {
    Post(MessageId, Bytes),
    Put(&'a MessageId, Bytes),
    Delete(&'a MessageId),
    /// Stored in the event log only.
    Event,
    /// Pushed, never stored.
    Ephemeral,
}

fn add(total: &mut Delta, d: Delta) {
    total.events += d.events;
    total.messages += d.messages;
}

fn unknown_message(room: &RoomId, id: &MessageId) -> RoomError {
    RoomError::UnknownMessage {
        room: room.clone(),
        id: id.clone(),
    }
}

/// `{"type":"reset","reason":R,"oldest":N}`.
fn reset_frame(reason: &str, oldest: Seq) -> Arc<Frame> {
    Arc::new(Frame::control(
        &format!(r#"{{"type":"reset","reason":"{reason}","oldest":{oldest}}}"#),
        "reset",
    ))
}

/// `{"type":T,"seq":S,"id":I[,"data":D],"ts":TS[,"updated":U]}`. Ids need no escaping.
fn message_json(
    kind: &str,
    seq: Seq,
    id: &MessageId,
    data: Option<&Bytes>,
    ts_ms: u64,
    updated: Option<Seq>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + data.map_or(0, Bytes::len));
    // Writes to a Vec cannot fail.
    let _ = write!(out, r#"{{"type":"{kind}","seq":{seq},"id":"{id}""#);
    if let Some(data) = data {
        out.extend_from_slice(br#","data":"#);
        out.extend_from_slice(data);
    }
    let _ = write!(out, r#","ts":{ts_ms}"#);
    if let Some(u) = updated {
        let _ = write!(out, r#","updated":{u}"#);
    }
    out.push(b'}');
    out
}

/// `{"type":"event","seq":S,"event":NAME,"data":D,"ephemeral":B,"ts":TS}`.
fn event_json(seq: Seq, name: &str, data: &Bytes, ephemeral: bool, ts_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(80 + name.len() + data.len());
    let _ = write!(out, r#"{{"type":"event","seq":{seq},"event":"#);
    // A &str always serializes.
    let _ = serde_json::to_writer(&mut out, name);
    out.extend_from_slice(br#","data":"#);
    out.extend_from_slice(data);
    let _ = write!(out, r#","ephemeral":{ephemeral},"ts":{ts_ms}}}"#);
    out
}
