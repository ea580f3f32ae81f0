//! WebSocket transport: `GET /rooms/{room}/ws?after=<seq>`.
//!
//! One text message per frame. Pings every `ws_ping_interval`; a peer silent for
//! `idle_timeout` is closed. Close codes: 4008 "lagging", 1012 "service restart" (drain, after
//! a `reconnect` frame), 1001 "idle timeout". A close from the client is answered by
//! tungstenite; the task keeps reading until the stream ends so that answer is flushed.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};

use super::Transport;
use super::admit::{Admission, StreamQuery, acquire, not_websocket, parse_request};
use super::drain::DrainTurn;
use super::gate::Gate;
use super::metrics::ConnectionMetrics;
use super::pump::PumpEnd;
use crate::rooms::Frame;
use crate::state::AppState;

/// Bytes tungstenite reads from the socket at a time, allocated for the life of the
/// connection. Clients only send control frames (pong, close), so a small buffer is enough and
/// keeps an idle connection cheap.
pub(super) const READ_BUFFER: usize = 512;
/// Outgoing bytes buffered before tungstenite writes to the socket without waiting for a
/// flush: frames of one batch are written together, in as few syscalls as possible.
const WRITE_BUFFER: usize = 16 * 1024;
/// Room above [`WRITE_BUFFER`] + `--max-message-bytes` for the envelope of the largest frame
/// (type, seq, id, ts and JSON framing around the message data).
const FRAME_ENVELOPE: usize = 16 * 1024;
/// Largest message (and frame) accepted from a client. Clients have nothing to send but
/// control frames.
const MAX_INCOMING: usize = 4 * 1024;
/// Longest wait for a close handshake (our close frame written, the peer's answer read).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a close frame to a peer that has been silent for `idle_timeout`.
const IDLE_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Close code: the client could not keep up with the room.
const CLOSE_LAGGING: u16 = 4008;
/// Close code: the host is restarting (drain); reconnect elsewhere.
const CLOSE_SERVICE_RESTART: u16 = 1012;
/// Close code: going away (idle peer, room gone).
const CLOSE_GOING_AWAY: u16 = 1001;

pub(super) async fn handler(
    State(state): State<AppState>,
    room: Result<Path<String>, PathRejection>,
    query: Result<Query<StreamQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let request = parse_request(
        room.map(|Path(r)| r).map_err(|e| e.body_text()),
        query.map(|Query(q)| q).map_err(|e| e.body_text()),
        None,
    );
    let (room_id, after) = match request {
        Ok(parsed) => parsed,
        Err(err) => return err.into_response(),
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return not_websocket(rejection.status(), rejection.body_text()).into_response();
        }
    };
    let admission = match acquire(&state, Transport::Ws, room_id, after) {
        Ok(admission) => admission,
        Err(err) => return err.into_response(),
    };
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // The buffer only grows past WRITE_BUFFER by the frame being added: the hard limit is
        // the largest frame an event can make.
        .max_write_buffer_size(WRITE_BUFFER + state.config.max_message_bytes + FRAME_ENVELOPE)
        .max_message_size(MAX_INCOMING)
        .max_frame_size(MAX_INCOMING)
        .on_failed_upgrade(|err| tracing::debug!(%err, "websocket upgrade failed"))
        .on_upgrade(move |socket: WebSocket| serve(socket, state, admission))
}

/// How the live phase of a connection ended.
#[derive(Debug)]
enum Ending {
    /// The socket failed or ended: nothing more to send.
    Gone,
    /// The client sent a close frame.
    PeerClosed,
    Lagging,
    Idle,
    RoomClosed,
    Drain(DrainTurn),
}

impl From<PumpEnd> for Ending {
    fn from(end: PumpEnd) -> Ending {
        match end {
            PumpEnd::Lagging => Ending::Lagging,
            PumpEnd::RoomClosed => Ending::RoomClosed,
        }
    }
}

/// Run one WebSocket connection to its end.
pub(super) async fn serve<S>(socket: S, state: AppState, admission: Admission)
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin,
{
    let Admission {
        pump,
        permit: _permit,
        task: _task,
        turn,
    } = admission;
    let metrics = ConnectionMetrics::new(Transport::Ws);
    let (mut sink, mut stream) = socket.split();

    // A zero period would panic in `interval`; the config refuses it, this keeps it so.
    let ping_every = state.config.ws_ping_interval.max(Duration::from_millis(1));
    let idle_timeout = state.config.idle_timeout;
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let drain = turn.wait(state.shutdown.clone());
    tokio::pin!(drain);
    // Reading the socket, the drain and the ping timer are polled only after they woke the
    // task, not on every wake-up a frame or a write causes.
    let drain_gate = Gate::new();
    let read_gate = Gate::new();
    let ping_gate = Gate::new();

    let mut out = Outgoing::default();
    let mut last_seen = Instant::now();
    let ending = loop {
        if out.batch.is_empty() {
            pump.take_batch(&mut out.batch);
        }
        let writing = out.has_work();
        tokio::select! {
            biased;
            turn = std::future::poll_fn(|cx| drain_gate.poll(cx, |cx| drain.as_mut().poll(cx))) => {
                break Ending::Drain(turn)
            }
            incoming = std::future::poll_fn(|cx| read_gate.poll(cx, |cx| stream.poll_next_unpin(cx))) => match incoming {
                Some(Ok(Message::Close(_))) => break Ending::PeerClosed,
                // Pongs, pings (answered by tungstenite) and ignored text/binary: the peer is alive.
                Some(Ok(_)) => last_seen = Instant::now(),
                Some(Err(_)) | None => break Ending::Gone,
            },
            written = std::future::poll_fn(|cx| out.poll_write(cx, &mut sink, &metrics)), if writing => {
                if written.is_err() {
                    break Ending::Gone;
                }
            }
            filled = pump.fill(!writing) => {
                if let Err(end) = filled {
                    break end.into();
                }
            }
            _ = std::future::poll_fn(|cx| ping_gate.poll(cx, |cx| ping.poll_tick(cx))) => {
                if last_seen.elapsed() >= idle_timeout {
                    break Ending::Idle;
                }
                out.ping_due = true;
            }
        }
    };
    let close_timeout = CLOSE_TIMEOUT.min(idle_timeout.max(Duration::from_millis(100)));
    match ending {
        Ending::Gone => drop(pump),
        Ending::PeerClosed => {
            drop(pump);
            // tungstenite queued the close answer; reading on flushes it and sees the end.
            let _ = tokio::time::timeout(close_timeout, read_to_end(&mut stream)).await;
        }
        Ending::Lagging => {
            drop(pump);
            metrics.lagging();
            tracing::debug!("closing lagging websocket");
            close(
                &mut sink,
                &mut stream,
                &[],
                CLOSE_LAGGING,
                "lagging",
                close_timeout,
            )
            .await;
        }
        Ending::Drain(turn) => {
            drop(pump);
            metrics.drained();
            let reconnect = Arc::new(Frame::reconnect(turn.after_ms));
            metrics.frames_sent(1);
            close(
                &mut sink,
                &mut stream,
                &[reconnect],
                CLOSE_SERVICE_RESTART,
                "service restart",
                close_timeout,
            )
            .await;
        }
        Ending::Idle => {
            drop(pump);
            tracing::debug!("closing idle websocket");
            let frame = close_frame(CLOSE_GOING_AWAY, "idle timeout");
            let _ = tokio::time::timeout(IDLE_CLOSE_TIMEOUT, sink.send(frame)).await;
        }
        Ending::RoomClosed => {
            // The room was replaced (a new log): deliver its last frames (the `reset`), then
            // close so the client resumes on the new room.
            let rest = pump.into_remaining();
            metrics.frames_sent(rest.len());
            close(
                &mut sink,
                &mut stream,
                &rest,
                CLOSE_SERVICE_RESTART,
                "room reset",
                close_timeout,
            )
            .await;
        }
    }
}

/// What the connection has to write: a batch of frames and possibly a ping.
#[derive(Default)]
pub(super) struct Outgoing {
    pub(super) batch: VecDeque<Arc<Frame>>,
    pub(super) ping_due: bool,
    /// Messages were handed to the sink but not flushed yet.
    unflushed: bool,
}

impl Outgoing {
    pub(super) fn has_work(&self) -> bool {
        !self.batch.is_empty() || self.ping_due || self.unflushed
    }

    /// Feed the ping and every frame of the batch, then flush once.
    ///
    /// Cancel-safe: a frame leaves the batch only once the sink has taken it, and a later call
    /// finishes the flush.
    pub(super) fn poll_write<K>(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut K,
        metrics: &ConnectionMetrics,
    ) -> Poll<Result<(), axum::Error>>
    where
        K: Sink<Message, Error = axum::Error> + Unpin,
    {
        let mut sent = 0;
        let result = self.poll_write_counted(cx, sink, &mut sent, metrics);
        metrics.frames_sent(sent);
        result
    }

    fn poll_write_counted<K>(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut K,
        sent: &mut usize,
        metrics: &ConnectionMetrics,
    ) -> Poll<Result<(), axum::Error>>
    where
        K: Sink<Message, Error = axum::Error> + Unpin,
    {
        let mut sink = Pin::new(sink);
        // One clock read per batch, at its first frame.
        let mut now_ms: Option<f64> = None;
        if self.ping_due {
            ready!(sink.as_mut().poll_ready(cx))?;
            sink.as_mut().start_send(Message::Ping(Bytes::new()))?;
            self.ping_due = false;
            self.unflushed = true;
        }
        while !self.batch.is_empty() {
            ready!(sink.as_mut().poll_ready(cx))?;
            let Some(frame) = self.batch.pop_front() else {
                break;
            };
            sink.as_mut().start_send(Message::Text(frame.ws.clone()))?;
            let now = *now_ms.get_or_insert_with(shared::telemetry::unix_ms_f64);
            metrics.delivered(&frame, now);
            *sent += 1;
            self.unflushed = true;
        }
        if self.unflushed {
            ready!(sink.as_mut().poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }
}

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// Send `frames` and a close frame, then read until the peer's close answer ends the stream;
/// all of it within `limit`.
async fn close<K, R>(
    sink: &mut K,
    stream: &mut R,
    frames: &[Arc<Frame>],
    code: u16,
    reason: &'static str,
    limit: Duration,
) where
    K: Sink<Message, Error = axum::Error> + Unpin,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let handshake = async {
        for frame in frames {
            sink.feed(Message::Text(frame.ws.clone())).await?;
        }
        sink.send(close_frame(code, reason)).await?;
        read_to_end(stream).await;
        Ok::<(), axum::Error>(())
    };
    match tokio::time::timeout(limit, handshake).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(%err, code, "websocket close failed"),
        Err(_) => tracing::debug!(code, "websocket close handshake timed out"),
    }
}

/// Read (and discard) until the stream ends or fails.
async fn read_to_end<R>(stream: &mut R)
where
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    while let Some(Ok(_)) = stream.next().await {}
}
