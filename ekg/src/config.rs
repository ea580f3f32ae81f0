//! Command-line flags (each with an `EKG_*` environment variable) and the validated [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::HeaderValue;
use clap::Parser;
use shared::config::{parse_bytes, parse_duration, read_secret};
use shared::telemetry::LogFormat;

use crate::rooms::Retention;

/// ekg: rooms, history paging, WebSocket and SSE fan-out with resume.
#[derive(Debug, Parser)]
#[command(name = "ekg", version, about)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "EKG_LISTEN", default_value = "127.0.0.1:7080")]
    pub listen: SocketAddr,

    /// Shared secret: ingest (batches and replayed requests) must carry a valid reflektor
    /// signature made with it. Repeatable: a signature made with any of them is accepted, so a
    /// secret can be rotated without downtime.
    #[arg(long, env = "EKG_SECRET", hide_env_values = true)]
    pub secret: Vec<String>,

    /// Read secrets from this file: one per line (blank lines and lines starting with `#` are
    /// ignored). Repeatable; adds to --secret.
    #[arg(long, env = "EKG_SECRET_FILE")]
    pub secret_file: Vec<PathBuf>,

    /// A delivery whose signed timestamp is further than this from this host's clock is
    /// refused, so a captured delivery cannot be replayed later.
    #[arg(long, env = "EKG_SIGNATURE_WINDOW", default_value = "5m", value_parser = parse_duration)]
    pub signature_window: Duration,

    /// Accept unsigned ingest: anyone who reaches this host may write to every room. Without
    /// it, a host that is neither --standalone nor given a secret refuses to start.
    #[arg(long, env = "EKG_INSECURE_UNSIGNED_INGEST")]
    pub insecure_unsigned_ingest: bool,

    /// Accept the room write API directly (with --token); ekg assigns seqs itself.
    #[arg(long, env = "EKG_STANDALONE")]
    pub standalone: bool,

    /// Bearer token for the room write API in standalone mode.
    #[arg(long, env = "EKG_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Read the standalone token from this file instead.
    #[arg(long, env = "EKG_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Events kept per room for resume, and messages kept per room for paging.
    #[arg(long, env = "EKG_HISTORY_PER_ROOM", default_value_t = 1000)]
    pub history_per_room: usize,

    /// Events and messages older than this are dropped (e.g. 24h, 30m).
    #[arg(long, env = "EKG_HISTORY_MAX_AGE", default_value = "24h", value_parser = parse_duration)]
    pub history_max_age: Duration,

    /// Most open WebSocket + SSE connections; more are answered 503.
    #[arg(long, env = "EKG_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,

    /// Frames queued per connection before the client counts as lagging and is disconnected.
    #[arg(long, env = "EKG_SEND_QUEUE", default_value_t = 1024)]
    pub send_queue: usize,

    /// Largest body of one write (message, update, event); more is answered 413.
    #[arg(long, env = "EKG_MAX_MESSAGE_BYTES", default_value = "64KiB", value_parser = parse_bytes)]
    pub max_message_bytes: u64,

    /// On SIGTERM, clients are told to reconnect spread over this window.
    #[arg(long, env = "EKG_DRAIN_WINDOW", default_value = "5s", value_parser = parse_duration)]
    pub drain_window: Duration,

    /// WebSocket ping interval.
    #[arg(long, env = "EKG_WS_PING_INTERVAL", default_value = "20s", value_parser = parse_duration)]
    pub ws_ping_interval: Duration,

    /// A WebSocket peer silent for this long is closed.
    #[arg(long, env = "EKG_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// SSE keepalive comment interval.
    #[arg(long, env = "EKG_SSE_KEEPALIVE", default_value = "15s", value_parser = parse_duration)]
    pub sse_keepalive: Duration,

    /// Origin allowed to read cross-origin (repeatable; `*` for any).
    #[arg(long = "cors-origin", env = "EKG_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Most rooms holding events; a write that would open one more is answered 503. Rooms
    /// that are only read or streamed (no events yet) do not count.
    #[arg(long, env = "EKG_MAX_ROOMS", default_value_t = 100_000)]
    pub max_rooms: usize,

    /// Log lines on stderr: human-readable text, or one JSON object per line.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// A connection that has not sent a whole request head (request line and headers) within
    /// this long is closed.
    #[arg(long, env = "EKG_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// An ingest body (batch or write) that has not fully arrived within this long is refused
    /// with 408.
    #[arg(long, env = "EKG_BODY_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,

    /// Most TCP connections open at once, streams included; more wait in the kernel's backlog.
    /// Default: --max-connections + 1024 (room for history reads, ingest and probes).
    #[arg(long, env = "EKG_MAX_HTTP_CONNECTIONS")]
    pub max_http_connections: Option<usize>,

    /// Most ingest requests (batches, writes) reading or applying a body at once; more are
    /// answered 503 with Retry-After.
    #[arg(long, env = "EKG_MAX_INGEST_REQUESTS", default_value_t = 16)]
    pub max_ingest_requests: usize,
}

/// Who may write to rooms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Writes come from reflektor: batches at `/_reflektor/ingest`, or replayed requests
    /// carrying `X-Reflektor-Offset` (the seq). Signed with one of `Config::secrets`, unless
    /// `Config::insecure_unsigned_ingest`.
    Relayed,
    /// Writes come straight from API servers with `Authorization: Bearer <token>`; ekg assigns
    /// seqs from its own counter.
    Standalone { token: String },
}

/// Cross-origin policy for browsers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No CORS headers: same-origin only.
    None,
    /// `Access-Control-Allow-Origin: *`.
    Any,
    /// These origins only.
    List(Vec<HeaderValue>),
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Ingest must be signed with one of these (several during a rotation).
    pub secrets: Vec<String>,
    /// How far a delivery's signed timestamp may be from this host's clock.
    pub signature_window: Duration,
    /// Relayed without secrets: accept unsigned deliveries (only when asked explicitly).
    pub insecure_unsigned_ingest: bool,
    pub mode: Mode,
    pub retention: Retention,
    pub max_connections: usize,
    /// Per-connection send queue in frames (the per-room broadcast capacity).
    pub send_queue: usize,
    pub max_message_bytes: usize,
    pub drain_window: Duration,
    pub ws_ping_interval: Duration,
    pub idle_timeout: Duration,
    pub sse_keepalive: Duration,
    pub cors_origins: CorsOrigins,
    pub max_rooms: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    /// Open TCP connections, streams included.
    pub max_http_connections: usize,
    pub max_ingest_requests: usize,
}

/// Connections the listener takes beyond `--max-connections` streams by default: room for
/// history reads, ingest and probes while every stream slot is used.
pub const HTTP_HEADROOM: usize = 1024;

/// A signature window longer than this is reported as an insecure choice at start.
const LONG_SIGNATURE_WINDOW: Duration = Duration::from_secs(3600);
/// Secrets and tokens shorter than this are reported as an insecure choice at start.
const SHORT_SECRET: usize = 16;

impl Config {
    /// The standalone token, if in standalone mode.
    pub fn standalone_token(&self) -> Option<&str> {
        match &self.mode {
            Mode::Standalone { token } => Some(token),
            Mode::Relayed => None,
        }
    }

    /// Who may write, checked once at start: a relayed host needs a secret unless unsigned
    /// ingest was asked for explicitly.
    ///
    /// # Errors
    /// A one-line reason, naming the flags that fix it.
    pub fn check_trust(&self) -> Result<(), String> {
        let standalone = matches!(self.mode, Mode::Standalone { .. });
        if self.insecure_unsigned_ingest && (standalone || !self.secrets.is_empty()) {
            return Err(
                "--insecure-unsigned-ingest only applies to a relayed host without --secret".into(),
            );
        }
        if standalone && !self.secrets.is_empty() {
            return Err(
                "--standalone assigns seqs itself and cannot also apply a reflektor log: drop --secret or --standalone".into(),
            );
        }
        if !standalone && self.secrets.is_empty() && !self.insecure_unsigned_ingest {
            return Err(
                "refusing to start: without --secret (or --secret-file) anyone could write to every room; give the secret reflektor signs with, or run --standalone --token T, or pass --insecure-unsigned-ingest to accept unsigned writes".into(),
            );
        }
        Ok(())
    }

    /// Every insecure choice this configuration still makes, one line each, for warnings at
    /// start.
    pub fn insecure_choices(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.insecure_unsigned_ingest {
            out.push(
                "--insecure-unsigned-ingest: ingest is not signed; anyone who reaches this host can write to every room".to_owned(),
            );
        }
        if self.cors_origins == CorsOrigins::Any {
            out.push("--cors-origin '*': any web page may read rooms cross-origin".to_owned());
        }
        if self.signature_window > LONG_SIGNATURE_WINDOW {
            out.push(format!(
                "--signature-window {:?}: a captured delivery can be re-sent for that long",
                self.signature_window
            ));
        }
        if self.secrets.iter().any(|s| s.len() < SHORT_SECRET) {
            out.push(format!(
                "a --secret is shorter than {SHORT_SECRET} bytes: it can be guessed"
            ));
        }
        if self
            .standalone_token()
            .is_some_and(|t| t.len() < SHORT_SECRET)
        {
            out.push(format!(
                "the standalone --token is shorter than {SHORT_SECRET} bytes: it can be guessed"
            ));
        }
        out
    }
}

/// Secrets from `--secret` values and `--secret-file` files (one per line; blank lines and
/// `#` comments skipped), in order, without repeats.
///
/// # Errors
/// A file cannot be read or holds no secret.
pub fn read_secrets(inline: &[String], files: &[PathBuf]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |s: &str| {
        if !s.is_empty() && !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    };
    for s in inline {
        add(s.trim_end_matches(['\r', '\n']));
    }
    for path in files {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
        let mut found = false;
        for line in text.lines().map(|l| l.trim_end_matches('\r')) {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            found = true;
            add(line);
        }
        if !found {
            return Err(format!(
                "the secret file {} holds no secret",
                path.display()
            ));
        }
    }
    Ok(out)
}

impl Default for Config {
    /// The flag defaults: relayed, listening on `127.0.0.1:7080`, with no secret (so it takes
    /// no delivery until one is set, or `insecure_unsigned_ingest`).
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7080)),
            secrets: Vec::new(),
            signature_window: shared::sign::DEFAULT_FRESHNESS,
            insecure_unsigned_ingest: false,
            mode: Mode::Relayed,
            retention: Retention {
                per_room: 1000,
                max_age: Duration::from_secs(24 * 3600),
            },
            max_connections: 20_000,
            send_queue: 1024,
            max_message_bytes: 64 << 10,
            drain_window: Duration::from_secs(5),
            ws_ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            sse_keepalive: Duration::from_secs(15),
            cors_origins: CorsOrigins::None,
            max_rooms: 100_000,
            header_read_timeout: shared::serve::DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: Duration::from_secs(10),
            max_http_connections: 20_000 + HTTP_HEADROOM,
            max_ingest_requests: 16,
        }
    }
}

impl TryFrom<Args> for Config {
    type Error = String;

    /// # Errors
    /// A message naming the flag that is wrong.
    fn try_from(a: Args) -> Result<Config, String> {
        let secrets = read_secrets(&a.secret, &a.secret_file)?;
        let token = read_secret(a.token.as_deref(), a.token_file.as_deref(), "token")?;
        let mode = match (a.standalone, token) {
            (true, Some(token)) => Mode::Standalone { token },
            (true, None) => {
                return Err(
                    "--standalone needs --token or --token-file: the write API must not be open"
                        .into(),
                );
            }
            (false, Some(_)) => return Err("--token only applies with --standalone".into()),
            (false, None) => Mode::Relayed,
        };
        positive("--history-per-room", a.history_per_room)?;
        positive("--max-ingest-requests", a.max_ingest_requests)?;
        positive("--max-connections", a.max_connections)?;
        positive("--send-queue", a.send_queue)?;
        positive("--max-rooms", a.max_rooms)?;
        if a.history_max_age.is_zero() {
            return Err("--history-max-age must be above zero".into());
        }
        if a.max_message_bytes == 0 {
            return Err("--max-message-bytes must be above zero".into());
        }
        let max_message_bytes = usize::try_from(a.max_message_bytes)
            .ok()
            .filter(|&n| n <= 64 << 20)
            .ok_or("--max-message-bytes must be at most 64MiB")?;
        for (flag, d) in [
            ("--ws-ping-interval", a.ws_ping_interval),
            ("--idle-timeout", a.idle_timeout),
            ("--sse-keepalive", a.sse_keepalive),
            ("--signature-window", a.signature_window),
            ("--header-read-timeout", a.header_read_timeout),
            ("--body-read-timeout", a.body_read_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{flag} must be above zero"));
            }
        }
        if a.idle_timeout <= a.ws_ping_interval {
            return Err("--idle-timeout must be longer than --ws-ping-interval".into());
        }
        let cors_origins = cors(&a.cors_origins)?;
        let max_http_connections = match a.max_http_connections {
            Some(n) if n < a.max_connections => {
                return Err(format!(
                    "--max-http-connections ({n}) must be at least --max-connections ({}): every stream is a connection",
                    a.max_connections
                ));
            }
            Some(n) => n,
            None => a.max_connections.saturating_add(HTTP_HEADROOM),
        };
        let config = Config {
            listen: a.listen,
            secrets,
            signature_window: a.signature_window,
            insecure_unsigned_ingest: a.insecure_unsigned_ingest,
            mode,
            retention: Retention {
                per_room: a.history_per_room,
                max_age: a.history_max_age,
            },
            max_connections: a.max_connections,
            send_queue: a.send_queue,
            max_message_bytes,
            drain_window: a.drain_window,
            ws_ping_interval: a.ws_ping_interval,
            idle_timeout: a.idle_timeout,
            sse_keepalive: a.sse_keepalive,
            cors_origins,
            max_rooms: a.max_rooms,
            header_read_timeout: a.header_read_timeout,
            body_read_timeout: a.body_read_timeout,
            max_http_connections,
            max_ingest_requests: a.max_ingest_requests,
        };
        config.check_trust()?;
        Ok(config)
    }
}

fn positive(flag: &str, n: usize) -> Result<(), String> {
    if n == 0 {
        Err(format!("{flag} must be above zero"))
    } else {
        Ok(())
    }
}

fn cors(origins: &[String]) -> Result<CorsOrigins, String> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return Ok(CorsOrigins::None);
    }
    if origins.contains(&"*") {
        return Ok(CorsOrigins::Any);
    }
    origins
        .iter()
        .map(|o| {
            if !(o.starts_with("http://") || o.starts_with("https://")) {
                return Err(format!(
                    "--cors-origin {o:?} must be '*' or like https://example.com"
                ));
            }
            HeaderValue::from_str(o.trim_end_matches('/'))
                .map_err(|_| format!("--cors-origin {o:?} is not a valid header value"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(CorsOrigins::List)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let args = Args::try_parse_from(std::iter::once("ekg").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Config::try_from(args)
    }

    #[test]
    fn defaults_match_the_documented_flags() {
        let c = parse(&["--secret", "0123456789abcdef"]).unwrap();
        let d = Config::default();
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.retention, d.retention);
        assert_eq!(c.max_message_bytes, 65_536);
        assert_eq!(c.send_queue, 1024);
        assert_eq!(c.mode, Mode::Relayed);
        assert_eq!(c.cors_origins, CorsOrigins::None);
        assert_eq!(c.signature_window, Duration::from_secs(300));
        assert_eq!(c.signature_window, d.signature_window);
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.body_read_timeout, d.body_read_timeout);
        assert_eq!(c.max_http_connections, 20_000 + HTTP_HEADROOM);
        assert_eq!(c.max_http_connections, d.max_http_connections);
        assert_eq!(c.max_ingest_requests, d.max_ingest_requests);
        assert!(!c.insecure_unsigned_ingest);
        assert!(
            c.insecure_choices().is_empty(),
            "{:?}",
            c.insecure_choices()
        );
    }

    #[test]
    fn a_relayed_host_without_a_secret_refuses_to_start() {
        let err = parse(&[]).unwrap_err();
        assert!(err.starts_with("refusing to start"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        for flag in ["--secret", "--standalone", "--insecure-unsigned-ingest"] {
            assert!(err.contains(flag), "{err} names {flag}");
        }
        let c = parse(&["--insecure-unsigned-ingest"]).unwrap();
        assert!(c.insecure_unsigned_ingest);
        assert!(c.insecure_choices()[0].contains("--insecure-unsigned-ingest"));
        // The explicit flag makes no sense with a secret or standalone: say so.
        assert!(parse(&["--insecure-unsigned-ingest", "--secret", "s"]).is_err());
        assert!(parse(&["--insecure-unsigned-ingest", "--standalone", "--token", "t"]).is_err());
        assert!(parse(&["--standalone", "--token", "t", "--secret", "s"]).is_err());
        // A hand-built config is held to the same rule.
        assert!(Config::default().check_trust().is_err());
    }

    #[test]
    fn secrets_are_repeatable_and_read_one_per_line_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets");
        std::fs::write(&file, "# rotation: new first\nnew-secret\n\nold-secret\r\n").unwrap();
        let f = file.to_str().unwrap();
        let c = parse(&[
            "--secret",
            "inline",
            "--secret-file",
            f,
            "--secret",
            "new-secret",
        ])
        .unwrap();
        assert_eq!(c.secrets, ["inline", "new-secret", "old-secret"]);
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "# nothing\n\n").unwrap();
        let err = parse(&["--secret-file", empty.to_str().unwrap()]).unwrap_err();
        assert!(err.contains("holds no secret"), "{err}");
        let missing = dir.path().join("missing");
        assert!(parse(&["--secret-file", missing.to_str().unwrap()]).is_err());
    }

    #[test]
    fn insecure_choices_are_each_reported() {
        let c = parse(&[
            "--secret",
            "short",
            "--cors-origin",
            "*",
            "--signature-window",
            "2h",
        ])
        .unwrap();
        let choices = c.insecure_choices().join("\n");
        for needle in ["--cors-origin", "--signature-window", "--secret"] {
            assert!(choices.contains(needle), "{choices}");
        }
        let c = parse(&["--standalone", "--token", "t"]).unwrap();
        assert!(c.insecure_choices()[0].contains("--token"));
    }

    #[test]
    fn listener_limits_are_flags() {
        let base = ["--secret", "0123456789abcdef"];
        let with = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            parse(&args)
        };
        let c = with(&[
            "--header-read-timeout",
            "3s",
            "--body-read-timeout",
            "2s",
            "--max-connections",
            "10",
            "--max-http-connections",
            "50",
            "--max-ingest-requests",
            "2",
        ])
        .unwrap();
        assert_eq!(c.header_read_timeout, Duration::from_secs(3));
        assert_eq!(c.body_read_timeout, Duration::from_secs(2));
        assert_eq!(c.max_http_connections, 50);
        assert_eq!(c.max_ingest_requests, 2);
        assert_eq!(
            with(&["--max-connections", "10"])
                .unwrap()
                .max_http_connections,
            10 + HTTP_HEADROOM
        );
        assert!(with(&["--max-connections", "10", "--max-http-connections", "5"]).is_err());
        assert!(with(&["--header-read-timeout", "0s"]).is_err());
        assert!(with(&["--body-read-timeout", "0s"]).is_err());
        assert!(with(&["--signature-window", "0s"]).is_err());
        assert!(with(&["--max-ingest-requests", "0"]).is_err());
    }

    #[test]
    fn standalone_requires_a_token() {
        assert!(parse(&["--standalone"]).unwrap_err().contains("--token"));
        let c = parse(&["--standalone", "--token", "t"]).unwrap();
        assert_eq!(c.standalone_token(), Some("t"));
        assert!(parse(&["--token", "t"]).is_err());
    }

    #[test]
    fn bad_values_are_refused_at_startup() {
        let bad = |extra: &str, value: &str| parse(&["--secret", "s", extra, value]).is_err();
        assert!(bad("--send-queue", "0"));
        assert!(bad("--history-max-age", "soon"));
        assert!(bad("--max-message-bytes", "1XB"));
        assert!(bad("--cors-origin", "example.com"));
        assert_eq!(
            parse(&["--secret", "s", "--cors-origin", "*"])
                .unwrap()
                .cors_origins,
            CorsOrigins::Any
        );
    }
}
