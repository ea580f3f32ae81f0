//! HTTP: the read API, errors, health, metrics and static files.

mod errors;

pub use errors::ApiError;

use axum::Router;

use crate::state::AppState;

/// The read API, health, metrics and static files.
pub fn routes() -> Router<AppState> {
    Router::new()
}
