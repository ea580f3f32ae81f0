//! `rooms`: what a room costs, and whether opening rooms is slower than writing to one.
//!
//! Phase 1 writes one short message into each of `--rooms` new rooms (closed loop over
//! `--connections` keep-alive connections, room `i` for the `i`-th write): the rate when every
//! write opens a room, and the server's memory per room: resident memory (with its child
//! processes) after the writes and a short settle, minus before, divided by the rooms written.
//! For Nchan its shared memory in use (`nchan_stub_status`) is reported too, since messages
//! and channels live there. Phase 2 writes the same number of messages (within `--duration`)
//! into one room that already exists: the rate to compare with. Reported: `bytes_per_room`,
//! `open_writes_per_s`, `existing_writes_per_s` and their ratio `open_to_existing`.
//!
//! `--spawn` runs ekg standalone (a write is applied when it is answered, so the rate is
//! ekg's, not reflektor's intake) or, with `--target nchan`, Nchan (publishing to a new
//! channel creates it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use super::common::{Publish, RunArgs, SpawnArgs, auth_header};
use crate::drive::{self, Drive, Mode, Outcome, Workload};
use crate::http::{self, format_request};
use crate::report::Report;
use crate::spawn::{self, Stack, Target, nchan};
use crate::target::{self, Template};

#[derive(clap::Args, Debug, Clone, Serialize)]
pub(crate) struct Args {
    /// Publish URL template (a standalone ekg with --token, or Nchan's publisher).
    #[arg(long, default_value = "http://127.0.0.1:7080/rooms/{room}/messages")]
    publish_url: String,
    /// Bearer token for publishing.
    #[arg(long)]
    token: Option<String>,
    /// Rooms to open (one message each), and writes into the one room afterwards.
    #[arg(long, default_value_t = 78_000)]
    rooms: u64,
    /// Keep-alive connections writing.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Message body size in bytes (a short message).
    #[arg(long, default_value_t = 60)]
    message_size: usize,
    /// The server's pid, for its memory (default: the spawned server's).
    #[arg(long)]
    server_pid: Option<u32>,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    spawn: SpawnArgs,
}

/// Each write to a room of its own: write `i` goes to room `prefix{i}`.
struct NewRooms {
    template: Template,
    prefix: String,
    next: AtomicU64,
    size: usize,
    auth: Option<String>,
}

impl Workload for NewRooms {
    fn request(&self, _conn: usize, _k: u64, buf: &mut Vec<u8>) {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.template.path(&format!("{}{i}", self.prefix));
        let mut body = Vec::with_capacity(self.size + 64);
        http::message_body(&mut body, http::unix_micros(), 0, self.size);
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &self.auth {
            headers.push(("authorization", a.as_str()));
        }
        format_request(buf, "POST", &path, self.template.addr, &headers, &body);
    }

    fn response(&self, _conn: usize, _k: u64, status: u16, _body: &[u8]) -> bool {
        (200..300).contains(&status)
    }
}

pub(crate) async fn run(mut args: Args) -> Result<()> {
    spawn::raise_nofile();
    let mut template = Template::parse(&args.publish_url)?;
    let mut stack = None;
    if args.spawn.spawn {
        let target = args.spawn.target;
        target.expect("rooms", &[Target::Ours, Target::Nchan])?;
        let mut s = Stack::new(&args.spawn)?;
        let addr = if target == Target::Ours {
            let mut extra = vec!["--max-rooms".to_owned(), (args.rooms + 1000).to_string()];
            extra.extend(args.spawn.ekg_args.iter().cloned());
            args.token = Some(spawn::TOKEN.to_owned());
            s.start_ekg(true, &extra).await?.addr
        } else {
            s.start_peer(target).await?.addr
        };
        template = template.rebase(addr)?;
        args.server_pid = s.memory_pid();
        stack = Some(s);
    }
    let result = measure(&args, template, stack.as_ref()).await;
    if let Some(s) = stack {
        s.stop().await;
    }
    result
}

async fn measure(args: &Args, template: Template, stack: Option<&Stack>) -> Result<()> {
    let nchan = args.spawn.spawn && args.spawn.target == Target::Nchan;
    let drive = |max: u64| Drive {
        addr: template.addr,
        connections: args.connections.max(1),
        mode: Mode::Closed,
        duration: args.run.duration,
        max_requests: max.min(args.run.max_requests),
        local_addrs: Vec::new(),
    };
    let rss = || args.server_pid.and_then(spawn::tree_rss_kib);
    let settle = || tokio::time::sleep(Duration::from_secs(2));

    settle().await;
    let rss_before = rss();
    let shm_before = if nchan {
        nchan::shared_memory_kib(template.addr).await
    } else {
        None
    };
    let cpu_before = spawn::cpu_snapshot(stack);
    let open = drive::run(
        drive(args.rooms),
        Arc::new(NewRooms {
            template: template.clone(),
            prefix: target::run_prefix(),
            next: AtomicU64::new(0),
            size: args.message_size,
            auth: auth_header(args.token.as_deref()),
        }),
    )
    .await?;
    let cpu_after = spawn::cpu_snapshot(stack);
    settle().await;
    let rss_after = rss();
    let shm_after = if nchan {
        nchan::shared_memory_kib(template.addr).await
    } else {
        None
    };
    eprintln!(
        "{} rooms opened in {:.1}s; writing {} messages into one room",
        open.ok,
        open.elapsed.as_secs_f64(),
        open.ok
    );
    let one = [target::run_prefix()];
    let existing = drive::run(
        drive(open.ok.max(1)),
        Arc::new(Publish::new(
            template.clone(),
            &one,
            args.connections.max(1),
            args.message_size,
            args.token.as_deref(),
        )),
    )
    .await?;

    let rate = |o: &Outcome| o.ok as f64 / o.elapsed.as_secs_f64().max(1e-9);
    let label = args
        .run
        .label
        .clone()
        .unwrap_or_else(|| format!("{}rooms-{}c", args.rooms, args.connections));
    let mut report = Report::new(
        "rooms",
        &label,
        args.spawn.target_name(),
        serde_json::to_value(args)?,
    );
    report.figure("rooms_opened", open.ok as f64);
    report.figure("open_errors", open.errors as f64);
    report.figure("open_writes_per_s", rate(&open).round());
    report.figure("existing_writes", existing.ok as f64);
    report.figure("existing_errors", existing.errors as f64);
    report.figure("existing_writes_per_s", rate(&existing).round());
    report.figure(
        "open_to_existing",
        (rate(&open) / rate(&existing).max(1e-9) * 100.0).round() / 100.0,
    );
    report.cpu(&cpu_before, &cpu_after, open.elapsed.as_secs_f64());
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        report.figure("server_rss_before_kib", b as f64);
        report.figure("server_rss_after_kib", a as f64);
        report.figure(
            "bytes_per_room",
            (a.saturating_sub(b) as f64 * 1024.0 / open.ok.max(1) as f64).round(),
        );
    }
    if let (Some(b), Some(a)) = (shm_before, shm_after) {
        report.figure("shared_memory_used_kib", a);
        report.figure(
            "shared_bytes_per_room",
            ((a - b).max(0.0) * 1024.0 / open.ok.max(1) as f64).round(),
        );
    }
    report.latency("open_write", &open.latency);
    report.latency("existing_write", &existing.latency);
    report.timeline = open.timeline;
    report.timeline_label = "rooms opened".into();
    report.notes.extend(open.error_samples);
    report.notes.extend(existing.error_samples);
    report.finish(&args.run.out)
}
