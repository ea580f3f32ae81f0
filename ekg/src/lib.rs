//! ekg: a streaming host.

pub mod config;
pub mod http;
pub mod ingest;
pub mod rooms;
pub mod state;
pub mod streams;
pub mod telemetry;

use axum::Router;
use tokio::net::TcpListener;

pub use config::{Args, Config};
use shared::shutdown::CancellationToken;
pub use state::AppState;

/// Every route, with state.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(http::routes())
        .merge(ingest::routes())
        .merge(streams::routes())
        .with_state(state)
}

/// Serve until `shutdown` is cancelled.
///
/// # Errors
/// The server failed.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = AppState::new(config, shutdown.clone());
    let app = router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
