//! The frame source both transports drain: what the room hands the connection (hello, reset,
//! backlog, then live frames), held in the connection's [`Inbox`] with the send queue bound
//! (see the module docs of `streams`).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;

use futures_util::task::AtomicWaker;

use crate::rooms::{Delivery, Frame, RoomId, Rooms, Seq, Subscriber, Subscription};

/// Most frames a transport takes from the pump for one write + flush. Bounds the work done
/// between two looks at the socket, the drain timer and the keepalive.
pub(super) const MAX_BATCH: usize = 256;

/// Why the pump can give no more frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PumpEnd {
    /// The client fell more than the send queue behind the room.
    Lagging,
    /// The room was replaced (a new log); the client should reconnect.
    RoomClosed,
}

/// The frames a room handed one connection and the connection has not taken yet. The room's
/// fan-out fills it (and wakes the connection task); the task empties it.
pub(super) struct Inbox {
    state: Mutex<InboxState>,
    task: AtomicWaker,
}

struct InboxState {
    /// `hello`, then `reset` (if any), then the backlog, in send order. Not bounded by the
    /// send queue: these are shared with the room's history, not copied.
    start: VecDeque<Arc<Frame>>,
    /// Live frames, at most `capacity`.
    live: VecDeque<Arc<Frame>>,
    /// Set once: the client is lagging, or the room ended the subscription.
    end: Option<PumpEnd>,
    /// The send queue size, `config.send_queue`.
    capacity: usize,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Subscriber for Inbox {
    fn deliver(&self, _room: &RoomId, delivery: Delivery<'_>) {
        let mut state = self.lock();
        if state.end.is_some() {
            return;
        }
        match delivery {
            Delivery::Start(frames) => state.start.extend(frames.iter().cloned()),
            Delivery::Live(frames) => {
                if state.live.len() + frames.len() > state.capacity {
                    state.end = Some(PumpEnd::Lagging);
                    state.live.clear();
                } else {
                    state.live.extend(frames.iter().cloned());
                }
            }
            Delivery::End(frames) => {
                state.live.extend(frames.iter().cloned());
                state.end = Some(PumpEnd::RoomClosed);
            }
        }
        drop(state);
        self.task.wake();
    }
}

pub(super) struct Pump {
    inbox: Arc<Inbox>,
    /// The connection's place in the room, for as long as the pump lives.
    _subscription: Subscription,
}

impl Pump {
    /// Subscribe to `room` from cursor `after`, with a send queue of `capacity` live frames.
    pub(super) fn subscribe(
        rooms: &Rooms,
        room: &RoomId,
        after: Option<Seq>,
        capacity: usize,
    ) -> Pump {
        let inbox = Arc::new(Inbox {
            state: Mutex::new(InboxState {
                start: VecDeque::new(),
                live: VecDeque::new(),
                end: None,
                capacity: capacity.max(1),
            }),
            task: AtomicWaker::new(),
        });
        let subscription = rooms.subscribe(room, after, Arc::clone(&inbox) as Arc<dyn Subscriber>);
        Pump {
            inbox,
            _subscription: subscription,
        }
    }

    /// Move up to [`MAX_BATCH`] frames, in send order, into `batch`.
    pub(super) fn take_batch(&self, batch: &mut VecDeque<Arc<Frame>>) {
        let mut state = self.inbox.lock();
        if state.start.is_empty() && state.live.is_empty() {
            if state.live.capacity() > 64 {
                // A burst grew the queue; give the memory back while the connection is idle.
                state.live.shrink_to(16);
            }
            return;
        }
        let room = MAX_BATCH.saturating_sub(batch.len());
        let from_start = room.min(state.start.len());
        batch.extend(state.start.drain(..from_start));
        let from_live = (room - from_start).min(state.live.len());
        batch.extend(state.live.drain(..from_live));
    }

    /// Every frame still to send, in order (after the room ended the subscription: its last
    /// frames, such as a `reset`, are still owed to the client).
    pub(super) fn into_remaining(self) -> Vec<Arc<Frame>> {
        let mut state = self.inbox.lock();
        let mut rest: Vec<Arc<Frame>> = state.start.drain(..).collect();
        rest.extend(state.live.drain(..));
        rest
    }

    /// Wait until the pump has ended or, when `want_frames` (the transport has taken
    /// everything it had), until there is a frame to take. A transport busy writing asks only
    /// for the end, so a client that stopped reading is found lagging while its write waits.
    ///
    /// Cancel-safe: frames stay in the inbox until taken.
    ///
    /// # Errors
    /// [`PumpEnd::Lagging`] when the send queue overflowed, [`PumpEnd::RoomClosed`] when the
    /// room ended the subscription (its last frames are in [`Pump::into_remaining`]).
    pub(super) async fn fill(&self, want_frames: bool) -> Result<(), PumpEnd> {
        poll_fn(|cx| {
            self.inbox.task.register(cx.waker());
            let state = self.inbox.lock();
            match state.end {
                Some(end) => Poll::Ready(Err(end)),
                None if !want_frames || (state.start.is_empty() && state.live.is_empty()) => {
                    Poll::Pending
                }
                None => Poll::Ready(Ok(())),
            }
        })
        .await
    }
}
