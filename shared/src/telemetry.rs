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

use std::io::Write;
use std::net::SocketAddr;
use std::sync::OnceLock;

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

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .map(PrometheusBuilder::build_recorder);
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
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
