//! Dead letters: records a host refused on their merits, kept for inspection and redrive.
//!
//! # Format
//! `<data-dir>/dead-letters.jsonl`, append-only, one JSON object per line, fsynced per write:
//! `{"add": {"id", "host_id", "host_url", "offset", "status", "error", "at_ms", "record"}}`
//! (`record` is the record's encoded bytes, base64) and `{"remove": {"id"}}` after a
//! successful redrive. Loading replays the lines; the file is rewritten (atomically) at
//! startup when most of it is history.
//!
//! # Bounds
//! At most `max_entries` are kept; past that the oldest is dropped with a WARN and counted in
//! the dead-letter metric, so a flood of refusals cannot fill the disk.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shared::{Offset, Record};

use super::{Host, HostId};
use crate::ops::metrics;

/// Default bound on kept dead letters.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

/// One refused record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: u64,
    pub host_id: HostId,
    pub host_url: String,
    pub offset: Offset,
    /// The host's status (0 when the record could not be sent at all).
    pub status: u16,
    /// The host's answer, truncated to 4 KiB.
    pub error: String,
    pub at_ms: u64,
    #[serde(with = "b64")]
    pub record: Bytes,
}

/// What the list endpoint shows: the entry without the record bytes, plus its request line.
#[derive(Debug, Serialize)]
pub struct DeadLetterView {
    pub id: u64,
    pub host_id: HostId,
    pub host_url: String,
    pub offset: Offset,
    pub status: u16,
    pub error: String,
    pub at_ms: u64,
    pub method: Option<&'static str>,
    pub target: Option<String>,
    pub body_bytes: Option<usize>,
}

impl DeadLetter {
    /// The entry as the list endpoint shows it.
    pub fn view(&self) -> DeadLetterView {
        let rec = Record::decode(self.record.clone()).ok();
        DeadLetterView {
            id: self.id,
            host_id: self.host_id.clone(),
            host_url: self.host_url.clone(),
            offset: self.offset,
            status: self.status,
            error: self.error.clone(),
            at_ms: self.at_ms,
            method: rec.as_ref().map(|r| r.method.as_str()),
            target: rec.as_ref().map(|r| r.target.clone()),
            body_bytes: rec.as_ref().map(|r| r.body.len()),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Line {
    Add(DeadLetter),
    Remove { id: u64 },
}

mod b64 {
    use super::*;
    pub(super) fn serialize<S: serde::Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(b))
    }
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(s.as_bytes())
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

struct Inner {
    entries: VecDeque<DeadLetter>,
    next_id: u64,
    file: File,
}

/// The dead-letter store. Writes happen on the blocking pool; the lock is never held across
/// an await.
pub struct DeadLetters {
    path: PathBuf,
    max_entries: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// Load (and compact) the store in `dir`.
    ///
    /// # Errors
    /// The file cannot be read or written. Unparsable lines are skipped with a WARN.
    pub fn open(dir: &Path, max_entries: usize) -> std::io::Result<DeadLetters> {
        let path = dir.join("dead-letters.jsonl");
        let mut entries: VecDeque<DeadLetter> = VecDeque::new();
        let mut next_id = 1;
        let mut lines = 0usize;
        if let Ok(f) = File::open(&path) {
            for (n, line) in BufReader::new(f).lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                lines += 1;
                match serde_json::from_str::<Line>(&line) {
                    Ok(Line::Add(d)) => {
                        next_id = next_id.max(d.id + 1);
                        entries.push_back(d);
                        if entries.len() > max_entries {
                            entries.pop_front();
                        }
                    }
                    Ok(Line::Remove { id }) => entries.retain(|d| d.id != id),
                    Err(e) => {
                        tracing::warn!(line = n + 1, err = %e, path = %path.display(), "skipping an unreadable dead-letter line");
                    }
                }
            }
        }
        if lines > entries.len() * 2 + 100 {
            let mut buf = Vec::new();
            for d in &entries {
                serde_json::to_writer(&mut buf, &Line::Add(d.clone()))?;
                buf.push(b'\n');
            }
            crate::fsutil::write_atomic(&path, &buf)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        metrics::dead_letters(entries.len());
        Ok(DeadLetters {
            path,
            max_entries,
            inner: Mutex::new(Inner {
                entries,
                next_id,
                file,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Store a refused record (durably: fsynced before this resolves).
    ///
    /// # Errors
    /// Writing or syncing the file failed.
    pub async fn add(
        self: &Arc<Self>,
        host: &Host,
        offset: Offset,
        record: Bytes,
        status: u16,
        error: String,
    ) -> std::io::Result<()> {
        let this = self.clone();
        let (host_id, host_url) = (host.id.clone(), host.url.to_string());
        tokio::task::spawn_blocking(move || {
            let mut inner = this.lock();
            let d = DeadLetter {
                id: inner.next_id,
                host_id,
                host_url,
                offset,
                status,
                error,
                at_ms: crate::now_ms(),
                record,
            };
            let mut line = serde_json::to_vec(&Line::Add(d.clone()))?;
            line.push(b'\n');
            inner.file.write_all(&line)?;
            inner.file.sync_data()?;
            inner.next_id += 1;
            inner.entries.push_back(d);
            while inner.entries.len() > this.max_entries {
                if let Some(old) = inner.entries.pop_front() {
                    tracing::warn!(id = old.id, offset = %old.offset, host = %old.host_id, "dead-letter store full; dropping the oldest entry");
                    metrics::dead_letter_dropped();
                }
            }
            metrics::dead_letters(inner.entries.len());
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)?
    }

    pub fn list(&self) -> Vec<DeadLetterView> {
        self.lock().entries.iter().map(DeadLetter::view).collect()
    }

    pub fn get(&self, id: u64) -> Option<DeadLetter> {
        self.lock().entries.iter().find(|d| d.id == id).cloned()
    }

    /// Forget an entry (after a successful redrive). False when it is not there.
    ///
    /// # Errors
    /// Writing or syncing the file failed.
    pub async fn remove(self: &Arc<Self>, id: u64) -> std::io::Result<bool> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut inner = this.lock();
            let Some(pos) = inner.entries.iter().position(|d| d.id == id) else {
                return Ok(false);
            };
            let mut line = serde_json::to_vec(&Line::Remove { id })?;
            line.push(b'\n');
            inner.file.write_all(&line)?;
            inner.file.sync_data()?;
            inner.entries.remove(pos);
            metrics::dead_letters(inner.entries.len());
            Ok(true)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{HostMode, HostUrl};
    use shared::Method;
    use tokio_util::sync::CancellationToken;

    fn record(offset: u64) -> Bytes {
        Record {
            offset: Offset(offset),
            timestamp_ms: 1,
            method: Method::Post,
            target: "/x".into(),
            content_type: None,
            idempotency_key: None,
            headers: vec![],
            body: Bytes::from_static(b"\x00\xffbinary"),
        }
        .to_bytes()
    }

    #[tokio::test]
    async fn entries_survive_a_reopen_and_removals_stick_and_the_store_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(
            HostUrl::parse("http://h").unwrap(),
            HostMode::Replay,
            Offset(1),
            Offset(0),
            CancellationToken::new(),
        );
        let store = Arc::new(DeadLetters::open(dir.path(), 3).unwrap());
        for o in 1..=4 {
            store
                .add(&host, Offset(o), record(o), 400, "bad".into())
                .await
                .unwrap();
        }
        assert_eq!(store.len(), 3);
        let first = store.list()[0].id;
        assert!(store.remove(first).await.unwrap());
        drop(store);
        let store = DeadLetters::open(dir.path(), 3).unwrap();
        let list = store.list();
        assert_eq!(
            list.iter().map(|d| d.offset).collect::<Vec<_>>(),
            vec![Offset(3), Offset(4)]
        );
        assert_eq!(list[0].target.as_deref(), Some("/x"));
        assert_eq!(store.get(list[0].id).unwrap().record, record(3));
    }
}
