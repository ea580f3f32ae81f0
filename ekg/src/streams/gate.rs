//! [`Gate`]: poll a source of a connection's `select!` only after that source woke the task.
//!
//! A connection task wakes for many reasons (a live frame, a writable socket, a timer), and
//! `select!` polls every branch on every wake-up. Some branches are costly to poll for nothing:
//! reading the WebSocket walks tungstenite's read path (buffer reserve, a read attempt), and a
//! cancellation future re-checks its waiter list. Behind a gate such a source is polled with a
//! waker of its own that marks the gate open before waking the task, so it is polled only
//! when it may have made progress.
//!
//! No wake-up is lost: the task's waker is registered before the flag is read, a source that
//! returned `Ready` stays open (it may have more), and the gate starts open.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// The state shared between a gate and the waker it hands to its source.
struct Flag {
    /// The source woke since it was last polled (or returned `Ready`).
    open: AtomicBool,
    /// The connection task, woken when the source is.
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.open.store(true, Ordering::Release);
        self.task.wake();
    }
}

pub(super) struct Gate {
    flag: Arc<Flag>,
    /// Wakes `flag`: the waker the source is polled with.
    waker: Waker,
}

impl Gate {
    pub(super) fn new() -> Gate {
        let flag = Arc::new(Flag {
            open: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(Arc::clone(&flag));
        Gate { flag, waker }
    }

    /// Poll the source through `poll` if it woke since it last returned `Pending`; otherwise
    /// `Pending` without touching it.
    pub(super) fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.flag.task.register(cx.waker());
        if !self.flag.open.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let ready = poll(&mut Context::from_waker(&self.waker));
        if ready.is_ready() {
            self.flag.open.store(true, Ordering::Release);
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_gated_source_is_polled_again_only_after_it_woke() {
        let gate = Gate::new();
        let polls = AtomicUsize::new(0);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(4);
        let mut recv = |cx: &mut Context<'_>| {
            polls.fetch_add(1, Ordering::Relaxed);
            rx.poll_recv(cx)
        };
        // Open at first: polled, nothing there, closed.
        assert!(
            poll_fn(|cx| Poll::Ready(gate.poll(cx, &mut recv)))
                .await
                .is_pending()
        );
        assert!(
            poll_fn(|cx| Poll::Ready(gate.poll(cx, &mut recv)))
                .await
                .is_pending()
        );
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        // A send wakes the source: the next poll reaches it and gets the value.
        tx.send(7).await.unwrap();
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            poll_fn(|cx| gate.poll(cx, &mut recv)),
        )
        .await
        .unwrap();
        assert_eq!(got, Some(7));
        assert_eq!(polls.load(Ordering::Relaxed), 2);
        // Ready leaves the gate open: the source is asked again.
        assert!(
            poll_fn(|cx| Poll::Ready(gate.poll(cx, &mut recv)))
                .await
                .is_pending()
        );
        assert_eq!(polls.load(Ordering::Relaxed), 3);
    }
}
