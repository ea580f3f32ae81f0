//! The batch format reflektor posts to a host, and the host's answer.
//!
//! # Request
//!
//! `POST {host}/_reflektor/ingest` with `Content-Type: application/x-reflektor-batch; v=1`,
//! signed (see [`crate::sign`]) with the batch's `prev` as the signed offset. Body, all integers
//! little-endian:
//!
//! ```text
//! magic    4 bytes "RFKB"
//! version  u8 = 1
//! reserved 3 bytes, zero
//! epoch    u64   the log's epoch
//! prev     u64   the offset the sender believes the host has applied; every record in the log
//!                between prev and the first record of this batch is gone (trimmed), none skipped
//! head     u64   the newest offset in the log when the batch was cut (lets a host tell that it
//!                has caught up)
//! count    u32
//! count × (u32 len, record bytes)     see crate::record for the record layout
//! ```
//!
//! A batch with `count = 0` is a heartbeat: it tells an idle host the log's head, and lets
//! reflektor learn the host's applied offset (and so notice a host that restarted empty).
//!
//! # Answer
//!
//! - `200` with [`IngestAck`]: everything up to the batch's last record is applied or was
//!   already applied; `rejected` lists records the host refused on their own merits (a bad
//!   room name, malformed JSON); the others were applied.
//! - `409` with [`IngestAck`]: `prev` is above what the host has applied (it lost its state),
//!   nothing was applied; reflektor rewinds the host to `applied + 1`.
//! - `401`: bad or missing signature. `400`: the batch itself cannot be parsed.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::record::WireError;
use crate::{Epoch, Offset, Record};

/// Where a batch host receives batches.
pub const INGEST_PATH: &str = "/_reflektor/ingest";
/// Content type of a version 1 batch.
pub const CONTENT_TYPE: &str = "application/x-reflektor-batch; v=1";
/// The current batch format version.
pub const VERSION: u8 = 1;
const MAGIC: &[u8; 4] = b"RFKB";
/// Bytes before the first record.
pub const HEADER_LEN: usize = 4 + 4 + 8 + 8 + 8 + 4;

/// What a batch says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub epoch: Epoch,
    /// What the sender believes the host has applied.
    pub prev: Offset,
    /// The newest offset in the log when the batch was cut.
    pub head: Offset,
    pub count: u32,
}

/// Build a batch from already-encoded records (as read from the log); each record's bytes are
/// copied once into the request body and never re-encoded.
pub fn encode(epoch: Epoch, prev: Offset, head: Offset, records: &[Bytes]) -> Bytes {
    let size = HEADER_LEN + records.iter().map(|r| 4 + r.len()).sum::<usize>();
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(MAGIC);
    out.put_u8(VERSION);
    out.put_bytes(0, 3);
    out.put_u64_le(epoch.0);
    out.put_u64_le(prev.0);
    out.put_u64_le(head.0);
    out.put_u32_le(records.len() as u32);
    for r in records {
        out.put_u32_le(r.len() as u32);
        out.put_slice(r);
    }
    out.freeze()
}

/// A parsed batch: the header and each record's raw bytes (shared with the request body).
#[derive(Debug)]
pub struct Batch {
    pub header: BatchHeader,
    pub records: Vec<Bytes>,
}

impl Batch {
    /// Split a batch into its records. The framing must be sound; a record whose contents do
    /// not decode is left for the caller to reject on its own ([`Record::decode`]).
    ///
    /// # Errors
    /// [`WireError`] when the header or framing is broken: nothing in it can be trusted.
    pub fn parse(body: Bytes) -> Result<Batch, WireError> {
        let mut b = body;
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated {
                field: "batch header",
                needed: HEADER_LEN - b.len(),
            });
        }
        if &b[..4] != MAGIC {
            return Err(WireError::BadMagic);
        }
        b.advance(4);
        let version = b.get_u8();
        if version != VERSION {
            return Err(WireError::BadVersion(version));
        }
        b.advance(3);
        let epoch = Epoch(b.get_u64_le());
        let prev = Offset(b.get_u64_le());
        let head = Offset(b.get_u64_le());
        let count = b.get_u32_le();
        let mut records = Vec::with_capacity((count as usize).min(b.len() / 4 + 1));
        for _ in 0..count {
            if b.len() < 4 {
                return Err(WireError::Truncated {
                    field: "record length",
                    needed: 4 - b.len(),
                });
            }
            let len = b.get_u32_le() as usize;
            if b.len() < len {
                return Err(WireError::Truncated {
                    field: "record",
                    needed: len - b.len(),
                });
            }
            records.push(b.split_to(len));
        }
        if !b.is_empty() {
            return Err(WireError::Trailing(b.len()));
        }
        Ok(Batch {
            header: BatchHeader {
                epoch,
                prev,
                head,
                count,
            },
            records,
        })
    }

    /// Decode every record, pairing each with its result.
    pub fn decode_records(
        &self,
    ) -> impl Iterator<Item = (Option<Offset>, Result<Record, WireError>)> + '_ {
        self.records
            .iter()
            .map(|r| (Record::peek_offset(r), Record::decode(r.clone())))
    }
}

/// A host's answer to a batch (and to a heartbeat).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestAck {
    /// The highest offset the host has applied.
    pub applied: Offset,
    /// The epoch of the log the host is applying.
    pub epoch: Epoch,
    /// Records refused on their own merits; everything else up to `applied` is applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<Rejection>,
}

/// One record a host refused, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub offset: Offset,
    /// The HTTP status the host would have answered for this request on its own.
    pub status: u16,
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Method;

    fn rec(offset: u64) -> Bytes {
        Record {
            offset: Offset(offset),
            timestamp_ms: 5,
            method: Method::Post,
            target: "/rooms/a/messages".into(),
            content_type: Some("application/json".into()),
            idempotency_key: None,
            headers: vec![],
            body: Bytes::from(format!("{{\"n\":{offset}}}")),
        }
        .to_bytes()
    }

    #[test]
    fn a_batch_round_trips() {
        let records = vec![rec(3), rec(4), rec(5)];
        let body = encode(Epoch(9), Offset(2), Offset(7), &records);
        let batch = Batch::parse(body).unwrap();
        assert_eq!(
            batch.header,
            BatchHeader {
                epoch: Epoch(9),
                prev: Offset(2),
                head: Offset(7),
                count: 3
            }
        );
        assert_eq!(batch.records, records);
        let offsets: Vec<_> = batch
            .decode_records()
            .map(|(o, r)| (o.unwrap(), r.unwrap().offset))
            .collect();
        assert_eq!(
            offsets,
            vec![
                (Offset(3), Offset(3)),
                (Offset(4), Offset(4)),
                (Offset(5), Offset(5))
            ]
        );
    }

    #[test]
    fn an_empty_batch_is_a_heartbeat() {
        let batch = Batch::parse(encode(Epoch(1), Offset(10), Offset(10), &[])).unwrap();
        assert_eq!(batch.header.count, 0);
        assert!(batch.records.is_empty());
    }

    #[test]
    fn broken_framing_is_an_error_at_every_cut() {
        let body = encode(Epoch(1), Offset(0), Offset(2), &[rec(1), rec(2)]);
        for cut in 0..body.len() {
            assert!(Batch::parse(body.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut bad = body.to_vec();
        bad[0] = b'X';
        assert_eq!(
            Batch::parse(Bytes::from(bad)).unwrap_err(),
            WireError::BadMagic
        );
        let mut bad = body.to_vec();
        bad[4] = 2;
        assert_eq!(
            Batch::parse(Bytes::from(bad)).unwrap_err(),
            WireError::BadVersion(2)
        );
    }

    #[test]
    fn ack_json_shape_is_stable() {
        let ack = IngestAck {
            applied: Offset(12),
            epoch: Epoch(255),
            rejected: vec![],
        };
        assert_eq!(
            serde_json::to_string(&ack).unwrap(),
            r#"{"applied":12,"epoch":"00000000000000ff"}"#
        );
    }
}
