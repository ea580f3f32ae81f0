//! Arguments every scenario takes, and the publishing workload several of them use.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::drive::Workload;
use crate::http::{self, format_request};
use crate::spawn::Target;
use crate::target::Template;

/// Bounds and output of one run.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub(crate) struct RunArgs {
    /// Stop issuing load after this long (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Stop issuing load after this many requests (publishes, pages, connections) in total.
    #[arg(long, default_value_t = 10_000_000)]
    pub(crate) max_requests: u64,
    /// Directory for the JSON report and SVG plot.
    #[arg(long, default_value = "loadtest/results")]
    pub(crate) out: PathBuf,
    /// Name of this run in file names and the summary (default: derived from the parameters).
    #[arg(long)]
    pub(crate) label: Option<String>,
}

/// Starting the real binaries.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub(crate) struct SpawnArgs {
    /// Start the servers this scenario needs (on port 0, in a temporary directory) and kill
    /// them at the end; URL templates are then re-pointed at them.
    #[arg(long)]
    pub(crate) spawn: bool,
    /// Where the reflektor and ekg binaries are (default: next to this executable).
    #[arg(long)]
    pub(crate) bin_dir: Option<PathBuf>,
    /// Extra argument for a spawned reflektor (repeatable, e.g. --reflektor-arg=--fsync=always).
    #[arg(long = "reflektor-arg", allow_hyphen_values = true)]
    pub(crate) reflektor_args: Vec<String>,
    /// Extra argument for each spawned ekg host (repeatable).
    #[arg(long = "ekg-arg", allow_hyphen_values = true)]
    pub(crate) ekg_args: Vec<String>,
    /// With --spawn: which server to start and drive (ours, Nchan, or a limit server).
    #[arg(long, value_enum, default_value = "ours")]
    pub(crate) target: Target,
    /// With --spawn: run the servers under `taskset -c LIST` (e.g. 0), to pin them apart from
    /// the harness (which the caller pins, e.g. `taskset -c 1 loadtest ...`).
    #[arg(long)]
    pub(crate) server_cpus: Option<String>,
}

impl SpawnArgs {
    /// The target's name in reports: the spawned target, or `external` for given URLs.
    pub(crate) fn target_name(&self) -> &'static str {
        if self.spawn {
            self.target.name()
        } else {
            "external"
        }
    }
}

/// `Authorization` header pair for an optional bearer token.
pub(crate) fn auth_header(token: Option<&str>) -> Option<String> {
    token.map(|t| format!("Bearer {t}"))
}

/// POSTs of `{"n","t","pad"}` bodies to a templated URL over a set of rooms.
///
/// Connection `i` of `connections` owns rooms `i, i + connections, ...` and cycles over them,
/// so each room's messages go out one at a time on one connection: their order of acceptance
/// (and so their seqs) follows `n`, which subscribers check. `n` counts per room from 0.
pub(crate) struct Publish {
    template: Template,
    /// Path per room, formatted once.
    paths: Vec<String>,
    connections: usize,
    body_size: usize,
    auth: Option<String>,
    /// Next `n` per room: after the run, the number of messages attempted per room.
    pub(crate) next_n: Vec<AtomicU64>,
    /// `(room, n)` of the request in flight per connection, to attribute failures.
    in_flight: Vec<Mutex<(usize, u64)>>,
    /// `(room, n)` of every request that was not answered 202/2xx.
    pub(crate) failed: Mutex<Vec<(usize, u64)>>,
}

impl Publish {
    pub(crate) fn new(
        template: Template,
        rooms: &[String],
        connections: usize,
        body_size: usize,
        token: Option<&str>,
    ) -> Publish {
        Publish {
            paths: rooms.iter().map(|r| template.path(r)).collect(),
            template,
            connections: connections.max(1),
            body_size,
            auth: auth_header(token),
            next_n: rooms.iter().map(|_| AtomicU64::new(0)).collect(),
            in_flight: (0..connections.max(1))
                .map(|_| Mutex::new((0, 0)))
                .collect(),
            failed: Mutex::new(Vec::new()),
        }
    }

    /// The room request `k` of connection `conn` goes to.
    fn room(&self, conn: usize, k: u64) -> usize {
        let rooms = self.paths.len().max(1);
        let p = self.connections;
        if conn < rooms {
            let owned = (rooms - conn).div_ceil(p) as u64;
            conn + (k % owned) as usize * p
        } else {
            (conn + k as usize * p) % rooms
        }
    }

    /// Messages attempted per room.
    pub(crate) fn attempted(&self) -> Vec<u64> {
        self.next_n
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect()
    }

    /// The `n`s that failed, per room.
    pub(crate) fn failed_by_room(&self) -> Vec<Vec<u64>> {
        let mut out = vec![Vec::new(); self.paths.len()];
        if let Ok(f) = self.failed.lock() {
            for &(r, n) in f.iter() {
                if let Some(v) = out.get_mut(r) {
                    v.push(n);
                }
            }
        }
        out
    }

    fn note_failure(&self, conn: usize) {
        if let (Some(Ok(slot)), Ok(mut failed)) = (
            self.in_flight.get(conn).map(|m| m.lock()),
            self.failed.lock(),
        ) {
            failed.push(*slot);
        }
    }
}

impl Workload for Publish {
    fn request(&self, conn: usize, k: u64, buf: &mut Vec<u8>) {
        let room = self.room(conn, k);
        let n = self
            .next_n
            .get(room)
            .map(|a| a.fetch_add(1, Ordering::Relaxed))
            .unwrap_or(0);
        if let Some(Ok(mut slot)) = self.in_flight.get(conn).map(|m| m.lock()) {
            *slot = (room, n);
        }
        let mut body = Vec::with_capacity(self.body_size + 64);
        http::message_body(&mut body, http::unix_micros(), n, self.body_size);
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &self.auth {
            headers.push(("authorization", a.as_str()));
        }
        let path = self.paths.get(room).map(String::as_str).unwrap_or("/");
        format_request(buf, "POST", path, self.template.addr, &headers, &body);
    }

    fn response(&self, conn: usize, _k: u64, status: u16, _body: &[u8]) -> bool {
        let ok = (200..300).contains(&status);
        if !ok {
            self.note_failure(conn);
        }
        ok
    }

    fn error(&self, conn: usize, _k: u64) {
        self.note_failure(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_room_belongs_to_one_connection() {
        let t = Template::parse("http://127.0.0.1:1/rooms/{room}/messages").unwrap();
        let rooms: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
        let p = Publish::new(t, &rooms, 4, 100, None);
        for conn in 0..4 {
            for k in 0..40 {
                assert_eq!(p.room(conn, k) % 4, conn);
                assert!(p.room(conn, k) < 10);
            }
        }
        let one = Publish::new(
            Template::parse("http://127.0.0.1:1/{room}").unwrap(),
            &rooms[..1],
            1,
            100,
            None,
        );
        assert!((0..5).all(|k| one.room(0, k) == 0));
    }
}
