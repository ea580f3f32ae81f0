//! A [`Subscriber`] that records what it is handed, for tests across the crate.

use std::sync::{Arc, Mutex};

use super::fanout::{Delivery, Subscriber};
use super::name::RoomId;
use super::registry::{Rooms, Subscription};
use crate::wire::{Frame, Seq};

#[derive(Default)]
struct Recorder {
    start: Mutex<Vec<Arc<Frame>>>,
    live: Mutex<Vec<Arc<Frame>>>,
    ended: Mutex<bool>,
}

impl Subscriber for Recorder {
    fn deliver(&self, _room: &RoomId, delivery: Delivery<'_>) {
        match delivery {
            Delivery::Start(f) => self.start.lock().unwrap().extend(f.iter().cloned()),
            Delivery::Live(f) => self.live.lock().unwrap().extend(f.iter().cloned()),
            Delivery::End(f) => {
                self.live.lock().unwrap().extend(f.iter().cloned());
                *self.ended.lock().unwrap() = true;
            }
        }
    }
}

/// A subscription whose frames are recorded.
pub(crate) struct Recorded {
    _sub: Subscription,
    rec: Arc<Recorder>,
    rooms: Rooms,
}

impl Recorded {
    pub(crate) fn new(rooms: &Rooms, room: &RoomId, after: Option<Seq>) -> Recorded {
        let rec = Arc::new(Recorder::default());
        let sub = rooms.subscribe(room, after, Arc::clone(&rec) as Arc<dyn Subscriber>);
        Recorded {
            _sub: sub,
            rec,
            rooms: rooms.clone(),
        }
    }

    /// What the subscription started with: hello, an optional reset, the backlog.
    pub(crate) fn start(&self) -> Vec<Arc<Frame>> {
        self.rec.start.lock().unwrap().clone()
    }

    /// The hello frame as JSON.
    pub(crate) fn hello(&self) -> serde_json::Value {
        serde_json::from_str(self.start()[0].json()).unwrap()
    }

    /// The reset frame after hello, if any.
    pub(crate) fn reset(&self) -> Option<serde_json::Value> {
        self.start()
            .get(1)
            .filter(|f| f.seq.is_none())
            .map(|f| serde_json::from_str(f.json()).unwrap())
    }

    /// Seqs of the backlog.
    pub(crate) fn backlog(&self) -> Vec<u64> {
        self.start()
            .iter()
            .filter_map(|f| f.seq)
            .map(Seq::get)
            .collect()
    }

    /// Hand out every queued room, then take the live frames received since the last call.
    pub(crate) fn live(&self) -> Vec<Arc<Frame>> {
        self.rooms.fan_out_now();
        std::mem::take(&mut *self.rec.live.lock().unwrap())
    }

    /// Seqs of [`Recorded::live`].
    pub(crate) fn live_seqs(&self) -> Vec<u64> {
        self.live()
            .iter()
            .filter_map(|f| f.seq)
            .map(Seq::get)
            .collect()
    }

    /// The room ended the subscription (a new log).
    pub(crate) fn ended(&self) -> bool {
        self.rooms.fan_out_now();
        *self.rec.ended.lock().unwrap()
    }
}
