//! How the JetStream log is configured.

use std::time::Duration;

/// Where the stream lives and how it is set up. Built from the flags in `crate::config`.
#[derive(Clone, Debug)]
pub struct JetStreamConfig {
    /// NATS servers to connect to (`nats://host:port`); any one reachable is enough.
    pub urls: Vec<String>,
    /// Stream name (`--stream`); also names the subject and the KV buckets.
    pub stream: String,
    /// Replicas of the stream and of every bucket (`--replicas`).
    pub replicas: usize,
    /// Stream `max_age` (`--retention`): records older than this are deleted by JetStream.
    pub max_age: Duration,
    /// Stream `max_bytes` (`--retention-bytes`): past it JetStream deletes the oldest records.
    pub max_bytes: u64,
    /// Stream `duplicate_window` (`--dedupe-window`): an `Idempotency-Key` repeated within it
    /// answers the first record's offset.
    pub duplicate_window: Duration,
    /// Recent records kept in memory for delivery workers.
    pub cache_bytes: usize,
    /// Appends waiting for JetStream's acknowledgement; beyond it appends fail with `Busy`.
    pub max_pending_appends: usize,
    /// Bound on connecting and on every JetStream request (stream info, publish ack, KV).
    pub request_timeout: Duration,
}

/// Longest stream name accepted (JetStream allows more; the KV bucket names derived from it
/// must stay readable).
pub const MAX_STREAM_NAME: usize = 64;

impl JetStreamConfig {
    /// Defaults for everything but the servers: stream `reflektor`, 3 replicas, 24 h / 1 GiB
    /// retention, a 10 min duplicate window, a 64 MiB cache, 16384 pending appends, 5 s requests.
    pub fn new(urls: Vec<String>) -> JetStreamConfig {
        JetStreamConfig {
            urls,
            stream: "reflektor".into(),
            replicas: 3,
            max_age: Duration::from_secs(24 * 3600),
            max_bytes: 1 << 30,
            duplicate_window: Duration::from_secs(600),
            cache_bytes: 64 << 20,
            max_pending_appends: 16384,
            request_timeout: Duration::from_secs(5),
        }
    }

    /// The one subject the stream holds: `reflektor.<stream>.records`.
    pub fn subject(&self) -> String {
        format!("reflektor.{}.records", self.stream)
    }
}

/// Check a `--stream` value: 1 to 64 of `A-Z a-z 0-9 _ -` (it becomes part of subject and
/// bucket names, where dots, wildcards and spaces mean something else).
///
/// # Errors
/// A message saying what is wrong with `name`.
pub fn validate_stream_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_STREAM_NAME {
        return Err(format!(
            "{name:?} must be 1 to {MAX_STREAM_NAME} characters"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "{name:?} may only hold letters, digits, '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_that_would_break_subjects_are_refused() {
        assert!(validate_stream_name("reflektor").is_ok());
        assert!(validate_stream_name("orders_v2-eu").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(65)] {
            assert!(validate_stream_name(bad).is_err(), "{bad:?}");
        }
    }
}
