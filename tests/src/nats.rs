//! A real NATS server (one node, or a JetStream cluster of several) on loopback, for the
//! cluster-mode tests and the local cluster launcher.
//!
//! Every node gets its own client, route and monitoring ports on 127.0.0.1 and its own store
//! directory under the caller's directory; its stderr goes to `nats-<name>.<n>.log` there. A node
//! can be SIGKILLed and restarted on the same ports with the same store, as an operator's node
//! would come back. Children are killed when the handle drops.
//!
//! The binary is `NATS_SERVER_BIN`, else the newest one `scripts/install-nats` put in
//! `~/.cache/reflektor/`, else `nats-server` on `PATH`; it must be 2.10 or newer.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::{Launch, Service, wait_for};

/// How long a node (or a whole cluster) may take to report healthy.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Oldest nats-server with what reflektor relies on (stream and KV settings it checks).
const MIN_VERSION: (u32, u32) = (2, 10);

/// Path of the nats-server binary (see the module docs for where it is looked up).
///
/// # Errors
/// None found, or the one found is older than 2.10.
pub fn server_binary() -> Result<PathBuf> {
    let found = if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        PathBuf::from(p)
    } else if let Some(p) = cached_binary() {
        p
    } else if let Some(p) = on_path("nats-server") {
        p
    } else {
        bail!(
            "nats-server not found: run scripts/install-nats (scripts/test does) or set NATS_SERVER_BIN"
        )
    };
    let out = std::process::Command::new(&found)
        .arg("--version")
        .output()
        .with_context(|| format!("run {} --version", found.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = parse_version(&text)
        .ok_or_else(|| anyhow!("{}: unexpected version text {text:?}", found.display()))?;
    if version < MIN_VERSION {
        bail!(
            "{} is nats-server {}.{}; 2.10 or newer is needed (scripts/install-nats installs one)",
            found.display(),
            version.0,
            version.1
        );
    }
    Ok(found)
}

/// `nats-server: v2.15.1` -> (2, 15).
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.trim().rsplit('v').next()?;
    let mut parts = v.trim().split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn cached_binary() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?
        .join("reflektor");
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin/nats-server")))
        .filter(|p| p.exists())
        .collect();
    found.sort_by_key(|p| {
        let dir = p.ancestors().nth(2).and_then(Path::file_name);
        dir.and_then(|d| parse_version(&d.to_string_lossy().replace("nats-server-", "v")))
    });
    found.pop()
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// `n` distinct free loopback ports (all bound at once, then released for the servers to take).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// One nats-server process, started through the harness's [`Launch`].
pub struct NatsNode {
    pub name: String,
    /// Where clients connect.
    pub client: SocketAddr,
    /// The monitoring endpoint (`/healthz`, `/jsz`).
    pub monitor: SocketAddr,
    pub svc: Service,
    running: bool,
}

impl NatsNode {
    pub fn url(&self) -> String {
        format!("nats://{}", self.client)
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    /// True once the node serves clients and, in a cluster, its JetStream is current with the
    /// meta leader (`/healthz` answers 200).
    pub async fn healthy(&self) -> bool {
        let url = format!("http://{}/healthz", self.monitor);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build();
        match client {
            Ok(c) => matches!(c.get(url).send().await, Ok(r) if r.status().is_success()),
            Err(_) => false,
        }
    }

    /// SIGKILL and reap.
    ///
    /// # Errors
    /// The kill failed.
    pub async fn kill(&mut self) -> Result<()> {
        self.running = false;
        self.svc.kill().await
    }

    /// SIGTERM (a graceful stop) and wait for the exit.
    ///
    /// # Errors
    /// It did not stop within 15 s.
    pub async fn stop(&mut self) -> Result<()> {
        self.running = false;
        self.svc.terminate(Duration::from_secs(15)).await.map(drop)
    }

    /// Start again on the same ports with the same store, and wait until it is healthy.
    ///
    /// # Errors
    /// It did not come up healthy within 30 s.
    pub async fn restart(&mut self) -> Result<()> {
        self.svc.restart().await?;
        self.running = true;
        self.wait_healthy().await
    }

    async fn wait_healthy(&self) -> Result<()> {
        wait_for(
            &format!("nats-server {} healthy", self.name),
            READY_TIMEOUT,
            async || self.healthy().await,
        )
        .await
        .map_err(|e| anyhow!("{e}; log: {}", self.svc.stderr_tail()))
    }
}

/// One node or a JetStream cluster of several, all on loopback.
pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
}

impl NatsCluster {
    /// Start `n` nodes with JetStream under `dir` (`n` = 1: a single server, no cluster) and wait
    /// until every one is healthy.
    ///
    /// # Errors
    /// No usable binary, a node that does not come up within 30 s (its log is in the error).
    pub async fn start(dir: &Path, n: usize) -> Result<NatsCluster> {
        let bin = server_binary()?;
        let ports = free_ports(3 * n)?;
        let specs: Vec<(String, u16, u16, u16)> = ports
            .chunks(3)
            .enumerate()
            .map(|(i, p)| (format!("n{}", i + 1), p[0], p[1], p[2]))
            .collect();
        let mut nodes = Vec::with_capacity(n);
        for (name, client, route, monitor) in &specs {
            let store = dir.join(format!("nats-{name}"));
            std::fs::create_dir_all(&store)?;
            let mut conf = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                 jetstream {{\n  store_dir: {store:?}\n  max_memory_store: 256MB\n  max_file_store: 4GB\n}}\n",
                store = store.display().to_string(),
            );
            if n > 1 {
                let routes: Vec<String> = specs
                    .iter()
                    .filter(|s| s.0 != *name)
                    .map(|s| format!("nats-route://127.0.0.1:{}", s.2))
                    .collect();
                conf.push_str(&format!(
                    "cluster {{\n  name: reflektor-test\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
                    routes.join(", ")
                ));
            }
            let config = dir.join(format!("nats-{name}.conf"));
            std::fs::write(&config, conf)?;
            let client = SocketAddr::from(([127, 0, 0, 1], *client));
            let svc = Launch::with_bin(&format!("nats-{name}"), &bin, dir)
                .arg("--config")
                .arg(&config)
                .ready_on_port(client)
                .start()
                .await?;
            nodes.push(NatsNode {
                name: name.clone(),
                client,
                monitor: SocketAddr::from(([127, 0, 0, 1], *monitor)),
                svc,
                running: true,
            });
        }
        let cluster = NatsCluster { nodes };
        for node in &cluster.nodes {
            node.wait_healthy().await?;
        }
        Ok(cluster)
    }

    /// Every node's client URL, comma-separated: what `reflektor --nats` takes.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Wait until every running node is healthy again (after a restart or a kill).
    ///
    /// # Errors
    /// A node stayed unhealthy for 30 s.
    pub async fn wait_healthy(&self) -> Result<()> {
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            node.wait_healthy().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_version_line_and_the_cache_directory_name() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15)));
        assert_eq!(parse_version("v2.9.10"), Some((2, 9)));
        assert!(parse_version("v2.9.10").unwrap() < MIN_VERSION);
        assert_eq!(parse_version("garbage"), None);
    }
}
