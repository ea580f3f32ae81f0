//! Every metric reflektor exports, by name, and the functions that record them.
//!
//! `docs/METRICS.md` documents each one with the alert it feeds. [`register`] describes them
//! all and creates the counters at zero, so a rate or an alert has a series from the first
//! scrape on, not only after the first event.

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

use crate::delivery::{Host, HostId};

/// Intake requests answered, by `status`.
pub const INTAKE_REQUESTS: &str = "reflektor_intake_requests_total";
/// Time from request to answer at intake, seconds.
pub const INTAKE_DURATION: &str = "reflektor_intake_duration_seconds";
/// Bytes of log on disk.
pub const LOG_BYTES: &str = "reflektor_log_bytes";
/// The log's disk quota (`--max-disk-bytes`); intake answers 503 beyond it.
pub const LOG_QUOTA_BYTES: &str = "reflektor_log_quota_bytes";
/// Log segments on disk.
pub const LOG_SEGMENTS: &str = "reflektor_log_segments";
/// Newest visible offset.
pub const LOG_HEAD: &str = "reflektor_log_head";
/// Oldest retained offset.
pub const LOG_OLDEST: &str = "reflektor_log_oldest";
/// 1 once the log has stopped accepting appends (a failed fdatasync); see `/readyz`.
pub const LOG_FAILED: &str = "reflektor_log_failed";
/// Idempotency keys in the dedupe window.
pub const DEDUPE_KEYS: &str = "reflektor_dedupe_keys";
/// Next offset to send, by `host`.
pub const HOST_CURSOR: &str = "reflektor_host_cursor";
/// Records the host has not applied yet (head - applied), by `host`.
pub const HOST_LAG_RECORDS: &str = "reflektor_host_lag_records";
/// Age of the oldest record not yet delivered, seconds, by `host`.
pub const HOST_LAG_SECONDS: &str = "reflektor_host_lag_seconds";
/// 1 when the last delivery attempt got an answer, by `host`.
pub const HOST_HEALTHY: &str = "reflektor_host_healthy";
/// From a record's acceptance to the host's acknowledgement, seconds, by `host`.
pub const DELIVERY_LATENCY: &str = "reflektor_delivery_latency_seconds";
/// Time of one delivery request, seconds, by `host`.
pub const DELIVERY_DURATION: &str = "reflektor_delivery_duration_seconds";
/// Delivery attempts that will be retried, by `host`.
pub const DELIVERY_RETRIES: &str = "reflektor_delivery_retries_total";
/// Entries in the dead-letter store.
pub const DEAD_LETTERS: &str = "reflektor_dead_letters";
/// Dead letters dropped because the store was full.
pub const DEAD_LETTERS_DROPPED: &str = "reflektor_dead_letters_dropped_total";

/// Status labels of [`INTAKE_REQUESTS`].
const INTAKE_STATUSES: [&str; 8] = ["202", "400", "401", "404", "405", "413", "503", "other"];

/// Describe every metric and create the process-wide counters at zero. Call once at start.
pub(crate) fn register(max_disk_bytes: u64) {
    describe_counter!(INTAKE_REQUESTS, "Intake requests answered, by status.");
    describe_histogram!(
        INTAKE_DURATION,
        Unit::Seconds,
        "Time from request to answer at intake."
    );
    describe_gauge!(LOG_BYTES, Unit::Bytes, "Bytes of log segments on disk.");
    describe_gauge!(
        LOG_QUOTA_BYTES,
        Unit::Bytes,
        "The log's disk quota (--max-disk-bytes)."
    );
    describe_gauge!(LOG_SEGMENTS, "Log segment files on disk.");
    describe_gauge!(LOG_HEAD, "Newest offset in the log.");
    describe_gauge!(LOG_OLDEST, "Oldest retained offset.");
    describe_gauge!(
        LOG_FAILED,
        "1 once the log stopped accepting appends after a failed fsync."
    );
    describe_gauge!(DEDUPE_KEYS, "Idempotency keys in the dedupe window.");
    describe_gauge!(HOST_CURSOR, "Next offset to send to the host.");
    describe_gauge!(HOST_LAG_RECORDS, "Records the host has not applied yet.");
    describe_gauge!(
        HOST_LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest record not yet delivered to the host."
    );
    describe_gauge!(
        HOST_HEALTHY,
        "1 when the host's last delivery attempt succeeded."
    );
    describe_histogram!(
        DELIVERY_DURATION,
        Unit::Seconds,
        "Time of one delivery request to the host."
    );
    describe_counter!(
        DELIVERY_RETRIES,
        "Delivery attempts to the host that will be retried."
    );
    describe_gauge!(DEAD_LETTERS, "Entries in the dead-letter store.");
    describe_counter!(
        DEAD_LETTERS_DROPPED,
        "Dead letters dropped because the store was full."
    );
    for status in INTAKE_STATUSES {
        counter!(INTAKE_REQUESTS, "status" => status).increment(0);
    }
    counter!(DEAD_LETTERS_DROPPED).increment(0);
    gauge!(LOG_QUOTA_BYTES).set(max_disk_bytes as f64);
}

pub(crate) fn intake_request(status: u16, took: Duration) {
    let label: &'static str = match status {
        202 => "202",
        400 => "400",
        401 => "401",
        404 => "404",
        405 => "405",
        413 => "413",
        503 => "503",
        _ => "other",
    };
    counter!(INTAKE_REQUESTS, "status" => label).increment(1);
    histogram!(INTAKE_DURATION).record(took.as_secs_f64());
}

pub(crate) fn delivery_latency(host: &HostId, took: Duration) {
    histogram!(DELIVERY_DURATION, "host" => host.0.clone()).record(took.as_secs_f64());
}

/// `host` acknowledged `records` (encoded, in the log's format): one clock read, then each
/// record's time since acceptance into the host's histogram.
pub(crate) fn acknowledged(host: &Host, records: &[bytes::Bytes]) {
    let now_ms = shared::telemetry::unix_ms_f64();
    for rec in records {
        if let Some(accepted) = shared::Record::peek_timestamp_ms(rec) {
            host.latency.record((now_ms - accepted as f64) / 1000.0);
        }
    }
}

/// Append [`DELIVERY_LATENCY`] of every host in the pool, in Prometheus text, to `out`.
pub(crate) fn render_delivery_latency(hosts: &[std::sync::Arc<Host>], out: &mut String) {
    out.push_str(concat!(
        "# HELP reflektor_delivery_latency_seconds From a record's acceptance to the host's acknowledgement of it.\n",
        "# TYPE reflektor_delivery_latency_seconds histogram\n",
    ));
    for host in hosts {
        let labels = format!("host=\"{}\"", host.id.0);
        host.latency.render(DELIVERY_LATENCY, &labels, out);
    }
}

pub(crate) fn delivery_retry(host: &HostId) {
    counter!(DELIVERY_RETRIES, "host" => host.0.clone()).increment(1);
}

pub(crate) fn dead_letters(n: usize) {
    gauge!(DEAD_LETTERS).set(n as f64);
}

pub(crate) fn dead_letter_dropped() {
    counter!(DEAD_LETTERS_DROPPED).increment(1);
}

pub(crate) fn log_stats(stats: &crate::log::LogStats, failed: bool, dedupe_keys: usize) {
    gauge!(LOG_FAILED).set(if failed { 1.0 } else { 0.0 });
    gauge!(LOG_BYTES).set(stats.bytes as f64);
    gauge!(LOG_SEGMENTS).set(stats.segments as f64);
    gauge!(LOG_HEAD).set(stats.head.0 as f64);
    gauge!(LOG_OLDEST).set(stats.oldest.0 as f64);
    gauge!(DEDUPE_KEYS).set(dedupe_keys as f64);
}

pub(crate) fn host(host: &HostId, cursor: u64, lag_records: u64, lag_seconds: f64, healthy: bool) {
    let id = host.0.clone();
    gauge!(HOST_CURSOR, "host" => id.clone()).set(cursor as f64);
    gauge!(HOST_LAG_RECORDS, "host" => id.clone()).set(lag_records as f64);
    gauge!(HOST_LAG_SECONDS, "host" => id.clone()).set(lag_seconds);
    gauge!(HOST_HEALTHY, "host" => id.clone()).set(if healthy { 1.0 } else { 0.0 });
    // Exists at zero from the host's first refresh, so its rate is defined before a retry.
    counter!(DELIVERY_RETRIES, "host" => id).increment(0);
}
