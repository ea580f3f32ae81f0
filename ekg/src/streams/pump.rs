//! The frame source both transports drain: hello, reset, backlog, then deduplicated live
//! frames, with the per-connection send queue bound (see the module docs of `streams`).

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::rooms::{Frame, Seq, SubscriberGuard, Subscription};

/// Most frames a transport takes from the pump for one write + flush. Bounds the work done
/// between two looks at the socket, the drain timer and the keepalive.
pub(super) const MAX_BATCH: usize = 256;

/// Why the pump can give no more frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PumpEnd {
    /// The client fell more than the send queue behind the room.
    Lagging,
    /// The room's channel closed (the room was removed); the client should reconnect.
    RoomClosed,
}

pub(super) struct Pump {
    /// `hello`, then `reset` (if any), then the backlog, in send order.
    start: std::vec::IntoIter<Arc<Frame>>,
    /// Live frames of the room, subscribed before the backlog was read.
    live: Receiver<Arc<Frame>>,
    /// Live frames received but not yet taken by the transport; at most `capacity`.
    queue: VecDeque<Arc<Frame>>,
    /// Highest seq already queued (hello's `covered`, then the backlog, then live frames).
    /// A live frame at or below it is a duplicate of one already queued.
    last: Seq,
    /// The send queue size, `config.send_queue`.
    capacity: usize,
    /// Counts this connection among the room's subscribers while the pump lives.
    _guard: SubscriberGuard,
}

impl Pump {
    pub(super) fn new(sub: Subscription, capacity: usize) -> Pump {
        let Subscription {
            hello,
            reset,
            backlog,
            covered,
            live,
            guard,
        } = sub;
        let last = backlog
            .iter()
            .rev()
            .find_map(|f| f.seq)
            .map_or(covered, |s| s.max(covered));
        let mut start = Vec::with_capacity(backlog.len() + 2);
        start.push(hello);
        start.extend(reset);
        start.extend(backlog);
        Pump {
            start: start.into_iter(),
            live,
            queue: VecDeque::new(),
            last,
            capacity: capacity.max(1),
            _guard: guard,
        }
    }

    /// Move up to [`MAX_BATCH`] frames, in send order, into `batch`.
    pub(super) fn take_batch(&mut self, batch: &mut VecDeque<Arc<Frame>>) {
        if self.start.len() == 0 && self.queue.is_empty() {
            if self.queue.capacity() > 64 {
                // A burst grew the queue; give the memory back while the connection is idle.
                self.queue.shrink_to(16);
            }
            return;
        }
        let room = MAX_BATCH.saturating_sub(batch.len());
        let mut taken = 0;
        while taken < room {
            let Some(frame) = self.start.next() else {
                break;
            };
            batch.push_back(frame);
            taken += 1;
        }
        let from_queue = (room - taken).min(self.queue.len());
        batch.extend(self.queue.drain(..from_queue));
    }

    /// Every frame still to send, in order (after the room's channel closed: its last frames,
    /// such as a `reset`, are still owed to the client).
    pub(super) fn into_remaining(mut self) -> Vec<Arc<Frame>> {
        let mut rest: Vec<Arc<Frame>> = self.start.by_ref().collect();
        rest.extend(self.queue.drain(..));
        rest
    }

    /// Wait for at least one live frame, then take every frame already waiting.
    ///
    /// Cancel-safe: a frame is either in the receiver or in the queue.
    ///
    /// # Errors
    /// [`PumpEnd::Lagging`] when the receiver lagged or the queue overflowed,
    /// [`PumpEnd::RoomClosed`] when the room's channel closed.
    pub(super) async fn fill(&mut self) -> Result<(), PumpEnd> {
        match self.live.recv().await {
            Ok(frame) => self.push(frame)?,
            Err(RecvError::Lagged(_)) => return Err(PumpEnd::Lagging),
            Err(RecvError::Closed) => return Err(PumpEnd::RoomClosed),
        }
        loop {
            match self.live.try_recv() {
                Ok(frame) => self.push(frame)?,
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Lagged(_)) => return Err(PumpEnd::Lagging),
                Err(TryRecvError::Closed) => return Err(PumpEnd::RoomClosed),
            }
        }
    }

    fn push(&mut self, frame: Arc<Frame>) -> Result<(), PumpEnd> {
        if let Some(seq) = frame.seq {
            if seq <= self.last {
                return Ok(());
            }
            self.last = seq;
        }
        if self.queue.len() >= self.capacity {
            return Err(PumpEnd::Lagging);
        }
        self.queue.push_back(frame);
        Ok(())
    }
}
