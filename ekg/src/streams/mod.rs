//! Streams: WebSocket and SSE subscribers.

use axum::Router;

use crate::state::AppState;

/// `GET /rooms/{room}/ws` and `GET /rooms/{room}/sse`.
pub fn routes() -> Router<AppState> {
    Router::new()
}
