//! Who may write: reflektor signatures (batches and replayed requests) and the standalone
//! bearer token.
//!
//! A delivery is checked in two steps, so its body is read only once its headers passed:
//! [`Trust::check_headers`] (headers present and well-formed, timestamp inside the window:
//! no body needed), then [`Trust::verify`] (the HMAC over the body).

use axum::http::{HeaderMap, header};
use shared::sign::{
    EPOCH_HEADER, OFFSET_HEADER, PREV_HEADER, SIGNATURE_HEADER, Signed, TIMESTAMP_HEADER, Verifier,
    unix_ms,
};
use shared::{Epoch, Offset};

use super::IngestError;

/// How a relayed host checks deliveries.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Deliveries must be signed with one of the configured secrets, inside the window.
    Signed(Verifier),
    /// `--insecure-unsigned-ingest`: anyone who reaches the host may write.
    Unsigned,
    /// No secret and no explicit permission (a host built without the checks of `Config`):
    /// every delivery is refused.
    Nobody,
}

/// What a delivery's headers claim; verified against the body by [`Trust::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claim {
    pub(crate) epoch: Epoch,
    pub(crate) offset: Offset,
    /// `X-Reflektor-Prev` (replayed requests after a gap).
    pub(crate) prev: Option<Offset>,
    /// Timestamp and signature, when the delivery is signed.
    signature: Option<(u64, String)>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A header that must be present when `required`, and parse when present.
fn parsed<T: std::str::FromStr>(
    headers: &HeaderMap,
    name: &str,
    required: bool,
    what: &'static str,
) -> Result<Option<T>, IngestError> {
    match headers.get(name) {
        None if required => Err(IngestError::BadDeliveryHeaders(what)),
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map(Some)
            .ok_or(IngestError::BadDeliveryHeaders(what)),
    }
}

/// Whether the request carries any reflektor delivery header.
pub(crate) fn has_delivery_headers(headers: &HeaderMap) -> bool {
    [
        EPOCH_HEADER,
        OFFSET_HEADER,
        SIGNATURE_HEADER,
        TIMESTAMP_HEADER,
    ]
    .iter()
    .any(|h| headers.contains_key(*h))
}

impl Trust {
    /// Check a delivery's headers before its body is read: epoch and offset present and
    /// well-formed; when signed, a signature and a timestamp inside the freshness window.
    ///
    /// # Errors
    /// `NoSecret`, `SignatureRequired`, `BadDeliveryHeaders`, `StaleDelivery`.
    pub(crate) fn check_headers(&self, headers: &HeaderMap) -> Result<Claim, IngestError> {
        let verifier = match self {
            Trust::Nobody => return Err(IngestError::NoSecret),
            Trust::Signed(v) => Some(v),
            Trust::Unsigned => None,
        };
        if verifier.is_some() && !headers.contains_key(SIGNATURE_HEADER) {
            return Err(IngestError::SignatureRequired);
        }
        let epoch = parsed::<Epoch>(
            headers,
            EPOCH_HEADER,
            true,
            "X-Reflektor-Epoch is required: 16 hex digits",
        )?
        .unwrap_or(Epoch::NONE);
        let offset = parsed::<Offset>(
            headers,
            OFFSET_HEADER,
            true,
            "X-Reflektor-Offset is required: a decimal offset",
        )?
        .unwrap_or_default();
        let prev = parsed::<Offset>(
            headers,
            PREV_HEADER,
            false,
            "X-Reflektor-Prev must be a decimal offset",
        )?;
        let Some(verifier) = verifier else {
            return Ok(Claim {
                epoch,
                offset,
                prev,
                signature: None,
            });
        };
        let timestamp_ms = parsed::<u64>(
            headers,
            TIMESTAMP_HEADER,
            true,
            "X-Reflektor-Timestamp is required: Unix milliseconds",
        )?
        .unwrap_or_default();
        let skew_ms = unix_ms().abs_diff(timestamp_ms);
        let window_ms = u64::try_from(verifier.window().as_millis()).unwrap_or(u64::MAX);
        if skew_ms > window_ms {
            return Err(IngestError::StaleDelivery { skew_ms, window_ms });
        }
        let signature = header(headers, SIGNATURE_HEADER)
            .ok_or(IngestError::BadDeliveryHeaders(
                "X-Reflektor-Signature is not text",
            ))?
            .to_owned();
        Ok(Claim {
            epoch,
            offset,
            prev,
            signature: Some((timestamp_ms, signature)),
        })
    }

    /// Verify a claim (from [`Trust::check_headers`]) against the request it came with:
    /// method, path and query as received, and the body.
    ///
    /// # Errors
    /// `BadSignature` (malformed, `v1=`, or made with no configured secret), `StaleDelivery`.
    pub(crate) fn verify(
        &self,
        claim: &Claim,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> Result<(), IngestError> {
        let (verifier, timestamp_ms, signature) = match (self, &claim.signature) {
            (Trust::Unsigned, _) => return Ok(()),
            (Trust::Nobody, _) => return Err(IngestError::NoSecret),
            (Trust::Signed(_), None) => return Err(IngestError::SignatureRequired),
            (Trust::Signed(v), Some((ts, sig))) => (v, ts, sig),
        };
        let signed = Signed {
            method,
            target,
            epoch: claim.epoch,
            offset: claim.offset,
            prev: claim.prev,
            timestamp_ms: *timestamp_ms,
        };
        verifier.verify(&signed, body, signature, unix_ms())?;
        Ok(())
    }
}

/// Check `Authorization: Bearer <token>` in constant time.
///
/// # Errors
/// `BadToken` when missing or wrong.
pub(crate) fn verify_bearer(token: &str, headers: &HeaderMap) -> Result<(), IngestError> {
    let given = header(headers, header::AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(IngestError::BadToken(
            "Authorization: Bearer <token> is required",
        ))?;
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(IngestError::BadToken("the token is not valid"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
