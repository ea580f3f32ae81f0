//! [`Rooms`]: every room on this host, by name, and the one sweeper that removes idle ones.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use super::RoomError;
use super::context::Context;
use super::frame::Seq;
use super::history::Retention;
use super::name::RoomId;
use super::room::{ApplyError, Outcome, Room, RoomOp, Subscription, now_ms};
use crate::telemetry;

/// How often the sweeper runs.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// A room untouched for this long, with nothing retained and nobody subscribed, is removed.
pub const ROOM_IDLE_AFTER: Duration = Duration::from_secs(60);

/// Every room on this host. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Rooms {
    map: Arc<DashMap<RoomId, Arc<Room>>>,
    shared: Arc<Context>,
    max_rooms: usize,
}

impl Rooms {
    pub fn new(retention: Retention, send_queue: usize, max_rooms: usize) -> Rooms {
        Rooms {
            map: Arc::new(DashMap::new()),
            shared: Arc::new(Context::new(retention, send_queue)),
            max_rooms,
        }
    }

    /// The room, if this host holds it.
    pub fn get(&self, id: &RoomId) -> Option<Arc<Room>> {
        let room = self.map.get(id).map(|r| Arc::clone(r.value()))?;
        room.touch();
        Some(room)
    }

    /// The room, created empty if new.
    ///
    /// # Errors
    /// [`RoomError::TooManyRooms`] when `--max-rooms` rooms exist already.
    pub fn get_or_create(&self, id: &RoomId) -> Result<Arc<Room>, RoomError> {
        if let Some(room) = self.get(id) {
            return Ok(room);
        }
        if self.map.len() >= self.max_rooms {
            return Err(RoomError::TooManyRooms {
                max: self.max_rooms,
            });
        }
        let room = self
            .map
            .entry(id.clone())
            .or_insert_with(|| Arc::new(Room::new(id.clone(), Arc::clone(&self.shared))));
        room.touch();
        Ok(Arc::clone(room.value()))
    }

    /// Subscribe to a room (created if new); see [`Room::subscribe`]. Prefer this to
    /// `get_or_create` + `subscribe`: it retries if the room is retired in between.
    ///
    /// # Errors
    /// [`RoomError::TooManyRooms`].
    pub fn subscribe(&self, id: &RoomId, after: Option<Seq>) -> Result<Subscription, RoomError> {
        loop {
            let room = self.get_or_create(id)?;
            if let Some(sub) = room.try_subscribe(after) {
                return Ok(sub);
            }
            self.map.remove_if(id, |_, r| Arc::ptr_eq(r, &room));
        }
    }

    /// Apply one op to a room at `seq` (the one place room state changes).
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
            let room = self.get_or_create(id)?;
            match room.apply(seq, ts_ms, op) {
                Ok(outcome) => return Ok(outcome),
                Err(ApplyError::Refused(e)) => return Err(e),
                Err(ApplyError::Retired) => {
                    self.map.remove_if(id, |_, r| Arc::ptr_eq(r, &room));
                }
            }
        }
    }

    /// A new log replaces every room: subscribers get `reset` and are closed; history is gone.
    pub fn clear_for_new_log(&self) {
        self.shared.log_head.store(0, Ordering::Relaxed);
        let rooms: Vec<(RoomId, Arc<Room>)> = self
            .map
            .iter()
            .map(|r| (r.key().clone(), Arc::clone(r.value())))
            .collect();
        for (id, room) in rooms {
            room.retire_for_new_log();
            self.map.remove_if(&id, |_, r| Arc::ptr_eq(r, &room));
        }
    }

    /// Record that the log holds records up to `head` (see `Context::log_head`).
    pub fn note_log_head(&self, head: shared::Offset) {
        self.shared.log_head.fetch_max(head.0, Ordering::Relaxed);
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

    /// Rooms held now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Events retained for resume, all rooms.
    pub fn stored_events(&self) -> u64 {
        self.shared.stored_events()
    }

    /// Messages retained for paging, all rooms.
    pub fn stored_messages(&self) -> u64 {
        self.shared.stored_messages()
    }

    /// Set the room and history gauges (called when metrics are rendered).
    pub fn export_gauges(&self) {
        metrics::gauge!(telemetry::ROOMS).set(self.len() as f64);
        metrics::gauge!(telemetry::HISTORY_EVENTS).set(self.stored_events() as f64);
        metrics::gauge!(telemetry::HISTORY_MESSAGES).set(self.stored_messages() as f64);
    }
}
