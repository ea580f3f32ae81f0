//! Every metric reflektor exports, by name, and the functions that record them.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use crate::delivery::HostId;

/// Intake requests answered, by `status`.
pub const INTAKE_REQUESTS: &str = "reflektor_intake_requests_total";
/// Time from request to answer at intake, seconds.
pub const INTAKE_DURATION: &str = "reflektor_intake_duration_seconds";
/// Bytes of log on disk.
pub const LOG_BYTES: &str = "reflektor_log_bytes";
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
/// Time of one delivery request, seconds, by `host`.
pub const DELIVERY_DURATION: &str = "reflektor_delivery_duration_seconds";
/// Delivery attempts that will be retried, by `host`.
pub const DELIVERY_RETRIES: &str = "reflektor_delivery_retries_total";
/// Entries in the dead-letter store.
pub const DEAD_LETTERS: &str = "reflektor_dead_letters";
/// Dead letters dropped because the store was full.
pub const DEAD_LETTERS_DROPPED: &str = "reflektor_dead_letters_dropped_total";

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
    gauge!(HOST_HEALTHY, "host" => id).set(if healthy { 1.0 } else { 0.0 });
}
