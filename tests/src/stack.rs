//! reflektor and ekg as an operator runs them, on top of the launcher ([`crate::process`]):
//! [`Reflektor`] and [`Ekg`] are one started binary each with the HTTP calls tests make, and
//! [`Stack`] is a reflektor feeding one or more ekg hosts.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};

use crate::process::{Launch, Service};
use crate::wait_for;

/// How long a fresh stack may take until every host is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The secret reflektor signs with and ekg verifies, in tests.
pub const SECRET: &str = "test-secret-0123456789";
/// The intake token in tests.
pub const TOKEN: &str = "test-token";

/// A reflektor with its own data directory.
pub struct Reflektor {
    pub svc: Service,
    pub token: Option<String>,
    client: reqwest::Client,
}

impl Reflektor {
    /// Start with `--data-dir dir/reflektor` plus `extra` flags; logs go to `dir`.
    ///
    /// # Errors
    /// The binary is missing or did not start.
    pub async fn start(dir: &Path, extra: &[&str]) -> Result<Reflektor> {
        let token = extra
            .iter()
            .position(|a| *a == "--token")
            .and_then(|i| extra.get(i + 1))
            .map(|s| (*s).to_owned());
        let svc = Launch::new("reflektor", dir)?
            .arg("--data-dir")
            .arg(dir.join("reflektor"))
            .args(extra)
            .start()
            .await?;
        Ok(Reflektor {
            svc,
            token,
            client: reqwest::Client::new(),
        })
    }

    /// POST a JSON body to `path`; the offset from the 202 on success, or the status otherwise.
    ///
    /// # Errors
    /// The request failed, or a 202 carried no id.
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<std::result::Result<u64, u16>> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// Send `method` to `path` with an optional JSON body, as [`Reflektor::post`].
    ///
    /// # Errors
    /// The request failed, or a 202 carried no id.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<std::result::Result<u64, u16>> {
        let mut req = self.client.request(method, self.svc.endpoint(path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        if status != 202 {
            return Ok(Err(status));
        }
        let v: serde_json::Value = resp.json().await?;
        let id = v["id"]
            .as_str()
            .ok_or_else(|| anyhow!("202 without an id: {v}"))?;
        Ok(Ok(id.parse()?))
    }

    /// `GET /_reflektor/hosts`.
    ///
    /// # Errors
    /// The request failed or was refused.
    pub async fn hosts(&self) -> Result<serde_json::Value> {
        let mut req = self.client.get(self.svc.endpoint("/_reflektor/hosts"));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        Ok(req.send().await?.error_for_status()?.json().await?)
    }
}

/// An ekg host.
pub struct Ekg {
    pub svc: Service,
    client: reqwest::Client,
}

impl Ekg {
    /// Start with `extra` flags; logs go to `dir`.
    ///
    /// # Errors
    /// The binary is missing or did not start.
    pub async fn start(dir: &Path, extra: &[&str]) -> Result<Ekg> {
        Ok(Ekg {
            svc: Launch::new("ekg", dir)?.args(extra).start().await?,
            client: reqwest::Client::new(),
        })
    }

    /// `GET path` as JSON; an error unless 2xx.
    ///
    /// # Errors
    /// The request failed or was answered with an error status.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let resp = self.client.get(self.svc.endpoint(path)).send().await?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await?;
        if !status.is_success() {
            bail!("GET {path}: {status} {v}");
        }
        Ok(v)
    }

    /// Every message of a room in history, oldest first, by walking pages backwards.
    ///
    /// # Errors
    /// A page request failed, or the history did not end within 10,000 pages.
    pub async fn all_messages(&self, room: &str) -> Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        let mut before: Option<u64> = None;
        for _ in 0..10_000 {
            let path = match before {
                Some(b) => format!("/rooms/{room}/messages?limit=200&before={b}"),
                None => format!("/rooms/{room}/messages?limit=200"),
            };
            let page = self.get_json(&path).await?;
            let mut msgs = page["messages"].as_array().cloned().unwrap_or_default();
            let more = page["has_more"].as_bool().unwrap_or(false);
            let first = msgs.first().and_then(|m| m["seq"].as_u64());
            msgs.append(&mut out);
            out = msgs;
            match (more, first) {
                (true, Some(f)) => before = Some(f),
                _ => return Ok(out),
            }
        }
        bail!("history of {room} did not end")
    }

    /// `GET /readyz` answers 2xx.
    pub async fn ready(&self) -> bool {
        matches!(self.client.get(self.svc.endpoint("/readyz")).send().await, Ok(r) if r.status().is_success())
    }
}

/// reflektor plus `n` ekg hosts, all on loopback ephemeral ports, sharing a signing secret.
pub struct Stack {
    pub reflektor: Reflektor,
    pub ekgs: Vec<Ekg>,
}

impl Stack {
    /// Start `n` ekg hosts with `ekg_extra` flags, then reflektor delivering to all of them, and
    /// wait until every host is ready (it has heard from reflektor and caught up).
    ///
    /// # Errors
    /// A binary did not start, or a host was not ready in time.
    pub async fn start(
        dir: &Path,
        n: usize,
        ekg_extra: &[&str],
        reflektor_extra: &[&str],
    ) -> Result<Stack> {
        let mut ekgs = Vec::with_capacity(n);
        for _ in 0..n {
            let mut args = vec!["--secret", SECRET];
            args.extend_from_slice(ekg_extra);
            ekgs.push(Ekg::start(dir, &args).await?);
        }
        let urls: Vec<String> = ekgs.iter().map(|e| e.svc.url()).collect();
        let mut args = vec!["--secret", SECRET, "--token", TOKEN];
        for u in &urls {
            args.push("--host");
            args.push(u);
        }
        args.extend_from_slice(reflektor_extra);
        let reflektor = Reflektor::start(dir, &args).await?;
        for e in &ekgs {
            wait_for("ekg ready", READY_TIMEOUT, async || e.ready().await).await?;
        }
        Ok(Stack { reflektor, ekgs })
    }
}
