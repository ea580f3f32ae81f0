//! Starting the real binaries for a scenario (`--spawn`).
//!
//! A [`Spawned`] child runs with `--listen 127.0.0.1:0`; its address is read from the one stdout
//! line `NAME listening on http://ADDR`. Its stderr goes to a log file in the run's temporary
//! directory. The child is killed (SIGKILL, by its own handle) when the value drops, so an
//! aborted run never leaves a server behind. The children inherit the harness's raised
//! file-descriptor limit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a binary may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The shared secret between spawned reflektor and ekg hosts.
pub(crate) const SECRET: &str = "loadtest-secret";

/// The token for spawned intake / standalone write APIs.
pub(crate) const TOKEN: &str = "loadtest-token";

/// Where the binaries are: `dir` if given, else next to this executable (`target/<profile>/`).
pub(crate) fn bin_dir(dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = dir {
        return Ok(d.to_path_buf());
    }
    let exe = std::env::current_exe().context("current_exe")?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("executable has no directory"))
}

/// One running server.
pub(crate) struct Spawned {
    pub(crate) name: &'static str,
    pub(crate) addr: SocketAddr,
    pub(crate) pid: u32,
    child: Child,
}

impl Spawned {
    /// Start `bin_dir/name --listen 127.0.0.1:0 args...`, logging stderr to `log_dir/name.N.log`.
    pub(crate) async fn start(
        name: &'static str,
        bin_dir: &Path,
        args: &[String],
        log_dir: &Path,
    ) -> Result<Spawned> {
        let bin = bin_dir.join(name);
        if !bin.exists() {
            bail!(
                "{} not found; build it (cargo build --release -p {name}) or pass --bin-dir",
                bin.display()
            );
        }
        let log_path = (0..)
            .map(|i| log_dir.join(format!("{name}.{i}.log")))
            .find(|p| !p.exists())
            .unwrap_or_else(|| log_dir.join(format!("{name}.log")));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("create {}", log_path.display()))?;
        let mut cmd = Command::new(&bin);
        for (k, _) in std::env::vars() {
            if k.starts_with("REFLEKTOR_") || k.starts_with("EKG_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited at once"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let prefix = format!("{name} listening on http://");
        let tail = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| {
                anyhow!(
                    "{name} printed no listening line in {START_TIMEOUT:?}; log: {}",
                    tail()
                )
            })?
            .context("read stdout")?
            .ok_or_else(|| anyhow!("{name} exited before listening; log: {}", tail()))?;
        let addr = line
            .strip_prefix(&prefix)
            .ok_or_else(|| anyhow!("unexpected first stdout line {line:?}"))?
            .parse()
            .with_context(|| format!("parse address in {line:?}"))?;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        eprintln!(
            "started {name} pid {pid} on {addr} (log {})",
            log_path.display()
        );
        Ok(Spawned {
            name,
            addr,
            pid,
            child,
        })
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Resident memory in KiB, from /proc.
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid)
    }

    /// Kill and reap.
    pub(crate) async fn stop(mut self) {
        if let Err(e) = self.child.kill().await {
            eprintln!("kill {} (pid {}): {e}", self.name, self.pid);
        }
    }
}

/// `VmRSS` of `pid` in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Raise the soft open-files limit to the hard limit; returns the new soft limit.
pub(crate) fn raise_nofile() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("could not raise RLIMIT_NOFILE: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    }
}

/// A reflektor and/or ekg hosts started for one run, with their temporary directory.
pub(crate) struct Stack {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) bin_dir: PathBuf,
    pub(crate) reflektor: Option<Spawned>,
    pub(crate) ekgs: Vec<Spawned>,
}

impl Stack {
    pub(crate) fn new(bin_dir: Option<&Path>) -> Result<Stack> {
        let dir = tempfile::Builder::new()
            .prefix("loadtest-")
            .tempdir()
            .context("temp dir")?;
        Ok(Stack {
            dir,
            bin_dir: self::bin_dir(bin_dir)?,
            reflektor: None,
            ekgs: Vec::new(),
        })
    }

    /// Start an ekg host with the shared secret (or standalone with the token) plus `extra`.
    pub(crate) async fn start_ekg(
        &mut self,
        standalone: bool,
        extra: &[String],
    ) -> Result<&Spawned> {
        let mut args: Vec<String> = if standalone {
            vec!["--standalone".into(), "--token".into(), TOKEN.into()]
        } else {
            vec!["--secret".into(), SECRET.into()]
        };
        args.extend(extra.iter().cloned());
        let e = Spawned::start("ekg", &self.bin_dir, &args, self.dir.path()).await?;
        self.ekgs.push(e);
        self.ekgs.last().ok_or_else(|| anyhow!("no ekg"))
    }

    /// Start reflektor delivering to every ekg host started so far, plus `extra`.
    pub(crate) async fn start_reflektor(&mut self, extra: &[String]) -> Result<&Spawned> {
        let mut args = vec![
            "--data-dir".to_owned(),
            self.dir.path().join("reflektor").display().to_string(),
            "--secret".into(),
            SECRET.into(),
        ];
        for e in &self.ekgs {
            args.push("--host".into());
            args.push(e.url());
        }
        args.extend(extra.iter().cloned());
        let r = Spawned::start("reflektor", &self.bin_dir, &args, self.dir.path()).await?;
        Ok(self.reflektor.insert(r))
    }

    /// Kill everything that was started (also what dropping does).
    pub(crate) async fn stop(self) {
        if let Some(r) = self.reflektor {
            r.stop().await;
        }
        for e in self.ekgs {
            e.stop().await;
        }
    }
}

/// CPU time (user + system) `pid` has used, in seconds, from /proc (clock ticks of 1/100 s).
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// CPU seconds used by this process and by each spawned server, labelled.
pub(crate) fn cpu_snapshot(stack: Option<&Stack>) -> Vec<(String, f64)> {
    let mut out = vec![
        (
            "machine_all_processes".to_owned(),
            machine_busy_seconds().unwrap_or(0.0),
        ),
        (
            "harness".to_owned(),
            cpu_seconds(std::process::id()).unwrap_or(0.0),
        ),
    ];
    if let Some(s) = stack {
        if let Some(r) = &s.reflektor {
            out.push(("reflektor".to_owned(), cpu_seconds(r.pid).unwrap_or(0.0)));
        }
        for (i, e) in s.ekgs.iter().enumerate() {
            out.push((format!("ekg{i}"), cpu_seconds(e.pid).unwrap_or(0.0)));
        }
    }
    out
}

/// CPU time the whole machine spent busy (all processes, all cores), in seconds, from /proc/stat.
/// Other work on the machine competes with the servers; the report shows how much.
pub(crate) fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<f64> = cpu
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).unwrap_or(&0.0);
    Some((total - idle) / 100.0)
}
