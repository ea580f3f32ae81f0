//! [`Seq`] and [`Frame`]: one event, encoded once per transport and shared by every subscriber.
//!
//! A frame's JSON is written once. The SSE form `event: T\nid: SEQ\ndata: JSON\n\n` is one
//! buffer, and the WebSocket text is a slice of that same buffer (the `data:` line), so an
//! event costs one allocation whatever the number of subscribers or transports.

use std::fmt;
use std::io::Write as _;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shared::Offset;

/// The position of an event: the reflektor offset of the record that made it (or, in
/// standalone mode, the host's own counter). Strictly increasing per room, not contiguous.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// Before the first event.
    pub const ZERO: Seq = Seq(0);

    pub fn get(self) -> u64 {
        self.0
    }
}

impl From<Offset> for Seq {
    fn from(o: Offset) -> Seq {
        Seq(o.0)
    }
}

impl From<Seq> for Offset {
    fn from(s: Seq) -> Offset {
        Offset(s.0)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One encoded frame, built once per event and shared by every subscriber (`Arc<Frame>`).
#[derive(Debug)]
pub struct Frame {
    /// `None` for hello, reset, lagging and reconnect.
    pub seq: Option<Seq>,
    /// The JSON text, for a WebSocket text message (clone = refcount).
    pub ws: Utf8Bytes,
    /// The full SSE event: `event: T\nid: SEQ\ndata: JSON\n\n` (no `id:` line without a seq).
    pub sse: Bytes,
    /// When reflektor accepted the record behind this event (Unix ms; in standalone mode when
    /// this host did), for the delivery latency metric. `None` for control frames.
    pub accepted_ms: Option<u64>,
}

impl Frame {
    /// A frame for an event with a seq. `json` must be one line of JSON (compact encoding).
    pub fn event(seq: Seq, event_type: &str, json: &[u8]) -> Frame {
        Frame::build(Some(seq), event_type, json)
    }

    /// A frame without a seq: hello, reset, lagging, reconnect. `json` is one JSON object.
    pub fn control(json: &str, event_type: &str) -> Frame {
        Frame::build(None, event_type, json.as_bytes())
    }

    /// `{"type":"reconnect","after_ms":N}`: the host is draining.
    pub fn reconnect(after_ms: u64) -> Frame {
        Frame::control(
            &format!(r#"{{"type":"reconnect","after_ms":{after_ms}}}"#),
            "reconnect",
        )
    }

    /// `{"type":"lagging"}`: the last SSE frame to a client that could not keep up.
    pub fn lagging() -> Frame {
        Frame::control(r#"{"type":"lagging"}"#, "lagging")
    }

    fn build(seq: Option<Seq>, event_type: &str, json: &[u8]) -> Frame {
        let mut buf = Vec::with_capacity(json.len() + event_type.len() + 40);
        buf.extend_from_slice(b"event: ");
        buf.extend_from_slice(event_type.as_bytes());
        buf.push(b'\n');
        if let Some(seq) = seq {
            // Writing to a Vec cannot fail.
            let _infallible = writeln!(buf, "id: {seq}");
        }
        buf.extend_from_slice(b"data: ");
        let start = buf.len();
        // A raw CR or LF in JSON can only be insignificant whitespace; SSE needs one line.
        buf.extend(
            json.iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
        );
        let end = buf.len();
        buf.extend_from_slice(b"\n\n");
        let sse = Bytes::from(buf);
        let ws = Utf8Bytes::try_from(sse.slice(start..end)).unwrap_or_else(|_| {
            // Only reachable if `json` was not UTF-8, which every caller rules out.
            Utf8Bytes::from(String::from_utf8_lossy(&sse[start..end]).into_owned())
        });
        Frame {
            seq,
            ws,
            sse,
            accepted_ms: None,
        }
    }

    /// The same frame, stamped with the acceptance time of its record (Unix ms).
    #[must_use]
    pub fn accepted_at(mut self, accepted_ms: u64) -> Frame {
        self.accepted_ms = Some(accepted_ms);
        self
    }

    /// The JSON of the frame (the WebSocket text).
    pub fn json(&self) -> &str {
        self.ws.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_frame_shares_one_buffer_between_transports() {
        let f = Frame::event(Seq(42), "message", br#"{"type":"message","seq":42}"#);
        assert_eq!(f.json(), r#"{"type":"message","seq":42}"#);
        assert_eq!(
            &f.sse[..],
            b"event: message\nid: 42\ndata: {\"type\":\"message\",\"seq\":42}\n\n"
        );
        let ws: &[u8] = f.ws.as_bytes();
        assert!(f.sse.as_ptr_range().contains(&ws.as_ptr()));
    }

    #[test]
    fn a_control_frame_has_no_id_line() {
        let f = Frame::reconnect(1234);
        assert_eq!(f.seq, None);
        assert_eq!(
            &f.sse[..],
            b"event: reconnect\ndata: {\"type\":\"reconnect\",\"after_ms\":1234}\n\n"
        );
    }

    #[test]
    fn newlines_in_json_never_break_the_sse_framing() {
        let f = Frame::event(Seq(1), "message", b"{\n  \"a\": 1\r\n}");
        assert_eq!(f.json(), "{   \"a\": 1  }");
        assert_eq!(f.sse.iter().filter(|&&b| b == b'\n').count(), 4);
    }
}
