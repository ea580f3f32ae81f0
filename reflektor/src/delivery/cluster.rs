//! Delivery in cluster mode: a candidate per host on every instance, exactly one of which
//! holds the host's lease and runs its worker (see `crate::cluster` for the protocol).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use shared::Offset;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::host::{Host, HostSnapshot};
use super::pool::start_at;
use super::retry;
use super::worker::{self, Ctx};
use crate::cluster::{Cluster, HostRecord, Lease, RenewError, Saved};

/// What a host's record says, as a snapshot for the operations endpoint or a new term.
pub(crate) fn snapshot_of(rec: &HostRecord) -> HostSnapshot {
    HostSnapshot {
        cursor: rec.cursor,
        applied: rec.applied,
        healthy: rec.healthy,
        last_error: rec.last_error.clone(),
        last_success_at: rec.last_success_at,
        retries: rec.retries,
        owner: rec.owner.clone(),
    }
}

/// Sleep unless the host is removed or reflektor stops first; false when stopped.
async fn pause(host: &Host, d: std::time::Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = host.stop.cancelled() => false,
    }
}

/// Contend for `host`'s lease until it is removed or reflektor stops; deliver while holding it.
pub(crate) async fn candidate(host: Arc<Host>, ctx: Arc<Ctx>, cluster: Arc<Cluster>) {
    let poll = cluster.leases.ttl() / 4;
    let mut failures: u32 = 0;
    while !host.stop.is_cancelled() {
        let lease = match cluster.leases.acquire(&host.id.0).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                if !pause(&host, poll).await {
                    break;
                }
                continue;
            }
            Err(e) => {
                debug!(err = %e, "cannot contend for the lease");
                if !pause(&host, retry::backoff(failures).max(poll)).await {
                    break;
                }
                failures = failures.saturating_add(1);
                continue;
            }
        };
        failures = 0;
        let (rec, revision) = match cluster.hosts.get(&host.id).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                // Removed meanwhile; the table watcher stops this candidate.
                cluster.leases.release(lease).await;
                if !pause(&host, poll).await {
                    break;
                }
                continue;
            }
            Err(e) => {
                warn!(err = %e, "cannot read the host's record; letting the lease go");
                cluster.leases.release(lease).await;
                if !pause(&host, poll).await {
                    break;
                }
                continue;
            }
        };
        let mut state = snapshot_of(&rec);
        if rec.epoch != cluster.epoch {
            warn!(stored = %rec.epoch, log = %cluster.epoch, "the host's cursor belongs to another log; it starts over");
            state.cursor = start_at(ctx.new_host_start, ctx.log.oldest(), ctx.log.head());
            state.applied = Offset::ZERO;
        }
        state.owner = Some(cluster.instance.clone());
        info!(cursor = %state.cursor, applied = %state.applied, previous = ?rec.owner, "took the lease: delivering");
        host.load(state);
        let term = host.begin_term();
        host.leased.store(true, Ordering::Release);
        let keeper = keep(lease, rec, revision, &host, &cluster, &term);
        let (left, ()) = tokio::join!(keeper, worker::run(host.clone(), ctx.clone()));
        host.leased.store(false, Ordering::Release);
        if let Some((lease, mut rec, mut revision)) = left {
            // A clean end of the term (stop or removal): write where delivery stood and let
            // the lease go, so another instance continues at once.
            if let Err(e) = save(&cluster, &host, &mut rec, &mut revision).await {
                warn!(err = %e, "cannot write the host's state at the end of the term");
            }
            cluster.leases.release(lease).await;
            info!("released the lease");
        }
    }
}

/// Renew the lease and write the host's state every third of the TTL until `term` ends; end
/// the term when the lease is lost or cannot be renewed in time. Returns the lease (and the
/// record) when the term ended while it was still held.
async fn keep(
    mut lease: Lease,
    mut rec: HostRecord,
    mut revision: u64,
    host: &Host,
    cluster: &Cluster,
    term: &CancellationToken,
) -> Option<(Lease, HostRecord, u64)> {
    let every = cluster.leases.ttl() / 3;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = term.cancelled() => return Some((lease, rec, revision)),
        }
        let renewed = tokio::time::timeout_at(lease.good_until(), async {
            cluster.leases.renew(&mut lease).await
        })
        .await;
        match renewed {
            Ok(Ok(())) => {}
            Ok(Err(RenewError::Lost)) => {
                warn!("the lease was taken by another instance; stopping delivery");
                term.cancel();
                return None;
            }
            Ok(Err(RenewError::Unreachable(e))) if Instant::now() < lease.good_until() => {
                debug!(err = %e, "lease renewal failed; trying again");
                continue;
            }
            Ok(Err(_)) | Err(_) => {
                warn!("cannot renew the lease in time; stopping delivery until it is taken again");
                term.cancel();
                return None;
            }
        }
        match save(cluster, host, &mut rec, &mut revision).await {
            Ok(true) => {}
            Ok(false) => {
                info!(
                    "the host's record changed elsewhere (removed or added again); stopping delivery"
                );
                term.cancel();
                // Give the lease up without writing over the new record.
                cluster.leases.release(lease).await;
                return None;
            }
            Err(e) => debug!(err = %e, "cannot write the host's state; trying again"),
        }
    }
}

/// Write the host's delivery state when it changed; false when the record changed elsewhere.
async fn save(
    cluster: &Cluster,
    host: &Host,
    rec: &mut HostRecord,
    revision: &mut u64,
) -> Result<bool, String> {
    let mut next = rec.with_state(&host.snapshot(), &cluster.instance, cluster.epoch);
    next.updated_ms = rec.updated_ms;
    if next == *rec {
        return Ok(true);
    }
    next.updated_ms = crate::now_ms();
    match cluster.hosts.save(&host.id, &next, *revision).await? {
        Saved::At(r) => {
            *revision = r;
            *rec = next;
            Ok(true)
        }
        Saved::Changed => Ok(false),
    }
}
