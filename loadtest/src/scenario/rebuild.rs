//! `rebuild`: how fast an empty ekg host catches up with a log of N records.
//!
//! reflektor (with no host) is filled with `--records` messages over `--rooms` rooms, closed
//! loop. Then an empty ekg host is added with `POST /_reflektor/hosts {"url": …}` and the clock
//! runs until `GET /_reflektor/hosts` shows that host's `lag_records` at 0 with `applied` at the
//! log's head (or ekg's `/readyz` answers 200, whichever is seen first). Catch-up rate =
//! records / time. The host's `applied` offset is sampled for the throughput-over-time plot.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::time::Instant;

use super::common::{Publish, RunArgs, SpawnArgs};
use crate::drive::{self, Drive, Mode};
use crate::report::{self, Report};
use crate::spawn::{self, Stack, Target};
use crate::target::{self, Template};

#[derive(clap::Args, Debug, Clone, Serialize)]
pub(crate) struct Args {
    /// reflektor base URL.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    reflektor_url: String,
    /// Base URL of the empty ekg host to add.
    #[arg(long, default_value = "http://127.0.0.1:7080")]
    ekg_url: String,
    /// Bearer token for reflektor (intake and /_reflektor/).
    #[arg(long)]
    token: Option<String>,
    /// Records to fill the log with.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Rooms the records are spread over.
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 100)]
    message_size: usize,
    /// Connections used to fill the log.
    #[arg(long, default_value_t = 32)]
    fill_connections: usize,
    /// Give up on catching up after this long.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    spawn: SpawnArgs,
}

pub(crate) async fn run(mut args: Args) -> Result<()> {
    spawn::raise_nofile();
    let mut stack = None;
    if args.spawn.spawn {
        args.spawn.target.expect("rebuild", &[Target::Ours])?;
        let mut s = Stack::new(&args.spawn)?;
        let mut extra = vec!["--retention".to_owned(), "24h".to_owned()];
        extra.extend(args.spawn.reflektor_args.iter().cloned());
        let r = s.start_reflektor(&extra).await?;
        args.reflektor_url = r.url();
        stack = Some(s);
    }
    let result = measure(&mut args, stack.as_mut()).await;
    if let Some(s) = stack {
        s.stop().await;
    }
    result
}

async fn measure(args: &mut Args, stack: Option<&mut Stack>) -> Result<()> {
    let base = target::base_url(&args.reflektor_url)?;
    let publish = Template::parse(&format!("{base}/rooms/{{room}}/messages"))?;
    let rooms = target::room_names(&target::run_prefix(), args.rooms.max(1));
    eprintln!("filling the log with {} records", args.records);
    let fill_started = Instant::now();
    let filled = drive::run(
        Drive {
            addr: publish.addr,
            connections: args.fill_connections,
            mode: Mode::Closed,
            duration: args.run.duration.max(Duration::from_secs(600)),
            max_requests: args.records.min(args.run.max_requests),
            local_addrs: Vec::new(),
        },
        Arc::new(Publish::new(
            publish,
            &rooms,
            args.fill_connections,
            args.message_size,
            args.token.as_deref(),
        )),
    )
    .await?;
    let fill_secs = fill_started.elapsed().as_secs_f64();
    eprintln!(
        "filled {} records in {fill_secs:.1}s ({} errors)",
        filled.ok, filled.errors
    );
    if let Some(s) = stack {
        let e = s.start_ekg(false, &args.spawn.ekg_args).await?;
        args.ekg_url = e.url();
    }
    let ekg = target::base_url(&args.ekg_url)?;
    let client = reqwest::Client::new();
    let auth = |r: reqwest::RequestBuilder| match &args.token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    let hosts_url = format!("{base}/_reflektor/hosts");
    let started = Instant::now();
    let resp = auth(client.post(&hosts_url))
        .header("content-type", "application/json")
        .body(serde_json::json!({"url": ekg, "mode": "batch"}).to_string())
        .send()
        .await
        .context("add host")?;
    if !resp.status().is_success() {
        bail!(
            "POST /_reflektor/hosts answered {}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    let mut timeline = Vec::new();
    let (mut last_applied, mut last_t) = (0u64, started);
    let mut how = "";
    let mut head = 0;
    while started.elapsed() < args.timeout {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let v: serde_json::Value = match auth(client.get(&hosts_url)).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => continue,
        };
        head = v["head"].as_u64().unwrap_or(head);
        let host = v["hosts"].as_array().and_then(|hs| {
            hs.iter()
                .find(|h| h["url"].as_str().map(|u| u.trim_end_matches('/')) == Some(ekg.as_str()))
        });
        if let Some(h) = host {
            let applied = h["applied"].as_u64().unwrap_or(0);
            let now = Instant::now();
            if now - last_t >= Duration::from_millis(200) {
                let rate =
                    applied.saturating_sub(last_applied) as f64 / (now - last_t).as_secs_f64();
                timeline.push(((now - started).as_secs_f64(), rate));
                (last_applied, last_t) = (applied, now);
            }
            if h["lag_records"].as_u64() == Some(0) && applied >= head {
                how = "hosts lag_records = 0";
                break;
            }
        }
        if client
            .get(format!("{ekg}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            how = "ekg /readyz = 200";
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if how.is_empty() {
        bail!("host did not catch up within {:?}", args.timeout);
    }
    let label = args
        .run
        .label
        .clone()
        .unwrap_or_else(|| format!("{}records-{}rooms", args.records, args.rooms));
    let mut report = Report::new(
        "rebuild",
        &label,
        args.spawn.target_name(),
        serde_json::to_value(&*args)?,
    );
    report.figure("records", filled.ok as f64);
    report.figure("log_head", head as f64);
    report.figure(
        "fill_rate_per_s",
        (filled.ok as f64 / fill_secs.max(1e-9)).round(),
    );
    report.figure("catch_up_seconds", secs);
    report.figure(
        "catch_up_records_per_s",
        (filled.ok as f64 / secs.max(1e-9)).round(),
    );
    report.latency("fill_202", &filled.service);
    let _ = report::histogram;
    report.timeline = timeline;
    report.timeline_label = "records applied".into();
    report.notes.push(format!("caught up when {how}"));
    report.notes.extend(filled.error_samples);
    report.finish(&args.run.out)
}
