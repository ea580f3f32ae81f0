//! Every metric ekg exports, by name, in one place. Rendered at `GET /metrics` through
//! `shared::telemetry::prometheus()`.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `ekg_connections` | gauge | `transport` = `ws` \| `sse` | open streaming connections |
//! | `ekg_connections_refused_total` | counter | | upgrades refused at `--max-connections` |
//! | `ekg_rooms` | gauge | | rooms held in memory |
//! | `ekg_history_events` | gauge | | events retained for resume, all rooms |
//! | `ekg_history_messages` | gauge | | messages retained for paging, all rooms |
//! | `ekg_events_applied_total` | counter | `kind` = `message` \| `update` \| `delete` \| `event` | events applied and pushed |
//! | `ekg_applied_offset` | gauge | | the highest reflektor offset (or standalone seq) applied |
//! | `ekg_ingest_batches_total` | counter | | batches (heartbeats included) accepted |
//! | `ekg_rejected_records_total` | counter | `status` | records refused on their own merits |
//! | `ekg_lagging_disconnects_total` | counter | `transport` | clients closed for not keeping up |
//! | `ekg_epoch_resets_total` | counter | | times a new log (epoch) replaced all rooms |
//! | `ekg_ready` | gauge | | 1 once caught up with the log |
//! | `ekg_delivery_latency_seconds` | histogram | `transport` | record accepted by reflektor to frame written to a client |
//! | `ekg_ingest_refused_total` | counter | `error` | deliveries and writes refused as a whole (bad or stale signature, out of order, old epoch, overloaded, ...) |
//!
//! `docs/METRICS.md` documents each one with the alert it feeds. [`register`] describes them and
//! creates the counters at zero, so rates and alerts have a series from the first scrape on.

use metrics::{counter, describe_counter, describe_gauge, gauge};
use shared::telemetry::LatencyHistogram;

use crate::rooms::EventKind;
use crate::streams::Transport;

pub const CONNECTIONS: &str = "ekg_connections";
pub const CONNECTIONS_REFUSED: &str = "ekg_connections_refused_total";
pub const ROOMS: &str = "ekg_rooms";
pub const HISTORY_EVENTS: &str = "ekg_history_events";
pub const HISTORY_MESSAGES: &str = "ekg_history_messages";
pub const EVENTS_APPLIED: &str = "ekg_events_applied_total";
pub const APPLIED_OFFSET: &str = "ekg_applied_offset";
pub const INGEST_BATCHES: &str = "ekg_ingest_batches_total";
pub const REJECTED_RECORDS: &str = "ekg_rejected_records_total";
pub const LAGGING_DISCONNECTS: &str = "ekg_lagging_disconnects_total";
pub const EPOCH_RESETS: &str = "ekg_epoch_resets_total";
pub const READY: &str = "ekg_ready";
/// From reflektor's acceptance of a record to the write of its frame to a client, by transport.
pub const DELIVERY_LATENCY: &str = "ekg_delivery_latency_seconds";

/// [`DELIVERY_LATENCY`] of WebSocket clients. Fixed buckets, recorded without allocation on the
/// write path of every connection.
static DELIVERY_LATENCY_WS: LatencyHistogram = LatencyHistogram::new();
/// [`DELIVERY_LATENCY`] of SSE clients.
static DELIVERY_LATENCY_SSE: LatencyHistogram = LatencyHistogram::new();

/// The delivery latency histogram of `transport`.
pub fn delivery_latency(transport: Transport) -> &'static LatencyHistogram {
    match transport {
        Transport::Ws => &DELIVERY_LATENCY_WS,
        Transport::Sse => &DELIVERY_LATENCY_SSE,
    }
}

/// Append [`DELIVERY_LATENCY`] in Prometheus text to `out` (the `metrics` recorder renders
/// the rest).
pub fn render_delivery_latency(out: &mut String) {
    out.push_str(concat!(
        "# HELP ekg_delivery_latency_seconds From reflektor's acceptance of a record to the write of its frame to a client, by transport.\n",
        "# TYPE ekg_delivery_latency_seconds histogram\n",
    ));
    for transport in [Transport::Ws, Transport::Sse] {
        let labels = format!("transport=\"{}\"", transport.as_str());
        delivery_latency(transport).render(DELIVERY_LATENCY, &labels, out);
    }
}
pub const INGEST_REFUSED: &str = "ekg_ingest_refused_total";

/// At most one warning line per error code in this long; the rest are only counted.
pub const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// When each error code was last logged by [`warn_throttled`] (Unix ms).
static LAST_WARNED: std::sync::LazyLock<dashmap::DashMap<&'static str, u64>> =
    std::sync::LazyLock::new(dashmap::DashMap::new);

/// Log a warning about a refused request, at most once per [`WARN_EVERY`] per `code`, so a
/// misconfigured sender is seen at once and a flood of hostile requests does not flood the log
/// (every refusal is counted in `ekg_ingest_refused_total` regardless).
pub fn warn_throttled(code: &'static str, message: &str) {
    let now = crate::rooms::now_ms();
    let every = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
    let due = {
        let mut last = LAST_WARNED.entry(code).or_insert(0);
        if now.saturating_sub(*last) >= every {
            *last = now;
            true
        } else {
            false
        }
    };
    if due {
        tracing::warn!(
            code,
            message,
            "ingest refused (further refusals with this code in the next {WARN_EVERY:?} are only counted)"
        );
    }
}

/// Describe every metric and create the counters and gauges at zero. Call once at start.
pub fn register() {
    describe_gauge!(CONNECTIONS, "Open streaming connections, by transport.");
    describe_counter!(CONNECTIONS_REFUSED, "Streams refused at --max-connections.");
    describe_gauge!(ROOMS, "Rooms held in memory.");
    describe_gauge!(HISTORY_EVENTS, "Events retained for resume, all rooms.");
    describe_gauge!(HISTORY_MESSAGES, "Messages retained for paging, all rooms.");
    describe_counter!(EVENTS_APPLIED, "Events applied and pushed, by kind.");
    describe_gauge!(
        APPLIED_OFFSET,
        "Highest reflektor offset (or standalone seq) applied."
    );
    describe_counter!(
        INGEST_BATCHES,
        "Batches accepted from reflektor, heartbeats included."
    );
    describe_counter!(
        REJECTED_RECORDS,
        "Records refused on their own merits, by status."
    );
    describe_counter!(
        LAGGING_DISCONNECTS,
        "Clients disconnected for not keeping up, by transport."
    );
    describe_counter!(EPOCH_RESETS, "Times a new log (epoch) replaced every room.");
    describe_gauge!(READY, "1 once this host has caught up with the log.");
    describe_counter!(
        INGEST_REFUSED,
        "Deliveries and writes refused as a whole, by error code."
    );
    for transport in [Transport::Ws, Transport::Sse] {
        gauge!(CONNECTIONS, "transport" => transport.as_str()).increment(0.0);
        counter!(LAGGING_DISCONNECTS, "transport" => transport.as_str()).increment(0);
    }
    for kind in [
        EventKind::Message,
        EventKind::Update,
        EventKind::Delete,
        EventKind::Event,
    ] {
        counter!(EVENTS_APPLIED, "kind" => kind.as_str()).increment(0);
    }
    // The statuses a record can be refused with on its merits (bad body, unknown message or
    // path, method, too large, duplicate id): present at zero so the first refusal shows as an
    // increase.
    for status in ["400", "404", "405", "413", "422"] {
        counter!(REJECTED_RECORDS, "status" => status).increment(0);
    }
    counter!(CONNECTIONS_REFUSED).increment(0);
    counter!(INGEST_BATCHES).increment(0);
    counter!(EPOCH_RESETS).increment(0);
}

/// Count a client closed because it could not keep up with its room.
pub fn lagging_disconnect(transport: Transport) {
    counter!(LAGGING_DISCONNECTS, "transport" => transport.as_str()).increment(1);
}
