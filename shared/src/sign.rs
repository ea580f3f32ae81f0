//! Delivery signatures (version 2): HMAC-SHA256 with a secret shared by reflektor and its hosts.
//!
//! # What is signed
//!
//! Everything a host acts on, so a captured delivery cannot be re-sent against another path or
//! method, into another epoch, or later than a short window:
//!
//! ```text
//! "reflektor-v2\n" METHOD "\n" PATH_AND_QUERY "\n" EPOCH(16 hex) "\n" OFFSET(decimal)
//! ["/" PREV(decimal)] "\n" TIMESTAMP_MS(decimal) "\n" BODY
//! ```
//!
//! The method and the request target cannot contain a newline (HTTP forbids it), the offset
//! line holds digits and at most one `/`, and the body comes last, so the message is
//! unambiguous. For a batch the offset is the batch's `prev` and the target is
//! [`crate::batch::INGEST_PATH`]; for a replayed request it is the record's own offset and
//! original target. A replayed request that follows a gap in the log (records trimmed before
//! the host got them) also carries `X-Reflektor-Prev`, the offset it follows, and the
//! signature covers it (`OFFSET/PREV`); without it the offset line is the offset alone.
//!
//! # Headers
//!
//! `X-Reflektor-Epoch` (16 hex digits), `X-Reflektor-Offset` (decimal), `X-Reflektor-Timestamp`
//! (Unix milliseconds when the delivery was sent) and `X-Reflektor-Signature: v2=<64 hex>`;
//! on a replayed request after a gap, `X-Reflektor-Prev` (decimal).
//! A host checks the signature before it parses the body, then the timestamp against its
//! freshness window ([`DEFAULT_FRESHNESS`]): a delivery outside the window is refused, so a
//! captured one cannot be replayed later.
//!
//! # Rotation
//!
//! A [`Verifier`] holds one or more secrets and accepts a signature made with any of them. To
//! change the secret without downtime: give every host both the old and the new secret, then
//! switch reflektor to the new one, then drop the old one from the hosts.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

use crate::{Epoch, Offset};

pub const SIGNATURE_HEADER: &str = "x-reflektor-signature";
pub const EPOCH_HEADER: &str = "x-reflektor-epoch";
pub const OFFSET_HEADER: &str = "x-reflektor-offset";
pub const TIMESTAMP_HEADER: &str = "x-reflektor-timestamp";
/// On a replayed request: the offset it follows when that is not `offset - 1` (signed).
pub const PREV_HEADER: &str = "x-reflektor-prev";
/// The version tag of the signature header value.
const PREFIX: &str = "v2=";
/// Domain separation: no other message signed with the same secret starts like this.
const DOMAIN: &[u8] = b"reflektor-v2\n";
/// How far a delivery's timestamp may be from the host's clock, either way, by default.
pub const DEFAULT_FRESHNESS: Duration = Duration::from_secs(5 * 60);

/// What a signature covers, apart from the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signed<'a> {
    /// `POST`, `PUT`, ... as sent.
    pub method: &'a str,
    /// Path and query as sent, e.g. `/_reflektor/ingest` or `/rooms/a/messages?x=1`.
    pub target: &'a str,
    pub epoch: Epoch,
    pub offset: Offset,
    /// A replayed request's `X-Reflektor-Prev`, when it carries one.
    pub prev: Option<Offset>,
    /// Unix milliseconds when the delivery was sent.
    pub timestamp_ms: u64,
}

/// Why a delivery's signature was refused.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The header is not `v2=<64 hex digits>` (a `v1=` signature is refused too).
    #[error("the signature header is not v2=<64 hex digits>")]
    Malformed,
    /// No configured secret produced this signature.
    #[error("the signature does not verify with any configured secret")]
    Mismatch,
    /// The signature is valid but the timestamp is outside the freshness window.
    #[error(
        "the delivery's timestamp is {skew_ms} ms away from this host's clock (window {window_ms} ms)"
    )]
    Stale { skew_ms: u64, window_ms: u64 },
}

/// A keyed signer; cheap to clone, one per service.
#[derive(Clone)]
pub struct Signer {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    pub fn new(secret: &[u8]) -> Signer {
        // HMAC takes keys of any length; `new_from_slice` only fails for fixed-size MACs.
        let mac =
            <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable_key());
        Signer { mac }
    }

    fn keyed(&self, signed: &Signed<'_>, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(DOMAIN);
        mac.update(signed.method.as_bytes());
        mac.update(b"\n");
        mac.update(signed.target.as_bytes());
        mac.update(b"\n");
        mac.update(signed.epoch.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(signed.offset.0.to_string().as_bytes());
        if let Some(prev) = signed.prev {
            mac.update(b"/");
            mac.update(prev.0.to_string().as_bytes());
        }
        mac.update(b"\n");
        mac.update(signed.timestamp_ms.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(body);
        mac
    }

    /// The `X-Reflektor-Signature` value for a delivery.
    pub fn sign(&self, signed: &Signed<'_>, body: &[u8]) -> String {
        let tag = self.keyed(signed, body).finalize().into_bytes();
        format!("{PREFIX}{}", hex::encode(tag))
    }

    /// The four delivery headers (`X-Reflektor-Epoch`, `-Offset`, `-Timestamp`, `-Signature`)
    /// for a delivery sent now, as (lowercase name, value) pairs.
    pub fn headers(
        &self,
        method: &str,
        target: &str,
        epoch: Epoch,
        offset: Offset,
        body: &[u8],
    ) -> [(&'static str, String); 4] {
        let signed = Signed {
            method,
            target,
            epoch,
            offset,
            prev: None,
            timestamp_ms: unix_ms(),
        };
        [
            (EPOCH_HEADER, epoch.to_string()),
            (OFFSET_HEADER, offset.to_string()),
            (TIMESTAMP_HEADER, signed.timestamp_ms.to_string()),
            (SIGNATURE_HEADER, self.sign(&signed, body)),
        ]
    }

    /// The delivery headers of a replayed request that follows `prev` (records between `prev`
    /// and `offset` are gone from the log): [`Signer::headers`] plus `X-Reflektor-Prev`.
    pub fn headers_after_gap(
        &self,
        method: &str,
        target: &str,
        epoch: Epoch,
        offset: Offset,
        prev: Offset,
        body: &[u8],
    ) -> [(&'static str, String); 5] {
        let signed = Signed {
            method,
            target,
            epoch,
            offset,
            prev: Some(prev),
            timestamp_ms: unix_ms(),
        };
        [
            (EPOCH_HEADER, epoch.to_string()),
            (OFFSET_HEADER, offset.to_string()),
            (PREV_HEADER, prev.to_string()),
            (TIMESTAMP_HEADER, signed.timestamp_ms.to_string()),
            (SIGNATURE_HEADER, self.sign(&signed, body)),
        ]
    }

    fn matches(&self, signed: &Signed<'_>, body: &[u8], tag: &[u8]) -> bool {
        // `verify_slice` compares in constant time.
        self.keyed(signed, body).verify_slice(tag).is_ok()
    }
}

/// Checks signatures against one or more secrets (rotation) and a freshness window.
#[derive(Clone, Debug)]
pub struct Verifier {
    signers: Vec<Signer>,
    window: Duration,
}

impl Verifier {
    /// A verifier that accepts a signature made with any of `secrets`.
    ///
    /// # Panics
    /// Never; an empty list accepts nothing.
    pub fn new<I, S>(secrets: I, window: Duration) -> Verifier
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        Verifier {
            signers: secrets
                .into_iter()
                .map(|s| Signer::new(s.as_ref()))
                .collect(),
            window,
        }
    }

    /// The freshness window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Check `header` (the `X-Reflektor-Signature` value) for `signed` + `body`, and the
    /// timestamp against `now_ms` (Unix milliseconds).
    ///
    /// # Errors
    /// [`SignatureError::Malformed`], [`SignatureError::Mismatch`] or [`SignatureError::Stale`].
    pub fn verify(
        &self,
        signed: &Signed<'_>,
        body: &[u8],
        header: &str,
        now_ms: u64,
    ) -> Result<(), SignatureError> {
        let tag = header
            .trim()
            .strip_prefix(PREFIX)
            .filter(|h| h.len() == 64)
            .and_then(|h| hex::decode(h).ok())
            .ok_or(SignatureError::Malformed)?;
        if !self.signers.iter().any(|s| s.matches(signed, body, &tag)) {
            return Err(SignatureError::Mismatch);
        }
        let skew_ms = now_ms.abs_diff(signed.timestamp_ms);
        let window_ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        if skew_ms > window_ms {
            return Err(SignatureError::Stale { skew_ms, window_ms });
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cold]
fn unreachable_key() -> Hmac<Sha256> {
    // Documented by the hmac crate: HMAC accepts keys of any length.
    panic!("HMAC-SHA256 accepts keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn signed() -> Signed<'static> {
        Signed {
            method: "POST",
            target: "/_reflektor/ingest",
            epoch: Epoch(1),
            offset: Offset(2),
            prev: None,
            timestamp_ms: NOW,
        }
    }

    #[test]
    fn a_signature_verifies_only_for_everything_it_covers() {
        let v = Verifier::new(["s3cret"], DEFAULT_FRESHNESS);
        let sig = Signer::new(b"s3cret").sign(&signed(), b"body");
        assert!(sig.starts_with("v2=") && sig.len() == 3 + 64);
        assert_eq!(v.verify(&signed(), b"body", &sig, NOW), Ok(()));
        let changed = [
            Signed {
                method: "PUT",
                ..signed()
            },
            Signed {
                target: "/rooms/a/messages",
                ..signed()
            },
            Signed {
                epoch: Epoch(2),
                ..signed()
            },
            Signed {
                offset: Offset(3),
                ..signed()
            },
            Signed {
                timestamp_ms: NOW + 1,
                ..signed()
            },
            Signed {
                prev: Some(Offset(1)),
                ..signed()
            },
        ];
        for other in changed {
            assert_eq!(
                v.verify(&other, b"body", &sig, NOW),
                Err(SignatureError::Mismatch),
                "{other:?}"
            );
        }
        assert_eq!(
            v.verify(&signed(), b"bodz", &sig, NOW),
            Err(SignatureError::Mismatch)
        );
        let other_secret = Verifier::new(["other"], DEFAULT_FRESHNESS);
        assert_eq!(
            other_secret.verify(&signed(), b"body", &sig, NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_malformed_or_v1_header_is_refused_as_malformed() {
        let v = Verifier::new(["s3cret"], DEFAULT_FRESHNESS);
        let sig = Signer::new(b"s3cret").sign(&signed(), b"body");
        let v1 = sig.replacen("v2=", "v1=", 1);
        for bad in ["", "v2=zz", "v2=", &v1, &sig[..sig.len() - 1]] {
            assert_eq!(
                v.verify(&signed(), b"body", bad, NOW),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_delivery_outside_the_freshness_window_is_stale() {
        let v = Verifier::new(["s3cret"], Duration::from_secs(300));
        let sig = Signer::new(b"s3cret").sign(&signed(), b"body");
        assert_eq!(v.verify(&signed(), b"body", &sig, NOW + 300_000), Ok(()));
        assert_eq!(v.verify(&signed(), b"body", &sig, NOW - 300_000), Ok(()));
        assert_eq!(
            v.verify(&signed(), b"body", &sig, NOW + 300_001),
            Err(SignatureError::Stale {
                skew_ms: 300_001,
                window_ms: 300_000
            })
        );
    }

    #[test]
    fn a_verifier_with_two_secrets_accepts_either_during_rotation() {
        let v = Verifier::new(["old", "new"], DEFAULT_FRESHNESS);
        for secret in ["old", "new"] {
            let sig = Signer::new(secret.as_bytes()).sign(&signed(), b"body");
            assert_eq!(v.verify(&signed(), b"body", &sig, NOW), Ok(()));
        }
        let sig = Signer::new(b"third").sign(&signed(), b"body");
        assert_eq!(
            v.verify(&signed(), b"body", &sig, NOW),
            Err(SignatureError::Mismatch)
        );
    }
}
