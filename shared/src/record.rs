//! One relayed request and its binary encoding.
//!
//! # Layout (version 1, all integers little-endian)
//!
//! ```text
//! offset        u64
//! timestamp_ms  u64     when reflektor accepted it (Unix milliseconds)
//! method        u8      1 POST, 2 PUT, 3 PATCH, 4 DELETE
//! target        u16 len + bytes   path and query as received, e.g. "/rooms/a/messages?x=1"
//! content_type  u16 len + bytes   empty when absent
//! idem_key      u16 len + bytes   Idempotency-Key, empty when absent
//! headers       u8 count, each: u8 name len + name (lowercase), u16 value len + value
//! body          u32 len + bytes
//! ```
//!
//! The same bytes are stored in reflektor's log, carried in a batch and kept in a dead-letter
//! entry. Decoding slices the body out of the shared buffer; nothing is copied.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::Offset;

/// Longest target (path + query) a record can carry.
pub const MAX_TARGET_LEN: usize = u16::MAX as usize;
/// Most extra headers a record can carry.
pub const MAX_HEADERS: usize = u8::MAX as usize;

/// Why a record or batch could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("truncated: needed {needed} more bytes for {field}")]
    Truncated { field: &'static str, needed: usize },
    #[error("unknown method code {0}")]
    BadMethod(u8),
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("{0} is too long for the wire format")]
    TooLong(&'static str),
    #[error("not a batch: bad magic")]
    BadMagic,
    #[error("unsupported batch version {0}")]
    BadVersion(u8),
    #[error("{0} trailing bytes after the last record")]
    Trailing(usize),
}

/// The methods intake accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    /// Parse an HTTP method name; `None` for methods intake does not relay.
    pub fn from_name(name: &str) -> Option<Method> {
        match name {
            "POST" => Some(Method::Post),
            "PUT" => Some(Method::Put),
            "PATCH" => Some(Method::Patch),
            "DELETE" => Some(Method::Delete),
            _ => None,
        }
    }

    fn code(self) -> u8 {
        match self {
            Method::Post => 1,
            Method::Put => 2,
            Method::Patch => 3,
            Method::Delete => 4,
        }
    }

    fn from_code(code: u8) -> Result<Method, WireError> {
        match code {
            1 => Ok(Method::Post),
            2 => Ok(Method::Put),
            3 => Ok(Method::Patch),
            4 => Ok(Method::Delete),
            other => Err(WireError::BadMethod(other)),
        }
    }
}

/// One relayed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub offset: Offset,
    pub timestamp_ms: u64,
    pub method: Method,
    /// Path and query as received, e.g. `/rooms/lobby/messages?x=1`.
    pub target: String,
    pub content_type: Option<String>,
    pub idempotency_key: Option<String>,
    /// Extra headers kept by configuration, names lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Record {
    /// Size of the encoding, so a buffer can be reserved once.
    pub fn encoded_len(&self) -> usize {
        8 + 8
            + 1
            + 2
            + self.target.len()
            + 2
            + self.content_type.as_ref().map_or(0, String::len)
            + 2
            + self.idempotency_key.as_ref().map_or(0, String::len)
            + 1
            + self
                .headers
                .iter()
                .map(|(n, v)| 1 + n.len() + 2 + v.len())
                .sum::<usize>()
            + 4
            + self.body.len()
    }

    /// Check that the record fits the wire format; [`Record::encode`] relies on it.
    ///
    /// # Errors
    /// [`WireError::TooLong`] naming the field that does not fit.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.target.len() > MAX_TARGET_LEN {
            return Err(WireError::TooLong("target"));
        }
        if self
            .content_type
            .as_ref()
            .is_some_and(|c| c.len() > u16::MAX as usize)
        {
            return Err(WireError::TooLong("content type"));
        }
        if self
            .idempotency_key
            .as_ref()
            .is_some_and(|c| c.len() > u16::MAX as usize)
        {
            return Err(WireError::TooLong("idempotency key"));
        }
        if self.headers.len() > MAX_HEADERS {
            return Err(WireError::TooLong("header list"));
        }
        for (n, v) in &self.headers {
            if n.len() > u8::MAX as usize || v.len() > u16::MAX as usize {
                return Err(WireError::TooLong("header"));
            }
        }
        if self.body.len() > u32::MAX as usize {
            return Err(WireError::TooLong("body"));
        }
        Ok(())
    }

    /// Append the encoding to `out`. Call [`Record::validate`] first: over-long fields are
    /// truncated to keep the framing sound.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        out.put_u64_le(self.offset.0);
        out.put_u64_le(self.timestamp_ms);
        out.put_u8(self.method.code());
        put_str16(out, &self.target);
        put_str16(out, self.content_type.as_deref().unwrap_or(""));
        put_str16(out, self.idempotency_key.as_deref().unwrap_or(""));
        let n = self.headers.len().min(MAX_HEADERS);
        out.put_u8(n as u8);
        for (name, value) in &self.headers[..n] {
            let name = &name.as_bytes()[..name.len().min(u8::MAX as usize)];
            out.put_u8(name.len() as u8);
            out.put_slice(name);
            put_str16(out, value);
        }
        let body = &self.body[..self.body.len().min(u32::MAX as usize)];
        out.put_u32_le(body.len() as u32);
        out.put_slice(body);
    }

    /// Encode into a fresh buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out.freeze()
    }

    /// Decode one record that fills `buf` exactly; the body shares `buf`'s memory.
    ///
    /// # Errors
    /// A [`WireError`] saying which field is truncated or invalid.
    pub fn decode(buf: Bytes) -> Result<Record, WireError> {
        let mut b = buf;
        let offset = Offset(get_u64(&mut b, "offset")?);
        let timestamp_ms = get_u64(&mut b, "timestamp")?;
        need(&b, 1, "method")?;
        let method = Method::from_code(b.get_u8())?;
        let target = get_str16(&mut b, "target")?;
        let content_type = Some(get_str16(&mut b, "content type")?).filter(|s| !s.is_empty());
        let idempotency_key = Some(get_str16(&mut b, "idempotency key")?).filter(|s| !s.is_empty());
        need(&b, 1, "header count")?;
        let count = b.get_u8() as usize;
        let mut headers = Vec::with_capacity(count);
        for _ in 0..count {
            need(&b, 1, "header name")?;
            let len = b.get_u8() as usize;
            need(&b, len, "header name")?;
            let name = utf8(b.split_to(len), "header name")?;
            let value = get_str16(&mut b, "header value")?;
            headers.push((name, value));
        }
        need(&b, 4, "body length")?;
        let len = b.get_u32_le() as usize;
        need(&b, len, "body")?;
        let body = b.split_to(len);
        if !b.is_empty() {
            return Err(WireError::Trailing(b.len()));
        }
        Ok(Record {
            offset,
            timestamp_ms,
            method,
            target,
            content_type,
            idempotency_key,
            headers,
            body,
        })
    }

    /// Read only the offset of an encoded record.
    pub fn peek_offset(buf: &[u8]) -> Option<Offset> {
        buf.get(..8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Offset(u64::from_le_bytes(a))
        })
    }

    /// Read only the acceptance time of an encoded record.
    pub fn peek_timestamp_ms(buf: &[u8]) -> Option<u64> {
        buf.get(8..16).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(p, _)| p)
    }
}

fn put_str16(out: &mut BytesMut, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.put_u16_le(b.len() as u16);
    out.put_slice(b);
}

fn need(b: &Bytes, n: usize, field: &'static str) -> Result<(), WireError> {
    if b.remaining() < n {
        Err(WireError::Truncated {
            field,
            needed: n - b.remaining(),
        })
    } else {
        Ok(())
    }
}

fn get_u64(b: &mut Bytes, field: &'static str) -> Result<u64, WireError> {
    need(b, 8, field)?;
    Ok(b.get_u64_le())
}

fn get_str16(b: &mut Bytes, field: &'static str) -> Result<String, WireError> {
    need(b, 2, field)?;
    let len = b.get_u16_le() as usize;
    need(b, len, field)?;
    utf8(b.split_to(len), field)
}

fn utf8(b: Bytes, field: &'static str) -> Result<String, WireError> {
    String::from_utf8(b.to_vec()).map_err(|_| WireError::NotUtf8(field))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(offset: u64, body: &'static [u8]) -> Record {
        Record {
            offset: Offset(offset),
            timestamp_ms: 1_700_000_000_000,
            method: Method::Post,
            target: "/rooms/lobby/messages?src=api".into(),
            content_type: Some("application/json".into()),
            idempotency_key: Some("k-1".into()),
            headers: vec![("x-request-id".into(), "abc".into())],
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn a_record_round_trips_with_its_body_untouched() {
        let r = sample(42, b"{\"text\":\"hi\"}\x00\xff binary");
        let bytes = r.to_bytes();
        assert_eq!(bytes.len(), r.encoded_len());
        assert_eq!(Record::peek_offset(&bytes), Some(Offset(42)));
        assert_eq!(Record::decode(bytes).unwrap(), r);
    }

    #[test]
    fn absent_optional_fields_stay_absent() {
        let mut r = sample(1, b"");
        r.content_type = None;
        r.idempotency_key = None;
        r.headers.clear();
        r.method = Method::Delete;
        assert_eq!(Record::decode(r.to_bytes()).unwrap(), r);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample(7, b"body").to_bytes();
        for cut in 0..bytes.len() {
            assert!(Record::decode(bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn path_drops_the_query() {
        assert_eq!(sample(1, b"").path(), "/rooms/lobby/messages");
    }
}
