//! The host pool: hosts added and removed at runtime, their cursors persisted, and the
//! background tasks that follow the pool (cursor saving, retention).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared::{Epoch, Offset};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use super::cluster::{candidate, snapshot_of};
use super::letters::DeadLetterStore;
use super::sender::Sender;
use super::worker::{self, Ctx};
use super::{Host, HostId, HostMode, HostUrl, StartAt};
use crate::cluster::{Change, Cluster, HostRecord};
use crate::config::Config;
use crate::log::Log;

/// How often changed cursors are written.
pub const SAVE_EVERY: Duration = Duration::from_secs(1);
/// How often retention runs.
pub const RETAIN_EVERY: Duration = Duration::from_secs(10);

/// Why a host cannot be added.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("host {0} is already in the pool")]
    Exists(HostUrl),
    /// Cluster mode: the host table in JetStream could not be written.
    #[error("the host table cannot be written: {0}")]
    Unavailable(String),
}

#[derive(Serialize, Deserialize)]
struct StoredPool {
    version: u32,
    epoch: Epoch,
    hosts: Vec<StoredHost>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredHost {
    id: HostId,
    url: HostUrl,
    mode: HostMode,
    cursor: Offset,
    applied: Offset,
}

/// Every host and its worker.
pub struct Pool {
    hosts: RwLock<BTreeMap<HostId, Arc<Host>>>,
    ctx: Arc<Ctx>,
    workers: TaskTracker,
    shutdown: CancellationToken,
    path: PathBuf,
    /// What was last written to `hosts.json`, to skip writes when nothing moved.
    saved: Mutex<Option<Vec<StoredHost>>>,
    /// Cluster mode: the host table, leases and this instance's name. The pool then follows
    /// the shared table instead of `hosts.json`, and runs a lease candidate per host.
    cluster: Option<Arc<Cluster>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Load stored hosts, merge the command-line hosts, start a worker per host.
    ///
    /// # Errors
    /// `hosts.json` exists but cannot be read or parsed, or the HTTP client cannot be built.
    pub async fn start(
        config: &Config,
        log: Log,
        dead_letters: DeadLetterStore,
        shutdown: CancellationToken,
        cluster: Option<Arc<Cluster>>,
    ) -> anyhow::Result<Arc<Pool>> {
        let path = config.data_dir.join("hosts.json");
        let sender = Sender::new(
            config.secret.as_deref(),
            log.epoch(),
            config.delivery_timeout,
        )?;
        let epoch = log.epoch();
        let (oldest, head) = (log.oldest(), log.head());
        let pool = Arc::new(Pool {
            hosts: RwLock::new(BTreeMap::new()),
            ctx: Arc::new(Ctx {
                log,
                sender,
                dead_letters,
                batch_max_records: config.batch_max_records,
                batch_max_bytes: config.batch_max_bytes,
                new_host_start: config.new_host_start,
            }),
            workers: TaskTracker::new(),
            shutdown,
            path,
            saved: Mutex::new(None),
            cluster,
        });
        if let Some(cluster) = pool.cluster.clone() {
            pool.start_cluster(config, &cluster).await?;
            return Ok(pool);
        }
        let stored = match std::fs::read(&pool.path) {
            Ok(bytes) => {
                let s: StoredPool = serde_json::from_slice(&bytes).map_err(|e| {
                    anyhow::anyhow!("{} is not a valid host file: {e}", pool.path.display())
                })?;
                if s.epoch == epoch {
                    s.hosts
                } else {
                    warn!(stored = %s.epoch, log = %epoch, "host cursors belong to another log; every host starts over");
                    s.hosts
                        .into_iter()
                        .map(|h| StoredHost {
                            cursor: start_at(config.new_host_start, oldest, head),
                            applied: Offset::ZERO,
                            ..h
                        })
                        .collect()
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", pool.path.display())),
        };
        for h in stored {
            // A cursor past the log's end (the log lost a torn tail) would skip the records
            // appended next under the same offsets: clamp it.
            let cursor = h.cursor.min(head.next());
            let applied = h.applied.min(head);
            pool.insert(h.url, h.mode, cursor, applied);
        }
        for (url, mode) in &config.hosts {
            if pool.get(&url.id()).is_none() {
                let cursor = start_at(config.new_host_start, oldest, head);
                pool.insert(url.clone(), *mode, cursor, Offset::ZERO);
            }
        }
        Ok(pool)
    }

    fn insert(&self, url: HostUrl, mode: HostMode, cursor: Offset, applied: Offset) -> Arc<Host> {
        let host = Arc::new(Host::new(
            url,
            mode,
            cursor,
            applied,
            self.shutdown.child_token(),
        ));
        info!(id = %host.id, url = %host.url, ?mode, %cursor, "host added");
        let span = info_span!("host", id = %host.id, url = %host.url);
        match &self.cluster {
            None => self
                .workers
                .spawn(worker::run(host.clone(), self.ctx.clone()).instrument(span)),
            Some(cluster) => self
                .workers
                .spawn(candidate(host.clone(), self.ctx.clone(), cluster.clone()).instrument(span)),
        };
        self.write_hosts().insert(host.id.clone(), host.clone());
        host
    }

    /// Cluster mode: take the pool from the host table, add the command-line hosts missing
    /// from it, start a candidate per host.
    async fn start_cluster(&self, config: &Config, cluster: &Cluster) -> anyhow::Result<()> {
        let log = &self.ctx.log;
        for (url, mode) in &config.hosts {
            let rec = HostRecord::new(
                url.clone(),
                *mode,
                cluster.epoch,
                start_at(config.new_host_start, log.oldest(), log.head()),
            );
            cluster
                .hosts
                .create(&url.id(), &rec)
                .await
                .map_err(|e| anyhow::anyhow!("cannot add host {url} to the host table: {e}"))?;
        }
        let records = cluster
            .hosts
            .list()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the host table: {e}"))?;
        for (_, rec, _) in records {
            self.follow(rec);
        }
        Ok(())
    }

    /// Cluster mode: a record seen in the host table. A new host gets a candidate; a known one
    /// that this instance does not deliver to shows what its deliverer wrote.
    fn follow(&self, rec: HostRecord) {
        match self.get(&rec.url.id()) {
            Some(host) => {
                if !host.leased.load(std::sync::atomic::Ordering::Acquire) {
                    host.load(snapshot_of(&rec));
                }
            }
            None => {
                let host = self.insert(rec.url.clone(), rec.mode, rec.cursor, rec.applied);
                host.load(snapshot_of(&rec));
            }
        }
    }

    fn write_hosts(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<HostId, Arc<Host>>> {
        match self.hosts.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn read_hosts(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<HostId, Arc<Host>>> {
        match self.hosts.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Add a host at runtime.
    ///
    /// # Errors
    /// [`PoolError::Exists`] when a host with that URL is in the pool.
    pub async fn add(
        &self,
        url: HostUrl,
        mode: HostMode,
        start: StartAt,
    ) -> Result<Arc<Host>, PoolError> {
        if self.get(&url.id()).is_some() {
            return Err(PoolError::Exists(url));
        }
        let log = &self.ctx.log;
        let cursor = start_at(start, log.oldest(), log.head());
        if let Some(cluster) = &self.cluster {
            let rec = HostRecord::new(url.clone(), mode, cluster.epoch, cursor);
            if !cluster
                .hosts
                .create(&url.id(), &rec)
                .await
                .map_err(PoolError::Unavailable)?
            {
                return Err(PoolError::Exists(url));
            }
            // The table watcher may have added it already.
            if let Some(host) = self.get(&url.id()) {
                return Ok(host);
            }
        }
        Ok(self.insert(url, mode, cursor, Offset::ZERO))
    }

    /// Remove a host and stop its worker. The change is saved with the next cursor save (in
    /// cluster mode, deleted from the host table at once, which stops it on every instance).
    ///
    /// # Errors
    /// Cluster mode: the host table could not be written.
    pub async fn remove(&self, id: &HostId) -> Result<Option<Arc<Host>>, PoolError> {
        if let Some(cluster) = &self.cluster {
            if self.get(id).is_none() {
                return Ok(None);
            }
            cluster
                .hosts
                .delete(id)
                .await
                .map_err(PoolError::Unavailable)?;
        }
        Ok(self.forget(id))
    }

    /// Stop a host's worker and drop it from this instance's pool.
    fn forget(&self, id: &HostId) -> Option<Arc<Host>> {
        let host = self.write_hosts().remove(id)?;
        host.stop.cancel();
        info!(id = %host.id, url = %host.url, "host removed");
        Some(host)
    }

    pub fn get(&self, id: &HostId) -> Option<Arc<Host>> {
        self.read_hosts().get(id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Host>> {
        self.read_hosts().values().cloned().collect()
    }

    /// The lowest cursor of the pool (the log's end when the pool is empty): every record
    /// below it has been delivered to every host.
    pub fn min_cursor(&self) -> Offset {
        self.read_hosts()
            .values()
            .map(|h| h.cursor())
            .min()
            .unwrap_or_else(|| self.ctx.log.head().next())
    }

    pub fn log(&self) -> &Log {
        &self.ctx.log
    }

    pub fn epoch(&self) -> Epoch {
        self.ctx.sender.epoch()
    }

    /// Send a dead-lettered record to its host again, out of band.
    ///
    /// # Errors
    /// The host's answer when it did not take the record.
    pub async fn redrive(&self, host: &Host, record: &bytes::Bytes) -> Result<(), String> {
        worker::redrive(host, &self.ctx.sender, record).await
    }

    fn stored(&self) -> Vec<StoredHost> {
        self.read_hosts()
            .values()
            .map(|h| {
                let s = h.snapshot();
                StoredHost {
                    id: h.id.clone(),
                    url: h.url.clone(),
                    mode: h.mode,
                    cursor: s.cursor,
                    applied: s.applied,
                }
            })
            .collect()
    }

    /// Write `hosts.json` if anything changed since the last write (blocking I/O). In cluster
    /// mode this does nothing: each host's deliverer writes its record to the host table.
    ///
    /// # Errors
    /// The atomic write failed; the previous file is intact.
    pub fn save(&self) -> std::io::Result<bool> {
        if self.cluster.is_some() {
            return Ok(false);
        }
        let hosts = self.stored();
        let mut saved = match self.saved.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if saved.as_ref() == Some(&hosts) {
            return Ok(false);
        }
        let file = StoredPool {
            version: 1,
            epoch: self.epoch(),
            hosts,
        };
        let bytes = serde_json::to_vec_pretty(&file)?;
        crate::fsutil::write_atomic(&self.path, &bytes)?;
        *saved = Some(file.hosts);
        Ok(true)
    }

    async fn save_async(self: &Arc<Self>) {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.save()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(err = %e, "cannot save host cursors"),
            Err(e) => warn!(err = %e, "cursor save task failed"),
        }
    }

    /// Save cursors every second and run retention every ten, until `stop`.
    pub fn spawn_background(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        retention: Duration,
        retention_bytes: u64,
        stop: CancellationToken,
    ) {
        if let Some(cluster) = self.cluster.clone() {
            let this = self.clone();
            let stop3 = stop.clone();
            tracker.spawn(async move { this.watch_table(&cluster, &stop3).await });
        }
        let this = self.clone();
        let stop2 = stop.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(SAVE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => this.save_async().await,
                    () = stop2.cancelled() => break,
                }
            }
        });
        let this = self.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(RETAIN_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => break,
                }
                let min = this.min_cursor();
                let log = this.ctx.log.clone();
                let done = tokio::task::spawn_blocking(move || {
                    log.retain(min, retention, retention_bytes)
                })
                .await;
                match done {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => {
                        info!(segments = n, min_cursor = %min, "retention deleted segments")
                    }
                    Ok(Err(e)) => error!(err = %e, "retention failed"),
                    Err(e) => error!(err = %e, "retention task failed"),
                }
            }
        });
    }

    /// Cluster mode: follow the host table until `stop`, so hosts added or removed on any
    /// instance are added or removed here.
    async fn watch_table(&self, cluster: &Cluster, stop: &CancellationToken) {
        use futures_util::StreamExt;
        let mut failures: u32 = 0;
        loop {
            match cluster.hosts.watch().await {
                Ok(changes) => {
                    let mut changes = std::pin::pin!(changes);
                    failures = 0;
                    loop {
                        let next = tokio::select! {
                            n = changes.next() => n,
                            () = stop.cancelled() => return,
                        };
                        match next {
                            Some(Ok(Change::Put(rec))) => self.follow(rec),
                            Some(Ok(Change::Removed(id))) => {
                                self.forget(&id);
                            }
                            Some(Err(e)) => {
                                warn!(err = %e, "host table watch failed; watching again");
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Err(e) => warn!(err = %e, "cannot watch the host table"),
            }
            tokio::select! {
                () = tokio::time::sleep(super::retry::backoff(failures)) => {}
                () = stop.cancelled() => return,
            }
            failures = failures.saturating_add(1);
        }
    }

    /// Stop every worker, wait for them (up to `timeout`), save the cursors.
    pub async fn stop(self: &Arc<Self>, timeout: Duration) {
        for h in self.list() {
            h.stop.cancel();
        }
        self.workers.close();
        if tokio::time::timeout(timeout, self.workers.wait())
            .await
            .is_err()
        {
            warn!(
                still_running = self.workers.len(),
                "delivery workers did not stop in time"
            );
        }
        self.save_async().await;
    }
}

pub(crate) fn start_at(start: StartAt, oldest: Offset, head: Offset) -> Offset {
    match start {
        StartAt::Oldest => oldest,
        StartAt::Tail => head.next(),
    }
}
