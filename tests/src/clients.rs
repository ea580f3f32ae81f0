//! Subscribers that record every frame, as a browser would see them.
//!
//! Each client runs a background task that appends frames to a shared list; tests inspect the
//! list with [`WsClient::frames`] and wait on it with the helpers in [`crate::wait`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// One decoded frame.
pub type Frame = Value;

#[derive(Default)]
struct Seen {
    frames: Vec<Frame>,
    /// WebSocket close code and reason, or `(0, "ended")` for an SSE stream that ended.
    closed: Option<(u16, String)>,
}

/// What every client exposes.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Seen>>);

impl Recorder {
    fn push(&self, f: Frame) {
        if let Ok(mut s) = self.0.lock() {
            s.frames.push(f);
        }
    }

    fn close(&self, code: u16, reason: String) {
        if let Ok(mut s) = self.0.lock() {
            s.closed.get_or_insert((code, reason));
        }
    }

    /// Every frame received so far.
    pub fn frames(&self) -> Vec<Frame> {
        self.0.lock().map(|s| s.frames.clone()).unwrap_or_default()
    }

    /// Seqs of the event frames received so far, in arrival order.
    pub fn seqs(&self) -> Vec<u64> {
        self.frames()
            .iter()
            .filter_map(|f| f["seq"].as_u64())
            .collect()
    }

    /// Frames of one type.
    pub fn of_type(&self, ty: &str) -> Vec<Frame> {
        self.frames()
            .into_iter()
            .filter(|f| f["type"] == ty)
            .collect()
    }

    pub fn closed(&self) -> Option<(u16, String)> {
        self.0.lock().ok().and_then(|s| s.closed.clone())
    }

    /// The seq of the newest event received, for resuming.
    pub fn last_seq(&self) -> Option<u64> {
        self.seqs().last().copied()
    }
}

/// A WebSocket subscriber.
pub struct WsClient {
    pub rec: Recorder,
    task: JoinHandle<()>,
}

impl WsClient {
    /// Connect to `url` (e.g. `ws://127.0.0.1:PORT/rooms/a/ws?after=3`).
    pub async fn connect(url: &str) -> Result<WsClient> {
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .context("WebSocket connect timed out")?
        .with_context(|| format!("connect {url}"))?;
        Ok(Self::run(ws))
    }

    /// Connect with a tiny receive buffer and never read: a client that cannot keep up.
    pub async fn connect_stalled(url: &str) -> Result<(tokio::net::TcpStream, Recorder)> {
        let uri: tokio_tungstenite::tungstenite::http::Uri = url.parse()?;
        let host = uri.host().unwrap_or("127.0.0.1").to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.set_recv_buffer_size(4096)?;
        let stream = sock.connect(format!("{host}:{port}").parse()?).await?;
        let (ws, _) = tokio_tungstenite::client_async(url, stream).await?;
        // Hand back the raw socket so the test can hold it open without ever reading.
        Ok((ws.into_inner(), Recorder::default()))
    }

    fn run<S>(mut ws: tokio_tungstenite::WebSocketStream<S>) -> WsClient
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let rec = Recorder::default();
        let r = rec.clone();
        let task = tokio::spawn(async move {
            while let Some(msg) = ws.next().await {
                match msg {
                    Ok(Message::Text(t)) => match serde_json::from_str(t.as_str()) {
                        Ok(v) => r.push(v),
                        Err(_) => r.push(Value::String(t.to_string())),
                    },
                    Ok(Message::Close(frame)) => {
                        let (code, reason) = frame
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((u16::from(CloseCode::Status), String::new()));
                        r.close(code, reason);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            r.close(1006, "connection ended".into());
        });
        WsClient { rec, task }
    }
}

impl Drop for WsClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::ops::Deref for WsClient {
    type Target = Recorder;
    fn deref(&self) -> &Recorder {
        &self.rec
    }
}

/// An EventSource-like subscriber (no automatic reconnect: tests decide).
pub struct SseClient {
    pub rec: Recorder,
    task: JoinHandle<()>,
}

impl SseClient {
    /// Open `url`, optionally with a `Last-Event-ID`.
    pub async fn connect(url: &str, last_event_id: Option<u64>) -> Result<SseClient> {
        let client = reqwest::Client::new();
        let mut req = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = tokio::time::timeout(Duration::from_secs(10), req.send())
            .await
            .context("SSE connect timed out")??;
        if !resp.status().is_success() {
            bail!("SSE {url}: {}", resp.status());
        }
        let rec = Recorder::default();
        let r = rec.clone();
        let task = tokio::spawn(async move {
            let mut stream = resp.bytes_stream();
            let mut buf = Vec::new();
            let mut data = String::new();
            while let Some(Ok(chunk)) = stream.next().await {
                buf.extend_from_slice(&chunk);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let line = String::from_utf8_lossy(&line);
                    let line = line.trim_end_matches(['\n', '\r']);
                    if line.is_empty() {
                        if !data.is_empty() {
                            match serde_json::from_str(&data) {
                                Ok(v) => r.push(v),
                                Err(_) => r.push(Value::String(data.clone())),
                            }
                            data.clear();
                        }
                    } else if let Some(d) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(d.strip_prefix(' ').unwrap_or(d));
                    }
                }
            }
            r.close(0, "ended".into());
        });
        Ok(SseClient { rec, task })
    }
}

impl Drop for SseClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::ops::Deref for SseClient {
    type Target = Recorder;
    fn deref(&self) -> &Recorder {
        &self.rec
    }
}

/// Check a client's view: seqs strictly increasing (no duplicate, no reorder).
pub fn assert_strictly_increasing(seqs: &[u64]) -> Result<()> {
    for w in seqs.windows(2) {
        if w[1] <= w[0] {
            bail!(
                "seq {} followed by {}: duplicate or out of order",
                w[0],
                w[1]
            );
        }
    }
    Ok(())
}
