//! The `Idempotency-Key` window: one key, one offset, for `--dedupe-window`.
//!
//! Each key maps to a shared [`OnceCell`] holding the offset of the first successful append.
//! Concurrent requests with the same key all await the same cell: exactly one of them runs its
//! append; if it fails the cell stays empty and the next waiter runs its own. Entries expire by
//! time through [`Dedupe::sweep`], called by one sweeper task (not a task per key). The map is
//! bounded by `max_entries`; when it is full, new keys are refused (intake answers 503) rather
//! than silently forgotten. After a restart the window is rebuilt from the keys the log found in
//! its active segment ([`crate::log::Opened::recent_keys`]).

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry as MapEntry;
use shared::Offset;
use tokio::sync::OnceCell;

/// Most keys remembered at once.
pub const DEFAULT_MAX_ENTRIES: usize = 1_000_000;

struct Entry {
    cell: Arc<OnceCell<Offset>>,
    /// When the key was first seen (Unix ms), the start of its window.
    inserted_ms: u64,
}

/// Idempotency keys seen within the window.
pub struct Dedupe {
    map: DashMap<String, Entry>,
    window_ms: u64,
    max_entries: usize,
}

impl std::fmt::Debug for Dedupe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedupe")
            .field("entries", &self.map.len())
            .field("window_ms", &self.window_ms)
            .finish()
    }
}

/// Outcome of [`Dedupe::run`].
#[derive(Debug, PartialEq, Eq)]
pub enum Deduped<E> {
    /// The append ran for this request (`replayed = false`) or an earlier request with the same
    /// key already got this offset (`replayed = true`).
    Done { offset: Offset, replayed: bool },
    /// The append ran for this request and failed.
    Failed(E),
    /// Too many keys are remembered; nothing was appended.
    Full,
}

impl Dedupe {
    pub fn new(window: Duration, max_entries: usize) -> Dedupe {
        Dedupe {
            map: DashMap::new(),
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            max_entries,
        }
    }

    /// Remember keys recovered from the log, skipping those already out of the window.
    pub fn rebuild(&self, keys: Vec<(String, Offset, u64)>, now_ms: u64) -> usize {
        let mut n = 0;
        for (key, offset, ts) in keys {
            if ts.saturating_add(self.window_ms) < now_ms || self.map.len() >= self.max_entries {
                continue;
            }
            // Oldest first: the first record with a key is the one later repeats answer with.
            if let MapEntry::Vacant(v) = self.map.entry(key) {
                v.insert(Entry {
                    cell: Arc::new(OnceCell::new_with(Some(offset))),
                    inserted_ms: ts,
                });
                n += 1;
            }
        }
        n
    }

    /// Run `append` unless a request with the same key already succeeded within the window.
    pub async fn run<E, F, Fut>(&self, key: &str, now_ms: u64, append: F) -> Deduped<E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Offset, E>>,
    {
        let Some(cell) = self.claim(key, now_ms) else {
            return Deduped::Full;
        };
        let mut ran = false;
        let mut failure = None;
        let result = cell
            .get_or_try_init(|| {
                ran = true;
                async {
                    match append().await {
                        Ok(o) => Ok(o),
                        Err(e) => {
                            failure = Some(e);
                            Err(())
                        }
                    }
                }
            })
            .await;
        match (result, failure) {
            (Ok(offset), _) => Deduped::Done {
                offset: *offset,
                replayed: !ran,
            },
            (Err(()), Some(e)) => Deduped::Failed(e),
            // Unreachable in practice: an Err is only produced by our own append.
            (Err(()), None) => Deduped::Full,
        }
    }

    /// The cell for `key`, inserting a fresh one when absent or expired. The map guard is
    /// dropped before returning, so nothing is held across an await.
    fn claim(&self, key: &str, now_ms: u64) -> Option<Arc<OnceCell<Offset>>> {
        let present = match self.map.get(key) {
            Some(e) if !self.expired(&e, now_ms) => return Some(e.cell.clone()),
            Some(_) => true,
            None => false,
        };
        // Checked before taking the entry: `len` locks every shard.
        if !present && self.map.len() >= self.max_entries {
            return None;
        }
        let cell = match self.map.entry(key.to_owned()) {
            MapEntry::Occupied(mut o) => {
                if self.expired(o.get(), now_ms) {
                    o.insert(Entry {
                        cell: Arc::new(OnceCell::new()),
                        inserted_ms: now_ms,
                    });
                }
                o.get().cell.clone()
            }
            MapEntry::Vacant(v) => v
                .insert(Entry {
                    cell: Arc::new(OnceCell::new()),
                    inserted_ms: now_ms,
                })
                .cell
                .clone(),
        };
        Some(cell)
    }

    fn expired(&self, e: &Entry, now_ms: u64) -> bool {
        e.inserted_ms.saturating_add(self.window_ms) < now_ms
    }

    /// Forget keys whose window has passed. Returns how many were removed.
    pub fn sweep(&self, now_ms: u64) -> usize {
        let before = self.map.len();
        self.map
            .retain(|_, e| e.inserted_ms.saturating_add(self.window_ms) >= now_ms);
        before.saturating_sub(self.map.len())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn concurrent_repeats_append_once_and_share_the_offset() {
        let d = Arc::new(Dedupe::new(Duration::from_secs(60), 100));
        let appends = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (d, appends) = (d.clone(), appends.clone());
            tasks.push(tokio::spawn(async move {
                d.run("k", 1_000, || async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok::<_, ()>(Offset(appends.fetch_add(1, Ordering::SeqCst) + 7))
                })
                .await
            }));
        }
        let mut fresh = 0;
        for t in tasks {
            match t.await.unwrap() {
                Deduped::Done { offset, replayed } => {
                    assert_eq!(offset, Offset(7));
                    fresh += usize::from(!replayed);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(appends.load(Ordering::SeqCst), 1);
        assert_eq!(fresh, 1);
    }

    #[tokio::test]
    async fn a_failed_first_attempt_lets_the_next_one_try() {
        let d = Dedupe::new(Duration::from_secs(60), 100);
        let r = d
            .run("k", 1_000, || async { Err::<Offset, _>("disk") })
            .await;
        assert_eq!(r, Deduped::Failed("disk"));
        let r = d
            .run("k", 1_001, || async { Ok::<_, &str>(Offset(3)) })
            .await;
        assert_eq!(
            r,
            Deduped::Done {
                offset: Offset(3),
                replayed: false
            }
        );
        let r = d
            .run("k", 1_002, || async { Ok::<_, &str>(Offset(9)) })
            .await;
        assert_eq!(
            r,
            Deduped::Done {
                offset: Offset(3),
                replayed: true
            }
        );
    }

    #[tokio::test]
    async fn keys_expire_after_the_window_and_the_map_is_bounded() {
        let d = Dedupe::new(Duration::from_millis(100), 2);
        let ok = |o| move || async move { Ok::<_, ()>(Offset(o)) };
        assert!(matches!(d.run("a", 0, ok(1)).await, Deduped::Done { .. }));
        assert!(matches!(d.run("b", 0, ok(2)).await, Deduped::Done { .. }));
        assert_eq!(d.run("c", 50, ok(3)).await, Deduped::Full);
        // Past the window, a repeat is new.
        assert_eq!(
            d.run("a", 200, ok(4)).await,
            Deduped::Done {
                offset: Offset(4),
                replayed: false
            }
        );
        assert_eq!(d.sweep(250), 1);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn rebuild_keeps_the_first_offset_of_keys_still_in_the_window() {
        let d = Dedupe::new(Duration::from_secs(10), 100);
        let n = d.rebuild(
            vec![
                ("old".into(), Offset(1), 0),
                ("k".into(), Offset(5), 95_000),
                ("k".into(), Offset(6), 96_000),
            ],
            100_000,
        );
        assert_eq!(n, 1);
        let cell = d.claim("k", 100_000).unwrap();
        assert_eq!(cell.get(), Some(&Offset(5)));
    }
}
