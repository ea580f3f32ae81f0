//! Recent encoded records, kept in memory for readers.
//!
//! Entries are slices of the buffers the writer wrote (no copy), with consecutive offsets, so
//! the record for offset `o` sits at index `o - start`. Bounded by bytes; the oldest go first.

use std::collections::VecDeque;

use bytes::Bytes;
use shared::Offset;

pub(super) struct Cache {
    /// Offset of `entries[0]`.
    start: u64,
    entries: VecDeque<Bytes>,
    /// Sum of the entries' lengths.
    bytes: usize,
    limit: usize,
}

impl Cache {
    pub(super) fn new(limit: usize) -> Cache {
        Cache {
            start: 0,
            entries: VecDeque::new(),
            bytes: 0,
            limit,
        }
    }

    /// Add the record with `offset`, which must follow the newest cached one; otherwise the
    /// cache starts over from it.
    pub(super) fn push(&mut self, offset: u64, record: Bytes) {
        if self.limit == 0 {
            return;
        }
        if self.entries.is_empty() || self.start + self.entries.len() as u64 != offset {
            self.entries.clear();
            self.bytes = 0;
            self.start = offset;
        }
        self.bytes += record.len();
        self.entries.push_back(record);
        while self.bytes > self.limit && self.entries.len() > 1 {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.len();
                self.start += 1;
            }
        }
    }

    /// Records from `from` up to `head`, within the limits (at least one). `None` when `from`
    /// is not cached.
    pub(super) fn read(
        &self,
        from: Offset,
        head: Offset,
        max_records: usize,
        max_bytes: usize,
    ) -> Option<Vec<Bytes>> {
        let end = self.start + self.entries.len() as u64;
        if from.0 < self.start || from.0 >= end {
            return None;
        }
        let last = head.0.min(end - 1);
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut at = from.0;
        while at <= last && out.len() < max_records {
            let record = &self.entries[(at - self.start) as usize];
            if !out.is_empty() && bytes + record.len() > max_bytes {
                break;
            }
            bytes += record.len();
            out.push(record.clone());
            at += 1;
        }
        Some(out)
    }

    /// The cached record at `offset`, if any.
    pub(super) fn get(&self, offset: Offset) -> Option<Bytes> {
        let index = offset.0.checked_sub(self.start)?;
        self.entries.get(usize::try_from(index).ok()?).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_evicts_oldest_first_and_respects_limits() {
        let mut cache = Cache::new(10);
        for o in 1..=6 {
            cache.push(o, Bytes::from(vec![o as u8; 3]));
        }
        // 10 bytes hold three records of 3 bytes: offsets 4..=6.
        assert!(cache.read(Offset(3), Offset(6), 10, 100).is_none());
        let got = cache.read(Offset(4), Offset(5), 10, 100).unwrap();
        assert_eq!(got.len(), 2);
        let got = cache.read(Offset(4), Offset(6), 10, 4).unwrap();
        assert_eq!(got.len(), 1, "max_bytes stops after the first");
        assert_eq!(cache.get(Offset(6)).unwrap()[0], 6);
        cache.push(9, Bytes::from_static(b"x"));
        assert!(
            cache.get(Offset(6)).is_none(),
            "a gap starts the cache over"
        );
    }
}
