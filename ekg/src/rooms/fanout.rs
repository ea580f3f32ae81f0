//! Fan-out: how a room hands its frames to its subscribers, and the queue of rooms that have
//! frames to hand out.
//!
//! A subscriber is anything that implements [`Subscriber`] (streams' connections do); a room
//! keeps a list of them and knows nothing else about them. Applying an op stores its frame and,
//! when the room has subscribers, appends it to the room's `pending` frames and queues the room
//! here once ([`FanoutQueue`]). Fan-out workers ([`super::Rooms::run_fanout`]) take rooms off
//! the queue and hand each subscriber every pending frame in one call. While the workers are
//! busy, frames accumulate per room, so under load one call (and, behind it, one socket write)
//! carries several frames; when idle, a frame goes out as soon as a worker picks its room up.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use super::name::RoomId;
use super::room::Room;
use crate::wire::Frame;

/// What a room hands a subscriber, always in seq order and never twice.
#[derive(Clone, Copy, Debug)]
pub enum Delivery<'a> {
    /// What a new subscription starts with: `hello`, an optional `reset`, then the retained
    /// events after its cursor (possibly many: they are shared with the room's history, not
    /// copied). Given once, before any live frame.
    Start(&'a [Arc<Frame>]),
    /// Live frames, oldest first.
    Live(&'a [Arc<Frame>]),
    /// The room was replaced by a new log: these are its last frames (a `reset`); nothing
    /// follows. The subscription is over.
    End(&'a [Arc<Frame>]),
}

/// The receiving end of a subscription: one connection, or anything else that takes a room's
/// frames. Called from the room's fan-out path (a fan-out worker, or the subscribe call for
/// [`Delivery::Start`]) with no room lock held except during `Start`; it must not block and
/// must not call back into the room.
pub trait Subscriber: Send + Sync {
    /// Take frames of `room`. A subscriber that cannot keep up drops the subscription itself
    /// (the frames are still in the room's history, so its client can resume by cursor).
    fn deliver(&self, room: &RoomId, delivery: Delivery<'_>);
}

/// Rooms with frames to hand out, each at most once (a room's `scheduled` flag says whether
/// it is queued or being handed out), and the wake-up for idle workers.
#[derive(Debug, Default)]
pub(crate) struct FanoutQueue {
    rooms: Mutex<VecDeque<Arc<Room>>>,
    ready: Notify,
}

impl FanoutQueue {
    /// Queue a room whose `scheduled` flag the caller just set.
    pub(crate) fn push(&self, room: Arc<Room>) {
        self.rooms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(room);
        self.ready.notify_one();
    }

    /// The next room to hand out, if any. Wakes another worker when more are waiting, so every
    /// worker takes part under load while an idle host wakes only one.
    pub(crate) fn pop(&self) -> Option<Arc<Room>> {
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        let room = rooms.pop_front();
        if !rooms.is_empty() {
            self.ready.notify_one();
        }
        room
    }

    /// Resolves when a room may have been queued since the last call (cancel-safe).
    pub(crate) fn ready(&self) -> tokio::sync::futures::Notified<'_> {
        self.ready.notified()
    }
}
