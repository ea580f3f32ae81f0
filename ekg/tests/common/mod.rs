//! In-process ekg for stream tests: `ekg::run` on `127.0.0.1:0` in standalone mode, a write
//! client (reqwest, bearer token), a WebSocket client (tokio-tungstenite) and an SSE client
//! (reqwest streaming and a small event parser). Every wait is bounded by a deadline: waiting
//! for a condition is `tests::wait_for` with [`WAIT`].

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use ekg::Config;
use ekg::config::Mode;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use shared::shutdown::CancellationToken;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The standalone write token of every test server.
pub const TOKEN: &str = "test-token";
/// Longest wait for anything a test expects to happen.
pub const WAIT: Duration = Duration::from_secs(15);

/// A running ekg.
pub struct Server {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub run: Option<JoinHandle<anyhow::Result<()>>>,
    pub http: reqwest::Client,
}

impl Server {
    /// Start ekg in standalone mode with `tweak` applied to a default config.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Server {
        let mut config = Config {
            mode: Mode::Standalone {
                token: TOKEN.into(),
            },
            ..Config::default()
        };
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        config.listen = addr;
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(ekg::run(listener, config, shutdown.clone()));
        Server {
            addr,
            shutdown,
            run: Some(run),
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// `POST /rooms/{room}/messages`; panics unless 2xx.
    pub async fn post_message(&self, room: &str, body: Value) -> Value {
        self.write(
            reqwest::Method::POST,
            &format!("/rooms/{room}/messages"),
            body,
        )
        .await
    }

    /// `POST /rooms/{room}/events`; panics unless 2xx.
    pub async fn post_event(&self, room: &str, body: Value) -> Value {
        self.write(
            reqwest::Method::POST,
            &format!("/rooms/{room}/events"),
            body,
        )
        .await
    }

    async fn write(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .request(method, self.url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// `GET path` as JSON, with its status.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let resp = self.http.get(self.url(path)).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Seqs of every message in the room's history, oldest first (pages forward from 0).
    pub async fn history_seqs(&self, room: &str) -> Vec<u64> {
        let mut seqs = Vec::new();
        let mut after = 0u64;
        for _ in 0..10_000 {
            let (status, page) = self
                .get_json(&format!("/rooms/{room}/messages?after={after}&limit=200"))
                .await;
            assert_eq!(status, 200, "{page}");
            let messages = page["messages"].as_array().unwrap();
            seqs.extend(messages.iter().map(|m| m["seq"].as_u64().unwrap()));
            match page["next_after"].as_u64() {
                Some(next) if page["has_more"].as_bool() == Some(true) => after = next,
                _ => return seqs,
            }
        }
        panic!("history of {room} did not end");
    }

    /// Wait for `run` to return, within `limit`.
    pub async fn join(&mut self, limit: Duration) -> anyhow::Result<()> {
        let run = self.run.take().expect("joined twice");
        tokio::time::timeout(limit, run)
            .await
            .expect("ekg::run did not return in time")
            .expect("ekg::run panicked")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(run) = self.run.take() {
            run.abort();
        }
    }
}

/// What a WebSocket client saw next.
#[derive(Debug, PartialEq)]
pub enum WsEvent {
    Frame(Value),
    /// A close frame: code and reason.
    Close(u16, String),
    /// The stream ended without a close frame.
    End,
    /// The stream failed.
    Error(String),
}

pub struct WsClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    pub async fn connect(url: &str) -> WsClient {
        let (ws, resp) = tokio_tungstenite::connect_async(url).await.unwrap();
        assert_eq!(resp.status(), 101);
        WsClient { ws }
    }

    /// Connect over a socket with a tiny receive buffer (a client that stalls fills it fast).
    pub async fn connect_small_window(addr: SocketAddr, url: &str) -> WsClient {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
        WsClient { ws }
    }

    /// The next frame, close or end, within [`WAIT`]. Pings are answered by tungstenite.
    pub async fn next(&mut self) -> WsEvent {
        let deadline = Instant::now() + WAIT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("timed out waiting for a websocket frame");
            match msg {
                Some(Ok(Message::Text(text))) => {
                    return WsEvent::Frame(serde_json::from_str(text.as_str()).unwrap());
                }
                Some(Ok(Message::Close(Some(frame)))) => {
                    return WsEvent::Close(u16::from(frame.code), frame.reason.to_string());
                }
                Some(Ok(Message::Close(None))) => return WsEvent::Close(1005, String::new()),
                Some(Ok(_)) => {}
                Some(Err(err)) => return WsEvent::Error(err.to_string()),
                None => return WsEvent::End,
            }
        }
    }

    /// The next frame; panics on close.
    pub async fn frame(&mut self) -> Value {
        match self.next().await {
            WsEvent::Frame(v) => v,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Frames until one with `seq >= last`, all of them.
    pub async fn frames_through(&mut self, last: u64) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let f = self.frame().await;
            let seq = f["seq"].as_u64();
            out.push(f);
            if seq.is_some_and(|s| s >= last) {
                return out;
            }
        }
    }

    pub async fn close(&mut self) {
        self.ws.send(Message::Close(None)).await.unwrap();
    }
}

/// One SSE event (or comment) as parsed from the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Sse {
    Event {
        event: String,
        id: Option<String>,
        data: Value,
    },
    Comment(String),
    Retry(u64),
    /// The body ended.
    End,
}

pub struct SseClient {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: Vec<u8>,
    pending: std::collections::VecDeque<Sse>,
    pub headers: reqwest::header::HeaderMap,
}

impl SseClient {
    /// `GET url` with optional `Last-Event-ID`; panics unless 200.
    pub async fn connect(url: &str, last_event_id: Option<&str>) -> SseClient {
        let mut req = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let headers = resp.headers().clone();
        SseClient {
            body: Box::pin(resp.bytes_stream()),
            buf: Vec::new(),
            pending: Default::default(),
            headers,
        }
    }

    /// The next event, comment or retry line (or `End`), within [`WAIT`].
    pub async fn next(&mut self) -> Sse {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(item) = self.pending.pop_front() {
                return item;
            }
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..pos + 2).collect();
                self.parse_block(&String::from_utf8(block).unwrap());
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .expect("timed out waiting for an SSE event");
            match chunk {
                Some(Ok(bytes)) => self.buf.extend_from_slice(&bytes),
                Some(Err(_)) | None => return Sse::End,
            }
        }
    }

    fn parse_block(&mut self, block: &str) {
        let (mut event, mut id, mut data) = (None, None, None);
        for line in block.lines() {
            if let Some(c) = line.strip_prefix(':') {
                self.pending.push_back(Sse::Comment(c.trim().to_string()));
            } else if let Some(v) = line.strip_prefix("retry: ") {
                self.pending.push_back(Sse::Retry(v.parse().unwrap()));
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(v).unwrap());
            } else if !line.is_empty() {
                panic!("unexpected SSE line {line:?}");
            }
        }
        if let (Some(event), Some(data)) = (event, data) {
            self.pending.push_back(Sse::Event { event, id, data });
        }
    }

    /// The next event, skipping comments and retry lines; `None` at the end of the body.
    pub async fn event(&mut self) -> Option<(String, Option<String>, Value)> {
        loop {
            match self.next().await {
                Sse::Event { event, id, data } => return Some((event, id, data)),
                Sse::End => return None,
                Sse::Comment(_) | Sse::Retry(_) => {}
            }
        }
    }

    /// Event data until one with `seq >= last`.
    pub async fn frames_through(&mut self, last: u64) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let (_, _, data) = self.event().await.expect("stream ended early");
            let seq = data["seq"].as_u64();
            out.push(data);
            if seq.is_some_and(|s| s >= last) {
                return out;
            }
        }
    }
}

/// A message body of about `size` bytes.
pub fn payload(n: usize, size: usize) -> Value {
    json!({ "n": n, "pad": "x".repeat(size) })
}

/// The seqs of frames that carry one.
pub fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().filter_map(|f| f["seq"].as_u64()).collect()
}

/// Resident memory of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Open `n` streams with a bare socket (so the client side costs next to nothing) and wait
/// for each one's hello.
pub async fn open_bare(
    server: &Server,
    path: &str,
    ws: bool,
    n: usize,
) -> Vec<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; 4096];
    for _ in 0..n {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let upgrade = if ws {
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        } else {
            ""
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: ekg\r\n{upgrade}\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        while !got.windows(5).any(|w| w == b"hello") {
            let k = tokio::time::timeout(WAIT, s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(k > 0, "closed before hello");
            got.extend_from_slice(&buf[..k]);
        }
        out.push(s);
    }
    out
}
