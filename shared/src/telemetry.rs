//! Logging, metrics and the listening line, set up the same way by both binaries.
//!
//! Logs go to stderr, as text (the default) or as one JSON object per line
//! (`--log-format json` or `LOG_FORMAT=json`; see [`LogFormat`]). stdout carries exactly one
//! line, printed once the server is serving: `NAME listening on http://ADDR`, which scripts and
//! tests read to find a port-0 server.
//!
//! # JSON lines
//! Each line is one object with `timestamp` (RFC 3339, UTC), `level`, `target`, `message`, the
//! event's own fields at the top level (`request_id`, `offset`, `host`, ...), and `span` /
//! `spans` when the event happened inside a span. A field an event repeats from its span is
//! written once per place, so a log shipper can index `request_id` wherever it appears.

use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Structured logs to stderr. `RUST_LOG` overrides `default_filter` (e.g. `"reflektor=info"`).
///
/// A second call in the same process (tests running several servers) keeps the first
/// subscriber.
pub fn init_tracing(default_filter: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}

/// Histogram bucket bounds (seconds) of every histogram both services export.
pub const BUCKETS: [f64; 17] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// How often the recorder folds recorded histogram samples into its buckets. The recorder
/// keeps raw samples until then (or until a scrape), so without it an unscraped process would
/// hold every sample ever recorded.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process-wide Prometheus recorder, installed on first use. A thread folds histogram
/// samples into buckets every few seconds, so memory stays bounded whether or not anyone scrapes.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .map(PrometheusBuilder::build_recorder);
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    let upkeep = handle.clone();
                    // A detached thread for the life of the process; if it cannot start, the
                    // samples are still folded at every scrape.
                    let _thread = std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(UPKEEP_EVERY);
                                upkeep.run_upkeep();
                            }
                        });
                    // Another recorder may already be installed (an embedding program's own);
                    // metrics then go there and this handle renders what it has.
                    let _other_recorder = metrics::set_global_recorder(recorder);
                    handle
                }
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Print the one stdout line that says the server is serving.
pub fn announce(name: &str, addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    // If stdout is closed there is nobody to tell; serving goes on.
    let _closed = writeln!(out, "{name} listening on http://{addr}").and_then(|()| out.flush());
}

/// A latency histogram with fixed buckets ([`BUCKETS`]) for hot paths: recording is a few
/// relaxed atomic additions, with no allocation and no lock (the `metrics` recorder keeps every
/// raw sample until its upkeep, too much for one sample per delivered frame). Rendered in
/// Prometheus text by [`LatencyHistogram::render`], next to the recorder's output.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Per bucket (non-cumulative), the last slot for samples above every bound.
    counts: [AtomicU64; BUCKETS.len() + 1],
    /// Sum of samples in microseconds.
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    pub const fn new() -> LatencyHistogram {
        LatencyHistogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS.len() + 1],
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Record one sample, in seconds (negative samples, from clocks that disagree, count as 0).
    pub fn record(&self, seconds: f64) {
        let seconds = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        let i = BUCKETS.partition_point(|&b| b < seconds);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        // Saturating float-to-int conversion: at most u64::MAX microseconds.
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Samples recorded so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Append `NAME_bucket`, `NAME_sum` and `NAME_count` lines with `labels` (already formatted,
    /// e.g. `transport="ws"`, or empty) to `out`. The `# TYPE` line is the caller's, once per
    /// name.
    pub fn render(&self, name: &str, labels: &str, out: &mut String) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _infallible = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _infallible = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _infallible = writeln!(out, "{name}_sum{braces} {sum}");
        let _infallible = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// Milliseconds since the Unix epoch, with sub-millisecond precision (for latencies against
/// a record's acceptance time, which is in whole milliseconds).
pub fn unix_ms_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_histogram_renders_cumulative_buckets_sum_and_count() {
        let h = LatencyHistogram::new();
        for s in [0.0004, 0.0004, 0.003, 42.0, -1.0] {
            h.record(s);
        }
        assert_eq!(h.count(), 5);
        let mut out = String::new();
        h.render("x_seconds", r#"transport="ws""#, &mut out);
        assert!(
            out.contains("x_seconds_bucket{transport=\"ws\",le=\"0.00005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{transport=\"ws\",le=\"0.0005\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{transport=\"ws\",le=\"0.005\"} 4\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{transport=\"ws\",le=\"10\"} 4\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{transport=\"ws\",le=\"+Inf\"} 5\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_count{transport=\"ws\"} 5\n"),
            "{out}"
        );
        let sum: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("x_seconds_sum{transport=\"ws\"} "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 42.0038).abs() < 1e-6, "{sum}");
        let mut bare = String::new();
        LatencyHistogram::new().render("y", "", &mut bare);
        assert!(
            bare.contains("y_bucket{le=\"+Inf\"} 0\n") && bare.contains("y_count 0\n"),
            "{bare}"
        );
    }
}
