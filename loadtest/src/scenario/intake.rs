//! `intake`: POSTs to reflektor (or, with `--target`, Nchan's publisher or the bare 202 server)
//! and the latency of the answer.
//!
//! With `--rate R`: open loop at R posts/s over `--connections` keep-alive connections,
//! latency corrected for coordinated omission (see [`crate::drive`]). Without `--rate`: closed
//! loop, every connection posting as fast as answers come back; the completion rate is the
//! saturation throughput. Bodies are `{"n","t","pad"}` JSON of `--body-size` bytes, spread
//! over `--rooms` rooms.

use std::sync::Arc;

use anyhow::Result;
use serde::Serialize;

use super::common::{Publish, RunArgs, SpawnArgs};
use crate::drive::{self, Drive, Mode};
use crate::report::Report;
use crate::spawn::{self, Stack, Target};
use crate::target::{self, Template};

#[derive(clap::Args, Debug, Clone, Serialize)]
pub(crate) struct Args {
    /// Intake URL template.
    #[arg(long, default_value = "http://127.0.0.1:7070/rooms/{room}/messages")]
    url: String,
    /// Posts per second (open loop). Omit for closed loop (saturation).
    #[arg(long)]
    rate: Option<f64>,
    /// Keep-alive connections (concurrent clients).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Rooms the posts are spread over.
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 100)]
    body_size: usize,
    /// Bearer token for the intake.
    #[arg(long)]
    token: Option<String>,
    /// `--fsync` for a spawned reflektor (always, interval, never).
    #[arg(long, default_value = "interval")]
    fsync: String,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    spawn: SpawnArgs,
}

pub(crate) async fn run(args: Args) -> Result<()> {
    spawn::raise_nofile();
    let mut template = Template::parse(&args.url)?;
    let mut stack = None;
    if args.spawn.spawn {
        let mut s = Stack::new(&args.spawn)?;
        let target = args.spawn.target;
        target.expect("intake", &[Target::Ours, Target::Nchan, Target::Limit202])?;
        let addr = if target == Target::Ours {
            let mut extra = vec!["--fsync".to_owned(), args.fsync.clone()];
            extra.extend(args.spawn.reflektor_args.iter().cloned());
            s.start_reflektor(&extra).await?.addr
        } else {
            s.start_peer(target).await?.addr
        };
        template = template.rebase(addr)?;
        stack = Some(s);
    }
    let result = measure(&args, template, stack.as_ref()).await;
    if let Some(s) = stack {
        s.stop().await;
    }
    result
}

async fn measure(args: &Args, template: Template, stack: Option<&Stack>) -> Result<()> {
    let rooms = target::room_names(&target::run_prefix(), args.rooms.max(1));
    let work = Arc::new(Publish::new(
        template.clone(),
        &rooms,
        args.connections,
        args.body_size,
        args.token.as_deref(),
    ));
    let mode = match args.rate {
        Some(rate) => Mode::Open { rate },
        None => Mode::Closed,
    };
    let drive = Drive {
        addr: template.addr,
        connections: args.connections,
        mode,
        duration: args.run.duration,
        max_requests: args.run.max_requests,
        local_addrs: Vec::new(),
    };
    let rss_before = stack
        .and_then(Stack::memory_pid)
        .and_then(spawn::tree_rss_kib);
    let cpu_before = spawn::cpu_snapshot(stack);
    let out = drive::run(drive, work).await?;
    let cpu_after = spawn::cpu_snapshot(stack);
    let label = args.run.label.clone().unwrap_or_else(|| match args.rate {
        Some(r) => format!("open-{r}rps-{}c-fsync-{}", args.connections, args.fsync),
        None => format!("closed-{}c-fsync-{}", args.connections, args.fsync),
    });
    let mut report = Report::new(
        "intake",
        &label,
        args.spawn.target_name(),
        serde_json::to_value(args)?,
    );
    let secs = out.elapsed.as_secs_f64().max(1e-9);
    if let Some(r) = args.rate {
        report.figure("rate_target_per_s", r);
    }
    report.figure("rate_achieved_per_s", (out.ok as f64 / secs).round());
    report.figure("accepted", out.ok as f64);
    report.figure("errors", out.errors as f64);
    report.figure("connections", args.connections as f64);
    report.figure("elapsed_s", secs);
    report.cpu(&cpu_before, &cpu_after, secs);
    if let (Some(before), Some(after)) = (
        rss_before,
        stack
            .and_then(Stack::memory_pid)
            .and_then(spawn::tree_rss_kib),
    ) {
        report.figure("server_rss_before_kib", before as f64);
        report.figure("server_rss_after_kib", after as f64);
    }
    let name = if args.rate.is_some() {
        "202_corrected"
    } else {
        "202"
    };
    report.latency(name, &out.latency);
    if args.rate.is_some() {
        report.latency("202_service_time", &out.service);
        report.latency("harness_timer_lag", &out.timer_lag);
    }
    report.timeline = out.timeline;
    report.timeline_label = "202s".into();
    report.notes.extend(out.error_samples);
    report.finish(&args.run.out)
}
