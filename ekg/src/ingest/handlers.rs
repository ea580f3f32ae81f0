//! The ingest endpoints: `POST /_reflektor/ingest` and the room write API.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use shared::Method;
use shared::batch::Batch;

use super::auth::{delivery_headers, verify_bearer, verify_delivery};
use super::log::WriteResult;
use crate::config::Mode;
use crate::http::{ApiError, read_body};
use crate::rooms::{Outcome, now_ms};
use crate::state::AppState;

/// Largest batch body accepted (reflektor bounds its batches well below this).
pub const MAX_BATCH_BYTES: usize = 64 << 20;

/// `POST /_reflektor/ingest`: a signed batch (see `shared::batch`).
pub(crate) async fn ingest_batch(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if matches!(state.config.mode, Mode::Standalone { .. }) {
        return Err(ApiError::forbidden(
            "standalone",
            "this host runs standalone and assigns its own seqs; it takes no reflektor log",
        ));
    }
    if state.ingest.verifier.is_some() && delivery_headers(&headers)?.is_none() {
        return Err(ApiError::unauthorized("a reflektor signature is required"));
    }
    let body = read_body(body, MAX_BATCH_BYTES).await?;
    let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let claimed = verify_delivery(
        state.ingest.verifier.as_ref(),
        "POST",
        target,
        &headers,
        &body,
    )?;
    let batch = Batch::parse(body).map_err(|e| {
        ApiError::bad_request("bad_batch", format!("the batch cannot be parsed: {e}"))
    })?;
    if let Some(d) = claimed
        && (d.epoch != batch.header.epoch || d.offset != batch.header.prev)
    {
        return Err(ApiError::unauthorized(
            "the signed epoch and offset are not the batch's epoch and prev",
        ));
    }
    let max_body = state.config.max_message_bytes;
    match state.ingest.apply_batch(&state.rooms, max_body, &batch)? {
        Ok(ack) => Ok((StatusCode::OK, Json(ack)).into_response()),
        Err(ack) => {
            tracing::info!(prev = %batch.header.prev, applied = %ack.applied, "batch ahead of what is applied: asking for a rewind");
            Ok((StatusCode::CONFLICT, Json(ack)).into_response())
        }
    }
}

/// The room write API (`POST/PUT/DELETE /rooms/{room}/messages[/{id}]`, `POST
/// /rooms/{room}/events`): a request replayed by reflektor (signed, its offset is the seq) or,
/// standalone, a request with the bearer token (the host assigns the seq).
pub(crate) async fn write(
    State(state): State<AppState>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let method = Method::from_name(method.as_str()).ok_or_else(|| {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "not a write method",
        )
    })?;
    let max_body = state.config.max_message_bytes;
    let result = match &state.config.mode {
        Mode::Standalone { token } => {
            verify_bearer(token, &headers)?;
            let body = read_body(body, max_body).await?;
            state.ingest.apply_standalone(
                &state.rooms,
                max_body,
                method,
                uri.path(),
                &body,
                now_ms(),
            )?
        }
        Mode::Relayed => {
            if delivery_headers(&headers)?.is_none() {
                return Err(ApiError::unauthorized(
                    "writes come through reflektor (X-Reflektor-* headers) or, standalone, with a token",
                ));
            }
            let body = read_body(body, max_body).await?;
            let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
            let delivery = verify_delivery(
                state.ingest.verifier.as_ref(),
                method.as_str(),
                target,
                &headers,
                &body,
            )?
            .ok_or_else(|| ApiError::unauthorized("X-Reflektor-Offset is required"))?;
            state.ingest.apply_replayed(
                &state.rooms,
                max_body,
                delivery.epoch,
                delivery.offset,
                method,
                uri.path(),
                &body,
                now_ms(),
            )?
        }
    };
    let body = match result {
        WriteResult::Applied(seq, Outcome::Pushed(_)) => serde_json::json!({ "seq": seq }),
        WriteResult::Applied(_, Outcome::Unchanged) => {
            serde_json::json!({ "seq": null, "unchanged": true })
        }
        WriteResult::Duplicate(seq) => serde_json::json!({ "seq": seq, "duplicate": true }),
    };
    Ok(Json(body).into_response())
}
