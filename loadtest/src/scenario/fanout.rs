//! `fanout`: C subscribers over R rooms, a publisher at a fixed rate.
//!
//! Subscriber `j` joins room `j % R` through subscribe template `(j / R) % T`, so several
//! templates (`ws://` and `http://…/sse`, or several hosts) mix evenly within every room. Once
//! every subscriber has its `hello`, the publisher posts `{"n","t","pad"}` bodies at `--rate`
//! messages/s over `--publishers` connections (each room owned by one connection, so a room's
//! messages are accepted in `n` order). After publishing ends, subscribers get `--drain` to
//! receive the rest. Reported: deliveries/s, end-to-end latency (send to receipt), and lost,
//! duplicate and out-of-order counts (see [`super::subscriber`]), which must all be 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Serialize;
use tokio::time::Instant;

use super::common::{Publish, RunArgs, SpawnArgs};
use super::subscriber::{self, Framing, Shared, Transport};
use crate::drive::{self, Drive, Mode};
use crate::report::{self, Report, Timeline};
use crate::spawn::{self, Stack, Target};
use crate::target::{self, Template};

#[derive(clap::Args, Debug, Clone, Serialize)]
pub(crate) struct Args {
    /// Publish URL template (reflektor intake, or a standalone ekg with --token).
    #[arg(long, default_value = "http://127.0.0.1:7070/rooms/{room}/messages")]
    publish_url: String,
    /// Subscribe URL template, repeatable: ws://…/ws for WebSocket, http://…/sse for SSE.
    #[arg(
        long = "subscribe-url",
        default_value = "ws://127.0.0.1:7080/rooms/{room}/ws"
    )]
    subscribe_urls: Vec<String>,
    /// With --spawn: which transport(s) the subscribers use.
    #[arg(long, default_value = "ws", value_parser = ["ws", "sse", "mix"])]
    transport: String,
    /// With --spawn: how many ekg hosts (subscribers spread over them).
    #[arg(long, default_value_t = 1)]
    hosts: usize,
    /// With --spawn: run one ekg in standalone mode and publish to it directly (no reflektor).
    #[arg(long)]
    standalone: bool,
    /// How the server frames events (`raw` for Nchan; --target nchan sets it).
    #[arg(long, value_enum, default_value = "ekg")]
    framing: Framing,
    /// Subscribers in total.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Messages per second published over all rooms.
    #[arg(long, default_value_t = 300.0)]
    rate: f64,
    /// Publisher connections (at most one per room).
    #[arg(long, default_value_t = 8)]
    publishers: usize,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 100)]
    message_size: usize,
    /// Bearer token for publishing.
    #[arg(long)]
    token: Option<String>,
    /// Spread subscriber sockets over this many source addresses 127.0.0.2.. (0: kernel's choice).
    #[arg(long, default_value_t = 0)]
    source_addrs: usize,
    /// How long subscribers may take to receive the rest after publishing ends.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain: Duration,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    spawn: SpawnArgs,
}

pub(crate) async fn run(mut args: Args) -> Result<()> {
    spawn::raise_nofile();
    let mut publish = Template::parse(&args.publish_url)?;
    let mut subs: Vec<Template> = args
        .subscribe_urls
        .iter()
        .map(|u| Template::parse(u))
        .collect::<Result<_>>()?;
    let mut stack = None;
    if args.spawn.spawn {
        let mut s = Stack::new(&args.spawn)?;
        let target = args.spawn.target;
        target.expect(
            "fanout",
            &[
                Target::Ours,
                Target::Nchan,
                Target::LimitThread,
                Target::LimitTask,
                Target::LimitCoalesce,
            ],
        )?;
        let mut hosts = Vec::new();
        if target == Target::Ours {
            let n = if args.standalone {
                1
            } else {
                args.hosts.max(1)
            };
            let mut ekg_extra = vec!["--max-connections".to_owned(), "100000".to_owned()];
            ekg_extra.extend(args.spawn.ekg_args.iter().cloned());
            for _ in 0..n {
                hosts.push(s.start_ekg(args.standalone, &ekg_extra).await?.addr);
            }
            if args.standalone {
                publish = publish.rebase(hosts[0])?;
                args.token = Some(spawn::TOKEN.to_owned());
            } else {
                let r = s.start_reflektor(&args.spawn.reflektor_args).await?;
                publish = publish.rebase(r.addr)?;
            }
        } else {
            let addr = s.start_peer(target).await?.addr;
            hosts.push(addr);
            publish = publish.rebase(addr)?;
            if target == Target::Nchan {
                args.framing = Framing::Raw;
            } else if args.transport != "ws" {
                bail!("the limit servers speak WebSocket only (--transport ws)");
            }
        }
        subs.clear();
        for addr in hosts {
            if args.transport != "sse" {
                subs.push(Template::parse(&format!("ws://{addr}/rooms/{{room}}/ws"))?);
            }
            if args.transport != "ws" {
                subs.push(Template::parse(&format!(
                    "http://{addr}/rooms/{{room}}/sse"
                ))?);
            }
        }
        stack = Some(s);
    }
    let result = measure(&args, publish, subs, stack.as_ref()).await;
    if let Some(s) = stack {
        s.stop().await;
    }
    result
}

async fn measure(
    args: &Args,
    publish: Template,
    subs: Vec<Template>,
    stack: Option<&Stack>,
) -> Result<()> {
    if subs.is_empty() {
        bail!("no subscribe URL");
    }
    let rooms = target::room_names(&target::run_prefix(), args.rooms.max(1));
    let locals = target::source_addrs(args.source_addrs);
    let timeline_t0 = Instant::now();
    let timeline = Timeline::start(
        Duration::from_millis(250),
        args.run.duration + args.drain + Duration::from_secs(60),
    );
    let shared = Arc::new(Shared {
        framing: args.framing,
        deliveries: timeline.counter.clone(),
        ready: AtomicU64::new(0),
        expected: rooms.iter().map(|_| AtomicU64::new(u64::MAX)).collect(),
    });
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(None);
    // Hard bound on the whole run, whatever happens.
    let give_up = Instant::now() + args.run.duration + args.drain + Duration::from_secs(120);
    let mut tasks = Vec::with_capacity(args.subscribers);
    let connect_limit = Arc::new(tokio::sync::Semaphore::new(128));
    for j in 0..args.subscribers {
        let room = j % rooms.len();
        let t = &subs[(j / rooms.len()) % subs.len()];
        let transport = if t.is_websocket() {
            Transport::WebSocket
        } else {
            Transport::Sse
        };
        let url = t.url(&rooms[room]);
        let (addr, local) = (
            t.addr,
            (!locals.is_empty()).then(|| locals[j % locals.len()]),
        );
        let (shared, drain_rx, limit) = (shared.clone(), drain_rx.clone(), connect_limit.clone());
        tasks.push(tokio::spawn(async move {
            // A permit is held only until `hello`, so connects come in bounded waves.
            let permit = limit.acquire_owned().await?;
            Ok::<_, anyhow::Error>(
                subscriber::run(
                    url, transport, addr, local, room, shared, drain_rx, give_up, permit,
                )
                .await,
            )
        }));
    }
    subscriber::wait_ready(&shared, args.subscribers as u64, Duration::from_secs(60)).await?;
    eprintln!(
        "{} subscribers ready; publishing at {}/s",
        args.subscribers, args.rate
    );
    let publishers = args.publishers.clamp(1, rooms.len());
    let work = Arc::new(Publish::new(
        publish.clone(),
        &rooms,
        publishers,
        args.message_size,
        args.token.as_deref(),
    ));
    let delivered_before = shared.deliveries.load(Ordering::Relaxed);
    let started = Instant::now();
    let cpu_before = spawn::cpu_snapshot(stack);
    let out = drive::run_on_own_thread(
        Drive {
            addr: publish.addr,
            connections: publishers,
            mode: Mode::Open { rate: args.rate },
            duration: args.run.duration,
            max_requests: args.run.max_requests,
            local_addrs: Vec::new(),
        },
        work.clone(),
    )
    .await?;
    let cpu_after = spawn::cpu_snapshot(stack);
    let attempted = work.attempted();
    let failed = work.failed_by_room();
    for (r, e) in shared.expected.iter().enumerate() {
        e.store(attempted[r] - failed[r].len() as u64, Ordering::Relaxed);
    }
    let _no_receivers = drain_tx.send(Some(Instant::now() + args.drain));
    let mut stats = Vec::with_capacity(tasks.len());
    for t in tasks {
        stats.push(t.await??);
    }
    let last_delivery = Instant::now();
    let timeline = timeline.finish();

    let expected: u64 = stats
        .iter()
        .map(|s| shared.expected[s.room].load(Ordering::Relaxed))
        .sum();
    let distinct: u64 = stats.iter().map(|s| s.distinct).sum();
    let delivered = shared.deliveries.load(Ordering::Relaxed) - delivered_before;
    let lost = expected.saturating_sub(distinct);
    let dups: u64 = stats.iter().map(|s| s.duplicates).sum();
    let ooo: u64 = stats.iter().map(|s| s.out_of_order).sum();
    let ended: Vec<&String> = stats.iter().filter_map(|s| s.ended.as_ref()).collect();
    // Deliveries per second over the publishing window (the steady state), from the timeline.
    let publish_secs = out.elapsed.as_secs_f64().max(1e-9);
    let publish_from = (started - timeline_t0).as_secs_f64();
    let window: Vec<f64> = timeline
        .iter()
        .filter(|(t, _)| *t > publish_from + 1.0 && *t <= publish_from + publish_secs)
        .map(|&(_, r)| r)
        .collect();
    let steady = if window.is_empty() {
        delivered as f64 / publish_secs
    } else {
        median(window)
    };

    let transports: Vec<&str> = subs
        .iter()
        .map(|t| if t.is_websocket() { "ws" } else { "sse" })
        .collect();
    let label = args.run.label.clone().unwrap_or_else(|| {
        format!(
            "{}rooms-{}subs-{}-{}rps-{}B",
            args.rooms,
            args.subscribers,
            transports.join("+"),
            args.rate,
            args.message_size
        )
    });
    let mut report = Report::new(
        "fanout",
        &label,
        args.spawn.target_name(),
        serde_json::to_value(args)?,
    );
    report.figure("subscribers", args.subscribers as f64);
    report.figure("rooms", rooms.len() as f64);
    report.figure("published_ok", out.ok as f64);
    report.figure("publish_errors", out.errors as f64);
    report.figure("publish_rate_per_s", (out.ok as f64 / publish_secs).round());
    report.figure("deliveries", delivered as f64);
    report.figure("deliveries_expected", expected as f64);
    report.figure("deliveries_per_s_steady_median", steady.round());
    report.figure(
        "deliveries_per_s_overall",
        (delivered as f64 / (last_delivery - started).as_secs_f64().max(1e-9)).round(),
    );
    report.cpu(&cpu_before, &cpu_after, publish_secs);
    report.figure("lost", lost as f64);
    report.figure("duplicates", dups as f64);
    report.figure("out_of_order", ooo as f64);
    report.figure("subscribers_ended_early", ended.len() as f64);
    report.latency("e2e", &report::merge(stats.iter().map(|s| &s.e2e)));
    report.latency("publish_202_corrected", &out.latency);
    report.timeline = timeline;
    report.timeline_label = "deliveries".into();
    report.notes.extend(out.error_samples);
    if let Some(e) = ended.first() {
        report.notes.push(format!(
            "{} subscribers ended early, e.g.: {e}",
            ended.len()
        ));
    }
    report.finish(&args.run.out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
