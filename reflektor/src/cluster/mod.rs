//! Cluster mode's shared state in JetStream: the host table, the delivery leases and the dead
//! letters, next to the log's stream (`crate::log::jetstream`).
//!
//! # Buckets and streams (for `--stream NAME`)
//!
//! | name | kind | holds |
//! |---|---|---|
//! | `NAME` | stream | the log ([`crate::log::jetstream`]) |
//! | `NAME_hosts` | KV, file, `--replicas` | one [`hosts::HostRecord`] per host: URL, mode, epoch, cursor, applied, health, owner |
//! | `NAME_leases` | KV, memory, `--replicas`, `max_age` = `--lease-ttl` | one key per host: the instance delivering to it |
//! | `NAME_dead_letters` | stream, file, `--replicas` | refused records ([`dead_letters`]) |
//!
//! # Exactly one deliverer per host
//!
//! Every instance runs a candidate per host (`crate::delivery`): it tries to take the host's
//! lease ([`lease`]) every quarter TTL. The holder reads the host's record, continues from its
//! cursor, and every third of the TTL renews the lease and writes the host's state back (cursor,
//! applied, health: what `/_reflektor/hosts` shows on every instance). It stops delivering as
//! soon as a renewal finds the lease taken, or when it could not renew for two thirds of the
//! TTL; on a clean stop it writes its state and releases the lease, so another instance takes
//! over at once. A holder that dies stops renewing: its lease expires after the TTL and the
//! next candidate to try takes it, continuing from the last cursor written (at most a third of
//! the TTL old). Records since then are sent again; hosts skip offsets they applied, so delivery
//! stays at least once and in order.
//!
//! # Pool changes
//!
//! Adding a host creates its record (refused when it exists); removing deletes it. Every
//! instance watches the table and starts or stops its candidates to match, so a host added on
//! one instance is delivered to (by whichever instance takes the lease) and listed everywhere.

mod dead_letters;
mod hosts;
mod lease;

use std::time::Duration;

use async_nats::jetstream::kv::{self, Store};
use async_nats::jetstream::{Context, stream};
use shared::Epoch;

pub use dead_letters::StreamDeadLetters;
pub(crate) use hosts::{Change, HostRecord, HostTable, Saved};
pub(crate) use lease::{Lease, Leases, RenewError};

/// Shortest lease TTL accepted: shorter ones expire while a busy NATS node elects a leader.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);

/// What every instance of a cluster shares besides the log.
#[derive(Debug)]
pub struct Cluster {
    pub(crate) hosts: HostTable,
    pub(crate) leases: Leases,
    /// This instance's name in leases and host records.
    pub(crate) instance: String,
    /// The log's epoch: host cursors of another epoch are void.
    pub(crate) epoch: Epoch,
}

/// Open (creating when missing) a KV bucket, and check the settings reflektor relies on.
async fn bucket(js: &Context, want: kv::Config) -> Result<Store, String> {
    let name = want.bucket.clone();
    let max_age = want.max_age;
    let store = match js.create_key_value(want).await {
        Ok(s) => s,
        // It exists with other settings (or creating raced another instance): use it, checked.
        Err(create) => js
            .get_key_value(&name)
            .await
            .map_err(|e| format!("cannot open KV bucket {name}: {create}; {e}"))?,
    };
    let info: stream::Info = store
        .stream
        .get_info()
        .await
        .map_err(|e| format!("KV bucket {name}: {e}"))?;
    if info.config.max_age != max_age {
        return Err(format!(
            "KV bucket {name} has max_age {}, but {} is asked for: every instance must run with the same --lease-ttl (delete the bucket while no instance runs to change it)",
            humantime::format_duration(info.config.max_age),
            humantime::format_duration(max_age),
        ));
    }
    Ok(store)
}

impl Cluster {
    /// Open the host table, the lease bucket and the dead-letter stream of `log_stream`.
    ///
    /// # Errors
    /// JetStream refused a bucket or stream (too few nodes for `replicas`), a lease bucket has
    /// another TTL, or JetStream did not answer.
    pub async fn open(
        js: &Context,
        log_stream: &str,
        replicas: usize,
        lease_ttl: Duration,
        instance: String,
        epoch: Epoch,
        max_dead_letters: usize,
    ) -> Result<(Cluster, StreamDeadLetters), String> {
        let hosts = bucket(
            js,
            kv::Config {
                bucket: format!("{log_stream}_hosts"),
                description: "reflektor host table: pool, cursors, health".into(),
                history: 1,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
        let leases = bucket(
            js,
            kv::Config {
                bucket: format!("{log_stream}_leases"),
                description: "reflektor delivery leases: which instance delivers to a host".into(),
                history: 1,
                max_age: lease_ttl,
                storage: stream::StorageType::Memory,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
        let dead = StreamDeadLetters::open(js, log_stream, replicas, max_dead_letters).await?;
        Ok((
            Cluster {
                hosts: HostTable::new(hosts),
                leases: Leases::new(leases, &instance, lease_ttl),
                instance,
                epoch,
            },
            dead,
        ))
    }
}
