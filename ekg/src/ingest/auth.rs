//! Who may write: reflektor signatures (batches and replayed requests) and the standalone
//! bearer token.

use axum::http::{HeaderMap, header};
use shared::sign::{
    EPOCH_HEADER, OFFSET_HEADER, SIGNATURE_HEADER, Signed, TIMESTAMP_HEADER, Verifier, unix_ms,
};
use shared::{Epoch, Offset};

use crate::http::ApiError;

/// The epoch and offset a delivery claims in its headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub(crate) epoch: Epoch,
    pub(crate) offset: Offset,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The `X-Reflektor-Epoch` and `X-Reflektor-Offset` headers, if both are present and valid.
///
/// # Errors
/// 401 when one is present but malformed, or only one is present.
pub(crate) fn delivery_headers(headers: &HeaderMap) -> Result<Option<Delivery>, ApiError> {
    match (
        header(headers, EPOCH_HEADER),
        header(headers, OFFSET_HEADER),
    ) {
        (None, None) => Ok(None),
        (Some(e), Some(o)) => {
            let epoch = e
                .trim()
                .parse::<Epoch>()
                .map_err(|_| ApiError::unauthorized("X-Reflektor-Epoch must be 16 hex digits"))?;
            let offset = o.trim().parse::<Offset>().map_err(|_| {
                ApiError::unauthorized("X-Reflektor-Offset must be a decimal offset")
            })?;
            Ok(Some(Delivery { epoch, offset }))
        }
        _ => Err(ApiError::unauthorized(
            "X-Reflektor-Epoch and X-Reflektor-Offset go together",
        )),
    }
}

/// Check a delivery's signature (v2: method, target, epoch, offset, timestamp and body) when a
/// secret is configured. Returns the headers' claims (always present when signed).
///
/// # Errors
/// 401 when a secret is set and the headers are missing, the signature does not verify, or
/// its timestamp is outside the freshness window.
pub(crate) fn verify_delivery(
    verifier: Option<&Verifier>,
    method: &str,
    target: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<Delivery>, ApiError> {
    let claimed = delivery_headers(headers)?;
    let Some(verifier) = verifier else {
        return Ok(claimed);
    };
    let (Some(delivery), Some(signature), Some(timestamp)) = (
        claimed,
        header(headers, SIGNATURE_HEADER),
        header(headers, TIMESTAMP_HEADER),
    ) else {
        return Err(ApiError::unauthorized(
            "a reflektor signature is required (X-Reflektor-Epoch, X-Reflektor-Offset, X-Reflektor-Timestamp, X-Reflektor-Signature)",
        ));
    };
    let timestamp_ms = timestamp
        .trim()
        .parse::<u64>()
        .map_err(|_| ApiError::unauthorized("X-Reflektor-Timestamp must be Unix milliseconds"))?;
    let signed = Signed {
        method,
        target,
        epoch: delivery.epoch,
        offset: delivery.offset,
        timestamp_ms,
    };
    verifier
        .verify(&signed, body, signature, unix_ms())
        .map_err(|e| ApiError::unauthorized(format!("the reflektor signature is refused: {e}")))?;
    Ok(Some(delivery))
}

/// Check `Authorization: Bearer <token>` in constant time.
///
/// # Errors
/// 401 when missing or wrong.
pub(crate) fn verify_bearer(token: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = header(headers, header::AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("Authorization: Bearer <token> is required"))?;
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("the token is not valid"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
