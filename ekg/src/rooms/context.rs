//! [`Context`]: what every room of this host shares with the registry: the retention limits,
//! the room limit and its count, the newest offset the log is known to hold, and the
//! process-wide counts behind the gauges. Rooms and the registry both hold it; neither imports
//! the other for it.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use super::history::{Delta, Retention};

#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) retention: Retention,
    /// `--max-rooms`: most rooms holding events at once.
    pub(crate) max_rooms: usize,
    /// Rooms holding events now (each took its slot with its first event and gives it back
    /// when it is removed). Rooms that only readers opened hold no slot.
    held: AtomicUsize,
    /// The newest offset known to exist in the log feeding this host (a batch's `head`, a
    /// replayed offset, or the last standalone seq). A resume cursor at or below it is valid
    /// even where this host has not applied that far yet (it is rebuilding, or a moment behind
    /// another host): the subscriber waits for the rest instead of starting over.
    pub(crate) log_head: AtomicU64,
    /// Events retained for resume, all rooms.
    events: AtomicI64,
    /// Messages retained for paging, all rooms.
    messages: AtomicI64,
}

impl Context {
    pub(crate) fn new(retention: Retention, max_rooms: usize) -> Context {
        Context {
            retention,
            max_rooms,
            held: AtomicUsize::new(0),
            log_head: AtomicU64::new(0),
            events: AtomicI64::new(0),
            messages: AtomicI64::new(0),
        }
    }

    /// Take a slot of `--max-rooms` for a room's first event; `false` when none is left.
    pub(crate) fn claim_room(&self) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_rooms).then_some(n + 1)
            })
            .is_ok()
    }

    /// Give back the slot of a room that is removed.
    pub(crate) fn release_room(&self) {
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Rooms holding events now.
    pub(crate) fn held_rooms(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Add what one operation changed to the process-wide counts.
    pub(crate) fn record(&self, delta: Delta) {
        if delta.events != 0 {
            self.events.fetch_add(delta.events, Ordering::Relaxed);
        }
        if delta.messages != 0 {
            self.messages.fetch_add(delta.messages, Ordering::Relaxed);
        }
    }

    pub(crate) fn stored_events(&self) -> u64 {
        u64::try_from(self.events.load(Ordering::Relaxed)).unwrap_or(0)
    }

    pub(crate) fn stored_messages(&self) -> u64 {
        u64::try_from(self.messages.load(Ordering::Relaxed)).unwrap_or(0)
    }
}
