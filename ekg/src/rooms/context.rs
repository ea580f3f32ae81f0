//! [`Context`]: what every room of this host shares with the registry: the retention limits,
//! the newest offset the log is known to hold, and the process-wide counts behind the gauges.
//! Rooms and the registry both hold it; neither imports the other for it.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::history::{Delta, Retention};

#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) retention: Retention,
    /// Capacity of each room's broadcast channel: the per-connection send queue in frames.
    pub(crate) send_queue: usize,
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
    pub(crate) fn new(retention: Retention, send_queue: usize) -> Context {
        Context {
            retention,
            send_queue,
            log_head: AtomicU64::new(0),
            events: AtomicI64::new(0),
            messages: AtomicI64::new(0),
        }
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
