//! Per-connection metric handles of the streaming transports.
//!
//! - `ekg_connections{transport}` is kept by the connection permit (`limiter.rs`).
//! - `ekg_frames_sent_total{transport}` (counter): frames handed to the socket.
//! - `ekg_lagging_disconnects_total{transport}` (counter, `crate::telemetry`): connections
//!   ended because the client could not keep up.
//! - `ekg_drain_disconnects_total{transport}` (counter): connections ended with a `reconnect`
//!   frame while the host drains.
//! - `ekg_delivery_latency_seconds{transport}` (histogram, `crate::telemetry`): from reflektor's
//!   acceptance of a record to the hand-over of its frame to this client's socket, for events
//!   accepted while the connection was open (a backlog replayed on resume would measure the
//!   client's absence, not the pipeline). One clock read per write batch; recording is a few
//!   atomic additions, no allocation and no lock.

use metrics::{Counter, counter};

use shared::telemetry::LatencyHistogram;

use super::Transport;
use crate::rooms::Frame;
use crate::telemetry;

/// Frames handed to the socket (hello, reset, backlog, live, reconnect, lagging).
pub(super) const FRAMES_SENT: &str = "ekg_frames_sent_total";
/// Connections ended with a `reconnect` frame while the host drains.
pub(super) const DRAIN_DISCONNECTS: &str = "ekg_drain_disconnects_total";

/// Metric handles of one connection, looked up once when it opens.
pub(super) struct ConnectionMetrics {
    transport: Transport,
    frames_sent: Counter,
    latency: &'static LatencyHistogram,
    /// When the connection opened (Unix ms): frames of records accepted earlier are backlog.
    opened_ms: u64,
}

impl ConnectionMetrics {
    pub(super) fn new(transport: Transport) -> Self {
        ConnectionMetrics {
            transport,
            frames_sent: counter!(FRAMES_SENT, "transport" => transport.as_str()),
            latency: telemetry::delivery_latency(transport),
            // Whole milliseconds, as records are stamped.
            opened_ms: shared::telemetry::unix_ms_f64() as u64,
        }
    }

    /// A frame went to the socket at `now_ms` (one clock read per write batch): record its
    /// delivery latency if it is an event accepted while this connection was open.
    pub(super) fn delivered(&self, frame: &Frame, now_ms: f64) {
        if let Some(accepted) = frame.accepted_ms.filter(|&a| a >= self.opened_ms) {
            self.latency.record((now_ms - accepted as f64) / 1000.0);
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
