//! Per-connection metric handles of the streaming transports.
//!
//! - `ekg_connections{transport}` is kept by the connection permit (`rooms::connections`).
//! - `ekg_frames_sent_total{transport}` (counter): frames handed to the socket.
//! - `ekg_lagging_disconnects_total{transport}` (counter, `crate::telemetry`): connections
//!   ended because the client could not keep up.
//! - `ekg_drain_disconnects_total{transport}` (counter): connections ended with a `reconnect`
//!   frame while the host drains.

use metrics::{Counter, counter};

use crate::rooms::Transport;
use crate::telemetry;

/// Frames handed to the socket (hello, reset, backlog, live, reconnect, lagging).
pub(super) const FRAMES_SENT: &str = "ekg_frames_sent_total";
/// Connections ended with a `reconnect` frame while the host drains.
pub(super) const DRAIN_DISCONNECTS: &str = "ekg_drain_disconnects_total";

/// Metric handles of one connection, looked up once when it opens.
pub(super) struct ConnectionMetrics {
    transport: Transport,
    frames_sent: Counter,
}

impl ConnectionMetrics {
    pub(super) fn new(transport: Transport) -> Self {
        ConnectionMetrics {
            transport,
            frames_sent: counter!(FRAMES_SENT, "transport" => transport.as_str()),
        }
    }

    pub(super) fn frames_sent(&self, n: usize) {
        if n > 0 {
            self.frames_sent.increment(n as u64);
        }
    }

    pub(super) fn lagging(&self) {
        telemetry::lagging_disconnect(self.transport);
    }

    pub(super) fn drained(&self) {
        counter!(DRAIN_DISCONNECTS, "transport" => self.transport.as_str()).increment(1);
    }
}
