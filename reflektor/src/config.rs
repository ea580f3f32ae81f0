//! Command-line flags (each with a `REFLEKTOR_*` environment variable), validated once into a
//! typed [`Config`]. Nothing else in the crate reads flags or the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use shared::telemetry::LogFormat;

use crate::delivery::{HostMode, HostUrl, StartAt};
use crate::log::FsyncPolicy;

/// HTTP intake relay: a durable log, replayed in order to a pool of hosts.
#[derive(Debug, Parser)]
#[command(name = "reflektor", version, about)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the chosen one is printed on stdout).
    #[arg(long, env = "REFLEKTOR_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Directory for the log, host cursors and dead letters.
    #[arg(long, env = "REFLEKTOR_DATA_DIR", default_value = "./data/reflektor")]
    pub data_dir: PathBuf,
    /// Host fed in batch mode (POST URL/_reflektor/ingest). Repeatable.
    #[arg(long = "host", env = "REFLEKTOR_HOST", value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Host fed in replay mode (each record as its original request). Repeatable.
    #[arg(
        long = "replay-host",
        env = "REFLEKTOR_REPLAY_HOST",
        value_delimiter = ','
    )]
    pub replay_hosts: Vec<String>,
    /// When an append counts as durable: after fsync (always), after write with an fsync every
    /// --fsync-interval-ms (interval), or after write (never).
    #[arg(long, env = "REFLEKTOR_FSYNC", value_enum, default_value_t = FsyncArg::Interval)]
    pub fsync: FsyncArg,
    /// Milliseconds between fsyncs under --fsync interval.
    #[arg(long, env = "REFLEKTOR_FSYNC_INTERVAL_MS", default_value_t = 5)]
    pub fsync_interval_ms: u64,
    /// Intake and /_reflektor/ require `Authorization: Bearer TOKEN`.
    #[arg(long, env = "REFLEKTOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the token from a file.
    #[arg(long, env = "REFLEKTOR_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Secret that signs every delivery (HMAC-SHA256).
    #[arg(long, env = "REFLEKTOR_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Read the secret from a file.
    #[arg(long, env = "REFLEKTOR_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Largest request body intake accepts (e.g. 1MiB, 64KiB).
    #[arg(long, env = "REFLEKTOR_MAX_BODY", default_value = "1MiB")]
    pub max_body: String,
    /// Keep segments at least this long (e.g. 24h, 30m).
    #[arg(long, env = "REFLEKTOR_RETENTION", default_value = "24h")]
    pub retention: String,
    /// Keep at least this many bytes of log (e.g. 1GiB).
    #[arg(long, env = "REFLEKTOR_RETENTION_BYTES", default_value = "1GiB")]
    pub retention_bytes: String,
    /// Disk quota for the log; intake answers 503 beyond it.
    #[arg(long, env = "REFLEKTOR_MAX_DISK_BYTES", default_value = "8GiB")]
    pub max_disk_bytes: String,
    /// How long a repeated Idempotency-Key answers with the first record's id.
    #[arg(long, env = "REFLEKTOR_DEDUPE_WINDOW", default_value = "10m")]
    pub dedupe_window: String,
    /// Extra request header kept with each record and replayed. Repeatable.
    #[arg(
        long = "keep-header",
        env = "REFLEKTOR_KEEP_HEADER",
        value_delimiter = ','
    )]
    pub keep_headers: Vec<String>,
    /// Where a host added without a stored cursor starts: the oldest retained record or the tail.
    #[arg(long, env = "REFLEKTOR_NEW_HOST_START", value_enum, default_value_t = StartArg::Oldest)]
    pub new_host_start: StartArg,
    /// Most records in one batch.
    #[arg(long, env = "REFLEKTOR_BATCH_MAX_RECORDS", default_value_t = 1000)]
    pub batch_max_records: usize,
    /// Most record bytes in one batch (a single larger record still goes alone).
    #[arg(long, env = "REFLEKTOR_BATCH_MAX_BYTES", default_value = "1MiB")]
    pub batch_max_bytes: String,
    /// Time limit of one delivery request; past it the delivery is retried.
    #[arg(long, env = "REFLEKTOR_DELIVERY_TIMEOUT", default_value = "10s")]
    pub delivery_timeout: String,
    /// Origin allowed to post to intake from a browser (CORS); `*` for any. Repeatable.
    #[arg(
        long = "cors-origin",
        env = "REFLEKTOR_CORS_ORIGIN",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// Longest a SIGTERM/SIGINT shutdown may take.
    #[arg(long, env = "REFLEKTOR_SHUTDOWN_TIMEOUT", default_value = "10s")]
    pub shutdown_timeout: String,

    /// Log lines on stderr: human-readable text, or one JSON object per line.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Cluster mode: keep the log, the host table and the dead letters in NATS JetStream on
    /// these servers (comma-separated `nats://HOST:PORT`) instead of --data-dir.
    #[arg(long, env = "REFLEKTOR_NATS", value_delimiter = ',')]
    pub nats: Vec<String>,
    /// Cluster mode: the JetStream stream holding the log (also names its KV buckets).
    #[arg(long, env = "REFLEKTOR_STREAM", default_value = "reflektor")]
    pub stream: String,
    /// Cluster mode: replicas of the stream and buckets (a 202 waits for a quorum of them).
    #[arg(long, env = "REFLEKTOR_REPLICAS", default_value_t = 3)]
    pub replicas: usize,
    /// Cluster mode: how long a dead instance's delivery lease outlives it (takeover time).
    #[arg(long, env = "REFLEKTOR_LEASE_TTL", default_value = "3s")]
    pub lease_ttl: String,
}

/// Cluster mode's settings (`--nats` and what goes with it).
#[derive(Clone, Debug)]
pub struct NatsConfig {
    pub urls: Vec<String>,
    pub stream: String,
    pub replicas: usize,
    pub lease_ttl: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FsyncArg {
    Always,
    Interval,
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StartArg {
    Oldest,
    Tail,
}

/// Validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Hosts from the command line, merged into the stored pool at startup.
    pub hosts: Vec<(HostUrl, HostMode)>,
    pub fsync: FsyncPolicy,
    pub fsync_interval: Duration,
    pub token: Option<String>,
    pub secret: Option<String>,
    pub max_body: usize,
    pub retention: Duration,
    pub retention_bytes: u64,
    pub max_disk_bytes: u64,
    pub dedupe_window: Duration,
    /// Lowercase header names kept with each record.
    pub keep_headers: Vec<String>,
    pub new_host_start: StartAt,
    pub batch_max_records: usize,
    pub batch_max_bytes: usize,
    pub delivery_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// Cluster mode when set: the log and the shared state live in JetStream.
    pub nats: Option<NatsConfig>,
    /// Origins allowed by CORS (`*` for any); empty: no CORS headers.
    pub cors_origins: Vec<String>,
}

/// Headers that are part of every record anyway or that make no sense to replay.
const UNKEEPABLE: &[&str] = &[
    "content-type",
    "idempotency-key",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "authorization",
];

impl Config {
    /// Validate parsed flags.
    ///
    /// # Errors
    /// A message naming the flag and what is wrong with its value.
    pub fn from_args(args: Args) -> Result<Config, String> {
        let mut hosts = Vec::new();
        for (urls, mode) in [
            (&args.hosts, HostMode::Batch),
            (&args.replay_hosts, HostMode::Replay),
        ] {
            for u in urls {
                let url = HostUrl::parse(u).map_err(|e| format!("--host/--replay-host: {e}"))?;
                if hosts.iter().any(|(h, _)| h == &url) {
                    return Err(format!("host {url} is given more than once"));
                }
                hosts.push((url, mode));
            }
        }
        let token = shared::config::read_secret(
            args.token.as_deref(),
            args.token_file.as_deref(),
            "token",
        )?;
        let secret = shared::config::read_secret(
            args.secret.as_deref(),
            args.secret_file.as_deref(),
            "secret",
        )?;
        let bytes = |flag: &str, v: &str| {
            shared::config::parse_bytes(v).map_err(|e| format!("--{flag}: {e}"))
        };
        let duration = |flag: &str, v: &str| {
            shared::config::parse_duration(v).map_err(|e| format!("--{flag}: {e}"))
        };
        let max_body = bytes("max-body", &args.max_body)?;
        if max_body == 0 || max_body > u64::from(u32::MAX) {
            return Err("--max-body: must be between 1 byte and 4GiB".into());
        }
        let batch_max_bytes = bytes("batch-max-bytes", &args.batch_max_bytes)?;
        if batch_max_bytes == 0 {
            return Err("--batch-max-bytes: must be at least 1 byte".into());
        }
        if args.batch_max_records == 0 || args.batch_max_records > u32::MAX as usize {
            return Err("--batch-max-records: must be at least 1".into());
        }
        if args.fsync_interval_ms == 0 {
            return Err("--fsync-interval-ms: must be at least 1".into());
        }
        let max_disk_bytes = bytes("max-disk-bytes", &args.max_disk_bytes)?;
        if max_disk_bytes == 0 {
            return Err("--max-disk-bytes: must be above 0".into());
        }
        let delivery_timeout = duration("delivery-timeout", &args.delivery_timeout)?;
        if delivery_timeout.is_zero() {
            return Err("--delivery-timeout: must be above 0".into());
        }
        let mut keep_headers = Vec::new();
        for h in &args.keep_headers {
            let name = h.trim().to_ascii_lowercase();
            if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || name.len() > usize::from(u8::MAX)
            {
                return Err(format!("--keep-header: {h:?} is not a header name"));
            }
            if UNKEEPABLE.contains(&name.as_str()) {
                return Err(format!(
                    "--keep-header: {name} cannot be kept (it is always kept or never replayed)"
                ));
            }
            if !keep_headers.contains(&name) {
                keep_headers.push(name);
            }
        }
        if keep_headers.len() > shared::record::MAX_HEADERS {
            return Err("--keep-header: too many headers".into());
        }
        for o in &args.cors_origins {
            if o != "*" && axum::http::HeaderValue::from_str(o).is_err() {
                return Err(format!("--cors-origin: {o:?} is not an origin"));
            }
        }
        let nats = nats_config(&args)?;
        Ok(Config {
            listen: args.listen,
            cors_origins: args.cors_origins,
            data_dir: args.data_dir,
            hosts,
            fsync: match args.fsync {
                FsyncArg::Always => FsyncPolicy::Always,
                FsyncArg::Interval => FsyncPolicy::Interval,
                FsyncArg::Never => FsyncPolicy::Never,
            },
            fsync_interval: Duration::from_millis(args.fsync_interval_ms),
            token,
            secret,
            max_body: usize::try_from(max_body).map_err(|_| "--max-body: too large")?,
            retention: duration("retention", &args.retention)?,
            retention_bytes: bytes("retention-bytes", &args.retention_bytes)?,
            max_disk_bytes,
            dedupe_window: duration("dedupe-window", &args.dedupe_window)?,
            keep_headers,
            new_host_start: match args.new_host_start {
                StartArg::Oldest => StartAt::Oldest,
                StartArg::Tail => StartAt::Tail,
            },
            batch_max_records: args.batch_max_records,
            batch_max_bytes: usize::try_from(batch_max_bytes)
                .map_err(|_| "--batch-max-bytes: too large")?,
            delivery_timeout,
            shutdown_timeout: duration("shutdown-timeout", &args.shutdown_timeout)?,
            nats,
        })
    }

    /// Whether the log and the shared state live in JetStream (`--nats`).
    pub fn is_cluster(&self) -> bool {
        self.nats.is_some()
    }

    /// A configuration with every default, for tests.
    pub fn for_dir(data_dir: PathBuf) -> Config {
        let mut args = Args::parse_from(["reflektor"]);
        args.data_dir = data_dir;
        // The defaults are valid by construction; tested below.
        match Config::from_args(args) {
            Ok(c) => c,
            Err(e) => unreachable!("default flags are valid: {e}"),
        }
    }
}

/// Validate the cluster-mode flags; `None` without `--nats`.
fn nats_config(args: &Args) -> Result<Option<NatsConfig>, String> {
    let urls: Vec<String> = args
        .nats
        .iter()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        return Ok(None);
    }
    for u in &urls {
        if u.parse::<async_nats::ServerAddr>().is_err() {
            return Err(format!(
                "--nats: {u:?} is not a NATS URL (nats://HOST:PORT)"
            ));
        }
    }
    crate::log::jetstream::validate_stream_name(&args.stream)
        .map_err(|e| format!("--stream: {e}"))?;
    if !(1..=5).contains(&args.replicas) {
        return Err("--replicas: must be between 1 and 5 (JetStream's limit)".into());
    }
    let lease_ttl =
        shared::config::parse_duration(&args.lease_ttl).map_err(|e| format!("--lease-ttl: {e}"))?;
    if lease_ttl < crate::cluster::MIN_LEASE_TTL {
        return Err("--lease-ttl: must be at least 1s".into());
    }
    Ok(Some(NatsConfig {
        urls,
        stream: args.stream.clone(),
        replicas: args.replicas,
        lease_ttl,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["reflektor"];
        argv.extend_from_slice(extra);
        Config::from_args(Args::try_parse_from(argv).map_err(|e| e.to_string())?)
    }

    #[test]
    fn defaults_are_valid() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.max_body, 1 << 20);
        assert_eq!(c.fsync, FsyncPolicy::Interval);
        assert_eq!(c.fsync_interval, Duration::from_millis(5));
        assert_eq!(c.retention, Duration::from_secs(86_400));
        assert_eq!(c.dedupe_window, Duration::from_secs(600));
        assert_eq!(c.batch_max_records, 1000);
        assert!(c.hosts.is_empty() && c.token.is_none() && c.secret.is_none());
    }

    #[test]
    fn sizes_durations_and_hosts_are_parsed() {
        let c = parse(&[
            "--max-body",
            "64KiB",
            "--host",
            "http://127.0.0.1:1/",
            "--replay-host",
            "http://127.0.0.1:2",
            "--keep-header",
            "X-Request-Id",
            "--retention",
            "30m",
        ])
        .unwrap();
        assert_eq!(c.max_body, 64 << 10);
        assert_eq!(c.hosts.len(), 2);
        assert_eq!(c.hosts[0].0.as_str(), "http://127.0.0.1:1");
        assert_eq!(c.hosts[1].1, HostMode::Replay);
        assert_eq!(c.keep_headers, vec!["x-request-id".to_owned()]);
        assert_eq!(c.retention, Duration::from_secs(1800));
    }

    #[test]
    fn cluster_flags_are_parsed_and_checked() {
        assert!(parse(&[]).unwrap().nats.is_none());
        let c = parse(&[
            "--nats",
            "nats://127.0.0.1:4222,nats://127.0.0.1:4223",
            "--replicas",
            "1",
            "--lease-ttl",
            "2s",
        ])
        .unwrap();
        let n = c.nats.unwrap();
        assert_eq!(n.urls.len(), 2);
        assert_eq!((n.stream.as_str(), n.replicas), ("reflektor", 1));
        assert_eq!(n.lease_ttl, Duration::from_secs(2));
        for (argv, flag) in [
            (vec!["--nats", "nats://x:1", "--stream", "a.b"], "--stream"),
            (
                vec!["--nats", "nats://x:1", "--replicas", "0"],
                "--replicas",
            ),
            (
                vec!["--nats", "nats://x:1", "--lease-ttl", "10ms"],
                "--lease-ttl",
            ),
        ] {
            let err = parse(&argv).unwrap_err();
            assert!(err.contains(flag), "{argv:?}: {err}");
        }
    }

    #[test]
    fn bad_values_are_rejected_with_the_flag_named() {
        for (argv, flag) in [
            (vec!["--max-body", "lots"], "--max-body"),
            (vec!["--max-body", "0"], "--max-body"),
            (vec!["--retention", "soon"], "--retention"),
            (vec!["--host", "ftp://x"], "--host"),
            (vec!["--keep-header", "bad header"], "--keep-header"),
            (vec!["--batch-max-records", "0"], "--batch-max-records"),
            (
                vec!["--token", "a", "--token-file", "/nonexistent"],
                "token",
            ),
        ] {
            let err = parse(&argv).unwrap_err();
            assert!(err.contains(flag), "{argv:?}: {err}");
        }
    }
}
