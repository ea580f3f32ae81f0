//! Running the real binaries.
//!
//! A [`Service`] is one child process started with `--listen 127.0.0.1:0` (or a fixed port on
//! restart) whose address is read from its stdout line `NAME listening on http://ADDR`. Its
//! stderr goes to a log file in the test's own directory, so a failing test can show it. The
//! child is SIGKILLed when the handle drops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a binary may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Path of a workspace binary: `$NAME_BIN` if set, else next to the running executable.
pub fn binary(name: &str) -> Result<PathBuf> {
    let var = format!("{}_BIN", name.to_ascii_uppercase());
    if let Some(p) = std::env::var_os(&var) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("current_exe")?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let candidate = dir.join(name);
    if candidate.exists() {
        Ok(candidate)
    } else {
        bail!(
            "{} not found; build it first with `cargo build --bins` or set {var}",
            candidate.display()
        )
    }
}

/// One running (or stopped) binary.
pub struct Service {
    name: &'static str,
    bin: PathBuf,
    args: Vec<String>,
    log_dir: PathBuf,
    child: Option<Child>,
    starts: u32,
    /// Where it listens; kept across restarts (restarts reuse the port).
    pub addr: SocketAddr,
}

impl Service {
    /// Start `name` with `args` (which must not contain `--listen`) on an ephemeral port.
    pub async fn start(name: &'static str, args: Vec<String>, log_dir: &Path) -> Result<Service> {
        Self::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0)), args, log_dir).await
    }

    /// Start `name` listening on `addr`.
    pub async fn start_on(
        name: &'static str,
        addr: SocketAddr,
        args: Vec<String>,
        log_dir: &Path,
    ) -> Result<Service> {
        let mut s = Service {
            name,
            bin: binary(name)?,
            args,
            log_dir: log_dir.to_path_buf(),
            child: None,
            starts: 0,
            addr,
        };
        s.spawn().await?;
        Ok(s)
    }

    async fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let log_path = self
            .log_dir
            .join(format!("{}.{}.log", self.name, self.starts));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("create {}", log_path.display()))?;
        let mut cmd = Command::new(&self.bin);
        for (k, _) in std::env::vars() {
            if k.starts_with("REFLEKTOR_") || k.starts_with("EKG_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("--listen")
            .arg(self.addr.to_string())
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", self.bin.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let prefix = format!("{} listening on http://", self.name);
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| {
                anyhow!(
                    "{} printed no listening line in {START_TIMEOUT:?}; log: {}",
                    self.name,
                    self.log_tail()
                )
            })?
            .context("read stdout")?
            .ok_or_else(|| {
                anyhow!(
                    "{} exited before listening; log: {}",
                    self.name,
                    self.log_tail()
                )
            })?;
        let addr = line
            .strip_prefix(&prefix)
            .ok_or_else(|| anyhow!("unexpected first stdout line {line:?}"))?
            .parse()
            .with_context(|| format!("parse address in {line:?}"))?;
        self.addr = addr;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The last few KiB of the current run's stderr.
    pub fn log_tail(&self) -> String {
        let path = self
            .log_dir
            .join(format!("{}.{}.log", self.name, self.starts));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let start = text.len().saturating_sub(4096);
        text.get(start..).unwrap_or(&text).to_owned()
    }

    /// Every line of stderr over all runs.
    pub fn all_logs(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.log_dir.join(format!("{}.{i}.log", self.name)))
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Send a signal by name (`TERM`, `STOP`, `CONT`, `KILL`).
    pub fn signal(&self, sig: &str) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("{} is not running", self.name))?;
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .context("run kill")?;
        if !status.success() {
            bail!("kill -{sig} {pid} failed");
        }
        Ok(())
    }

    /// SIGKILL and reap.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("kill")?;
        }
        Ok(())
    }

    /// SIGTERM and wait for the exit status.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.signal("TERM")?;
        let mut child = self.child.take().ok_or_else(|| anyhow!("not running"))?;
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                child.kill().await.ok();
                bail!(
                    "{} did not exit within {timeout:?} of SIGTERM; log: {}",
                    self.name,
                    self.log_tail()
                )
            }
        }
    }

    /// Start again with the same arguments on the same port.
    pub async fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("{} is still running", self.name);
        }
        self.spawn().await
    }

    /// Resident memory of the process in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

/// A reflektor with its own data directory.
pub struct Reflektor {
    pub svc: Service,
    pub token: Option<String>,
    client: reqwest::Client,
}

impl Reflektor {
    /// Start with `--data-dir dir/reflektor` plus `extra` flags.
    pub async fn start(dir: &Path, extra: &[&str]) -> Result<Reflektor> {
        let mut args = vec![
            "--data-dir".to_owned(),
            dir.join("reflektor").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let token = extra
            .iter()
            .position(|a| *a == "--token")
            .and_then(|i| extra.get(i + 1))
            .map(|s| (*s).to_owned());
        Ok(Reflektor {
            svc: Service::start("reflektor", args, dir).await?,
            token,
            client: reqwest::Client::new(),
        })
    }

    /// POST a JSON body to `path`; the offset from the 202 on success, or the status otherwise.
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<std::result::Result<u64, u16>> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<std::result::Result<u64, u16>> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.svc.url()));
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
    pub async fn hosts(&self) -> Result<serde_json::Value> {
        let mut req = self
            .client
            .get(format!("{}/_reflektor/hosts", self.svc.url()));
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
    pub async fn start(dir: &Path, extra: &[&str]) -> Result<Ekg> {
        let args = extra.iter().map(|s| (*s).to_owned()).collect();
        Ok(Ekg {
            svc: Service::start("ekg", args, dir).await?,
            client: reqwest::Client::new(),
        })
    }

    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let resp = self
            .client
            .get(format!("{}{path}", self.svc.url()))
            .send()
            .await?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await?;
        if !status.is_success() {
            bail!("GET {path}: {status} {v}");
        }
        Ok(v)
    }

    /// Every message of a room in history, oldest first, by walking pages backwards.
    pub async fn all_messages(&self, room: &str) -> Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        let mut before: Option<u64> = None;
        for _ in 0..10_000 {
            let path = match before {
                Some(b) => format!("/rooms/{room}/messages?limit=200&before={b}"),
                None => format!("/rooms/{room}/messages?limit=200"),
            };
            let page = self.get_json(&path).await?;
            let msgs = page["messages"].as_array().cloned().unwrap_or_default();
            let more = page["has_more"].as_bool().unwrap_or(false);
            let first = msgs.first().and_then(|m| m["seq"].as_u64());
            let mut msgs = msgs;
            msgs.append(&mut out);
            out = msgs;
            match (more, first) {
                (true, Some(f)) => before = Some(f),
                _ => return Ok(out),
            }
        }
        bail!("history of {room} did not end")
    }

    pub async fn ready(&self) -> bool {
        matches!(self.client.get(format!("{}/readyz", self.svc.url())).send().await, Ok(r) if r.status().is_success())
    }
}
