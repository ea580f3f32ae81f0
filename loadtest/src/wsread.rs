//! A lean WebSocket client for subscribers: the upgrade handshake, then server frames parsed
//! in place from one read buffer per connection, with no allocation or UTF-8 validation per
//! frame. The harness shares the cores with the servers it measures, so every cycle it spends
//! decoding is one the server under test does not get; a general-purpose client costs several
//! times more per frame at hundreds of thousands of frames per second.
//!
//! Only what a subscriber needs: unfragmented and fragmented text/binary messages, ping
//! (answered with a pong), close (reported with its code and reason). Server frames are never
//! masked (RFC 6455 §5.1); a masked one is an error.

use anyhow::{Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest message a subscriber accepts.
const MAX_MESSAGE: usize = 16 << 20;
/// Initial read buffer per connection.
const READ_BUFFER: usize = 16 << 10;

/// What [`WsReader::next`] yields.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    /// A whole text or binary message.
    Message(&'a [u8]),
    /// The server closed with this code and reason.
    Close(u16, String),
}

/// One connection after the upgrade.
pub(crate) struct WsReader {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    pos: usize,
    /// A fragmented message being assembled.
    partial: Vec<u8>,
    /// `partial` was handed out whole by the last call: clear it before reading on.
    partial_handed_out: bool,
}

impl WsReader {
    /// Upgrade `stream` to a WebSocket for `url` (`ws://host:port/path?query`).
    ///
    /// # Errors
    /// The server did not answer `101`, or the connection failed.
    pub(crate) async fn handshake(mut stream: TcpStream, url: &str) -> Result<WsReader> {
        let (buf, head_end) = crate::http::get_head(
            &mut stream,
            "ws://",
            url,
            "Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
            READ_BUFFER,
        )
        .await?;
        let status_line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
        if !status_line.starts_with(b"HTTP/1.1 101") {
            bail!("upgrade refused: {}", String::from_utf8_lossy(status_line));
        }
        Ok(WsReader {
            stream,
            buf,
            pos: head_end,
            partial: Vec::new(),
            partial_handed_out: false,
        })
    }

    /// The next message or close; `Ok(None)` when the connection ends.
    /// Cancel-safe: no bytes are lost if the future is dropped.
    ///
    /// # Errors
    /// A protocol violation or an I/O error.
    pub(crate) async fn next(&mut self) -> Result<Option<Event<'_>>> {
        if self.partial_handed_out {
            self.partial.clear();
            self.partial_handed_out = false;
        }
        loop {
            match parse(&self.buf[self.pos..])? {
                Some(frame) => {
                    let start = self.pos + frame.header;
                    let payload = start..start + frame.len;
                    self.pos = payload.end;
                    match frame.opcode {
                        0x9 => {
                            let pong = pong_frame(&self.buf[payload]);
                            self.stream.write_all(&pong).await?;
                        }
                        0xA => {}
                        0x8 => {
                            let p = &self.buf[payload];
                            let code = if p.len() >= 2 {
                                u16::from_be_bytes([p[0], p[1]])
                            } else {
                                1005
                            };
                            let reason = String::from_utf8_lossy(p.get(2..).unwrap_or_default())
                                .into_owned();
                            return Ok(Some(Event::Close(code, reason)));
                        }
                        0x1 | 0x2 if frame.fin && self.partial.is_empty() => {
                            return Ok(Some(Event::Message(&self.buf[payload])));
                        }
                        0x0..=0x2 => {
                            if self.partial.len() + frame.len > MAX_MESSAGE {
                                bail!("message over {MAX_MESSAGE} bytes");
                            }
                            self.partial.extend_from_slice(&self.buf[payload]);
                            if frame.fin {
                                self.partial_handed_out = true;
                                return Ok(Some(Event::Message(&self.partial)));
                            }
                        }
                        other => bail!("unexpected opcode {other:#x}"),
                    }
                }
                None => {
                    if self.pos > 0 && self.pos * 2 >= self.buf.len() {
                        self.buf.drain(..self.pos);
                        self.pos = 0;
                    }
                    if self.stream.read_buf(&mut self.buf).await? == 0 {
                        return Ok(None);
                    }
                }
            }
        }
    }
}

struct Frame {
    fin: bool,
    opcode: u8,
    header: usize,
    len: usize,
}

/// The frame at the start of `b`, or `None` if it is not all there yet.
fn parse(b: &[u8]) -> Result<Option<Frame>> {
    let (Some(&b0), Some(&b1)) = (b.first(), b.get(1)) else {
        return Ok(None);
    };
    if b1 & 0x80 != 0 {
        bail!("a server frame is masked");
    }
    let (len, header) = match b1 & 0x7f {
        126 => match b.get(2..4) {
            Some(l) => (u16::from_be_bytes([l[0], l[1]]) as usize, 4),
            None => return Ok(None),
        },
        127 => match b.get(2..10) {
            Some(l) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(l);
                (
                    usize::try_from(u64::from_be_bytes(a)).unwrap_or(usize::MAX),
                    10,
                )
            }
            None => return Ok(None),
        },
        n => (n as usize, 2),
    };
    if len > MAX_MESSAGE {
        bail!("frame over {MAX_MESSAGE} bytes");
    }
    if b.len() < header + len {
        return Ok(None);
    }
    Ok(Some(Frame {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        header,
        len,
    }))
}

/// A client pong echoing `payload`, masked with a zero key (clients must mask; a zero key
/// leaves the payload as it is).
fn pong_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(6 + payload.len());
    f.push(0x8A);
    f.push(0x80 | payload.len().min(125) as u8);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(&payload[..payload.len().min(125)]);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_every_length_encoding_parse() {
        let small = [0x81, 3, b'a', b'b', b'c'];
        let f = parse(&small).unwrap().unwrap();
        assert_eq!((f.fin, f.opcode, f.header, f.len), (true, 1, 2, 3));
        let mut mid = vec![0x81, 126, 0x01, 0x00];
        mid.extend(std::iter::repeat_n(b'x', 256));
        let f = parse(&mid).unwrap().unwrap();
        assert_eq!((f.header, f.len), (4, 256));
        assert!(parse(&mid[..100]).unwrap().is_none(), "incomplete");
        let mut big = vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0];
        big.extend(std::iter::repeat_n(0u8, 65536));
        assert_eq!(parse(&big).unwrap().unwrap().len, 65536);
        assert!(
            parse(&[0x81, 0x85, 0, 0, 0, 0, 1]).is_err(),
            "masked server frame"
        );
    }

    #[tokio::test]
    async fn reads_messages_fragments_pings_and_close_from_a_real_server() {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            ws.send(Message::text("hello")).await.unwrap();
            ws.send(Message::Ping(vec![7u8].into())).await.unwrap();
            ws.send(Message::text("x".repeat(70_000))).await.unwrap();
            ws.send(Message::Frame(
                tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
                    b"frag".to_vec(),
                    tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                        tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
                    ),
                    false,
                ),
            ))
            .await
            .unwrap();
            ws.send(Message::Frame(
                tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
                    b"ment".to_vec(),
                    tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                        tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Continue,
                    ),
                    true,
                ),
            ))
            .await
            .unwrap();
            ws.send(Message::text("after")).await.unwrap();
            ws.send(Message::Close(Some(CloseFrame {
                code: CloseCode::from(4008),
                reason: "lagging".into(),
            })))
            .await
            .unwrap();
            // The pong comes back before the close is answered.
            let mut got_pong = false;
            while let Some(Ok(m)) = ws.next().await {
                got_pong |= matches!(m, Message::Pong(ref p) if p.as_ref() == [7u8]);
            }
            got_pong
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut r = WsReader::handshake(tcp, &format!("ws://{addr}/rooms/a/ws"))
            .await
            .unwrap();
        assert_eq!(r.next().await.unwrap(), Some(Event::Message(b"hello")));
        match r.next().await.unwrap() {
            Some(Event::Message(m)) => assert_eq!(m.len(), 70_000),
            other => panic!("expected the long message, got {other:?}"),
        }
        assert_eq!(r.next().await.unwrap(), Some(Event::Message(b"fragment")));
        assert_eq!(r.next().await.unwrap(), Some(Event::Message(b"after")));
        assert_eq!(
            r.next().await.unwrap(),
            Some(Event::Close(4008, "lagging".into()))
        );
        drop(r);
        assert!(server.await.unwrap(), "the ping was answered");
    }
}
