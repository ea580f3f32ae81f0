//! The ingest endpoints: `POST /_reflektor/ingest` and the room write API.
//!
//! Every endpoint checks everything it can from the headers (mode, credentials, delivery
//! headers and their timestamp, content type, declared length), then takes one of
//! `--max-ingest-requests` slots, then reads the body under `--body-read-timeout`, and only
//! then verifies a signature and applies.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use shared::Method;
use shared::batch::{self, Batch};

use super::auth::{has_delivery_headers, verify_bearer};
use super::log::{Replayed, WriteResult};
use super::{IngestError, RecordError};
use crate::config::Mode;
use crate::rooms::{Outcome, now_ms};
use crate::state::AppState;
use crate::telemetry;

/// Largest batch body accepted (reflektor bounds its batches well below this).
pub const MAX_BATCH_BYTES: usize = 64 << 20;
/// Largest body of a replayed request read to verify its signature. A signed write over
/// `--max-message-bytes` is read (up to this) so that it can be refused on its own and
/// consume its offset; beyond this the request is refused unread and reflektor retries it.
pub const MAX_REPLAYED_BYTES: usize = MAX_BATCH_BYTES;

/// `POST /_reflektor/ingest`: a signed batch (see `shared::batch`).
pub(crate) async fn ingest_batch(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, IngestError> {
    let ack = batch(&state, &uri, &headers, body)
        .await
        .inspect_err(refused)?;
    Ok(Json(ack).into_response())
}

async fn batch(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<batch::IngestAck, IngestError> {
    if matches!(state.config.mode, Mode::Standalone { .. }) {
        return Err(IngestError::Standalone);
    }
    let batch_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-reflektor-batch")
        });
    if !batch_type {
        return Err(IngestError::UnsupportedMediaType {
            expected: batch::CONTENT_TYPE,
        });
    }
    let ingest = &state.ingest;
    let claim = ingest.trust.check_headers(headers)?;
    declared_length_within(headers, MAX_BATCH_BYTES)?;
    let _slot = ingest.admit()?;
    let body = read_body(body, MAX_BATCH_BYTES, ingest.body_timeout).await?;
    ingest.trust.verify(&claim, "POST", target(uri), &body)?;
    let batch = Batch::parse(body).map_err(|e| IngestError::BadBatch(e.to_string()))?;
    if claim.epoch != batch.header.epoch || claim.offset != batch.header.prev {
        return Err(IngestError::BadSignature(
            "the signed epoch and offset are not the batch's epoch and prev".into(),
        ));
    }
    let max_body = state.config.max_message_bytes;
    ingest.apply_batch(&state.rooms, max_body, &batch)
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
) -> Result<Response, IngestError> {
    let result = write_once(&state, &method, &uri, &headers, body)
        .await
        .inspect_err(refused)?;
    let body = match result {
        WriteResult::Applied(seq, Outcome::Pushed(_)) => serde_json::json!({ "seq": seq }),
        WriteResult::Applied(_, Outcome::Unchanged) => {
            serde_json::json!({ "seq": null, "unchanged": true })
        }
        WriteResult::Duplicate(seq) => serde_json::json!({ "seq": seq, "duplicate": true }),
    };
    Ok(Json(body).into_response())
}

async fn write_once(
    state: &AppState,
    method: &axum::http::Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<WriteResult, IngestError> {
    let Some(write_method) = Method::from_name(method.as_str()) else {
        return Err(RecordError::MethodNotAllowed {
            method: "this method",
            path: uri.path().to_owned(),
        }
        .into());
    };
    let ingest = &state.ingest;
    let max_body = state.config.max_message_bytes;
    match &state.config.mode {
        Mode::Standalone { token } => {
            verify_bearer(token, headers)?;
            declared_length_within(headers, max_body)?;
            let _slot = ingest.admit()?;
            let body = read_body(body, max_body, ingest.body_timeout).await?;
            ingest.apply_standalone(
                &state.rooms,
                max_body,
                write_method,
                uri.path(),
                &body,
                now_ms(),
            )
        }
        Mode::Relayed => {
            if !has_delivery_headers(headers) {
                return Err(IngestError::NotRelayed);
            }
            let claim = ingest.trust.check_headers(headers)?;
            let prev = match claim.prev {
                None => claim.offset.prev(),
                Some(p) if p < claim.offset => p,
                Some(_) => {
                    return Err(IngestError::BadDeliveryHeaders(
                        "X-Reflektor-Prev must be below X-Reflektor-Offset",
                    ));
                }
            };
            declared_length_within(headers, MAX_REPLAYED_BYTES)?;
            let _slot = ingest.admit()?;
            let body = read_body(body, MAX_REPLAYED_BYTES, ingest.body_timeout).await?;
            ingest
                .trust
                .verify(&claim, write_method.as_str(), target(uri), &body)?;
            let at = Replayed {
                epoch: claim.epoch,
                offset: claim.offset,
                prev,
            };
            ingest.apply_replayed(
                &state.rooms,
                max_body,
                at,
                write_method,
                uri.path(),
                &body,
                now_ms(),
            )
        }
    }
}

/// The request target as received: what a signature covers.
fn target(uri: &Uri) -> &str {
    uri.path_and_query().map_or(uri.path(), |pq| pq.as_str())
}

/// Refuse a body whose `Content-Length` says it is over `limit`, before reading it.
fn declared_length_within(headers: &HeaderMap, limit: usize) -> Result<(), IngestError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => Err(IngestError::BodyTooLarge { limit }),
        _ => Ok(()),
    }
}

/// The whole body, read no further than `limit` bytes and for no longer than `timeout`.
///
/// # Errors
/// `BodyTooLarge` past the limit, `BodyTimeout`, `BodyAborted` if the client broke it off.
pub(crate) async fn read_body(
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, IngestError> {
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(IngestError::BodyTimeout(timeout)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(IngestError::BodyTooLarge { limit })
        }
        Ok(Err(e)) => Err(IngestError::BodyAborted(e.to_string())),
    }
}

/// Count (and, for a misconfigured sender, log) a delivery refused as a whole. Records refused
/// on their merits are counted as rejected records instead.
fn refused(e: &IngestError) {
    if let IngestError::Record(r) = e
        && r.is_record_fault()
    {
        return;
    }
    let code = crate::http::ApiError::from(e.clone()).code;
    metrics::counter!(telemetry::INGEST_REFUSED, "error" => code).increment(1);
    match e {
        // Part of normal operation: a host that restarted is rewound; reflektor backs off.
        IngestError::OutOfOrder(_)
        | IngestError::BodyTimeout(_)
        | IngestError::BodyAborted(_)
        | IngestError::BodyTooLarge { .. } => {
            tracing::debug!(code, error = %e, "delivery refused");
        }
        // A misconfigured or out-of-step sender, a stranger, or a host at its limits: the
        // operator must hear of it, without a flood of lines.
        _ => telemetry::warn_throttled(code, &e.to_string()),
    }
}
