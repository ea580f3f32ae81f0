//! `wrk`: intake saturation measured with wrk (Debian's package), a C load generator that costs
//! the machine less per request than this harness, so the server gets more of the two cores.
//!
//! `--connections` keep-alive connections (64) over `--threads` threads (2) POST a
//! `--body-size` JSON body to one room for `--duration`, closed loop. Reported: answers per
//! second that were 2xx (wrk counts every answer; non-2xx are subtracted), wrk's latency
//! percentiles (closed loop: service time, not corrected for coordinated omission), socket
//! errors, and the cores used by wrk, each server and the whole machine. Bounded by
//! `--duration` only (wrk has no request budget) and a hard timeout after it.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::common::{RunArgs, SpawnArgs};
use crate::report::Report;
use crate::spawn::{self, Stack, Target};
use crate::target::{self, Template};

#[derive(clap::Args, Debug, Clone, Serialize)]
pub(crate) struct Args {
    /// Intake URL template (the room is filled in once).
    #[arg(long, default_value = "http://127.0.0.1:7070/rooms/{room}/messages")]
    url: String,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
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
        let target = args.spawn.target;
        target.expect("wrk", &[Target::Ours, Target::Nchan, Target::Limit202])?;
        let mut s = Stack::new(&args.spawn)?;
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
    let result = measure(&args, &template, stack.as_ref()).await;
    if let Some(s) = stack {
        s.stop().await;
    }
    result
}

/// The Lua script: method, headers and a fixed body.
fn script(body_size: usize, token: Option<&str>) -> String {
    let mut body = Vec::new();
    crate::http::message_body(&mut body, crate::http::unix_micros(), 0, body_size);
    let mut s = format!(
        "wrk.method = \"POST\"\nwrk.body = '{}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
        String::from_utf8_lossy(&body)
    );
    if let Some(t) = token {
        s.push_str(&format!(
            "wrk.headers[\"Authorization\"] = \"Bearer {t}\"\n"
        ));
    }
    s
}

async fn measure(args: &Args, template: &Template, stack: Option<&Stack>) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let lua = dir.path().join("post.lua");
    std::fs::write(&lua, script(args.body_size, args.token.as_deref()))?;
    let url = template.url(&format!("{}0", target::run_prefix()));
    let secs = args.run.duration.as_secs().max(1);
    let cpu_before = spawn::cpu_snapshot(stack);
    let children_before = children_cpu_seconds().unwrap_or(0.0);
    let started = std::time::Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(secs + 30),
        tokio::process::Command::new("wrk")
            .arg(format!("-t{}", args.threads.max(1)))
            .arg(format!("-c{}", args.connections.max(1)))
            .arg(format!("-d{secs}s"))
            .args(["--timeout", "10s", "--latency", "-s"])
            .arg(&lua)
            .arg(&url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("wrk ran past its duration")?
    .context("run wrk (Debian package `wrk`; loadtest/bench.sh installs it)")?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = spawn::cpu_snapshot(stack);
    let wrk_cpu = children_cpu_seconds().unwrap_or(0.0) - children_before;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let parsed = parse(&text).with_context(|| format!("unexpected wrk output:\n{text}"))?;
    let label = args
        .run
        .label
        .clone()
        .unwrap_or_else(|| format!("{}c-{}t", args.connections, args.threads));
    let mut report = Report::new(
        "wrk",
        &label,
        args.spawn.target_name(),
        serde_json::to_value(args)?,
    );
    let ok = parsed.requests.saturating_sub(parsed.non_2xx);
    report.figure("requests", parsed.requests as f64);
    report.figure("non_2xx", parsed.non_2xx as f64);
    report.figure("socket_errors", parsed.socket_errors as f64);
    report.figure("wrk_seconds", parsed.seconds);
    report.figure(
        "requests_per_s_ok",
        (ok as f64 / parsed.seconds.max(1e-9)).round(),
    );
    report.figure("connections", args.connections as f64);
    report.cpu(&cpu_before, &cpu_after, elapsed);
    report.figure(
        "cpu_cores_wrk",
        (wrk_cpu / elapsed.max(1e-9) * 100.0).round() / 100.0,
    );
    for &(p, us) in &parsed.latency {
        report.figure(&format!("latency_p{p}_us"), us as f64);
    }
    report.finish(&args.run.out)
}

/// CPU seconds of this process's reaped children (wrk), from /proc/self/stat.
fn children_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // cutime and cstime are fields 16 and 17.
    let cu: f64 = fields.get(13)?.parse().ok()?;
    let cs: f64 = fields.get(14)?.parse().ok()?;
    Some((cu + cs) / 100.0)
}

/// What wrk printed.
#[derive(Debug, PartialEq)]
struct Parsed {
    requests: u64,
    seconds: f64,
    non_2xx: u64,
    socket_errors: u64,
    /// `(percentile, µs)` from `--latency`.
    latency: Vec<(f64, u64)>,
}

fn parse(text: &str) -> Option<Parsed> {
    let mut p = Parsed {
        requests: 0,
        seconds: 0.0,
        non_2xx: 0,
        socket_errors: 0,
        latency: Vec::new(),
    };
    let mut in_latency = false;
    let mut found = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("Latency Distribution") {
            in_latency = true;
            continue;
        }
        if in_latency {
            if let Some((pct, v)) = l.split_once('%')
                && let (Ok(pct), Some(us)) = (pct.trim().parse::<f64>(), duration_us(v.trim()))
            {
                p.latency.push((pct, us));
                continue;
            }
            in_latency = false;
        }
        if let Some((n, rest)) = l.split_once(" requests in ") {
            p.requests = n.trim().parse().ok()?;
            let secs = rest.split(',').next()?.trim();
            p.seconds = duration_us(secs)? as f64 / 1e6;
            found = true;
        } else if let Some(n) = l.strip_prefix("Non-2xx or 3xx responses:") {
            p.non_2xx = n.trim().parse().ok()?;
        } else if let Some(e) = l.strip_prefix("Socket errors:") {
            p.socket_errors = e
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        }
    }
    found.then_some(p)
}

/// `403.00us`, `1.91ms`, `10.00s`, `2.5m` in µs.
fn duration_us(s: &str) -> Option<u64> {
    let unit_at = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(unit_at);
    let n: f64 = num.parse().ok()?;
    let mult = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some((n * mult).round() as u64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const OUT: &str = "Running 10s test @ http://127.0.0.1:7070/rooms/x0/messages
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   512.11us  300.20us  12.00ms   90.00%
    Req/Sec    62.10k     3.20k   70.00k    75.00%
  Latency Distribution
     50%  403.00us
     75%  600.00us
     90%    0.90ms
     99%    1.91ms
  1234567 requests in 10.00s, 123.45MB read
  Socket errors: connect 0, read 2, write 1, timeout 0
  Non-2xx or 3xx responses: 12
Requests/sec: 123456.70
Transfer/sec:     12.35MB
";

    #[test]
    fn wrk_output_is_read() {
        let p = parse(OUT).unwrap();
        assert_eq!(p.requests, 1_234_567);
        assert_eq!(p.seconds, 10.0);
        assert_eq!(p.non_2xx, 12);
        assert_eq!(p.socket_errors, 3);
        assert_eq!(
            p.latency,
            vec![(50.0, 403), (75.0, 600), (90.0, 900), (99.0, 1910)]
        );
        assert!(parse("garbage").is_none());
    }

    #[test]
    fn the_script_posts_json_with_the_token() {
        let s = script(100, Some("t"));
        assert!(s.contains("wrk.method = \"POST\""));
        assert!(s.contains("Bearer t"));
        let body = s.split('\'').nth(1).unwrap();
        assert_eq!(body.len(), 100);
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
