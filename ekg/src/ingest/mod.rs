//! Ingest: how events get into rooms.

mod log;

pub use log::IngestLog;

use axum::Router;

use crate::state::AppState;

/// `POST /_reflektor/ingest` and the room write API.
pub fn routes() -> Router<AppState> {
    Router::new()
}
