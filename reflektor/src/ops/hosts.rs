//! `/_reflektor/hosts` and `/_reflektor/dead-letters`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::Offset;

use crate::AppState;
use crate::delivery::{Host, HostId, HostMode, HostUrl, PoolError, StartAt};
use crate::intake::{AppError, authorized};

/// Every `/_reflektor/` route goes through this: the token, when configured.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if !authorized(&state, req.headers()) {
        return AppError::Unauthorized.into_response();
    }
    next.run(req).await
}

/// One host as `/_reflektor/hosts` shows it.
#[derive(Debug, Serialize)]
pub(crate) struct HostView {
    pub(crate) id: HostId,
    pub(crate) url: HostUrl,
    pub(crate) mode: HostMode,
    pub(crate) healthy: bool,
    pub(crate) cursor: Offset,
    pub(crate) applied: Offset,
    pub(crate) lag_records: u64,
    pub(crate) lag_seconds: f64,
    pub(crate) last_error: Option<String>,
    pub(crate) last_success_at: Option<u64>,
    pub(crate) retries: u64,
    /// Cluster mode: the instance delivering to the host; absent with the embedded log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) owner: Option<String>,
}

/// Describe a host, reading the timestamp of its oldest undelivered record for the lag.
pub(crate) async fn view(state: &AppState, host: &Host) -> HostView {
    let s = host.snapshot();
    let head = state.log.head();
    let lag_seconds = if s.cursor <= head {
        match state.log.timestamp_of(s.cursor).await {
            Some(ts) => crate::now_ms().saturating_sub(ts) as f64 / 1000.0,
            None => 0.0,
        }
    } else {
        0.0
    };
    HostView {
        id: host.id.clone(),
        url: host.url.clone(),
        mode: host.mode,
        healthy: s.healthy,
        cursor: s.cursor,
        applied: s.applied,
        lag_records: head.0.saturating_sub(s.applied.0),
        lag_seconds,
        last_error: s.last_error,
        last_success_at: s.last_success_at,
        retries: s.retries,
        owner: s.owner,
    }
}

pub(crate) async fn list_hosts(State(state): State<AppState>) -> Json<serde_json::Value> {
    let mut hosts = Vec::new();
    for h in state.pool.list() {
        hosts.push(view(&state, &h).await);
    }
    Json(json!({
        "epoch": state.log.epoch(),
        "head": state.log.head(),
        "oldest": state.log.oldest(),
        "hosts": hosts,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddHost {
    url: String,
    #[serde(default)]
    mode: Option<HostMode>,
    #[serde(default)]
    start: Option<StartAt>,
}

pub(crate) async fn add_host(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, AppError> {
    let req: AddHost = serde_json::from_slice(&body).map_err(|e| {
        AppError::bad_request(
            "bad_host",
            format!(
                "expected {{\"url\": \"http://..\", \"mode\": \"batch\"|\"replay\", \"start\": \"oldest\"|\"tail\"}}: {e}"
            ),
        )
    })?;
    let url = HostUrl::parse(&req.url).map_err(|e| AppError::bad_request("bad_host", e))?;
    let mode = req.mode.unwrap_or(HostMode::Batch);
    let start = req.start.unwrap_or(state.config.new_host_start);
    let host = state
        .pool
        .add(url, mode, start)
        .await
        .map_err(|e: PoolError| match e {
            PoolError::Exists(_) => AppError::Conflict(e.to_string()),
            PoolError::Unavailable(_) => AppError::Overloaded(e.to_string()),
        })?;
    Ok((StatusCode::CREATED, Json(view(&state, &host).await)).into_response())
}

pub(crate) async fn remove_host(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let removed = state
        .pool
        .remove(&HostId(id.clone()))
        .await
        .map_err(|e| AppError::Overloaded(e.to_string()))?;
    match removed {
        Some(h) => Ok(Json(json!({"removed": h.id, "url": h.url})).into_response()),
        None => Err(AppError::NotFound(format!("no host with id {id}"))),
    }
}

pub(crate) async fn list_dead_letters(State(state): State<AppState>) -> Result<Response, AppError> {
    let list = state
        .dead_letters
        .list()
        .await
        .map_err(|e| AppError::Overloaded(format!("cannot read the dead letters: {e}")))?;
    Ok(Json(json!({"dead_letters": list})).into_response())
}

pub(crate) async fn redrive(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let id: u64 = id
        .parse()
        .map_err(|_| AppError::bad_request("bad_id", format!("{id:?} is not a dead-letter id")))?;
    let entry = state
        .dead_letters
        .get(id)
        .await
        .map_err(|e| AppError::Overloaded(format!("cannot read the dead letters: {e}")))?
        .ok_or_else(|| AppError::NotFound(format!("no dead letter with id {id}")))?;
    let host = state.pool.get(&entry.host_id).ok_or_else(|| {
        AppError::Conflict(format!(
            "host {} ({}) is no longer in the pool",
            entry.host_id, entry.host_url
        ))
    })?;
    state
        .pool
        .redrive(&host, &entry.record)
        .await
        .map_err(AppError::Upstream)?;
    state
        .dead_letters
        .remove(id)
        .await
        .map_err(|e| AppError::Internal(format!("cannot update the dead-letter store: {e}")))?;
    tracing::info!(id, offset = %entry.offset, host = %host.id, "dead letter redriven");
    Ok(Json(json!({"redriven": id, "offset": entry.offset, "host": host.id})).into_response())
}
