//! ekg: a streaming host.
//!
//! ekg applies the requests reflektor replays (or, standalone, that API servers send it
//! directly) to in-memory rooms, and pushes every event to the room's subscribers over
//! WebSocket and Server-Sent Events. Clients page a room's history and resume from a seq
//! without gap or duplicate. The seq of an event is reflektor's offset, so every host gives
//! the same event the same seq and a cursor works on any host.
//!
//! - [`config`]: flags (`EKG_*`) validated into [`Config`].
//! - [`rooms`]: rooms, frames, history, subscriptions, the connection limit.
//! - [`ingest`]: batches, replayed and standalone writes; the applied offset and readiness.
//! - [`http`]: the read API, errors, health, metrics, static files.
//! - [`streams`]: WebSocket and SSE subscribers, lagging, drain.
//! - [`telemetry`]: metric names.
//!
//! [`run`] serves until its shutdown token is cancelled, lets the streams drain, and returns.

pub mod config;
pub mod http;
pub mod ingest;
pub mod rooms;
pub mod state;
pub mod streams;
pub mod telemetry;
pub mod wire;

use std::time::Duration;

use axum::Router;
use axum::routing::{get, post, put};
use tokio::net::TcpListener;

pub use config::{Args, Config, HTTP_HEADROOM};
use shared::batch::INGEST_PATH;
use shared::shutdown::CancellationToken;
pub use state::AppState;

/// Extra time, beyond the drain window, that streams get to finish before `run` gives up.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Most fan-out workers (one per core up to this).
pub const MAX_FANOUT_WORKERS: usize = 8;

/// Every route, with state.
pub fn router(state: AppState) -> Router {
    let cors = http::cors_layer(&state.config.cors_origins);
    let app = Router::new()
        .route("/", get(http::ops::index))
        .route("/ekg.js", get(http::ops::ekg_js))
        .route("/healthz", get(http::ops::healthz))
        .route("/readyz", get(http::ops::readyz))
        .route("/metrics", get(http::ops::metrics))
        .route(INGEST_PATH, post(ingest::ingest_batch))
        .route("/rooms/{room}", get(http::history::room_info))
        .route(
            "/rooms/{room}/messages",
            get(http::history::messages).post(ingest::write),
        )
        .route(
            "/rooms/{room}/messages/{id}",
            put(ingest::write).delete(ingest::write),
        )
        .route("/rooms/{room}/events", post(ingest::write))
        .merge(streams::routes())
        .fallback(http::ops::not_found)
        .method_not_allowed_fallback(http::ops::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            http::ops::require_ready,
        ))
        .with_state(state);
    match cors {
        Some(layer) => app.layer(layer),
        None => app,
    }
}

/// Serve on `listener` until `shutdown` is cancelled; then stop accepting, let the streams
/// drain (they spread `reconnect` over `config.drain_window`), wait for them at most
/// `drain_window +` [`DRAIN_GRACE`], and return.
///
/// # Errors
/// The configuration lets anyone write without saying so ([`Config::check_trust`]), or the
/// server failed to serve.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.check_trust().map_err(anyhow::Error::msg)?;
    for choice in config.insecure_choices() {
        tracing::warn!("insecure: {choice}");
    }
    // Install the metrics recorder before anything records.
    let _recorder = shared::telemetry::prometheus();
    telemetry::register();
    let state = AppState::new(config, shutdown.clone());
    let sweeper = tokio::spawn(state.rooms.clone().run_sweeper(shutdown.clone()));
    // Fan-out keeps going while the streams drain; it stops when `run` returns.
    let fanout_stop = CancellationToken::new();
    let _stop_fanout = fanout_stop.clone().drop_guard();
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    for _ in 0..workers.clamp(1, MAX_FANOUT_WORKERS) {
        tokio::spawn(state.rooms.clone().run_fanout(fanout_stop.clone()));
    }
    let deadline = state.config.drain_window + DRAIN_GRACE;
    let tasks = state.tasks.clone();
    let stop = shutdown.clone();
    let limits = shared::serve::Limits {
        header_read_timeout: state.config.header_read_timeout,
        max_connections: state.config.max_http_connections,
    };
    let mut server = tokio::spawn(shared::serve::serve(listener, router(state), limits, stop));
    tokio::select! {
        result = &mut server => {
            shutdown.cancel();
            sweeper.abort();
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(anyhow::Error::new(e).context("serving failed")),
                Err(e) => Err(anyhow::Error::new(e).context("the server task failed")),
            };
        }
        () = shutdown.cancelled() => {}
    }
    tracing::info!(?deadline, "shutting down: draining streams");
    tasks.close();
    let drained = tokio::time::timeout(deadline, async {
        tasks.wait().await;
        server.await
    })
    .await;
    sweeper.abort();
    match drained {
        Ok(Ok(Ok(()))) => tracing::info!("drained"),
        Ok(Ok(Err(e))) => tracing::warn!(%e, "server ended with an error while draining"),
        Ok(Err(e)) => tracing::warn!(%e, "server task failed while draining"),
        Err(_) => tracing::warn!(
            streams = tasks.len(),
            "drain deadline passed; closing the remaining connections"
        ),
    }
    Ok(())
}
