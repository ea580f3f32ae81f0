//! [`Room`]: one room's head, history and broadcast channel, and [`Subscription`].

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::broadcast;

use super::RoomError;
use super::context::Context;
use super::frame::{Frame, Seq};
use super::history::{Cursor, Delta, History, Page};
use super::name::{MessageId, RoomId};

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
/// for in-memory work (never across an await).
pub struct Room {
    id: RoomId,
    state: Mutex<RoomState>,
    /// Live subscriptions on this host (see [`SubscriberGuard`]).
    subscribers: AtomicUsize,
    /// When the room was last looked up or changed (Unix ms); the sweeper spares recent rooms.
    touched_ms: AtomicU64,
    shared: Arc<Context>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

struct RoomState {
    history: History,
    /// The newest seq applied to this room (ephemeral events included).
    head: Seq,
    /// `None` once the room is retired: receivers then see `Closed` after what was sent.
    tx: Option<broadcast::Sender<Arc<Frame>>>,
}

/// What a new subscriber gets: everything to send before the live frames, and the live frames.
#[derive(Debug)]
pub struct Subscription {
    /// `{"type":"hello","room","head","oldest"}`.
    pub hello: Arc<Frame>,
    /// A `reset` frame to send right after hello when the cursor cannot be honoured.
    pub reset: Option<Arc<Frame>>,
    /// Retained events after the cursor, oldest first (may be large: send in chunks).
    pub backlog: Vec<Arc<Frame>>,
    /// Live frames with a seq at or below this were covered by hello/backlog: drop them.
    /// Frames without a seq (a `reset` on a new log) are always delivered.
    pub covered: Seq,
    /// Live frames of the room, capacity `--send-queue`. `Lagged` means the client cannot keep
    /// up; `Closed` means the room was replaced (a new log): end the stream, the client resumes.
    pub live: broadcast::Receiver<Arc<Frame>>,
    /// Counts this subscriber in the room while alive.
    pub guard: SubscriberGuard,
}

/// Counts one subscriber in its room while alive.
#[derive(Debug)]
pub struct SubscriberGuard {
    room: Arc<Room>,
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.room.subscribers.fetch_sub(1, Ordering::Relaxed);
        self.room.touch();
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Room {
    pub(crate) fn new(id: RoomId, shared: Arc<Context>) -> Room {
        let (tx, _) = broadcast::channel(shared.send_queue.max(1));
        Room {
            id,
            state: Mutex::new(RoomState {
                history: History::default(),
                head: Seq::ZERO,
                tx: Some(tx),
            }),
            subscribers: AtomicUsize::new(0),
            touched_ms: AtomicU64::new(now_ms()),
            shared,
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
        self.subscribers.load(Ordering::Relaxed)
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
            subscribers: self.subscribers(),
        }
    }

    /// Subscribe to live frames FIRST, then read the backlog under the same lock, so nothing
    /// falls between. `after = None`: no backlog. `after = Some(s)`: every retained event with
    /// seq > s; a `reset` first when events after `s` were trimmed (backlog then starts at the
    /// oldest retained) or when `s` is above every offset the log is known to hold (a cursor
    /// from another log: no backlog). A cursor above this room's head but within the log is
    /// valid: this host is still applying up to it, so live events up to `s` are skipped.
    ///
    /// On a retired room (replaced by a new log meanwhile) the live receiver reports `Closed`
    /// at once; [`super::Rooms::subscribe`] retries on the new room instead.
    pub fn subscribe(self: &Arc<Self>, after: Option<Seq>) -> Subscription {
        self.try_subscribe(after).unwrap_or_else(|| {
            let (tx, live) = broadcast::channel(1);
            drop(tx);
            let state = self.lock();
            self.subscription(&state, live, None, Vec::new())
        })
    }

    /// [`Room::subscribe`], or `None` if the room is retired.
    pub(crate) fn try_subscribe(self: &Arc<Self>, after: Option<Seq>) -> Option<Subscription> {
        self.touch();
        let state = self.lock();
        let live = state.tx.as_ref()?.subscribe();
        let mut covered = state.head;
        let (reset, backlog) = match after {
            None => (None, Vec::new()),
            // Ahead of this room but not of the log: this host has not applied that far yet.
            // Nothing to replay; live events up to the cursor are duplicates for this client.
            Some(s) if s > state.head && s.0 <= self.shared.log_head.load(Ordering::Relaxed) => {
                covered = s;
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
        let mut sub = self.subscription(&state, live, reset, backlog);
        sub.covered = covered;
        Some(sub)
    }

    fn subscription(
        self: &Arc<Self>,
        state: &RoomState,
        live: broadcast::Receiver<Arc<Frame>>,
        reset: Option<Arc<Frame>>,
        backlog: Vec<Arc<Frame>>,
    ) -> Subscription {
        let hello = format!(
            r#"{{"type":"hello","room":"{}","head":{},"oldest":{}}}"#,
            self.id,
            state.head,
            Room::oldest(state)
        );
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            hello: Arc::new(Frame::control(&hello, "hello")),
            reset,
            backlog,
            covered: state.head,
            live,
            guard: SubscriberGuard {
                room: Arc::clone(self),
            },
        }
    }

    /// Apply one op at `seq`: check it against the room, then store and broadcast its frame,
    /// all under the lock (so a concurrent subscribe sees it either in its backlog or live).
    /// A refused op changes nothing.
    pub(crate) fn apply(&self, seq: Seq, ts_ms: u64, op: &RoomOp) -> Result<Outcome, ApplyError> {
        let mut state = self.lock();
        if state.tx.is_none() {
            return Err(ApplyError::Retired);
        }
        if seq <= state.head {
            return Err(ApplyError::Refused(RoomError::StaleSeq {
                seq,
                head: state.head,
            }));
        }
        let mut delta = Delta::default();
        let (kind, frame, store) = match op {
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
                add(&mut delta, state.history.push_message(seq, ts_ms, id, json));
                (EventKind::Message, frame, true)
            }
            RoomOp::Put { id, data } => {
                let Some((origin, origin_ts)) = state.history.message_origin(id) else {
                    return Err(ApplyError::Refused(unknown_message(&self.id, id)));
                };
                let view = message_json("message", origin, id, Some(data), origin_ts, Some(seq));
                state.history.replace_message(id, Bytes::from(view));
                let frame = Frame::event(
                    seq,
                    "update",
                    &message_json("update", seq, id, Some(data), ts_ms, None),
                )
                .accepted_at(ts_ms);
                (EventKind::Update, Arc::new(frame), true)
            }
            RoomOp::Delete { id } => {
                let Some(d) = state.history.delete_message(id) else {
                    return Ok(Outcome::Unchanged);
                };
                add(&mut delta, d);
                let frame = Frame::event(
                    seq,
                    "delete",
                    &message_json("delete", seq, id, None, ts_ms, None),
                )
                .accepted_at(ts_ms);
                (EventKind::Delete, Arc::new(frame), true)
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
                (EventKind::Event, Arc::new(frame), !*ephemeral)
            }
        };
        if store {
            add(
                &mut delta,
                state.history.push_event(ts_ms, Arc::clone(&frame)),
            );
        }
        state.head = seq;
        add(
            &mut delta,
            state.history.trim(self.shared.retention, now_ms()),
        );
        if let Some(tx) = &state.tx {
            // An error only means nobody is subscribed right now; the event is in history.
            let _no_subscribers = tx.send(frame);
        }
        drop(state);
        self.shared.record(delta);
        self.touch();
        Ok(Outcome::Pushed(kind))
    }

    /// Drop history past the retention limits (the sweeper calls this for idle rooms).
    pub(crate) fn trim(&self, now_ms: u64) {
        let delta = self.lock().history.trim(self.shared.retention, now_ms);
        self.shared.record(delta);
    }

    /// Retire the room if it holds nothing, nobody watches it and it was not touched since
    /// `idle_before` (Unix ms). Called by the sweeper with the registry entry locked.
    pub(crate) fn retire_if_idle(&self, idle_before: u64) -> bool {
        if self.subscribers() > 0 || self.touched_ms.load(Ordering::Relaxed) >= idle_before {
            return false;
        }
        let mut state = self.lock();
        if !state.history.is_empty() || state.tx.as_ref().is_some_and(|tx| tx.receiver_count() > 0)
        {
            return false;
        }
        state.tx = None;
        true
    }

    /// Retire the room because a new log replaces every room: subscribers get a `reset`
    /// frame, then their live channel closes.
    pub(crate) fn retire_for_new_log(&self) {
        let mut state = self.lock();
        let delta = state.history.clear();
        if let Some(tx) = state.tx.take() {
            let reset = reset_frame("new_log", Seq(1));
            let _no_subscribers = tx.send(reset);
        }
        drop(state);
        self.shared.record(delta);
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
