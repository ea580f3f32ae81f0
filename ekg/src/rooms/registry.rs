//! [`Rooms`]: every room on this host, by name; [`Subscription`]s to them; the fan-out workers
//! and the one sweeper that removes idle rooms.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use super::RoomError;
use super::context::Context;
use super::fanout::{FanoutQueue, Subscriber};
use super::history::Retention;
use super::name::RoomId;
use super::room::{ApplyError, Outcome, Room, RoomOp, now_ms};
use crate::telemetry;
use crate::wire::Seq;

/// How often the sweeper runs.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// A room untouched for this long, with nothing retained and nobody subscribed, is removed.
pub const ROOM_IDLE_AFTER: Duration = Duration::from_secs(60);
/// Rooms a fan-out worker hands out before it lets other tasks of its thread run.
const ROOMS_PER_TURN: usize = 16;

type Map = DashMap<RoomId, Arc<Room>>;

/// Every room on this host. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Rooms {
    map: Arc<Map>,
    ctx: Arc<Context>,
    fanout: Arc<FanoutQueue>,
}

/// One subscriber's place in a room. Dropping it ends the subscription; the last subscriber
/// of a room that never took an event removes the room (readers cost only themselves).
pub struct Subscription {
    room: Arc<Room>,
    key: u64,
    map: Arc<Map>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("room", self.room.id())
            .field("key", &self.key)
            .finish()
    }
}

impl Subscription {
    pub fn room(&self) -> &Arc<Room> {
        &self.room
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.room.unsubscribe(self.key) {
            let room = &self.room;
            self.map.remove_if(room.id(), |_, r| {
                Arc::ptr_eq(r, room) && r.retire_if_disposable()
            });
        }
    }
}

impl Rooms {
    /// `max_rooms` bounds the rooms that hold events; rooms only read or subscribed to do not
    /// count (they exist while someone subscribes to them and cost their subscribers only).
    pub fn new(retention: Retention, max_rooms: usize) -> Rooms {
        Rooms {
            map: Arc::new(DashMap::new()),
            ctx: Arc::new(Context::new(retention, max_rooms)),
            fanout: Arc::new(FanoutQueue::default()),
        }
    }

    /// The room, if this host holds it.
    pub fn get(&self, id: &RoomId) -> Option<Arc<Room>> {
        let room = self.map.get(id).map(|r| Arc::clone(r.value()))?;
        room.touch();
        Some(room)
    }

    /// The room, created empty (holding no slot of `--max-rooms`) if new.
    fn get_or_insert(&self, id: &RoomId) -> Arc<Room> {
        if let Some(room) = self.get(id) {
            return room;
        }
        let room = self
            .map
            .entry(id.clone())
            .or_insert_with(|| Arc::new(Room::new(id.clone(), Arc::clone(&self.ctx))));
        room.touch();
        Arc::clone(room.value())
    }

    /// Subscribe `to` to a room, created if new; see [`Room::try_subscribe`]: `to` gets its
    /// start at once, then every later event of the room. Never refused: a room without events
    /// holds no slot of `--max-rooms`.
    pub fn subscribe(
        &self,
        id: &RoomId,
        after: Option<Seq>,
        to: Arc<dyn Subscriber>,
    ) -> Subscription {
        loop {
            let room = self.get_or_insert(id);
            if let Some(key) = room.try_subscribe(after, Arc::clone(&to)) {
                return Subscription {
                    room,
                    key,
                    map: Arc::clone(&self.map),
                };
            }
            // Retired meanwhile (a new log, or its last reader left): use its replacement.
            self.map.remove_if(id, |_, r| Arc::ptr_eq(r, &room));
        }
    }

    /// Apply one op to a room at `seq` (the one place room state changes), and queue its frame
    /// for the room's subscribers.
    ///
    /// # Errors
    /// The op's refusal (unknown message, duplicate id, too many rooms...); nothing was
    /// changed.
    pub fn apply(
        &self,
        id: &RoomId,
        seq: Seq,
        ts_ms: u64,
        op: &RoomOp,
    ) -> Result<Outcome, RoomError> {
        loop {
            let room = self.get_or_insert(id);
            match room.apply(seq, ts_ms, op) {
                Ok((outcome, schedule)) => {
                    if schedule {
                        self.fanout.push(room);
                    }
                    return Ok(outcome);
                }
                Err(ApplyError::Refused(e)) => {
                    // A refused first write leaves nothing behind.
                    self.map
                        .remove_if(id, |_, r| Arc::ptr_eq(r, &room) && r.retire_if_disposable());
                    return Err(e);
                }
                Err(ApplyError::Retired) => {
                    self.map.remove_if(id, |_, r| Arc::ptr_eq(r, &room));
                }
            }
        }
    }

    /// A new log replaces every room: subscribers get `reset` and their subscription ends;
    /// history is gone.
    pub fn clear_for_new_log(&self) {
        self.ctx
            .log_head
            .store(0, std::sync::atomic::Ordering::Relaxed);
        let rooms: Vec<(RoomId, Arc<Room>)> = self
            .map
            .iter()
            .map(|r| (r.key().clone(), Arc::clone(r.value())))
            .collect();
        for (id, room) in rooms {
            if room.retire_for_new_log() {
                self.fanout.push(Arc::clone(&room));
            }
            self.map.remove_if(&id, |_, r| Arc::ptr_eq(r, &room));
        }
    }

    /// Record that the log holds records up to `head` (see `Context::log_head`).
    pub fn note_log_head(&self, head: shared::Offset) {
        self.ctx
            .log_head
            .fetch_max(head.0, std::sync::atomic::Ordering::Relaxed);
    }

    /// Hand out every room queued for fan-out, on the calling thread. The workers of
    /// [`Rooms::run_fanout`] do this in a running host; tests call it directly.
    pub fn fan_out_now(&self) {
        while let Some(room) = self.fanout.pop() {
            room.flush();
        }
    }

    /// A fan-out worker: hand out queued rooms until `shutdown`. A host runs one per core;
    /// each room is handed out by one worker at a time.
    pub async fn run_fanout(self, shutdown: CancellationToken) {
        loop {
            let ready = self.fanout.ready();
            tokio::pin!(ready);
            // Registered before the queue is looked at, so no push is missed.
            ready.as_mut().enable();
            let mut handed = 0;
            while let Some(room) = self.fanout.pop() {
                room.flush();
                handed += 1;
                if handed % ROOMS_PER_TURN == 0 {
                    tokio::task::yield_now().await;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = ready => {}
            }
        }
    }

    /// Trim every room by age and remove idle empty rooms. Returns how many were removed.
    pub fn sweep(&self, now_ms: u64) -> usize {
        let idle_before =
            now_ms.saturating_sub(u64::try_from(ROOM_IDLE_AFTER.as_millis()).unwrap_or(u64::MAX));
        let rooms: Vec<(RoomId, Arc<Room>)> = self
            .map
            .iter()
            .map(|r| (r.key().clone(), Arc::clone(r.value())))
            .collect();
        let mut removed = 0;
        for (id, room) in rooms {
            room.trim(now_ms);
            // The check runs with the entry locked, so a concurrent lookup either sees the
            // room before it is retired (and touches it, which spares it) or not at all.
            if self
                .map
                .remove_if(&id, |_, r| {
                    Arc::ptr_eq(r, &room) && r.retire_if_idle(idle_before)
                })
                .is_some()
            {
                removed += 1;
            }
        }
        removed
    }

    /// Run [`Rooms::sweep`] every [`SWEEP_INTERVAL`] until `shutdown`.
    pub async fn run_sweeper(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    let removed = self.sweep(now_ms());
                    if removed > 0 {
                        tracing::debug!(removed, rooms = self.len(), "swept idle rooms");
                    }
                }
            }
        }
    }

    /// Rooms in memory: those holding events and those only subscribed to.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Rooms holding events (the ones `--max-rooms` bounds).
    pub fn held(&self) -> usize {
        self.ctx.held_rooms()
    }

    /// Events retained for resume, all rooms.
    pub fn stored_events(&self) -> u64 {
        self.ctx.stored_events()
    }

    /// Messages retained for paging, all rooms.
    pub fn stored_messages(&self) -> u64 {
        self.ctx.stored_messages()
    }

    /// Set the room and history gauges (called when metrics are rendered).
    pub fn export_gauges(&self) {
        metrics::gauge!(telemetry::ROOMS).set(self.len() as f64);
        metrics::gauge!(telemetry::HISTORY_EVENTS).set(self.stored_events() as f64);
        metrics::gauge!(telemetry::HISTORY_MESSAGES).set(self.stored_messages() as f64);
    }
}
