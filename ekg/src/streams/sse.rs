//! Server-Sent Events transport: `GET /rooms/{room}/sse?after=<seq>` (or `Last-Event-ID`).
//!
//! The response body is fed from a small bounded channel of `Bytes`: a `retry: 2000` line,
//! then each frame's shared SSE encoding, and a `: ping` comment every `sse_keepalive`. The
//! connection task ends when the client goes away (the body, and with it the channel's
//! receiver, is dropped), after a final `event: lagging`, or after a `reconnect` frame.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::Transport;
use super::admit::{Admission, StreamQuery, acquire, parse_request};
use super::drain::DrainTurn;
use super::gate::Gate;
use super::metrics::ConnectionMetrics;
use super::pump::PumpEnd;
use crate::rooms::Frame;
use crate::state::AppState;

/// First bytes of every stream: the client's reconnect delay, in ms.
const RETRY: &[u8] = b"retry: 2000\n\n";
/// The keepalive comment.
const PING: &[u8] = b": ping\n\n";
/// Chunks between the connection task and the response body. Small: the send queue proper is
/// the pump's; this only lets the body take several frames per write.
const BODY_CHANNEL: usize = 64;
/// Longest wait to hand the last frame (lagging, reconnect) to a body that does not drain.
const LAST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn handler(
    State(state): State<AppState>,
    room: Result<Path<String>, PathRejection>,
    query: Result<Query<StreamQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("(not visible ASCII)"));
    let request = parse_request(
        room.map(|Path(r)| r).map_err(|e| e.body_text()),
        query.map(|Query(q)| q).map_err(|e| e.body_text()),
        last_event_id,
    );
    let admission =
        match request.and_then(|(room, after)| acquire(&state, Transport::Sse, room, after)) {
            Ok(admission) => admission,
            Err(err) => return err.into_response(),
        };

    let (body_tx, body_rx) = mpsc::channel::<Bytes>(BODY_CHANNEL);
    tokio::spawn(serve(body_tx, state, admission));

    let body = Chunks {
        retry_sent: false,
        rx: body_rx,
    };
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The response body: [`RETRY`], then every chunk of the body channel until the connection
/// task drops its sender.
struct Chunks {
    retry_sent: bool,
    rx: mpsc::Receiver<Bytes>,
}

impl Stream for Chunks {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if !self.retry_sent {
            self.retry_sent = true;
            return Poll::Ready(Some(Ok(Bytes::from_static(RETRY))));
        }
        self.rx.poll_recv(cx).map(|chunk| chunk.map(Ok))
    }
}

/// How the live phase of a stream ended.
enum Ending {
    /// The client went away.
    Gone,
    Lagging,
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

/// Run one SSE stream to its end, writing into the body channel.
async fn serve(body_tx: mpsc::Sender<Bytes>, state: AppState, admission: Admission) {
    let Admission {
        pump,
        permit: _permit,
        task: _task,
        turn,
    } = admission;
    let metrics = ConnectionMetrics::new(Transport::Sse);

    // A zero period would panic in `interval`; the config refuses it, this keeps it so.
    let every = state.config.sse_keepalive.max(Duration::from_millis(1));
    let mut keepalive = tokio::time::interval_at(Instant::now() + every, every);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let drain = turn.wait(state.shutdown.clone());
    tokio::pin!(drain);
    let gone = body_tx.closed();
    tokio::pin!(gone);
    // The drain, the body's end and the keepalive timer are polled only after they woke the
    // task, not on every wake-up a frame or a send causes.
    let drain_gate = Gate::new();
    let gone_gate = Gate::new();
    let keepalive_gate = Gate::new();

    let mut batch: VecDeque<Arc<Frame>> = VecDeque::new();
    let ending = loop {
        if batch.is_empty() {
            pump.take_batch(&mut batch);
        }
        let idle = batch.is_empty();
        tokio::select! {
            biased;
            turn = std::future::poll_fn(|cx| drain_gate.poll(cx, |cx| drain.as_mut().poll(cx))) => {
                break Ending::Drain(turn)
            }
            () = std::future::poll_fn(|cx| gone_gate.poll(cx, |cx| gone.as_mut().poll(cx))) => {
                break Ending::Gone
            }
            sent = send_some(&body_tx, &mut batch, &metrics), if !batch.is_empty() => match sent {
                Some(n) => metrics.frames_sent(n),
                None => break Ending::Gone,
            },
            filled = pump.fill(idle) => {
                if let Err(end) = filled {
                    break end.into();
                }
            }
            _ = std::future::poll_fn(|cx| keepalive_gate.poll(cx, |cx| keepalive.poll_tick(cx))) => {
                // A full channel means bytes are on their way anyway.
                let _full_or_closed = body_tx.try_send(Bytes::from_static(PING));
            }
        }
    };
    let last = match ending {
        Ending::Gone => return,
        Ending::Lagging => {
            drop(pump);
            metrics.lagging();
            tracing::debug!("ending lagging event stream");
            Frame::lagging()
        }
        Ending::Drain(turn) => {
            drop(pump);
            metrics.drained();
            Frame::reconnect(turn.after_ms)
        }
        // The room was replaced (a new log): deliver its last frames (the `reset`), then end
        // the stream so the client resumes on the new room.
        Ending::RoomClosed => {
            let mut rest: VecDeque<Arc<Frame>> = pump.into_remaining().into();
            let handed = tokio::time::timeout(LAST_FRAME_TIMEOUT, async {
                while !rest.is_empty() {
                    let Some(n) = send_some(&body_tx, &mut rest, &metrics).await else {
                        break;
                    };
                    metrics.frames_sent(n);
                }
            });
            if handed.await.is_err() {
                tracing::debug!("event stream did not take its last frames in time");
            }
            return;
        }
    };
    match tokio::time::timeout(LAST_FRAME_TIMEOUT, body_tx.send(last.sse.clone())).await {
        Ok(Ok(())) => metrics.frames_sent(1),
        Ok(Err(_)) => {}
        Err(_) => tracing::debug!("event stream did not take its last frame in time"),
    }
}

/// Hand frames of `batch` to the body: wait for room for the first, then take as many as fit
/// without waiting. `None` when the body is gone.
///
/// Cancel-safe: a frame leaves the batch only together with its send.
async fn send_some(
    body_tx: &mpsc::Sender<Bytes>,
    batch: &mut VecDeque<Arc<Frame>>,
    metrics: &ConnectionMetrics,
) -> Option<usize> {
    // Room is usually there: `try_reserve` skips building a wait for it.
    let permit = match body_tx.try_reserve() {
        Ok(permit) => permit,
        Err(mpsc::error::TrySendError::Full(())) => body_tx.reserve().await.ok()?,
        Err(mpsc::error::TrySendError::Closed(())) => return None,
    };
    let frame = batch.pop_front()?;
    permit.send(frame.sse.clone());
    // One clock read per batch.
    let now_ms = shared::telemetry::unix_ms_f64();
    metrics.delivered(&frame, now_ms);
    let mut sent = 1;
    while !batch.is_empty() {
        let Ok(permit) = body_tx.try_reserve() else {
            break;
        };
        if let Some(frame) = batch.pop_front() {
            permit.send(frame.sse.clone());
            metrics.delivered(&frame, now_ms);
            sent += 1;
        }
    }
    Some(sent)
}
