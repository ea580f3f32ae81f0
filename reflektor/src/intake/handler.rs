//! The intake handler: method, token, body, dedupe, append, answer.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use shared::{Method, Offset, Record};

use super::AppError;
use super::dedupe::Deduped;
use crate::AppState;
use crate::log::AppendError;
use crate::ops::metrics;

/// Header a repeat of an idempotency key is answered with.
pub(crate) const REPLAYED_HEADER: &str = "idempotency-replayed";

/// Any request outside the reserved prefix.
pub(crate) async fn intake(State(state): State<AppState>, req: Request) -> Response {
    let started = Instant::now();
    let resp = match accept(&state, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    metrics::intake_request(resp.status().as_u16(), started.elapsed());
    resp
}

async fn accept(state: &AppState, req: Request) -> Result<Response, AppError> {
    let path = req.uri().path();
    if path == "/_reflektor" || path.starts_with("/_reflektor/") {
        if !authorized(state, req.headers()) {
            return Err(AppError::Unauthorized);
        }
        return Err(AppError::NotFound(format!(
            "no such endpoint {} {path}",
            req.method()
        )));
    }
    let Some(method) = Method::from_name(req.method().as_str()) else {
        return Err(AppError::MethodNotAllowed(req.method().to_string()));
    };
    if !authorized(state, req.headers()) {
        return Err(AppError::Unauthorized);
    }
    if state.shutdown.is_cancelled() {
        return Err(AppError::ShuttingDown);
    }
    let (parts, body) = req.into_parts();
    let body = read_limited(&parts.headers, body, state.config.max_body).await?;
    let header_str = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let headers = state
        .config
        .keep_headers
        .iter()
        .flat_map(|name| {
            parts.headers.get_all(name.as_str()).iter().map(move |v| {
                (
                    name.clone(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
        })
        .take(shared::record::MAX_HEADERS)
        .collect();
    let idempotency_key =
        header_str(header::HeaderName::from_static("idempotency-key")).filter(|k| !k.is_empty());
    let now_ms = crate::now_ms();
    let record = Record {
        offset: Offset::ZERO,
        timestamp_ms: now_ms,
        method,
        target: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        content_type: header_str(header::CONTENT_TYPE),
        idempotency_key: idempotency_key.clone(),
        headers,
        body,
    };
    if let Err(e) = record.validate() {
        return Err(AppError::bad_request("record_too_large", e.to_string()));
    }
    let (offset, replayed) = match idempotency_key {
        // A backend that recognised a repeat (JetStream's duplicate window, across instances)
        // answers the first record's offset: a replay too.
        None => append(state, record).await?,
        Some(key) => {
            // Run in its own task: if the client goes away mid-append, the append still
            // completes and fills the key's cell, so the client's retry with the same key
            // gets this offset instead of appending a second copy. The task ends with the
            // append (bounded by the log), and nothing else waits on it.
            let st = state.clone();
            let task = tokio::spawn(async move {
                let repeat = std::sync::atomic::AtomicBool::new(false);
                let done = st
                    .dedupe
                    .run(&key, now_ms, || async {
                        let (offset, dup) = append(&st, record).await?;
                        repeat.store(dup, std::sync::atomic::Ordering::Relaxed);
                        Ok(offset)
                    })
                    .await;
                (done, repeat.into_inner())
            });
            let (appended, repeat) = task
                .await
                .map_err(|e| AppError::Internal(format!("append task failed: {e}")))?;
            match appended {
                Deduped::Done { offset, replayed } => (offset, replayed || repeat),
                Deduped::Failed(e) => return Err(e),
                Deduped::Full => {
                    tracing::warn!("idempotency window is full; refusing new keys");
                    return Err(AppError::Overloaded(
                        "too many idempotency keys in the dedupe window; retry shortly".into(),
                    ));
                }
            }
        }
    };
    // `{"id":"<offset>"}` written straight into the body: no JSON tree per request.
    let mut resp = (
        StatusCode::ACCEPTED,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        format!(r#"{{"id":"{offset}"}}"#),
    )
        .into_response();
    if replayed {
        resp.headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// Append; the offset, and whether the log answered a repeat of the record's idempotency key.
async fn append(state: &AppState, record: Record) -> Result<(Offset, bool), AppError> {
    state.log.append(record).await.map_err(|e| match e {
        AppendError::Busy => AppError::Overloaded("the append stage is full; retry shortly".into()),
        AppendError::QuotaFull => AppError::Overloaded("the log's disk quota is full".into()),
        AppendError::Closed => AppError::ShuttingDown,
        AppendError::TooLarge => AppError::BodyTooLarge {
            limit: state.config.max_body,
        },
        AppendError::Unavailable(detail) => {
            tracing::debug!(%detail, "append refused for now");
            AppError::Overloaded("the log cannot be written right now; retry shortly".into())
        }
        AppendError::Failed(detail) => {
            tracing::error!(%detail, "append failed: the log has stopped");
            AppError::Overloaded("the log cannot be written; retry shortly".into())
        }
    })
}

/// Read the whole body, refusing it as soon as it passes `limit`.
async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, AppError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(AppError::BodyTooLarge { limit });
    }
    let mut stream = body.into_data_stream();
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            AppError::bad_request("body_unreadable", format!("cannot read the body: {e}"))
        })?;
        let have = first.as_ref().map_or(0, Bytes::len) + buf.len();
        if have + chunk.len() > limit {
            return Err(AppError::BodyTooLarge { limit });
        }
        match first.take() {
            None if buf.is_empty() => first = Some(chunk),
            Some(f) => {
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&chunk);
            }
            None => buf.extend_from_slice(&chunk),
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// Whether the request carries the configured bearer token (always true without one).
pub(crate) fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = state.config.token.as_deref() else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    constant_time_eq(given, token.as_bytes())
}

/// Compare without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_needs_an_exact_match() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
