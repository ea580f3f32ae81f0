//! Probes and the Prometheus endpoint.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::intake::AppError;

pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutdown.is_cancelled() {
        return AppError::ShuttingDown.into_response();
    }
    if let Some(why) = state.log.failure() {
        return AppError::LogFailed(why).into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

pub(crate) async fn metrics_text(State(state): State<AppState>) -> Response {
    let mut body = state.prometheus.render();
    super::metrics::render_delivery_latency(&state.pool.list(), &mut body);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
