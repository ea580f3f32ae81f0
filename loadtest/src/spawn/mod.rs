//! The servers a scenario starts itself (`--spawn`): ours (reflektor and ekg hosts), Nchan as a
//! peer, or a limit server, all through the workspace's launcher (`tests::Launch`: port 0, the
//! `NAME listening on http://ADDR` line or an open port, a clean environment, stderr in a log
//! file of the run's temporary directory). Every child, with its own children (nginx's
//! workers), is SIGKILLed when its handle drops, so an aborted run never leaves a server
//! behind. The children inherit the harness's raised file-descriptor limit, and with
//! `--server-cpus` run under `taskset` (pinned apart from the harness).
//!
//! - `ours`: the release binaries from `--bin-dir` (default: next to this executable).
//! - `nchan`: nginx + the Nchan module ([`nchan`]).
//! - `limit-*`: this executable's `limit` subcommand ([`crate::limit`]).

pub(crate) mod nchan;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use serde::Serialize;
use tests::{Launch, Service};

use crate::limit;

pub(crate) use tests::process::{cpu_seconds, rss_kib};

/// The shared secret between spawned reflektor and ekg hosts.
pub(crate) const SECRET: &str = "loadtest-secret";

/// The token for spawned intake / standalone write APIs.
pub(crate) const TOKEN: &str = "loadtest-token";

/// What `--spawn` starts.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Target {
    /// reflektor and/or ekg, as the scenario needs.
    Ours,
    /// nginx with the Nchan module, one worker.
    Nchan,
    /// Fan-out limit: one thread writing straight into the sockets.
    LimitThread,
    /// Fan-out limit: a tokio task per connection.
    LimitTask,
    /// Fan-out limit: a task per connection, queued frames coalesced into one write.
    LimitCoalesce,
    /// Intake limit: a bare hyper server answering 202.
    #[value(name = "limit-202")]
    #[serde(rename = "limit-202")]
    Limit202,
}

impl Target {
    /// The name in reports and file names.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Target::Ours => "ours",
            Target::Nchan => "nchan",
            Target::LimitThread => "limit-thread",
            Target::LimitTask => "limit-task",
            Target::LimitCoalesce => "limit-coalesce",
            Target::Limit202 => "limit-202",
        }
    }

    /// The limit server behind this target, if it is one.
    fn limit_kind(self) -> Option<limit::Kind> {
        match self {
            Target::LimitThread => Some(limit::Kind::FanoutThread),
            Target::LimitTask => Some(limit::Kind::FanoutTask),
            Target::LimitCoalesce => Some(limit::Kind::FanoutCoalesce),
            Target::Limit202 => Some(limit::Kind::Accept202),
            Target::Ours | Target::Nchan => None,
        }
    }

    /// Refuse a target the scenario has no use for.
    pub(crate) fn expect(self, scenario: &str, allowed: &[Target]) -> Result<()> {
        if allowed.contains(&self) {
            Ok(())
        } else {
            let names: Vec<&str> = allowed.iter().map(|t| t.name()).collect();
            anyhow::bail!(
                "{scenario} cannot drive --target {}; it takes {}",
                self.name(),
                names.join(", ")
            )
        }
    }
}

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

/// The servers started for one run, with their temporary directory.
pub(crate) struct Stack {
    pub(crate) dir: tempfile::TempDir,
    bin_dir: PathBuf,
    /// `taskset -c` list for every server, if pinned.
    server_cpus: Option<String>,
    pub(crate) reflektor: Option<Service>,
    pub(crate) ekgs: Vec<Service>,
    /// Nchan or a limit server.
    pub(crate) peer: Option<(Target, Service)>,
}

impl Stack {
    pub(crate) fn new(spawn: &crate::scenario::common::SpawnArgs) -> Result<Stack> {
        let dir = tempfile::Builder::new()
            .prefix("loadtest-")
            .tempdir()
            .context("temp dir")?;
        Ok(Stack {
            dir,
            bin_dir: self::bin_dir(spawn.bin_dir.as_deref())?,
            server_cpus: spawn.server_cpus.clone(),
            reflektor: None,
            ekgs: Vec::new(),
            peer: None,
        })
    }

    /// A launch of `bin` as `name`, under `taskset` when pinned, logging at `warn` unless
    /// `RUST_LOG` says otherwise.
    fn launch(&self, name: &str, bin: &Path) -> Result<Launch> {
        if !bin.exists() {
            anyhow::bail!(
                "{} not found; build it (cargo build --release -p reflektor -p ekg -p loadtest) or pass --bin-dir",
                bin.display()
            );
        }
        let launch = match &self.server_cpus {
            Some(cpus) => Launch::with_bin(name, "taskset", self.dir.path())
                .args(["-c", cpus])
                .arg(bin),
            None => Launch::with_bin(name, bin, self.dir.path()),
        };
        Ok(launch.log_filter("warn"))
    }

    /// Start an ekg host with the shared secret (or standalone with the token) plus `extra`.
    pub(crate) async fn start_ekg(
        &mut self,
        standalone: bool,
        extra: &[String],
    ) -> Result<&Service> {
        let mut args: Vec<String> = if standalone {
            vec!["--standalone".into(), "--token".into(), TOKEN.into()]
        } else {
            vec!["--secret".into(), SECRET.into()]
        };
        args.extend(extra.iter().cloned());
        let e = self
            .launch("ekg", &self.bin_dir.join("ekg"))?
            .args(args)
            .start()
            .await?;
        announce(&e);
        self.ekgs.push(e);
        self.ekgs.last().ok_or_else(|| anyhow!("no ekg"))
    }

    /// Start reflektor delivering to every ekg host started so far, plus `extra`.
    pub(crate) async fn start_reflektor(&mut self, extra: &[String]) -> Result<&Service> {
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
        let r = self
            .launch("reflektor", &self.bin_dir.join("reflektor"))?
            .args(args)
            .start()
            .await?;
        announce(&r);
        Ok(self.reflektor.insert(r))
    }

    /// Start Nchan or a limit server.
    pub(crate) async fn start_peer(&mut self, target: Target) -> Result<&Service> {
        let svc = if let Some(kind) = target.limit_kind() {
            let exe = std::env::current_exe().context("current_exe")?;
            let kind = clap::ValueEnum::to_possible_value(&kind)
                .map(|v| v.get_name().to_owned())
                .unwrap_or_default();
            self.launch("limit", &exe)?
                .args(["limit", "--kind", &kind])
                .start()
                .await?
        } else if target == Target::Nchan {
            nchan::check_installed()?;
            // nginx takes its address from its configuration: pick a free port for it.
            let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
            let conf = nchan::prepare(self.dir.path(), addr)?;
            let prefix = conf.parent().unwrap_or(self.dir.path()).to_owned();
            self.launch("nginx", Path::new(nchan::NGINX))?
                .arg("-p")
                .arg(&prefix)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(prefix.join("error.log"))
                .ready_on_port(addr)
                .start()
                .await?
        } else {
            anyhow::bail!("{} is not a peer target", target.name());
        };
        announce(&svc);
        Ok(&self.peer.insert((target, svc)).1)
    }

    /// Every server with a label.
    fn servers(&self) -> Vec<(String, &Service)> {
        let mut out = Vec::new();
        if let Some(r) = &self.reflektor {
            out.push(("reflektor".to_owned(), r));
        }
        for (i, e) in self.ekgs.iter().enumerate() {
            out.push((format!("ekg{i}"), e));
        }
        if let Some((t, p)) = &self.peer {
            out.push((t.name().replace('-', "_"), p));
        }
        out
    }

    /// The pid whose memory a scenario measures: the peer if there is one, else the first
    /// ekg host, else reflektor.
    pub(crate) fn memory_pid(&self) -> Option<u32> {
        match (&self.peer, self.ekgs.first(), &self.reflektor) {
            (Some((_, p)), _, _) => p.pid(),
            (None, Some(e), _) => e.pid(),
            (None, None, Some(r)) => r.pid(),
            (None, None, None) => None,
        }
    }

    /// Kill everything that was started (also what dropping does).
    pub(crate) async fn stop(self) {
        let peer = self.peer.map(|(_, p)| p);
        for mut svc in self.reflektor.into_iter().chain(self.ekgs).chain(peer) {
            if let Err(e) = svc.kill().await {
                eprintln!("kill {}: {e:#}", svc.name());
            }
        }
    }
}

fn announce(svc: &Service) {
    eprintln!(
        "started {} pid {} on {} (log {})",
        svc.name(),
        svc.pid().unwrap_or(0),
        svc.addr,
        svc.log_path()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
}

/// CPU seconds of `pid` and its direct children (nginx's workers).
pub(crate) fn tree_cpu_seconds(pid: u32) -> Option<f64> {
    let own = cpu_seconds(pid)?;
    Some(
        own + tests::process::children(pid)
            .into_iter()
            .filter_map(cpu_seconds)
            .sum::<f64>(),
    )
}

/// Resident memory of `pid` and its direct children, in KiB.
pub(crate) fn tree_rss_kib(pid: u32) -> Option<u64> {
    let own = rss_kib(pid)?;
    Some(
        own + tests::process::children(pid)
            .into_iter()
            .filter_map(rss_kib)
            .sum::<u64>(),
    )
}

/// CPU seconds used by this process (with its children, e.g. `wrk`) and by each spawned
/// server, labelled.
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
        for (label, svc) in s.servers() {
            let secs = svc.pid().and_then(tree_cpu_seconds).unwrap_or(0.0);
            out.push((label, secs));
        }
    }
    out
}

/// The 1-minute load average, from /proc/loadavg.
pub(crate) fn loadavg_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
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
