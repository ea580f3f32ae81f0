//! Limit servers: the least a server can do for a scenario, run beside ours in the same session
//! so every report shows the machine's ceiling next to the product (`loadtest limit --kind K`,
//! started by `--spawn --target limit-*`).
//!
//! Each is a separate process (so its CPU is counted apart from the harness) that listens on
//! `--listen` (port 0 by default) and prints `limit listening on http://ADDR` once serving, like
//! reflektor and ekg, so the workspace's launcher starts it. It runs until killed.
//!
//! - `fanout-thread`: rooms and WebSocket subscribers on **one thread** (a current-thread
//!   runtime). A publish encodes the frame once and writes it straight into every subscriber's
//!   socket from the publish path (`try_write`); only what a socket does not take is queued,
//!   and the connection's task flushes it when the socket is writable again.
//! - `fanout-task`: a **tokio task per connection** on a multi-thread runtime, fed by a bounded
//!   channel of shared frames (`Bytes`); the publish path only `try_send`s. `fanout-coalesce`
//!   is the same with every frame already queued for a connection written in one syscall.
//! - `accept-202`: a bare hyper HTTP/1.1 server answering `202 {"id":"N"}` to every POST after
//!   reading its body, and nothing else: the ceiling for reflektor's intake.
//!
//! The fan-out servers speak the protocol the `fanout` and `connections` scenarios expect of
//! ekg, and nothing more: `POST /rooms/{room}/messages` (any body, taken as JSON) answers
//! `202 {"id":"SEQ"}` and sends `{"type":"message","seq":SEQ,"data":BODY}` to the room's
//! subscribers (SEQ counts per room); `GET /rooms/{room}/ws` upgrades and sends
//! `{"type":"hello"}` first. No history, no resume, no auth, no ping. Bounded like ekg: a
//! subscriber that falls 1,024 frames (or 1 MiB on the one-thread server) behind is closed.

mod accept;
mod task;
mod thread;
mod wire;

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::{Context, Result};

/// Which limit server.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) enum Kind {
    /// Rooms on one thread, written straight into sockets from the publish path.
    FanoutThread,
    /// A tokio task per connection, fed by a channel.
    FanoutTask,
    /// A task per connection, every queued frame written in one syscall.
    FanoutCoalesce,
    /// A bare hyper server answering 202 to every POST.
    Accept202,
}

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Args {
    /// Which server.
    #[arg(long, value_enum)]
    kind: Kind,
    /// Where to listen (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

/// Bind, announce, serve until killed.
pub(crate) fn run(args: &Args) -> Result<()> {
    if !args.listen.ip().is_loopback() {
        anyhow::bail!("limit servers listen on loopback only, not {}", args.listen);
    }
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("bind {}", args.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let mut out = std::io::stdout();
    writeln!(out, "limit listening on http://{addr}")?;
    out.flush()?;
    match args.kind {
        Kind::FanoutThread => thread::run(listener),
        Kind::FanoutTask => task::run(listener, false),
        Kind::FanoutCoalesce => task::run(listener, true),
        Kind::Accept202 => accept::run(listener),
    }
}

#[cfg(test)]
mod tests;
