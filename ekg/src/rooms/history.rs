//! A room's retained past: the event log (for resume) and the message view (for paging).
//!
//! Both are plain `VecDeque`s ordered by seq, so a cursor is found by binary search and a page
//! is a short walk. They live under the room's mutex; nothing here blocks or awaits.
//!
//! - **Event log**: every stored event (`message`, `update`, `delete`, non-ephemeral `event`)
//!   as the very `Arc<Frame>` that was handed to the subscribers, so a resume sends the same bytes. Bounded by
//!   `--history-per-room` events and `--history-max-age`; `trimmed_through` remembers the
//!   newest seq ever dropped, which is how a resume cursor is known to have a gap.
//! - **Message view**: one slot per posted message, holding the JSON of its latest form
//!   (the `message` frame's own bytes until it is edited; re-encoded once per update, with
//!   `"updated": <seq>`). A deleted message leaves a tombstone (so the deque stays sorted
//!   and binary-searchable) that paging skips; tombstones are compacted once they outnumber
//!   the live messages. `ids` maps a live message id to its seq. Bounded by
//!   `--history-per-room` live messages and `--history-max-age`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::name::MessageId;
use crate::wire::{Frame, Seq};

/// Default page size for `GET /rooms/{room}/messages`.
pub const DEFAULT_PAGE: usize = 50;
/// Largest page a client may ask for.
pub const MAX_PAGE: usize = 200;
/// Tombstones tolerated before a compaction, beyond the number of live messages.
const TOMBSTONE_SLACK: usize = 64;

/// How much history a room keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Most events kept for resume, and most messages kept for paging, per room.
    pub per_room: usize,
    /// Events and messages older than this (by acceptance time) are dropped.
    pub max_age: Duration,
}

/// Where a page starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// The newest page.
    Newest,
    /// Messages with seq strictly below this one, the newest of them.
    Before(Seq),
    /// Messages with seq strictly above this one, the oldest of them.
    After(Seq),
}

/// One page of messages, oldest first, each the JSON of a message object.
#[derive(Debug, Default)]
pub struct Page {
    pub messages: Vec<Bytes>,
    /// More messages exist in the paging direction (older for `before`/newest, newer for `after`).
    pub has_more: bool,
    /// Set when older messages than this page exist: the cursor for the page before it.
    pub next_before: Option<Seq>,
    /// Set when newer messages than this page exist: the cursor for the page after it.
    pub next_after: Option<Seq>,
}

struct Stored {
    ts_ms: u64,
    frame: Arc<Frame>,
}

struct Slot {
    seq: Seq,
    ts_ms: u64,
    id: MessageId,
    /// The message object's JSON; `None` once deleted.
    json: Option<Bytes>,
}

/// Counts that changed in one operation, for the process-wide gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Delta {
    pub(crate) events: i64,
    pub(crate) messages: i64,
}

#[derive(Default)]
pub(crate) struct History {
    events: VecDeque<Stored>,
    trimmed_through: Seq,
    messages: VecDeque<Slot>,
    ids: HashMap<MessageId, Seq>,
    tombstones: usize,
}

impl History {
    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty() && self.messages.is_empty()
    }

    pub(crate) fn event_count(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn message_count(&self) -> usize {
        self.ids.len()
    }

    /// The oldest retained event's seq, if any.
    pub(crate) fn oldest(&self) -> Option<Seq> {
        self.events.front().and_then(|s| s.frame.seq)
    }

    /// The newest seq ever trimmed: a resume from below it has a gap.
    pub(crate) fn trimmed_through(&self) -> Seq {
        self.trimmed_through
    }

    /// Every retained event with seq above `after`, in order.
    pub(crate) fn events_after(&self, after: Seq) -> Vec<Arc<Frame>> {
        let start = self
            .events
            .partition_point(|s| s.frame.seq.unwrap_or(Seq::ZERO) <= after);
        self.events
            .range(start..)
            .map(|s| Arc::clone(&s.frame))
            .collect()
    }

    pub(crate) fn contains_message(&self, id: &MessageId) -> bool {
        self.ids.contains_key(id)
    }

    /// The seq and acceptance time of a live message.
    pub(crate) fn message_origin(&self, id: &MessageId) -> Option<(Seq, u64)> {
        let seq = *self.ids.get(id)?;
        let slot = &self.messages[self.slot_index(seq)?];
        Some((slot.seq, slot.ts_ms))
    }

    fn slot_index(&self, seq: Seq) -> Option<usize> {
        self.messages.binary_search_by_key(&seq, |s| s.seq).ok()
    }

    pub(crate) fn push_event(&mut self, ts_ms: u64, frame: Arc<Frame>) -> Delta {
        self.events.push_back(Stored { ts_ms, frame });
        Delta {
            events: 1,
            messages: 0,
        }
    }

    /// Add a new message (its id is not live: checked by the caller).
    pub(crate) fn push_message(
        &mut self,
        seq: Seq,
        ts_ms: u64,
        id: MessageId,
        json: Bytes,
    ) -> Delta {
        self.ids.insert(id.clone(), seq);
        self.messages.push_back(Slot {
            seq,
            ts_ms,
            id,
            json: Some(json),
        });
        Delta {
            events: 0,
            messages: 1,
        }
    }

    /// Replace a live message's JSON; false if it is not live.
    pub(crate) fn replace_message(&mut self, id: &MessageId, json: Bytes) -> bool {
        let Some(&seq) = self.ids.get(id) else {
            return false;
        };
        match self.slot_index(seq) {
            Some(i) => {
                self.messages[i].json = Some(json);
                true
            }
            None => false,
        }
    }

    /// Tombstone a live message; false if it was not live.
    pub(crate) fn delete_message(&mut self, id: &MessageId) -> Option<Delta> {
        let seq = self.ids.remove(id)?;
        if let Some(i) = self.slot_index(seq) {
            self.messages[i].json = None;
            self.tombstones += 1;
        }
        if self.tombstones > self.ids.len() + TOMBSTONE_SLACK {
            self.messages.retain(|s| s.json.is_some());
            self.tombstones = 0;
        }
        Some(Delta {
            events: 0,
            messages: -1,
        })
    }

    /// Drop what is over the count or older than the age limit.
    pub(crate) fn trim(&mut self, retention: Retention, now_ms: u64) -> Delta {
        let cutoff =
            now_ms.saturating_sub(u64::try_from(retention.max_age.as_millis()).unwrap_or(u64::MAX));
        let mut delta = Delta::default();
        while let Some(front) = self.events.front() {
            if self.events.len() > retention.per_room || front.ts_ms < cutoff {
                if let Some(seq) = front.frame.seq {
                    self.trimmed_through = self.trimmed_through.max(seq);
                }
                self.events.pop_front();
                delta.events -= 1;
            } else {
                break;
            }
        }
        while let Some(front) = self.messages.front() {
            let live = front.json.is_some();
            if !live || self.ids.len() > retention.per_room || front.ts_ms < cutoff {
                if let Some(slot) = self.messages.pop_front() {
                    if live {
                        self.ids.remove(&slot.id);
                        delta.messages -= 1;
                    } else {
                        self.tombstones = self.tombstones.saturating_sub(1);
                    }
                }
            } else {
                break;
            }
        }
        delta
    }

    /// Forget everything (a new log). Returns what was dropped.
    pub(crate) fn clear(&mut self) -> Delta {
        let delta = Delta {
            events: -(self.events.len() as i64),
            messages: -(self.ids.len() as i64),
        };
        *self = History::default();
        delta
    }

    /// One page of live messages. `limit` is 1..=MAX_PAGE (checked by the caller).
    pub(crate) fn page(&self, cursor: Cursor, limit: usize) -> Page {
        let live = |i: usize| self.messages[i].json.is_some();
        let n = self.messages.len();
        // Indices of the page, collected in walk order.
        let mut picked: Vec<usize> = Vec::with_capacity(limit.min(n));
        match cursor {
            Cursor::Newest | Cursor::Before(_) => {
                let end = match cursor {
                    Cursor::Before(s) => self.messages.partition_point(|m| m.seq < s),
                    _ => n,
                };
                let mut i = end;
                while i > 0 && picked.len() < limit {
                    i -= 1;
                    if live(i) {
                        picked.push(i);
                    }
                }
                picked.reverse();
            }
            Cursor::After(s) => {
                let start = self.messages.partition_point(|m| m.seq <= s);
                let mut i = start;
                while i < n && picked.len() < limit {
                    if live(i) {
                        picked.push(i);
                    }
                    i += 1;
                }
            }
        }
        let (Some(&first), Some(&last)) = (picked.first(), picked.last()) else {
            return Page::default();
        };
        // The nearest live message on either side of the page, if any (tombstones are bounded
        // by compaction, so these walks are short).
        let older = (0..first).rev().any(live);
        let newer = (last + 1..n).any(live);
        let has_more = match cursor {
            Cursor::After(_) => newer,
            _ => older,
        };
        Page {
            messages: picked
                .iter()
                .filter_map(|&i| self.messages[i].json.clone())
                .collect(),
            has_more,
            next_before: older.then_some(self.messages[first].seq),
            next_after: newer.then_some(self.messages[last].seq),
        }
    }
}
