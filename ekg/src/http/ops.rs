//! Health, readiness, metrics, the browser client and the demo page.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::ApiError;
use crate::state::AppState;

const EKG_JS: &str = include_str!("../../static/ekg.js");
const INDEX_HTML: &str = include_str!("../../static/index.html");

/// `GET /healthz`: the process is serving.
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 once caught up with the log since start, 503 before.
pub(crate) async fn readyz(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cursor = state.ingest.cursor();
    if state.ingest.is_ready() && !state.shutdown.is_cancelled() {
        Ok(Json(serde_json::json!({
            "status": "ready",
            "applied": cursor.applied,
            "epoch": cursor.epoch,
        })))
    } else if state.shutdown.is_cancelled() {
        Err(ApiError::unavailable(
            "shutting_down",
            "this host is draining",
        ))
    } else {
        Err(ApiError::unavailable(
            "not_ready",
            format!(
                "catching up with the log: applied {} so far",
                cursor.applied
            ),
        ))
    }
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    state.rooms.export_gauges();
    let mut body = shared::telemetry::prometheus().render();
    crate::telemetry::render_delivery_latency(&mut body);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// `GET /ekg.js`: the browser client.
pub(crate) async fn ekg_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        EKG_JS,
    )
        .into_response()
}

/// `GET /`: the demo room page.
pub(crate) async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

/// Anything else.
pub(crate) async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint").into_response()
}

/// A known path with a method it does not take.
pub(crate) async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
    .into_response()
}

/// Room reads and streams wait for readiness. Until this host has caught up with the log after
/// a start, its rooms are incomplete, and it cannot tell a client's resume cursor from one of
/// another log; answering `503 not_ready` (with `Retry-After`) sends the client to another
/// host or back a moment later, instead of handing it a partial room.
pub(crate) async fn require_ready(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let read = req.method() == axum::http::Method::GET && req.uri().path().starts_with("/rooms/");
    if read && !state.ingest.is_ready() {
        return ApiError::unavailable(
            "not_ready",
            "this host is still catching up with the log; retry shortly or use another host",
        )
        .into_response();
    }
    next.run(req).await
}
