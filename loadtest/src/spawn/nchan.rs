//! Nchan (Debian's `nginx` with `libnginx-mod-nchan`) as a peer target: the same URLs as ekg,
//! served by nginx on loopback with its own configuration, prefix and pid file, never the
//! system service.
//!
//! - `POST /rooms/{room}/messages` publishes the body to channel `{room}` (`nchan_publisher`);
//!   the message is held in nginx's shared memory only, whereas a post to ours goes through
//!   reflektor's durable log first.
//! - `GET /rooms/{room}/ws` (WebSocket) and `/rooms/{room}/sse` (EventSource, by its `Accept`
//!   header) subscribe (`nchan_subscriber`); each frame is the published body itself: no
//!   hello, no envelope, no seq (the harness reads it with `--framing raw`).
//! - `GET /nchan_status` is `nchan_stub_status` (its `shared memory used` line).
//!
//! One worker (`worker_processes 1`), as the issue's comparison; nginx is started in the
//! foreground (`daemon off`) so the launcher owns the master, and the workers are killed with
//! it. The module and nginx are installed by `loadtest/bench.sh` (apt-get), not by the tests.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Where Debian's nginx and the Nchan module live.
pub(crate) const NGINX: &str = "/usr/sbin/nginx";
pub(crate) const MODULE: &str = "/usr/lib/nginx/modules/ngx_nchan_module.so";

/// Connections the worker may hold (under the 20,000 open files per process).
const WORKER_CONNECTIONS: u32 = 19_500;

/// Check that nginx and the module are installed.
pub(crate) fn check_installed() -> Result<()> {
    for p in [NGINX, MODULE] {
        if !Path::new(p).exists() {
            bail!(
                "{p} not found: install Debian's nginx and libnginx-mod-nchan (loadtest/bench.sh does)"
            );
        }
    }
    Ok(())
}

/// The configuration for a server on `addr` with its files under `prefix`.
pub(crate) fn config(prefix: &Path, addr: SocketAddr) -> String {
    let p = prefix.display();
    format!(
        r#"# Nchan as a loadtest target (written by loadtest; see loadtest/src/spawn/nchan.rs).
load_module {MODULE};
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {p}/nginx.pid;
error_log {p}/error.log warn;

events {{
    worker_connections {WORKER_CONNECTIONS};
}}

http {{
    access_log off;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    client_max_body_size 1m;
    client_body_buffer_size 64k;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    # Messages and channels live in this shared memory; sized for the rooms scenario.
    nchan_max_reserved_memory 4096M;

    server {{
        listen {addr} backlog=4096;

        location ~ ^/rooms/([^/]+)/messages$ {{
            nchan_publisher;
            nchan_channel_id $1;
        }}
        location ~ ^/rooms/([^/]+)/(ws|sse)$ {{
            nchan_subscriber;
            nchan_channel_id $1;
        }}
        location = /nchan_status {{
            nchan_stub_status;
        }}
    }}
}}
"#
    )
}

/// Write the prefix (configuration, temp and log directories) under `dir`; the config path.
pub(crate) fn prepare(dir: &Path, addr: SocketAddr) -> Result<std::path::PathBuf> {
    let prefix = dir.join("nchan");
    std::fs::create_dir_all(prefix.join("tmp"))
        .with_context(|| format!("create {}", prefix.display()))?;
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, config(&prefix, addr))
        .with_context(|| format!("write {}", conf.display()))?;
    Ok(conf)
}

/// `shared memory used` from `nchan_stub_status`, in KiB.
pub(crate) async fn shared_memory_kib(addr: SocketAddr) -> Option<f64> {
    let text = reqwest::get(format!("http://{addr}/nchan_status"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    parse_shared_memory(&text)
}

fn parse_shared_memory(status: &str) -> Option<f64> {
    let v = status
        .lines()
        .find_map(|l| l.strip_prefix("shared memory used:"))?
        .trim();
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit() && c != '.')?);
    let n: f64 = num.parse().ok()?;
    Some(match unit.trim() {
        "K" => n,
        "M" => n * 1024.0,
        "G" => n * 1024.0 * 1024.0,
        _ => n / 1024.0,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_config_serves_ekg_paths_on_the_given_address_with_one_worker() {
        let c = config(Path::new("/tmp/x"), "127.0.0.1:4567".parse().unwrap());
        assert!(c.contains("listen 127.0.0.1:4567 backlog=4096;"));
        assert!(c.contains("worker_processes 1;"));
        assert!(c.contains("pid /tmp/x/nginx.pid;"));
        assert!(c.contains("location ~ ^/rooms/([^/]+)/messages$"));
        assert!(c.contains("daemon off;"));
    }

    #[test]
    fn stub_status_memory_is_read_in_kib() {
        let s = "total published messages: 1\nstored messages: 1\nshared memory used: 2048K\n";
        assert_eq!(parse_shared_memory(s), Some(2048.0));
        assert_eq!(
            parse_shared_memory("shared memory used: 3M\n"),
            Some(3072.0)
        );
        assert_eq!(parse_shared_memory("nothing"), None);
    }
}
