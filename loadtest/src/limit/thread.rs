//! `fanout-thread`: every room and connection on one thread; a publish writes the frame
//! straight into each subscriber's socket (`try_write`) from the publish path.
//!
//! What a socket does not take is queued on the subscriber (shared `Bytes`, never copied) and
//! its task, woken through a `Notify`, flushes the queue when the socket is writable; while
//! anything is queued, new frames queue behind it, so order holds. A subscriber with over
//! [`MAX_QUEUED`] bytes queued is closed. The task also reads (and discards) what the client
//! sends, to see it leave.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::rc::Rc;

use anyhow::Result;
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::wire::{self, Head};

/// Bytes a subscriber may have queued before it is closed.
const MAX_QUEUED: usize = 1 << 20;

#[derive(Default)]
struct Room {
    seq: u64,
    subs: Vec<Rc<Sub>>,
}

type Rooms = Rc<RefCell<HashMap<String, Room>>>;

struct Sub {
    stream: TcpStream,
    queue: RefCell<VecDeque<Bytes>>,
    queued: Cell<usize>,
    wake: Notify,
    dead: Cell<bool>,
}

impl Sub {
    /// Write `frame` now if nothing is queued and the socket takes it; queue the rest.
    fn send(&self, frame: &Bytes) {
        if self.dead.get() {
            return;
        }
        let rest = if self.queued.get() == 0 {
            match self.stream.try_write(frame) {
                Ok(n) if n == frame.len() => return,
                Ok(n) => frame.slice(n..),
                Err(e) if e.kind() == ErrorKind::WouldBlock => frame.clone(),
                Err(_) => {
                    self.close();
                    return;
                }
            }
        } else {
            frame.clone()
        };
        self.queued.set(self.queued.get() + rest.len());
        self.queue.borrow_mut().push_back(rest);
        if self.queued.get() > MAX_QUEUED {
            self.close();
        } else {
            self.wake.notify_one();
        }
    }

    fn close(&self) {
        self.dead.set(true);
        self.queue.borrow_mut().clear();
        self.queued.set(0);
        self.wake.notify_one();
    }

    /// Write out the queue, waiting for writability as needed; no borrow is held across an
    /// await.
    async fn flush(&self) {
        loop {
            let Some(front) = self.queue.borrow().front().cloned() else {
                return;
            };
            match self.stream.try_write(&front) {
                Ok(n) => {
                    let mut q = self.queue.borrow_mut();
                    if n == front.len() {
                        q.pop_front();
                    } else if let Some(f) = q.front_mut() {
                        *f = front.slice(n..);
                    }
                    self.queued.set(self.queued.get() - n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if self.stream.writable().await.is_err() {
                        return self.close();
                    }
                }
                Err(_) => return self.close(),
            }
        }
    }
}

pub(super) fn run(listener: std::net::TcpListener) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::from_std(listener)?;
        let rooms: Rooms = Rc::default();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _nodelay = stream.set_nodelay(true);
            tokio::task::spawn_local(connection(stream, rooms.clone()));
        }
    })
}

async fn connection(mut stream: TcpStream, rooms: Rooms) {
    let mut buf = BytesMut::with_capacity(4096);
    while let Ok(Some((head, body))) = wire::next_request(&mut stream, &mut buf).await {
        match head {
            Head::Publish { room, .. } => {
                let seq = publish(&rooms, room, &body);
                if stream.write_all(&wire::accepted(seq)).await.is_err() {
                    return;
                }
            }
            Head::Subscribe { room, accept } => {
                if stream.write_all(&wire::upgrade(&accept)).await.is_err() {
                    return;
                }
                let sub = Rc::new(Sub {
                    stream,
                    queue: RefCell::default(),
                    queued: Cell::new(0),
                    wake: Notify::new(),
                    dead: Cell::new(false),
                });
                rooms
                    .borrow_mut()
                    .entry(room)
                    .or_default()
                    .subs
                    .push(sub.clone());
                return subscriber(&sub).await;
            }
            Head::Other => {
                let _closing = stream.write_all(wire::NOT_FOUND).await;
                return;
            }
        }
    }
}

/// Encode once, write into every subscriber's socket; the message's seq.
fn publish(rooms: &Rooms, room: String, body: &[u8]) -> u64 {
    let mut rooms = rooms.borrow_mut();
    let room = rooms.entry(room).or_default();
    room.seq += 1;
    let frame = wire::message_frame(room.seq, body);
    room.subs.retain(|s| !s.dead.get());
    for s in &room.subs {
        s.send(&frame);
    }
    room.seq
}

async fn subscriber(sub: &Sub) {
    let mut scratch = [0u8; 1024];
    while !sub.dead.get() {
        tokio::select! {
            () = sub.wake.notified() => sub.flush().await,
            ready = sub.stream.readable() => {
                if ready.is_err() {
                    break;
                }
                // What the client sends is discarded; its end ends the subscription.
                match sub.stream.try_read(&mut scratch) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
        }
    }
    sub.close();
}
