//! Delivery signatures: HMAC-SHA256 with a secret shared by reflektor and its hosts.
//!
//! The signed message is `epoch (u64 LE) || offset (u64 LE) || body`. For a batch the offset
//! is the batch's `prev`; for a replayed request it is the record's own offset. The signature
//! travels as `X-Reflektor-Signature: v1=<64 hex digits>`, next to `X-Reflektor-Epoch` (16 hex
//! digits) and `X-Reflektor-Offset` (decimal), so a host can check it before parsing anything.
//!
//! A captured delivery replayed later is harmless: a host applies each offset once and skips
//! anything at or below what it has applied.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Epoch, Offset};

pub const SIGNATURE_HEADER: &str = "x-reflektor-signature";
pub const EPOCH_HEADER: &str = "x-reflektor-epoch";
pub const OFFSET_HEADER: &str = "x-reflektor-offset";
const PREFIX: &str = "v1=";

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

    fn keyed(&self, epoch: Epoch, offset: Offset, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(&epoch.0.to_le_bytes());
        mac.update(&offset.0.to_le_bytes());
        mac.update(body);
        mac
    }

    /// The header value for a delivery.
    pub fn sign(&self, epoch: Epoch, offset: Offset, body: &[u8]) -> String {
        let tag = self.keyed(epoch, offset, body).finalize().into_bytes();
        format!("{PREFIX}{}", hex::encode(tag))
    }

    /// Check a header value in constant time.
    pub fn verify(&self, epoch: Epoch, offset: Offset, body: &[u8], header: &str) -> bool {
        let Some(hex_tag) = header.trim().strip_prefix(PREFIX) else {
            return false;
        };
        let Ok(tag) = hex::decode(hex_tag) else {
            return false;
        };
        self.keyed(epoch, offset, body).verify_slice(&tag).is_ok()
    }
}

#[cold]
fn unreachable_key() -> Hmac<Sha256> {
    // Documented by the hmac crate: HMAC accepts keys of any length.
    panic!("HMAC-SHA256 accepts keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_the_same_epoch_offset_body_and_secret() {
        let s = Signer::new(b"s3cret");
        let sig = s.sign(Epoch(1), Offset(2), b"body");
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64);
        assert!(s.verify(Epoch(1), Offset(2), b"body", &sig));
        assert!(!s.verify(Epoch(2), Offset(2), b"body", &sig));
        assert!(!s.verify(Epoch(1), Offset(3), b"body", &sig));
        assert!(!s.verify(Epoch(1), Offset(2), b"bodz", &sig));
        assert!(!Signer::new(b"other").verify(Epoch(1), Offset(2), b"body", &sig));
        assert!(!s.verify(Epoch(1), Offset(2), b"body", "v1=zz"));
        assert!(!s.verify(Epoch(1), Offset(2), b"body", ""));
    }
}
