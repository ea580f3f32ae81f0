//! The one launcher for real processes, used by every test and harness that starts them.
//!
//! A [`Launch`] describes one process: the binary, its arguments, the directory its stderr log
//! goes to, and how to tell it is serving. [`Launch::start`] returns a running [`Service`].
//!
//! - **Clean environment.** The child gets no variable of the caller's environment (so a
//!   developer's `REFLEKTOR_*` or `EKG_*` never changes a flag), only `RUST_LOG` (the caller's
//!   `RUST_LOG` if set, else the launch's filter, `info` by default; none at all with
//!   [`Launch::default_log_filter`]), `RUST_BACKTRACE=1`, and what [`Launch::env`] adds.
//! - **Port 0 and the announcement.** reflektor and ekg get `--listen 127.0.0.1:0` (or a given
//!   address) after the launch's arguments (so a subcommand or a wrapper such as `taskset` may
//!   come first) and print `NAME listening on http://ADDR` on stdout once serving; the address is
//!   read from that line within a deadline. Stdout is drained afterwards so the child never
//!   blocks on a full pipe. A process that prints no such line (nginx, nats-server) is ready
//!   when its port accepts a connection ([`Launch::ready_on_port`]).
//! - **stderr in a file.** Each start writes stderr to its own `NAME.N.log` in the launch's
//!   directory (created exclusively, so several processes of one name never share a file); a
//!   failed start reports its tail, and [`Service::stderr`] reads every run's lines.
//! - **Ends with its handle.** The child and its direct children (nginx's workers) are
//!   SIGKILLed by pid (the child's stays ours until it is reaped) when the [`Service`] drops or
//!   on [`Service::kill`], so a failing test or an aborted benchmark never leaves a process
//!   behind. [`Service::terminate`] is SIGTERM and a bounded wait;
//!   [`Service::signal`] sends any [`Signal`] with kill(2).
//!
//! Binaries are found by [`binary`]: `$NAME_BIN` if set, else next to the running executable
//! (`target/<profile>/`). A package's own integration tests pass
//! `env!("CARGO_BIN_EXE_<name>")` to [`Launch::bin`] instead, so cargo builds it first.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a process may take to announce itself (or open its port) by default.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of a log a failure message quotes.
const TAIL_BYTES: usize = 4096;

/// Path of a workspace binary: `$NAME_BIN` if set, else next to the running executable.
///
/// # Errors
/// The binary is not there (build it first with `cargo build --bins`).
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
            "{} not found; build it first (cargo build --bins) or set {var}",
            candidate.display()
        )
    }
}

/// A signal [`Service::signal`] can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
    Int,
    Quit,
    Stop,
    Cont,
}

impl Signal {
    fn raw(self) -> rustix::process::Signal {
        use rustix::process::Signal as S;
        match self {
            Signal::Term => S::TERM,
            Signal::Kill => S::KILL,
            Signal::Int => S::INT,
            Signal::Quit => S::QUIT,
            Signal::Stop => S::STOP,
            Signal::Cont => S::CONT,
        }
    }
}

/// How a started process shows it is serving.
#[derive(Debug, Clone)]
enum Ready {
    /// `--listen ADDR` is passed, and the process prints `NAME listening on http://ADDR`.
    Announce(SocketAddr),
    /// The process listens on this address (from its own configuration).
    Port(SocketAddr),
}

/// How to start one process. Built with [`Launch::new`] and the chained setters.
#[derive(Debug, Clone)]
pub struct Launch {
    name: String,
    bin: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    dir: PathBuf,
    ready: Ready,
    /// `None`: no `RUST_LOG` at all (the binary's own default filter).
    log_filter: Option<String>,
    start_timeout: Duration,
}

impl Launch {
    /// A workspace binary (`reflektor`, `ekg`, ...) found by [`binary`], announcing itself on
    /// stdout, listening on `127.0.0.1:0`, with its stderr logs in `dir`.
    ///
    /// # Errors
    /// The binary is not found.
    pub fn new(name: &str, dir: &Path) -> Result<Launch> {
        Ok(Launch::with_bin(name, binary(name)?, dir))
    }

    /// Like [`Launch::new`] with the binary's path given (e.g. `env!("CARGO_BIN_EXE_ekg")`).
    pub fn with_bin(name: &str, bin: impl Into<PathBuf>, dir: &Path) -> Launch {
        Launch {
            name: name.to_owned(),
            bin: bin.into(),
            args: Vec::new(),
            env: Vec::new(),
            dir: dir.to_path_buf(),
            ready: Ready::Announce(SocketAddr::from(([127, 0, 0, 1], 0))),
            log_filter: Some("info".to_owned()),
            start_timeout: START_TIMEOUT,
        }
    }

    /// Use this binary.
    #[must_use]
    pub fn bin(mut self, bin: impl Into<PathBuf>) -> Launch {
        self.bin = bin.into();
        self
    }

    /// One more argument.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<OsString>) -> Launch {
        self.args.push(arg.into());
        self
    }

    /// More arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable for the child (the only way one reaches it).
    #[must_use]
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Launch {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Listen on `addr` instead of `127.0.0.1:0` (a restart keeps the port this way).
    #[must_use]
    pub fn listen(mut self, addr: SocketAddr) -> Launch {
        self.ready = Ready::Announce(addr);
        self
    }

    /// For a process that prints no listening line and takes no `--listen`: it is ready when
    /// `addr` (set in its own configuration) accepts a TCP connection.
    #[must_use]
    pub fn ready_on_port(mut self, addr: SocketAddr) -> Launch {
        self.ready = Ready::Port(addr);
        self
    }

    /// `RUST_LOG` for the child unless the caller's environment sets one.
    #[must_use]
    pub fn log_filter(mut self, filter: &str) -> Launch {
        self.log_filter = Some(filter.to_owned());
        self
    }

    /// No `RUST_LOG` for the child, whatever the caller's environment says: the binary's own
    /// default filter applies.
    #[must_use]
    pub fn default_log_filter(mut self) -> Launch {
        self.log_filter = None;
        self
    }

    /// How long the process may take to become ready.
    #[must_use]
    pub fn start_timeout(mut self, timeout: Duration) -> Launch {
        self.start_timeout = timeout;
        self
    }

    /// Start the process and wait until it serves.
    ///
    /// # Errors
    /// It cannot be spawned, exits, or is not ready within the start timeout; the message
    /// quotes the tail of its stderr.
    pub async fn start(self) -> Result<Service> {
        let mut svc = Service {
            addr: match self.ready {
                Ready::Announce(a) | Ready::Port(a) => a,
            },
            launch: self,
            child: None,
            logs: Vec::new(),
        };
        svc.spawn().await?;
        Ok(svc)
    }

    /// Run a process that is expected to exit by itself (e.g. refusing a configuration), and
    /// collect its status and output.
    ///
    /// # Errors
    /// It cannot be spawned, or it is still running after `timeout` (then it is killed).
    pub async fn run_to_exit(self, timeout: Duration) -> Result<Exited> {
        let log = next_log(&self.dir, &self.name)?;
        let mut cmd = self.command(Stdio::from(log.1));
        cmd.args(&self.args);
        if let Ready::Announce(addr) = self.ready {
            cmd.arg("--listen").arg(addr.to_string());
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", self.bin.display()))?;
        let mut stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let run = async {
            let mut out = Vec::new();
            stdout.read_to_end(&mut out).await?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, out))
        };
        let (status, out) = tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| anyhow!("{} still running after {timeout:?}", self.name))?
            .context("wait for exit")?;
        Ok(Exited {
            status,
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: std::fs::read_to_string(&log.0).unwrap_or_default(),
        })
    }

    /// The command with a clean environment, stdin closed, stdout piped, stderr to `stderr`.
    fn command(&self, stderr: Stdio) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env_clear();
        if let Some(filter) = &self.log_filter {
            let rust_log = std::env::var_os("RUST_LOG").unwrap_or_else(|| filter.into());
            cmd.env("RUST_LOG", rust_log);
        }
        cmd.env("RUST_BACKTRACE", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        cmd
    }
}

/// What a process that ran to its end left behind.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// One started process (running, or stopped by [`Service::kill`] / [`Service::terminate`]
/// until [`Service::restart`]).
#[derive(Debug)]
pub struct Service {
    launch: Launch,
    child: Option<Child>,
    /// stderr of every run, in order.
    logs: Vec<PathBuf>,
    /// Where it listens; kept across restarts (a restart reuses the port).
    pub addr: SocketAddr,
}

impl Service {
    async fn spawn(&mut self) -> Result<()> {
        let (log_path, log) = next_log(&self.launch.dir, &self.launch.name)?;
        self.logs.push(log_path);
        let mut cmd = self.launch.command(Stdio::from(log));
        cmd.args(&self.launch.args);
        if let Ready::Announce(_) = self.launch.ready {
            cmd.arg("--listen").arg(self.addr.to_string());
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", self.launch.bin.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let name = self.launch.name.clone();
        let timeout = self.launch.start_timeout;
        match self.launch.ready {
            Ready::Announce(_) => {
                let line = tokio::time::timeout(timeout, lines.next_line())
                    .await
                    .map_err(|_| {
                        anyhow!(
                            "{name} printed no listening line in {timeout:?}; stderr:\n{}",
                            self.stderr_tail()
                        )
                    })?
                    .context("read stdout")?;
                let Some(line) = line else {
                    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                    bail!(
                        "{name} exited before listening ({status:?}); stderr:\n{}",
                        self.stderr_tail()
                    );
                };
                let prefix = format!("{name} listening on http://");
                self.addr = line
                    .strip_prefix(&prefix)
                    .ok_or_else(|| anyhow!("unexpected first stdout line of {name}: {line:?}"))?
                    .parse()
                    .with_context(|| format!("parse the address in {line:?}"))?;
            }
            Ready::Port(addr) => {
                let up = crate::wait_for(
                    &format!("{name} to accept on {addr}"),
                    timeout,
                    async || {
                        tokio::net::TcpStream::connect(addr).await.is_ok()
                            || !matches!(child.try_wait(), Ok(None))
                    },
                )
                .await;
                if let Err(e) = up.and_then(|()| match child.try_wait() {
                    Ok(None) => Ok(()),
                    Ok(Some(status)) => Err(anyhow!("{name} exited at start ({status})")),
                    Err(e) => Err(e.into()),
                }) {
                    bail!("{e:#}; stderr:\n{}", self.stderr_tail());
                }
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        Ok(())
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://ADDR`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// `http://ADDR` + `path`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The pid while the process runs (not yet reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The name it was launched as.
    pub fn name(&self) -> &str {
        &self.launch.name
    }

    /// Send `sig` to the process.
    ///
    /// # Errors
    /// It is not running, or kill(2) failed.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("{} is not running", self.launch.name))?;
        let pid = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| anyhow!("bad pid {pid}"))?;
        rustix::process::kill_process(pid, sig.raw())
            .with_context(|| format!("kill -{sig:?} {}", self.launch.name))
    }

    /// SIGKILL and reap.
    ///
    /// # Errors
    /// The kill failed.
    pub async fn kill(&mut self) -> Result<()> {
        self.kill_tree();
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("kill")?;
        }
        Ok(())
    }

    /// SIGTERM, then wait up to `timeout` for the exit status (SIGKILL after that, and an
    /// error quoting the stderr tail).
    ///
    /// # Errors
    /// It is not running, or did not exit in time.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.signal(Signal::Term)?;
        self.wait_exit(timeout).await
    }

    /// Wait up to `timeout` for the process to exit by itself (after a signal sent elsewhere,
    /// or a fatal error); SIGKILL and an error after that.
    ///
    /// # Errors
    /// It is not running, or did not exit in time.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("{} is not running", self.launch.name))?;
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                child.kill().await.ok();
                bail!(
                    "{} did not exit within {timeout:?}; stderr:\n{}",
                    self.launch.name,
                    self.stderr_tail()
                )
            }
        }
    }

    /// Start again with the same arguments on the same port.
    ///
    /// # Errors
    /// It is still running, or the start failed.
    pub async fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("{} is still running", self.launch.name);
        }
        self.spawn().await
    }

    /// The last few KiB of the current run's stderr.
    pub fn stderr_tail(&self) -> String {
        let text = self
            .logs
            .last()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let mut start = text.len().saturating_sub(TAIL_BYTES);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_owned()
    }

    /// Pids of the process's direct children (e.g. nginx's workers), from /proc.
    pub fn children(&self) -> Vec<u32> {
        self.pid().map(children).unwrap_or_default()
    }

    /// SIGKILL the process, then the direct children it had: in this order, so a parent that
    /// restarts its children (nginx's master) cannot replace one. A child keeps its pid until
    /// it is reaped, and the process stays ours (unreaped) until `Child::kill`/`wait`.
    fn kill_tree(&self) {
        let children = self.children();
        if self.pid().is_some() {
            let _gone = self.signal(Signal::Kill);
        }
        for pid in children {
            if let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                // Already gone is fine.
                let _gone = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }

    /// The current run's stderr log file.
    pub fn log_path(&self) -> Option<&Path> {
        self.logs.last().map(PathBuf::as_path)
    }

    /// Every line of stderr over all runs.
    pub fn stderr(&self) -> String {
        self.logs
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect()
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid()?)
    }

    /// CPU time (user + system) used so far, in seconds, from /proc.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid()?)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // tokio reaps the child afterwards (`kill_on_drop`).
        self.kill_tree();
    }
}

/// Pids of the direct children of `pid`, from `/proc/PID/task/*/children`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out: Vec<u32> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Create `dir/NAME.N.log` for the first N not taken.
fn next_log(dir: &Path, name: &str) -> Result<(PathBuf, std::fs::File)> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    for n in 1..10_000 {
        let path = dir.join(format!("{name}.{n}.log"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("create {}", path.display())),
        }
    }
    bail!("no free log file name for {name} in {}", dir.display())
}

/// `VmRSS` of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user + system) `pid` has used, in seconds (clock ticks of 1/100 s).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A shell script standing in for a binary: what it prints and how it exits.
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn the_announced_address_is_read_and_the_environment_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        // Prints what it was given (arguments and one inherited variable) on stderr, then
        // announces the address after `--listen` and stays up.
        let bin = script(
            dir.path(),
            "fake",
            r#"echo "args: $*; home: ${HOME:-unset}; extra: $EXTRA; log: $RUST_LOG" >&2
echo "fake listening on http://127.0.0.1:4321"
exec sleep 30"#,
        );
        let mut svc = Launch::with_bin("fake", &bin, dir.path())
            .args(["--a", "b"])
            .env("EXTRA", "x")
            .log_filter("warn")
            .start()
            .await
            .unwrap();
        assert_eq!(svc.addr, "127.0.0.1:4321".parse().unwrap());
        assert_eq!(svc.endpoint("/x"), "http://127.0.0.1:4321/x");
        crate::wait_for("stderr", Duration::from_secs(5), async || {
            svc.stderr().contains("args:")
        })
        .await
        .unwrap();
        let err = svc.stderr();
        assert!(err.contains("args: --a b --listen 127.0.0.1:0;"), "{err}");
        assert!(err.contains("home: unset;"), "{err}");
        assert!(err.contains("extra: x;"), "{err}");
        if std::env::var_os("RUST_LOG").is_none() {
            assert!(err.contains("log: warn"), "{err}");
        }
        let status = svc.terminate(Duration::from_secs(5)).await.unwrap();
        assert!(!status.success(), "sleep dies of SIGTERM");
        assert!(svc.pid().is_none());
        assert!(svc.signal(Signal::Term).is_err(), "no longer running");
    }

    #[tokio::test]
    async fn a_process_that_exits_before_listening_is_an_error_quoting_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let bin = script(dir.path(), "bad", "echo 'no secret given' >&2; exit 2");
        let err = Launch::with_bin("bad", &bin, dir.path())
            .start()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("exited before listening"), "{err}");
        assert!(err.contains("no secret given"), "{err}");
        let exited = Launch::with_bin("bad", &bin, dir.path())
            .run_to_exit(Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(exited.status.code(), Some(2));
        assert_eq!(exited.stderr, "no secret given\n");
        // Each start logged to a file of its own.
        assert!(dir.path().join("bad.1.log").exists());
        assert!(dir.path().join("bad.2.log").exists());
    }

    #[tokio::test]
    async fn a_silent_process_times_out_and_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let bin = script(dir.path(), "mute", "echo started >&2; exec sleep 30");
        let err = Launch::with_bin("mute", &bin, dir.path())
            .start_timeout(Duration::from_millis(300))
            .start()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("printed no listening line"), "{err}");
        assert!(err.contains("started"), "{err}");
    }

    #[tokio::test]
    async fn a_process_without_announcement_is_ready_when_its_port_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let bin = script(dir.path(), "plain", "exec sleep 30");
        let mut svc = Launch::with_bin("plain", &bin, dir.path())
            .ready_on_port(addr)
            .start()
            .await
            .unwrap();
        assert_eq!(svc.addr, addr);
        let pid = svc.pid().unwrap();
        svc.signal(Signal::Stop).unwrap();
        svc.signal(Signal::Cont).unwrap();
        svc.kill().await.unwrap();
        assert!(rss_kib(pid).is_none(), "killed and reaped");
        drop(listener);
        let exits = script(dir.path(), "exits", "exit 3");
        let err = Launch::with_bin("exits", &exits, dir.path())
            .ready_on_port(addr)
            .start()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("exited at start"), "{err}");
    }

    #[tokio::test]
    async fn dropping_the_handle_kills_the_process_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        // A parent with a child of its own, as nginx's master has its workers.
        let bin = script(
            dir.path(),
            "fake",
            "sleep 30 &\necho 'fake listening on http://127.0.0.1:1'\nwait",
        );
        let svc = Launch::with_bin("fake", &bin, dir.path())
            .start()
            .await
            .unwrap();
        let pid = svc.pid().unwrap();
        let kids = crate::wait_for("the child's child", Duration::from_secs(5), async || {
            Some(svc.children()).filter(|c| !c.is_empty())
        })
        .await
        .unwrap();
        drop(svc);
        for p in kids.into_iter().chain([pid]) {
            crate::wait_for("the processes to go", Duration::from_secs(5), async || {
                // Gone, or a zombie waiting for its reaper.
                std::fs::read_to_string(format!("/proc/{p}/stat")).map_or(true, |s| {
                    s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                })
            })
            .await
            .unwrap();
        }
    }
}
