//! `history`: history page requests per second and their latency.
//!
//! One room is pre-filled with `--prefill` messages (through the publish URL) and the harness
//! waits until the ekg host holds them all. Then `GET …/messages?before=<seq>&limit=N` runs
//! open loop at `--rate` pages/s with a random `before` cursor in the room's range, latency
//! corrected for coordinated omission. A page counts as served when the answer is 200 with a
//! `messages` array.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use super::common::{Publish, RunArgs, SpawnArgs, auth_header};
use crate::drive::{self, Drive, Mode, Workload};
use crate::http::format_request;
use crate::report::Report;
use crate::spawn::{self, Stack, Target};
use crate::target::{self, Template};
use tests::wait_for;

#[derive(clap::Args, Debug, Clone, Serialize)]
pub(crate) struct Args {
    /// Publish URL template, used to pre-fill the room.
    #[arg(long, default_value = "http://127.0.0.1:7070/rooms/{room}/messages")]
    publish_url: String,
    /// History URL template (the cursor and limit are appended).
    #[arg(long, default_value = "http://127.0.0.1:7080/rooms/{room}/messages")]
    page_url: String,
    /// Room info URL template (`head`, `oldest`, `messages`).
    #[arg(long, default_value = "http://127.0.0.1:7080/rooms/{room}")]
    room_url: String,
    /// Bearer token for publishing.
    #[arg(long)]
    token: Option<String>,
    /// With --spawn: one standalone ekg (publish to it directly) instead of reflektor + ekg.
    #[arg(long)]
    standalone: bool,
    /// Messages to pre-fill the room with.
    #[arg(long, default_value_t = 10_000)]
    prefill: u64,
    /// Page size.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Pages per second.
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 100)]
    message_size: usize,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    spawn: SpawnArgs,
}

pub(crate) async fn run(mut args: Args) -> Result<()> {
    spawn::raise_nofile();
    let mut publish = Template::parse(&args.publish_url)?;
    let mut page = Template::parse(&args.page_url)?;
    let mut room_info = Template::parse(&args.room_url)?;
    let mut stack = None;
    if args.spawn.spawn {
        args.spawn.target.expect("history", &[Target::Ours])?;
        let mut s = Stack::new(&args.spawn)?;
        let mut extra = vec![
            "--history-per-room".to_owned(),
            args.prefill.max(1000).to_string(),
        ];
        extra.extend(args.spawn.ekg_args.iter().cloned());
        let ekg = s.start_ekg(args.standalone, &extra).await?.addr;
        page = page.rebase(ekg)?;
        room_info = room_info.rebase(ekg)?;
        if args.standalone {
            publish = publish.rebase(ekg)?;
            args.token = Some(spawn::TOKEN.to_owned());
        } else {
            let r = s.start_reflektor(&args.spawn.reflektor_args).await?;
            publish = publish.rebase(r.addr)?;
        }
        stack = Some(s);
    }
    let result = measure(&args, publish, page, room_info, stack.as_ref()).await;
    if let Some(s) = stack {
        s.stop().await;
    }
    result
}

struct Pages {
    template: Template,
    room: String,
    limit: u32,
    /// Cursors are drawn from `oldest + 1 ..= head + 1`.
    oldest: u64,
    head: u64,
}

impl Workload for Pages {
    fn request(&self, _conn: usize, _k: u64, buf: &mut Vec<u8>) {
        let before = fastrand::u64(self.oldest + 1..=self.head + 1);
        let path = format!(
            "{}?before={before}&limit={}",
            self.template.path(&self.room),
            self.limit
        );
        format_request(buf, "GET", &path, self.template.addr, &[], b"");
    }

    fn response(&self, _conn: usize, _k: u64, status: u16, body: &[u8]) -> bool {
        status == 200 && crate::http::find(body, b"\"messages\"").is_some()
    }
}

async fn measure(
    args: &Args,
    publish: Template,
    page: Template,
    room_info: Template,
    stack: Option<&Stack>,
) -> Result<()> {
    let room = target::room_names(&target::run_prefix(), 1).remove(0);
    eprintln!("pre-filling {room} with {} messages", args.prefill);
    let fill = Arc::new(Publish::new(
        publish.clone(),
        std::slice::from_ref(&room),
        8,
        args.message_size,
        args.token.as_deref(),
    ));
    let filled = drive::run(
        Drive {
            addr: publish.addr,
            connections: 8,
            mode: Mode::Closed,
            duration: Duration::from_secs(300),
            max_requests: args.prefill,
            local_addrs: Vec::new(),
        },
        fill,
    )
    .await?;
    let client = reqwest::Client::new();
    let info_url = room_info.url(&room);
    let _auth = auth_header(args.token.as_deref());
    let (head, oldest) = wait_for(
        "the room to hold the pre-filled messages",
        Duration::from_secs(120),
        async || {
            let v: serde_json::Value =
                client.get(&info_url).send().await.ok()?.json().await.ok()?;
            let msgs = v["messages"].as_u64()?;
            (msgs >= filled.ok).then(|| {
                (
                    v["head"].as_u64().unwrap_or(0),
                    v["oldest"].as_u64().unwrap_or(0),
                )
            })
        },
    )
    .await
    .context("pre-fill")?;
    eprintln!(
        "room holds {} messages (seqs {oldest}..={head}); paging at {}/s",
        filled.ok, args.rate
    );
    let work = Arc::new(Pages {
        template: page.clone(),
        room: room.clone(),
        limit: args.limit,
        oldest: oldest.saturating_sub(1),
        head,
    });
    let cpu_before = spawn::cpu_snapshot(stack);
    let out = drive::run(
        Drive {
            addr: page.addr,
            connections: args.connections,
            mode: Mode::Open { rate: args.rate },
            duration: args.run.duration,
            max_requests: args.run.max_requests,
            local_addrs: Vec::new(),
        },
        work,
    )
    .await?;
    let cpu_after = spawn::cpu_snapshot(stack);
    let label = args.run.label.clone().unwrap_or_else(|| {
        format!(
            "{}msgs-limit{}-{}rps-{}c",
            args.prefill, args.limit, args.rate, args.connections
        )
    });
    let mut report = Report::new(
        "history",
        &label,
        args.spawn.target_name(),
        serde_json::to_value(args)?,
    );
    let secs = out.elapsed.as_secs_f64().max(1e-9);
    report.figure("prefilled", filled.ok as f64);
    report.figure("rate_target_per_s", args.rate);
    report.figure("pages_per_s", (out.ok as f64 / secs).round());
    report.figure("pages_ok", out.ok as f64);
    report.cpu(&cpu_before, &cpu_after, secs);
    report.figure("errors", out.errors as f64);
    report.latency("page_corrected", &out.latency);
    report.latency("page_service_time", &out.service);
    report.latency("harness_timer_lag", &out.timer_lag);
    report.timeline = out.timeline;
    report.timeline_label = "pages".into();
    report.notes.extend(out.error_samples);
    report.finish(&args.run.out)
}
