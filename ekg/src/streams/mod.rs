//! Streaming transports: WebSocket (`GET /rooms/{room}/ws`) and Server-Sent Events
//! (`GET /rooms/{room}/sse`). Wire format: `docs/PROTOCOL.md` section 4.
//!
//! # Responsibility
//!
//! Turn one [`Subscription`](crate::rooms::Subscription) into a byte stream for one client, for
//! as long as the client keeps up, and end it with a clear reason when it cannot (lagging), when
//! it goes silent (idle), when its room is replaced (a new log), or when the host drains.
//!
//! # Admission (`admit.rs`)
//!
//! Before anything is upgraded or streamed: the room name and the cursor (`?after=`, or SSE's
//! `Last-Event-ID`; the query wins when both are given) are validated (`400 bad_room` /
//! `400 bad_cursor`), a draining host refuses (`503 shutting_down`), a connection permit is
//! taken from the shared limiter (`503 too_many_connections`), and the room is subscribed. The
//! permit and a task-tracker token move into the connection task and live exactly as long as
//! it does, so `run` can wait for every stream during shutdown.
//!
//! # The pump (`pump.rs`), shared by both transports
//!
//! Order of frames on every connection: `hello`, then `reset` (when the cursor cannot be
//! honoured), then the backlog (every retained event with seq > cursor), then live frames. The
//! room hands the connection's inbox its start and adds it to the room's subscribers in one
//! critical section, and hands it live frames in seq order, never one it started after
//! (`rooms` module docs). Result: no gap and no duplicate, whatever is published meanwhile.
//!
//! Frames are `Arc<Frame>`s encoded once per event: WebSocket sends `frame.ws` (a refcounted
//! `Utf8Bytes`), SSE sends `frame.sse` (a refcounted `Bytes`). Nothing is copied or re-encoded
//! per client.
//!
//! # Send queue and lagging
//!
//! Each connection's inbox holds at most `send_queue` live frames. While the socket does not
//! drain, the room's fan-out keeps adding to it; a client that falls further behind (a
//! delivery would overflow the inbox) is lagging: WebSocket closes with 4008 "lagging", SSE
//! sends a final `event: lagging` and ends. It is counted in
//! `ekg_lagging_disconnects_total{transport}` and resumes from its cursor. The rest of the
//! room is unaffected: the fan-out never waits for a slow client.
//!
//! The backlog is not bounded by the send queue (it is shared with the room's history, not
//! copied): it goes out in order, in chunks of `pump::MAX_BATCH`, before any live frame. Live
//! frames are queued meanwhile, and a client whose backlog takes so long that the queue
//! overflows is lagging too.
//!
//! # Batching
//!
//! After each wake-up the transport takes every frame waiting in the inbox and hands them all
//! to the socket before flushing once: many frames per write syscall under load, one frame per
//! write when idle. Socket writes are raced (`select!`) against the end of the pump, the
//! incoming side, the keepalive and the drain, and are cancel-safe: a blocked client never
//! blocks the task's view of its own lag.
//!
//! The branches that rarely fire (the WebSocket's incoming side, the drain, the ping or
//! keepalive timer, the end of an SSE body) sit behind a `gate::Gate`: each is polled only
//! after it woke the task itself, so a wake-up for a live frame costs the pump and the write,
//! not a read attempt on the socket and a look at every timer. Per delivered frame this took
//! ekg from about 7,300 to 4,100 instructions over WebSocket and from 8,400 to 6,600 over SSE
//! (callgrind, `BENCHMARKS.md`).
//!
//! # Keepalive and reaping
//!
//! WebSocket (`ws.rs`): a ping every `ws_ping_interval`; a peer from which nothing (pong, ping,
//! message) arrived for `idle_timeout` is closed (1001). Client text/binary messages are
//! ignored; a client close is answered (the task reads on until the stream ends, so the answer
//! is flushed). SSE (`sse.rs`): a `: ping` comment every `sse_keepalive`; a client that went
//! away drops the response body, which ends the task.
//!
//! # Drain (`drain.rs`)
//!
//! When `AppState::shutdown` is cancelled, each connection waits its own delay, drawn uniformly
//! over `drain_window` when it opened, then sends `{"type":"reconnect","after_ms":N}` and
//! closes (WebSocket 1012 "service restart"; SSE ends the stream). Spreading the closes keeps
//! clients from reconnecting to the remaining hosts all at once; new streams get `503`.
//!
//! # Memory per idle connection
//!
//! WebSocket: tungstenite's read buffer is `ws::READ_BUFFER` (512) bytes and its write buffer
//! grows only while frames are written; the pump's queue and batch are empty `VecDeque`s (no
//! allocation); hyper's HTTP buffers are released by the upgrade. Measured: about 3.9 KiB of
//! resident memory per idle WebSocket (test `idle_streams_cost_little_memory_on_the_server`).
//! SSE stays an HTTP response, so hyper's connection buffers (8 KiB read, 8 KiB write) remain:
//! about 24 KiB per idle stream.
//!
//! # Throughput
//!
//! Under load a wake-up carries several frames and tungstenite writes them with one syscall:
//! 200 WebSocket clients of one room, 4000 events posted by 8 writers, debug build: 800k
//! deliveries in 113k `sendto` calls (about 7 frames per write).

mod admit;
mod drain;
mod gate;
mod limiter;
mod metrics;
mod pump;
mod sse;
mod ws;

#[cfg(test)]
mod tests;

pub use limiter::{ConnectionLimiter, ConnectionPermit, Transport};

use axum::Router;
use axum::routing::get;

use crate::state::AppState;

/// `GET /rooms/{room}/ws` and `GET /rooms/{room}/sse`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/rooms/{room}/ws", get(ws::handler))
        .route("/rooms/{room}/sse", get(sse::handler))
}
