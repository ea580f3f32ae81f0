//! reflektor: an HTTP intake relay.
//!
//! A request to any path outside `/_reflektor/` is appended to a durable log ([`log`]) and
//! answered `202 {"id": "<offset>"}` once it is durable ([`intake`]). One worker per host
//! replays the log, in offset order, to every host of the pool, batched or as the original
//! requests ([`delivery`]). [`ops`] serves the pool, dead letters, metrics and probes.
//! Wire formats: `docs/PROTOCOL.md`; operator guide: `docs/REFLEKTOR.md`.
//!
//! The log runs on one of two backends ([`log::Log`]): segment files in `--data-dir` (the
//! default), or, with `--nats`, a JetStream stream that several instances share; in that
//! cluster mode the host table, delivery leases and dead letters live in JetStream too
//! ([`cluster`]), and exactly one instance delivers to each host.
//!
//! # Lifecycle ([`run`])
//! 1. Open the log (recovering a torn tail), rebuild the idempotency window from it, load the
//!    dead letters and the pool's cursors, start a worker per host. In cluster mode: connect,
//!    check or create the stream and buckets, start a lease candidate per host.
//! 2. Serve until `shutdown` is cancelled.
//! 3. Then: refuse new intake (`503 shutting_down`), let in-flight requests finish, stop the
//!    workers, close the log (everything appended is synced), save the cursors. All of it
//!    within `--shutdown-timeout`. In cluster mode a stream replaced under the process (a new
//!    epoch) also stops it, with an error: its cursors belong to the old log.

pub mod cluster;
pub mod config;
pub mod delivery;
mod fsutil;
pub mod intake;
pub mod log;
pub mod ops;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::Config;
use delivery::{DeadLetterStore, DeadLetters, Pool};
use intake::Dedupe;
use log::{JetStreamConfig, JetStreamLog, Log, LogConfig};

/// How often expired idempotency keys are swept (or the window, when shorter).
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Most HTTP connections open at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 4096;
/// How often gauges (log size, per-host lag) are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(1);

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub log: Log,
    pub dedupe: Arc<Dedupe>,
    pub pool: Arc<Pool>,
    pub dead_letters: DeadLetterStore,
    /// Cancelled when shutting down: intake refuses, `/readyz` answers 503.
    pub shutdown: CancellationToken,
    pub prometheus: PrometheusHandle,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Open the log, the dead letters and the pool (whose workers start at once).
    ///
    /// # Errors
    /// The data directory, the log or the host file cannot be opened.
    pub async fn open(config: Config, shutdown: CancellationToken) -> anyhow::Result<AppState> {
        AppState::open_on(config, shutdown, Arc::new(log::StdFilesystem)).await
    }

    /// [`AppState::open`] with the log's file operations going through `fs` (tests inject
    /// disk faults there).
    pub(crate) async fn open_on(
        config: Config,
        shutdown: CancellationToken,
        fs: Arc<dyn log::Filesystem>,
    ) -> anyhow::Result<AppState> {
        // Install the metrics recorder before anything records (the dead-letter count is set
        // while opening; recorded earlier, it would go nowhere).
        let prometheus = shared::telemetry::prometheus();
        if config.is_cluster() {
            return AppState::open_cluster(config, shutdown, prometheus).await;
        }
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                config.data_dir.display()
            )
        })?;
        let mut log_cfg = LogConfig::new(config.data_dir.join("log"));
        log_cfg.fsync = config.fsync;
        log_cfg.fsync_interval = config.fsync_interval;
        log_cfg.max_disk_bytes = config.max_disk_bytes;
        log_cfg.keys_window = config.dedupe_window;
        log_cfg.fs = fs;
        let opened = tokio::task::spawn_blocking(move || log::embedded::Log::open(log_cfg))
            .await
            .context("log open task failed")?
            .context("cannot open the log")?;
        if opened.truncated_bytes > 0 {
            warn!(
                bytes = opened.truncated_bytes,
                "cut a torn tail from the log (an append that was never acknowledged)"
            );
        }
        let log: Log = opened.log.into();
        let dedupe = Arc::new(Dedupe::new(
            config.dedupe_window,
            intake::dedupe::DEFAULT_MAX_ENTRIES,
        ));
        let keys = dedupe.rebuild(opened.recent_keys, now_ms());
        let dead_letters = DeadLetterStore::File(Arc::new(
            DeadLetters::open(&config.data_dir, delivery::dead_letter::DEFAULT_MAX_ENTRIES)
                .context("cannot open the dead-letter store")?,
        ));
        ops::metrics::register(config.max_disk_bytes);
        let pool = Pool::start(
            &config,
            log.clone(),
            dead_letters.clone(),
            shutdown.clone(),
            None,
        )
        .await?;
        info!(
            epoch = %log.epoch(),
            oldest = %log.oldest(),
            head = %log.head(),
            idempotency_keys = keys,
            hosts = pool.list().len(),
            "log open"
        );
        Ok(AppState {
            config: Arc::new(config),
            log,
            dedupe,
            pool,
            dead_letters,
            shutdown,
            prometheus,
        })
    }
}

impl AppState {
    /// Cluster mode: the log in JetStream, the host table, leases and dead letters beside it.
    async fn open_cluster(
        mut config: Config,
        shutdown: CancellationToken,
        prometheus: PrometheusHandle,
    ) -> anyhow::Result<AppState> {
        let Some(nats) = config.nats.clone() else {
            anyhow::bail!("cluster mode needs --nats");
        };
        let mut js_cfg = JetStreamConfig::new(nats.urls.clone());
        js_cfg.stream = nats.stream.clone();
        js_cfg.replicas = nats.replicas;
        js_cfg.max_age = config.retention;
        js_cfg.max_bytes = config.retention_bytes;
        js_cfg.duplicate_window = config.dedupe_window;
        let (jetstream, js) = JetStreamLog::open(js_cfg)
            .await
            .context("cluster mode: cannot open the log in JetStream")?;
        if config.max_body > jetstream.max_body_bytes() {
            warn!(
                max_body = config.max_body,
                accepted = jetstream.max_body_bytes(),
                "the NATS servers' max_payload is smaller than --max-body: larger bodies get 413 (raise max_payload in the nats-server configuration to accept them)"
            );
            config.max_body = jetstream.max_body_bytes();
        }
        let instance = format!("reflektor-{}-{:08x}", std::process::id(), fastrand::u32(..));
        let (cluster, dead) = cluster::Cluster::open(
            &js,
            &nats.stream,
            nats.replicas,
            nats.lease_ttl,
            instance.clone(),
            jetstream.epoch(),
            delivery::dead_letter::DEFAULT_MAX_ENTRIES,
        )
        .await
        .map_err(|e| anyhow::anyhow!("cluster mode: {e}"))?;
        ops::metrics::register(config.max_disk_bytes);
        let log: Log = jetstream.into();
        let dedupe = Arc::new(Dedupe::new(
            config.dedupe_window,
            intake::dedupe::DEFAULT_MAX_ENTRIES,
        ));
        let dead_letters = DeadLetterStore::JetStream(Arc::new(dead));
        let pool = Pool::start(
            &config,
            log.clone(),
            dead_letters.clone(),
            shutdown.clone(),
            Some(Arc::new(cluster)),
        )
        .await?;
        info!(
            %instance,
            stream = %nats.stream,
            epoch = %log.epoch(),
            oldest = %log.oldest(),
            head = %log.head(),
            hosts = pool.list().len(),
            "cluster mode: log open in JetStream"
        );
        Ok(AppState {
            config: Arc::new(config),
            log,
            dedupe,
            pool,
            dead_letters,
            shutdown,
            prometheus,
        })
    }
}

/// All of reflektor's HTTP surface.
pub fn router(state: AppState) -> Router {
    let only = |allow: &'static str| {
        move |method: axum::http::Method| async move {
            intake::AppError::OpsMethodNotAllowed {
                method: method.to_string(),
                allow,
            }
        }
    };
    let ops = Router::new()
        .route(
            "/_reflektor/hosts",
            get(ops::hosts::list_hosts)
                .post(ops::hosts::add_host)
                .fallback(only("GET, POST")),
        )
        .route(
            "/_reflektor/hosts/{id}",
            delete(ops::hosts::remove_host).fallback(only("DELETE")),
        )
        .route(
            "/_reflektor/dead-letters",
            get(ops::hosts::list_dead_letters).fallback(only("GET")),
        )
        .route(
            "/_reflektor/dead-letters/{id}/redrive",
            post(ops::hosts::redrive).fallback(only("POST")),
        )
        .route_layer(from_fn_with_state(state.clone(), ops::hosts::require_token));
    // The page's files hold no data and are served without a token; the page sends the token
    // the operator types to the endpoints above.
    let ui = Router::new()
        .route("/_reflektor/ui", get(ops::ui::index).fallback(only("GET")))
        .route(
            "/_reflektor/ui/ops.js",
            get(ops::ui::script).fallback(only("GET")),
        )
        .route(
            "/_reflektor/ui/ops.css",
            get(ops::ui::style).fallback(only("GET")),
        );
    let cors = cors_layer(&state.config);
    let app = Router::new()
        .merge(ops)
        .merge(ui)
        .route("/metrics", get(ops::metrics_text).fallback(intake::intake))
        .route("/healthz", get(ops::healthz).fallback(intake::intake))
        .route("/readyz", get(ops::readyz).fallback(intake::intake))
        .fallback(intake::intake)
        .with_state(state);
    match cors {
        Some(cors) => app.layer(cors),
        None => app,
    }
}

/// CORS for browsers posting to intake from the configured origins.
fn cors_layer(config: &Config) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if config.cors_origins.is_empty() {
        return None;
    }
    let origin = if config.cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            config
                .cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    let mut headers = vec![
        header::CONTENT_TYPE,
        header::AUTHORIZATION,
        HeaderName::from_static("idempotency-key"),
    ];
    headers.extend(
        config
            .keep_headers
            .iter()
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
    );
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers(headers)
            .expose_headers([
                HeaderName::from_static("idempotency-replayed"),
                header::RETRY_AFTER,
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// Serve on `listener` until `shutdown` is cancelled, then stop cleanly.
///
/// # Errors
/// Startup failed (data directory, log, host file) or the listener failed.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with(listener, config, shutdown, |_| {}).await
}

/// [`run`], calling `on_serving` with the bound address once requests are being served.
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
    on_serving: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("listener has no address")?;
    let shutdown_timeout = config.shutdown_timeout;
    let state = AppState::open(config, shutdown.clone()).await?;

    let background = TaskTracker::new();
    let background_stop = CancellationToken::new();
    state.pool.spawn_background(
        &background,
        state.config.retention,
        state.config.retention_bytes,
        background_stop.clone(),
    );
    spawn_sweeper(&background, &state, background_stop.clone());
    spawn_gauges(&background, &state, background_stop.clone());

    let limits = shared::serve::Limits {
        header_read_timeout: shared::serve::DEFAULT_HEADER_READ_TIMEOUT,
        max_connections: MAX_CONNECTIONS,
    };
    let serve = shared::serve::serve(listener, router(state.clone()), limits, shutdown.clone());
    on_serving(addr);
    let deadline = async {
        shutdown.cancelled().await;
        let deadline = tokio::time::Instant::now() + shutdown_timeout;
        tokio::time::sleep_until(deadline).await;
    };
    // Cluster mode: a stream deleted and created again is another log; this process's cursors
    // and idempotency window belong to the old one, so it stops (a supervisor restarts it on
    // the new log).
    let replaced = {
        let log = state.log.clone();
        let shutdown = shutdown.clone();
        async move {
            let Some(jetstream) = log.jetstream() else {
                return std::future::pending().await;
            };
            let why = jetstream.replaced().await;
            shutdown.cancel();
            why
        }
    };
    let mut replaced = std::pin::pin!(replaced);
    let mut lost: Option<String> = None;
    let stop_started = tokio::time::Instant::now();
    let served = {
        let mut serve = std::pin::pin!(serve);
        let mut deadline = std::pin::pin!(deadline);
        loop {
            tokio::select! {
                r = &mut serve => break r.context("server failed"),
                () = &mut deadline => {
                    warn!("in-flight requests did not finish within the shutdown timeout");
                    break Ok(());
                }
                why = &mut replaced, if lost.is_none() => lost = Some(why),
            }
        }
    };
    shutdown.cancel();
    info!("stopping: delivery workers, log, cursors");
    let left = shutdown_timeout.saturating_sub(stop_started.elapsed().min(shutdown_timeout));
    let left = left.max(Duration::from_millis(500));
    state.pool.stop(left / 2).await;
    match tokio::time::timeout(left / 2, state.log.close()).await {
        Ok(Ok(())) => info!("log closed and synced"),
        Ok(Err(e)) => {
            tracing::error!(err = %e, "log close failed: the last appends may not be synced")
        }
        Err(_) => tracing::error!("log close timed out: the last appends may not be synced"),
    }
    background_stop.cancel();
    background.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), background.wait()).await;
    info!("stopped");
    if let Some(why) = lost {
        anyhow::bail!("{why}");
    }
    served
}

fn spawn_sweeper(tracker: &TaskTracker, state: &AppState, stop: CancellationToken) {
    let dedupe = state.dedupe.clone();
    let every = SWEEP_EVERY.min(state.config.dedupe_window.max(Duration::from_millis(100)));
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => { dedupe.sweep(now_ms()); }
                () = stop.cancelled() => break,
            }
        }
    });
}

fn spawn_gauges(tracker: &TaskTracker, state: &AppState, stop: CancellationToken) {
    let state = state.clone();
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(GAUGES_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => break,
            }
            ops::metrics::log_stats(
                &state.log.stats(),
                state.log.failure().is_some(),
                state.dedupe.len(),
            );
            for host in state.pool.list() {
                let v = ops::hosts::view(&state, &host).await;
                ops::metrics::host(&v.id, v.cursor.0, v.lag_records, v.lag_seconds, v.healthy);
            }
        }
    });
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
