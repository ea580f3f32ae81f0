//! `fanout-task` / `fanout-coalesce`: a tokio task per connection on a multi-thread runtime,
//! fed by a bounded channel of shared frames.
//!
//! A publish takes the registry lock (a `std` mutex, never held across an await), counts the
//! room's seq, encodes the frame once and `try_send`s it (a `Bytes` clone, no copy) to every
//! subscriber; a subscriber whose channel is full ([`QUEUE`] frames) is dropped from the room,
//! and its task closes the connection once it has drained what was queued. Each connection's
//! task writes its frames to the socket: one write per frame, or with coalescing every frame
//! already queued gathered into one write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::wire::{self, Head};

/// Frames queued per subscriber before it is dropped (ekg's default `--send-queue`).
const QUEUE: usize = 1024;
/// Most bytes gathered into one write when coalescing.
const MAX_BATCH: usize = 64 << 10;

#[derive(Default)]
struct Room {
    seq: u64,
    subs: Vec<mpsc::Sender<Bytes>>,
}

type Rooms = Arc<Mutex<HashMap<String, Room>>>;

pub(super) fn run(listener: std::net::TcpListener, coalesce: bool) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        let rooms: Rooms = Arc::default();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _nodelay = stream.set_nodelay(true);
            tokio::spawn(connection(stream, rooms.clone(), coalesce));
        }
    })
}

async fn connection(mut stream: TcpStream, rooms: Rooms, coalesce: bool) {
    let mut buf = BytesMut::with_capacity(4096);
    while let Ok(Some((head, body))) = wire::next_request(&mut stream, &mut buf).await {
        match head {
            Head::Publish { room, .. } => {
                let Some(seq) = publish(&rooms, room, &body) else {
                    return;
                };
                if stream.write_all(&wire::accepted(seq)).await.is_err() {
                    return;
                }
            }
            Head::Subscribe { room, accept } => {
                if stream.write_all(&wire::upgrade(&accept)).await.is_err() {
                    return;
                }
                let (tx, rx) = mpsc::channel(QUEUE);
                match rooms.lock() {
                    Ok(mut rooms) => rooms.entry(room).or_default().subs.push(tx),
                    Err(_) => return,
                }
                return subscriber(stream, rx, coalesce).await;
            }
            Head::Other => {
                let _closing = stream.write_all(wire::NOT_FOUND).await;
                return;
            }
        }
    }
}

/// Encode once and queue for every subscriber; the message's seq (`None` if the lock is
/// poisoned).
fn publish(rooms: &Rooms, room: String, body: &[u8]) -> Option<u64> {
    let mut rooms = rooms.lock().ok()?;
    let room = rooms.entry(room).or_default();
    room.seq += 1;
    let frame = wire::message_frame(room.seq, body);
    room.subs.retain(|tx| tx.try_send(frame.clone()).is_ok());
    Some(room.seq)
}

async fn subscriber(stream: TcpStream, mut rx: mpsc::Receiver<Bytes>, coalesce: bool) {
    let (mut rd, mut wr) = stream.into_split();
    let mut scratch = [0u8; 1024];
    let mut batch = BytesMut::new();
    loop {
        tokio::select! {
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                let written = if coalesce {
                    batch.clear();
                    batch.extend_from_slice(&frame);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(f) => batch.extend_from_slice(&f),
                            Err(_) => break,
                        }
                    }
                    wr.write_all(&batch).await
                } else {
                    wr.write_all(&frame).await
                };
                if written.is_err() {
                    break;
                }
            }
            // What the client sends is discarded; its end ends the subscription.
            n = rd.read(&mut scratch) => if !matches!(n, Ok(n) if n > 0) { break },
        }
    }
}
