//! Starting the real binaries for a scenario (`--spawn`), through the workspace's launcher
//! (`tests::Launch`: port 0, the `NAME listening on http://ADDR` line, a clean environment,
//! stderr in a log file of the run's temporary directory). Every child is SIGKILLed when its
//! handle drops, so an aborted run never leaves a server behind. The children inherit the
//! harness's raised file-descriptor limit.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use tests::{Launch, Service};

pub(crate) use tests::process::{cpu_seconds, rss_kib};

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

/// Start `bin_dir/name` with `args`, logging (at `warn` unless `RUST_LOG` says otherwise) to
/// the run's directory.
async fn spawn(name: &str, bin_dir: &Path, args: &[String], log_dir: &Path) -> Result<Service> {
    let bin = bin_dir.join(name);
    if !bin.exists() {
        anyhow::bail!(
            "{} not found; build it (cargo build --release -p {name}) or pass --bin-dir",
            bin.display()
        );
    }
    let svc = Launch::with_bin(name, bin, log_dir)
        .log_filter("warn")
        .args(args)
        .start()
        .await?;
    eprintln!(
        "started {name} pid {} on {} (log {})",
        svc.pid().unwrap_or(0),
        svc.addr,
        svc.log_path()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    Ok(svc)
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
    pub(crate) reflektor: Option<Service>,
    pub(crate) ekgs: Vec<Service>,
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
    ) -> Result<&Service> {
        let mut args: Vec<String> = if standalone {
            vec!["--standalone".into(), "--token".into(), TOKEN.into()]
        } else {
            vec!["--secret".into(), SECRET.into()]
        };
        args.extend(extra.iter().cloned());
        let e = spawn("ekg", &self.bin_dir, &args, self.dir.path()).await?;
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
        let r = spawn("reflektor", &self.bin_dir, &args, self.dir.path()).await?;
        Ok(self.reflektor.insert(r))
    }

    /// Kill everything that was started (also what dropping does).
    pub(crate) async fn stop(self) {
        for mut svc in self.reflektor.into_iter().chain(self.ekgs) {
            if let Err(e) = svc.kill().await {
                eprintln!("kill {}: {e:#}", svc.name());
            }
        }
    }
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
            out.push(("reflektor".to_owned(), r.cpu_seconds().unwrap_or(0.0)));
        }
        for (i, e) in s.ekgs.iter().enumerate() {
            out.push((format!("ekg{i}"), e.cpu_seconds().unwrap_or(0.0)));
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
