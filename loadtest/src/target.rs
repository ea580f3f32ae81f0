//! Where load goes: URL templates with a `{room}` placeholder, checked to be loopback.
//!
//! A template such as `http://127.0.0.1:7070/rooms/{room}/messages` is parsed once; `resolve`
//! substitutes the room. Every target must be an address in 127.0.0.0/8 (or `localhost`): the
//! harness refuses to send load anywhere else.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, Result, bail};
use reqwest::Url;

/// A parsed URL template.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    raw: String,
    /// The socket address every resolved URL connects to.
    pub(crate) addr: SocketAddr,
    /// `http`, `https`, `ws` or `wss`.
    pub(crate) scheme: String,
}

impl Template {
    /// Parse and check `raw` (which may or may not contain `{room}`).
    pub(crate) fn parse(raw: &str) -> Result<Template> {
        let probe = raw.replace("{room}", "room");
        let url = Url::parse(&probe).with_context(|| format!("bad URL template {raw:?}"))?;
        let addr = loopback_addr(&url)?;
        Ok(Template {
            raw: raw.to_owned(),
            addr,
            scheme: url.scheme().to_owned(),
        })
    }

    /// The same template pointed at `addr` (for spawned servers).
    pub(crate) fn rebase(&self, addr: std::net::SocketAddr) -> Result<Template> {
        let (scheme, rest) = self.raw.split_once("://").context("URL without scheme")?;
        let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("/");
        Template::parse(&format!("{scheme}://{addr}{path}"))
    }

    /// The full URL for `room`.
    pub(crate) fn url(&self, room: &str) -> String {
        self.raw.replace("{room}", room)
    }

    /// Path and query for `room` (what goes on an HTTP request line).
    pub(crate) fn path(&self, room: &str) -> String {
        let url = self.url(room);
        match Url::parse(&url) {
            Ok(u) => match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_owned(),
            },
            Err(_) => "/".to_owned(),
        }
    }

    /// `true` for `ws://` / `wss://` templates.
    pub(crate) fn is_websocket(&self) -> bool {
        self.scheme == "ws" || self.scheme == "wss"
    }
}

/// The socket address of `url`, refusing anything outside 127.0.0.0/8.
pub(crate) fn loopback_addr(url: &Url) -> Result<SocketAddr> {
    let port = url.port_or_known_default().context("URL has no port")?;
    let ip = match url.host_str() {
        Some("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .with_context(|| format!("target host {h:?} is not an IP address (loopback only)"))?,
        None => bail!("URL {url} has no host"),
    };
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Ok(SocketAddr::new(ip, port)),
        _ => bail!("refusing non-loopback target {ip}: loadtest only drives 127.0.0.0/8"),
    }
}

/// Check a plain base URL (no template) and return it without a trailing slash.
pub(crate) fn base_url(raw: &str) -> Result<String> {
    let url = Url::parse(raw).with_context(|| format!("bad URL {raw:?}"))?;
    loopback_addr(&url)?;
    Ok(raw.trim_end_matches('/').to_owned())
}

/// Room names for one run: `{prefix}{i}` with a per-run prefix so old history never interferes.
pub(crate) fn room_names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i}")).collect()
}

/// A prefix unique to this run.
pub(crate) fn run_prefix() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("lt{}-{t}-r", std::process::id())
}

/// Source addresses `127.0.0.2 ..= 127.0.0.(1+n)` for spreading client sockets.
pub(crate) fn source_addrs(n: usize) -> Vec<IpAddr> {
    (0..n)
        .map(|i| {
            IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                (((i + 2) >> 8) & 0xff) as u8,
                ((i + 2) & 0xff) as u8,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_are_accepted_and_others_refused() {
        assert!(Template::parse("http://127.0.0.1:7070/rooms/{room}/messages").is_ok());
        assert!(Template::parse("ws://127.1.2.3:7080/rooms/{room}/ws").is_ok());
        assert!(Template::parse("http://localhost:7070/x").is_ok());
        assert!(Template::parse("http://10.0.0.1:7070/x").is_err());
        assert!(Template::parse("http://example.com/x").is_err());
        assert!(Template::parse("http://[::1]:7070/x").is_err());
    }

    #[test]
    fn templates_substitute_the_room() {
        let t = Template::parse("http://127.0.0.1:7070/rooms/{room}/messages?x=1").unwrap();
        assert_eq!(t.path("a"), "/rooms/a/messages?x=1");
        assert_eq!(t.url("b"), "http://127.0.0.1:7070/rooms/b/messages?x=1");
        let r = t.rebase("127.0.0.1:9".parse().unwrap()).unwrap();
        assert_eq!(r.url("c"), "http://127.0.0.1:9/rooms/c/messages?x=1");
    }

    #[test]
    fn source_addresses_start_at_127_0_0_2() {
        let a = source_addrs(300);
        assert_eq!(a[0].to_string(), "127.0.0.2");
        assert_eq!(a[254].to_string(), "127.0.1.0");
    }
}
