//! Drain on shutdown: every connection leaves at its own moment inside `drain_window`.
//!
//! When `AppState::shutdown` is cancelled, a connection waits [`DrainTurn::delay`] (uniform over
//! the window, drawn when the connection opens), then sends
//! `{"type":"reconnect","after_ms":N}` and closes. `after_ms` is a further uniform jitter below
//! [`RECONNECT_JITTER`], so even the clients closed at the same instant do not all come back at
//! once.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Upper bound of the `after_ms` a client is asked to wait before it reconnects.
pub(super) const RECONNECT_JITTER: Duration = Duration::from_secs(1);

/// One connection's place in the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DrainTurn {
    /// Time between the start of the drain and this connection's `reconnect` + close.
    pub(super) delay: Duration,
    /// What the `reconnect` frame asks the client to wait.
    pub(super) after_ms: u64,
}

impl DrainTurn {
    /// Draw a turn for a new connection, uniform over `window`.
    pub(super) fn draw(window: Duration) -> DrainTurn {
        DrainTurn::from_sample(random_u64(), window)
    }

    /// The turn for a 64-bit sample: the high 32 bits place the close in `window`, the low 32
    /// bits the reconnect jitter.
    pub(super) fn from_sample(sample: u64, window: Duration) -> DrainTurn {
        let high = (sample >> 32) as f64 / f64::from(u32::MAX);
        let low = (sample & 0xffff_ffff) as f64 / f64::from(u32::MAX);
        DrainTurn {
            delay: window.mul_f64(high.clamp(0.0, 1.0)),
            after_ms: (RECONNECT_JITTER.as_millis() as f64 * low.clamp(0.0, 1.0)) as u64,
        }
    }

    /// Resolve when this connection's turn to leave has come: never before `shutdown` is
    /// cancelled.
    pub(super) async fn wait(self, shutdown: CancellationToken) -> DrainTurn {
        shutdown.cancelled().await;
        tokio::time::sleep(self.delay).await;
        self
    }
}

/// A per-process random 64-bit number: std's randomly keyed hasher over a counter.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::collections::hash_map::RandomState::new().hash_one(n)
}
