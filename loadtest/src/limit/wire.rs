//! What the fan-out limit servers read and write: request heads (httparse), the WebSocket
//! upgrade answer, server frames, and the 202.

use anyhow::{Result, bail};
use bytes::{BufMut, Bytes, BytesMut};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Largest request head or body accepted.
pub(super) const MAX_REQUEST: usize = 1 << 20;

/// A request head.
#[derive(Debug)]
pub(super) enum Head {
    /// `POST /rooms/{room}/messages` with a body of this length.
    Publish { room: String, length: usize },
    /// `GET /rooms/{room}/ws` with an upgrade; the `Sec-WebSocket-Accept` value.
    Subscribe { room: String, accept: String },
    /// Anything else.
    Other,
}

/// Parse a request head at the start of `buf`: `Ok(None)` if incomplete, else the head and
/// its length in bytes.
pub(super) fn parse(buf: &[u8]) -> Result<Option<(Head, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial if buf.len() > MAX_REQUEST => bail!("request head too large"),
        httparse::Status::Partial => return Ok(None),
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let path = req.path.unwrap_or("/");
    let room = |suffix: &str| {
        path.strip_prefix("/rooms/")
            .and_then(|r| r.split('?').next())
            .and_then(|r| r.strip_suffix(suffix))
            .filter(|r| !r.is_empty() && !r.contains('/'))
            .map(str::to_owned)
    };
    let head = match (req.method, room("/messages"), room("/ws")) {
        (Some("POST"), Some(room), _) => {
            let length = header("content-length")
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if length > MAX_REQUEST {
                bail!("body too large");
            }
            Head::Publish { room, length }
        }
        (Some("GET"), _, Some(room)) => match header("sec-websocket-key") {
            Some(key) => Head::Subscribe {
                room,
                accept: derive_accept_key(key),
            },
            None => Head::Other,
        },
        _ => Head::Other,
    };
    Ok(Some((head, len)))
}

/// A server (unmasked, final) text frame carrying `payload`.
pub(super) fn text_frame(payload: &[u8]) -> Bytes {
    let mut f = BytesMut::with_capacity(payload.len() + 10);
    f.put_u8(0x81);
    match payload.len() {
        n if n < 126 => f.put_u8(n as u8),
        n if n < 65_536 => {
            f.put_u8(126);
            f.put_u16(n as u16);
        }
        n => {
            f.put_u8(127);
            f.put_u64(n as u64);
        }
    }
    f.put_slice(payload);
    f.freeze()
}

/// The frame of message `seq` with the published `body` as its data.
pub(super) fn message_frame(seq: u64, body: &[u8]) -> Bytes {
    let mut json = Vec::with_capacity(body.len() + 48);
    json.extend_from_slice(b"{\"type\":\"message\",\"seq\":");
    json.extend_from_slice(seq.to_string().as_bytes());
    json.extend_from_slice(b",\"data\":");
    json.extend_from_slice(body);
    json.push(b'}');
    text_frame(&json)
}

/// The `101` answer followed by the hello frame.
pub(super) fn upgrade(accept: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-accept: {accept}\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(&text_frame(br#"{"type":"hello"}"#));
    out
}

/// The `202` answer for message `seq`.
pub(super) fn accepted(seq: u64) -> Vec<u8> {
    let body = format!("{{\"id\":\"{seq}\"}}");
    format!(
        "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The answer to anything else (the connection is closed after it).
pub(super) const NOT_FOUND: &[u8] =
    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Read the next request from `stream` (buffered in `buf`): its head and body. `Ok(None)` when
/// the peer closed between requests.
pub(super) async fn next_request(
    stream: &mut tokio::net::TcpStream,
    buf: &mut BytesMut,
) -> Result<Option<(Head, Bytes)>> {
    use bytes::Buf;
    use tokio::io::AsyncReadExt;
    loop {
        if let Some((head, len)) = parse(buf)? {
            let body_len = match head {
                Head::Publish { length, .. } => length,
                _ => 0,
            };
            while buf.len() < len + body_len {
                buf.reserve(len + body_len - buf.len());
                if stream.read_buf(buf).await? == 0 {
                    bail!("closed inside a request");
                }
            }
            buf.advance(len);
            let body = buf.split_to(body_len).freeze();
            return Ok(Some((head, body)));
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            bail!("closed inside a request head");
        }
    }
}
