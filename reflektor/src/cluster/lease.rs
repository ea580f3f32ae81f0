//! A lease in a KV bucket: which instance delivers to a host.
//!
//! The bucket's `max_age` is the lease's TTL: every write to a key (taking or renewing the
//! lease) is a message that JetStream deletes `ttl` after it was stored, so a key whose holder
//! stopped renewing disappears by itself. Taking is `create` (only when the key is absent or
//! deleted), renewing is `update` against the revision the holder last wrote, releasing is a
//! delete against that revision: each is a compare-and-set decided by the stream's leader, so at
//! most one instance holds a key at a time.
//!
//! The holder stops acting on the lease before JetStream can let anyone else take it: a lease
//! is good until `sent + ttl - margin` of the last write that succeeded, where `sent` is when
//! that write left (JetStream stamps the message later, so it expires later).

use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use bytes::Bytes;
use tokio::time::Instant;

/// One held lease.
#[derive(Debug)]
pub(crate) struct Lease {
    key: String,
    owner: Bytes,
    revision: u64,
    /// When the lease stops being safe to act on unless renewed.
    good_until: Instant,
}

/// Why a renewal did not extend the lease.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RenewError {
    /// Someone else wrote the key: the lease expired or was taken. Stop at once.
    #[error("the lease was lost")]
    Lost,
    /// JetStream did not answer: the lease may still be held until [`Lease::good_until`].
    #[error("cannot renew the lease: {0}")]
    Unreachable(String),
}

/// The leases of one bucket, taken in the name of `owner`.
#[derive(Clone, Debug)]
pub(crate) struct Leases {
    kv: kv::Store,
    owner: Bytes,
    ttl: Duration,
}

impl Leases {
    pub(crate) fn new(kv: kv::Store, owner: &str, ttl: Duration) -> Leases {
        Leases {
            kv,
            owner: Bytes::copy_from_slice(owner.as_bytes()),
            ttl,
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How long a lease stays safe to act on after a successful write: the TTL less a third,
    /// for the time a write spends in flight and clocks that run apart.
    fn good_for(&self) -> Duration {
        self.ttl - self.ttl / 3
    }

    /// Take the lease on `key` if nobody holds it.
    ///
    /// # Errors
    /// JetStream did not answer (nothing is held).
    pub(crate) async fn acquire(&self, key: &str) -> Result<Option<Lease>, String> {
        let sent = Instant::now();
        match self.kv.create(key, self.owner.clone()).await {
            Ok(revision) => Ok(Some(Lease {
                key: key.to_owned(),
                owner: self.owner.clone(),
                revision,
                good_until: sent + self.good_for(),
            })),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Extend `lease` by another TTL.
    ///
    /// # Errors
    /// [`RenewError::Lost`] when another write came in between; `Unreachable` otherwise.
    pub(crate) async fn renew(&self, lease: &mut Lease) -> Result<(), RenewError> {
        let sent = Instant::now();
        match self
            .kv
            .update(&lease.key, lease.owner.clone(), lease.revision)
            .await
        {
            Ok(revision) => {
                lease.revision = revision;
                lease.good_until = sent + self.good_for();
                Ok(())
            }
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Err(RenewError::Lost),
            Err(e) => Err(RenewError::Unreachable(e.to_string())),
        }
    }

    /// Give the lease up so another instance can take it at once (best effort: an unanswered
    /// release expires with the TTL anyway).
    pub(crate) async fn release(&self, lease: Lease) {
        if let Err(e) = self
            .kv
            .delete_expect_revision(&lease.key, Some(lease.revision))
            .await
        {
            tracing::debug!(key = %lease.key, err = %e, "lease not released; it expires by itself");
        }
    }
}

impl Lease {
    /// Until when the holder may act on the lease without renewing it.
    pub(crate) fn good_until(&self) -> Instant {
        self.good_until
    }
}
