//! The host table in a KV bucket: the pool, each host's cursor and its last known health,
//! shared by every instance.
//!
//! One key per host (its id), holding a [`HostRecord`] as JSON. Adding a host is `create`
//! (refused when the key exists); removing it deletes the key. Only the instance holding a
//! host's lease writes its record, with `update` against the revision it read or last wrote:
//! a write after the host was removed (or re-added) fails instead of bringing it back.

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use shared::{Epoch, Offset};

use crate::delivery::{HostId, HostMode, HostSnapshot, HostUrl};

/// A host as every instance sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HostRecord {
    pub(crate) url: HostUrl,
    pub(crate) mode: HostMode,
    /// The log the cursor belongs to; a cursor of another epoch is void.
    pub(crate) epoch: Epoch,
    pub(crate) cursor: Offset,
    pub(crate) applied: Offset,
    #[serde(default = "yes")]
    pub(crate) healthy: bool,
    #[serde(default)]
    pub(crate) last_error: Option<String>,
    #[serde(default)]
    pub(crate) last_success_at: Option<u64>,
    #[serde(default)]
    pub(crate) retries: u64,
    /// The instance delivering to it when this was written.
    #[serde(default)]
    pub(crate) owner: Option<String>,
    /// Unix ms of this write.
    #[serde(default)]
    pub(crate) updated_ms: u64,
}

fn yes() -> bool {
    true
}

impl HostRecord {
    /// A host just added, starting at `cursor`.
    pub(crate) fn new(url: HostUrl, mode: HostMode, epoch: Epoch, cursor: Offset) -> HostRecord {
        HostRecord {
            url,
            mode,
            epoch,
            cursor,
            applied: Offset::ZERO,
            healthy: true,
            last_error: None,
            last_success_at: None,
            retries: 0,
            owner: None,
            updated_ms: crate::now_ms(),
        }
    }

    /// The record of a host whose delivery state is `s`, written by `owner`.
    pub(crate) fn with_state(&self, s: &HostSnapshot, owner: &str, epoch: Epoch) -> HostRecord {
        HostRecord {
            url: self.url.clone(),
            mode: self.mode,
            epoch,
            cursor: s.cursor,
            applied: s.applied,
            healthy: s.healthy,
            last_error: s.last_error.clone(),
            last_success_at: s.last_success_at,
            retries: s.retries,
            owner: Some(owner.to_owned()),
            updated_ms: crate::now_ms(),
        }
    }
}

/// What a change seen on the table is.
#[derive(Debug)]
pub(crate) enum Change {
    Put(HostRecord),
    Removed(HostId),
}

/// Outcome of an owner's write.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Saved {
    /// Written; the new revision.
    At(u64),
    /// Someone else wrote or deleted the key since `revision`.
    Changed,
}

#[derive(Clone, Debug)]
pub(crate) struct HostTable {
    kv: kv::Store,
}

fn decode(id: &str, value: &[u8]) -> Option<HostRecord> {
    match serde_json::from_slice(value) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(host = id, err = %e, "skipping an unreadable host record");
            None
        }
    }
}

impl HostTable {
    pub(crate) fn new(kv: kv::Store) -> HostTable {
        HostTable { kv }
    }

    /// Every host and its record's revision.
    ///
    /// # Errors
    /// JetStream did not answer.
    pub(crate) async fn list(&self) -> Result<Vec<(HostId, HostRecord, u64)>, String> {
        let mut keys = self.kv.keys().await.map_err(|e| e.to_string())?;
        let mut ids = Vec::new();
        while let Some(k) = keys.next().await {
            ids.push(k.map_err(|e| e.to_string())?);
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some((rec, rev)) = self.get(&HostId(id.clone())).await? {
                out.push((HostId(id), rec, rev));
            }
        }
        Ok(out)
    }

    /// One host's record and revision; `None` when it is not in the pool.
    ///
    /// # Errors
    /// JetStream did not answer.
    pub(crate) async fn get(&self, id: &HostId) -> Result<Option<(HostRecord, u64)>, String> {
        match self.kv.entry(id.0.as_str()).await {
            Ok(Some(e)) if e.operation == Operation::Put => {
                Ok(decode(&id.0, &e.value).map(|r| (r, e.revision)))
            }
            Ok(_) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Add a host; `false` when one with that id is already in the pool.
    ///
    /// # Errors
    /// JetStream did not answer.
    pub(crate) async fn create(&self, id: &HostId, rec: &HostRecord) -> Result<bool, String> {
        let value = serde_json::to_vec(rec).map_err(|e| e.to_string())?;
        match self.kv.create(id.0.as_str(), value.into()).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Remove a host from the pool.
    ///
    /// # Errors
    /// JetStream did not answer.
    pub(crate) async fn delete(&self, id: &HostId) -> Result<(), String> {
        self.kv
            .delete(id.0.as_str())
            .await
            .map_err(|e| e.to_string())
    }

    /// Write a host's record if nobody else wrote it since `revision`.
    ///
    /// # Errors
    /// JetStream did not answer.
    pub(crate) async fn save(
        &self,
        id: &HostId,
        rec: &HostRecord,
        revision: u64,
    ) -> Result<Saved, String> {
        let value = serde_json::to_vec(rec).map_err(|e| e.to_string())?;
        match self.kv.update(id.0.as_str(), value.into(), revision).await {
            Ok(rev) => Ok(Saved::At(rev)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(Saved::Changed),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Every current record, then every change, as it happens.
    ///
    /// # Errors
    /// JetStream did not answer.
    pub(crate) async fn watch(
        &self,
    ) -> Result<impl futures_util::Stream<Item = Result<Change, String>> + use<>, String> {
        let watch = self
            .kv
            .watch_with_history(">")
            .await
            .map_err(|e| e.to_string())?;
        Ok(watch.filter_map(|entry| async move {
            match entry {
                Err(e) => Some(Err(e.to_string())),
                Ok(e) if e.operation == Operation::Put => {
                    decode(&e.key, &e.value).map(|r| Ok(Change::Put(r)))
                }
                Ok(e) => Some(Ok(Change::Removed(HostId(e.key)))),
            }
        }))
    }
}
