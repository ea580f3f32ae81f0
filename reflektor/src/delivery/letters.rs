//! [`DeadLetterStore`]: the dead-letter store delivery and operations use, on this machine's
//! disk ([`DeadLetters`]) or, in cluster mode, in a JetStream stream every instance shares
//! ([`StreamDeadLetters`]).

use std::sync::Arc;

use bytes::Bytes;
use shared::Offset;

use super::Host;
use super::dead_letter::{DeadLetter, DeadLetterView, DeadLetters};
use crate::cluster::StreamDeadLetters;

/// Cheap to clone.
#[derive(Clone, Debug)]
pub enum DeadLetterStore {
    File(Arc<DeadLetters>),
    JetStream(Arc<StreamDeadLetters>),
}

impl DeadLetterStore {
    /// Store a refused record durably (fsynced, or acknowledged by JetStream).
    ///
    /// # Errors
    /// The store could not be written.
    pub async fn add(
        &self,
        host: &Host,
        offset: Offset,
        record: Bytes,
        status: u16,
        error: String,
    ) -> std::io::Result<()> {
        match self {
            DeadLetterStore::File(s) => s.add(host, offset, record, status, error).await,
            DeadLetterStore::JetStream(s) => s.add(host, offset, record, status, error).await,
        }
    }

    /// Every entry, oldest first.
    ///
    /// # Errors
    /// JetStream did not answer.
    pub async fn list(&self) -> Result<Vec<DeadLetterView>, String> {
        match self {
            DeadLetterStore::File(s) => Ok(s.list()),
            DeadLetterStore::JetStream(s) => s.list().await,
        }
    }

    /// One entry by id.
    ///
    /// # Errors
    /// JetStream did not answer.
    pub async fn get(&self, id: u64) -> Result<Option<DeadLetter>, String> {
        match self {
            DeadLetterStore::File(s) => Ok(s.get(id)),
            DeadLetterStore::JetStream(s) => s.get(id).await,
        }
    }

    /// Forget an entry (after a successful redrive); false when it is not there.
    ///
    /// # Errors
    /// The store could not be written.
    pub async fn remove(&self, id: u64) -> std::io::Result<bool> {
        match self {
            DeadLetterStore::File(s) => s.remove(id).await,
            DeadLetterStore::JetStream(s) => s.remove(id).await,
        }
    }
}
