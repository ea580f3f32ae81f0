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

    /// Shared secret: ingest (batches and replayed requests) must carry a valid reflektor signature.
    #[arg(long, env = "EKG_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// Read the secret from this file instead.
    #[arg(long, env = "EKG_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,

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

    /// Most rooms held in memory; new rooms beyond it are answered 503.
    #[arg(long, env = "EKG_MAX_ROOMS", default_value_t = 100_000)]
    pub max_rooms: usize,

    /// Log lines on stderr: human-readable text, or one JSON object per line.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Who may write to rooms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Writes come from reflektor: batches at `/_reflektor/ingest`, or replayed requests
    /// carrying `X-Reflektor-Offset` (the seq). Signed when a secret is set.
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
    /// Ingest must be signed with this secret when set.
    pub secret: Option<String>,
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
}

impl Config {
    /// The standalone token, if in standalone mode.
    pub fn standalone_token(&self) -> Option<&str> {
        match &self.mode {
            Mode::Standalone { token } => Some(token),
            Mode::Relayed => None,
        }
    }
}

impl Default for Config {
    /// The flag defaults: relayed, unsigned, listening on `127.0.0.1:7080`.
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7080)),
            secret: None,
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
        }
    }
}

impl TryFrom<Args> for Config {
    type Error = String;

    /// # Errors
    /// A message naming the flag that is wrong.
    fn try_from(a: Args) -> Result<Config, String> {
        let secret = read_secret(a.secret.as_deref(), a.secret_file.as_deref(), "secret")?;
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
        if matches!(mode, Mode::Standalone { .. }) && secret.is_some() {
            return Err(
                "--standalone assigns seqs itself and cannot also apply a reflektor log: drop --secret or --standalone".into(),
            );
        }
        positive("--history-per-room", a.history_per_room)?;
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
        ] {
            if d.is_zero() {
                return Err(format!("{flag} must be above zero"));
            }
        }
        if a.idle_timeout <= a.ws_ping_interval {
            return Err("--idle-timeout must be longer than --ws-ping-interval".into());
        }
        let cors_origins = cors(&a.cors_origins)?;
        Ok(Config {
            listen: a.listen,
            secret,
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
        })
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
        let c = parse(&[]).unwrap();
        let d = Config::default();
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.retention, d.retention);
        assert_eq!(c.max_message_bytes, 65_536);
        assert_eq!(c.send_queue, 1024);
        assert_eq!(c.mode, Mode::Relayed);
        assert_eq!(c.cors_origins, CorsOrigins::None);
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
        assert!(parse(&["--send-queue", "0"]).is_err());
        assert!(parse(&["--history-max-age", "soon"]).is_err());
        assert!(parse(&["--max-message-bytes", "1XB"]).is_err());
        assert!(parse(&["--cors-origin", "example.com"]).is_err());
        assert_eq!(
            parse(&["--cors-origin", "*"]).unwrap().cors_origins,
            CorsOrigins::Any
        );
    }
}
