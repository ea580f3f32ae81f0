//! `connections`: N idle WebSocket or SSE connections, how fast they are set up, and the
//! server's memory for them.
//!
//! The soft open-files limit is raised to the hard limit first (a spawned server inherits it).
//! Client sockets are bound to source addresses 127.0.0.2, 127.0.0.3, … before connecting, so
//! the ephemeral-port range of a single source address is not the limit. Each connection waits
//! for its `hello` (with `--framing raw`, as for Nchan, only for the upgrade or the `200` head)
//! and then only reads (so the server's pings are answered). `--concurrency` connections are
//! being set up at any time; `connect_seconds` runs from the first connect to the last one
//! ready (the reconnect storm after a host dies). The server's `VmRSS` (with its child
//! processes: nginx's worker) is read before the first connection and after the last one is
//! open (plus a short settle); the difference divided by the connections open is the memory
//! per connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::time::Instant;

use super::common::{RunArgs, SpawnArgs};
use super::subscriber::Framing;
use crate::http;
use crate::report::{self, Report, Timeline};
use crate::spawn::{self, Stack, Target};
use crate::sseread::SseReader;
use crate::target::{self, Template};
use crate::wsread::{Event, WsReader};

#[derive(clap::Args, Debug, Clone, Serialize)]
pub(crate) struct Args {
    /// URL template: `ws://…/ws` for WebSocket, `http://…/sse` for SSE.
    #[arg(long, default_value = "ws://127.0.0.1:7080/rooms/{room}/ws")]
    url: String,
    /// With --spawn: WebSocket or SSE connections.
    #[arg(long, default_value = "ws", value_parser = ["ws", "sse"])]
    transport: String,
    /// How the server frames events (`raw` for Nchan; --target nchan sets it).
    #[arg(long, value_enum, default_value = "ekg")]
    framing: Framing,
    /// Connections to open.
    #[arg(long, default_value_t = 19_000)]
    connections: u64,
    /// Rooms the connections are spread over.
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Source addresses 127.0.0.2.. to spread client sockets over.
    #[arg(long, default_value_t = 8)]
    source_addrs: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// How long to hold them open once all are connected.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// The server's pid, for its memory (default: the spawned server's); its child processes
    /// count too.
    #[arg(long)]
    server_pid: Option<u32>,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    spawn: SpawnArgs,
}

pub(crate) async fn run(mut args: Args) -> Result<()> {
    let nofile = spawn::raise_nofile();
    eprintln!("open-files soft limit: {nofile}");
    let mut template = Template::parse(&args.url)?;
    let mut stack = None;
    let mut pid = args.server_pid;
    if args.spawn.spawn {
        let mut s = Stack::new(&args.spawn)?;
        let target = args.spawn.target;
        target.expect(
            "connections",
            &[
                Target::Ours,
                Target::Nchan,
                Target::LimitThread,
                Target::LimitTask,
                Target::LimitCoalesce,
            ],
        )?;
        let addr = if target == Target::Ours {
            let mut extra = vec![
                "--max-connections".to_owned(),
                (args.connections + 1000).to_string(),
            ];
            extra.extend(args.spawn.ekg_args.iter().cloned());
            s.start_ekg(true, &extra).await?.addr
        } else {
            if target == Target::Nchan {
                args.framing = Framing::Raw;
            } else if args.transport != "ws" {
                bail!("the limit servers speak WebSocket only (--transport ws)");
            }
            s.start_peer(target).await?.addr
        };
        template = Template::parse(&if args.transport == "sse" {
            format!("http://{addr}/rooms/{{room}}/sse")
        } else {
            format!("ws://{addr}/rooms/{{room}}/ws")
        })?;
        pid = s.memory_pid();
        stack = Some(s);
    }
    let result = measure(&args, template, pid, nofile).await;
    if let Some(s) = stack {
        s.stop().await;
    }
    result
}

/// One idle connection, read with the lean readers (the harness holds thousands).
enum Idle {
    Ws(Box<WsReader>),
    Sse(Box<SseReader>),
}

impl Idle {
    /// Connect and wait until the server says the subscription is live.
    async fn open(
        template: &Template,
        url: &str,
        local: std::net::IpAddr,
        framing: Framing,
    ) -> Result<Idle> {
        let mut idle = if template.is_websocket() {
            let stream = http::connect(template.addr, Some(local)).await?;
            let ws = tokio::time::timeout(http::REQUEST_TIMEOUT, WsReader::handshake(stream, url))
                .await
                .context("handshake timed out")??;
            Idle::Ws(Box::new(ws))
        } else {
            let sse = tokio::time::timeout(
                http::REQUEST_TIMEOUT,
                SseReader::open(template.addr, Some(local), url),
            )
            .await
            .context("SSE request timed out")??;
            Idle::Sse(Box::new(sse))
        };
        if framing == Framing::Ekg {
            // The first frame is the hello.
            match tokio::time::timeout(http::REQUEST_TIMEOUT, idle.next()).await {
                Ok(true) => {}
                Ok(false) => bail!("closed before the hello"),
                Err(_) => bail!("no hello within {:?}", http::REQUEST_TIMEOUT),
            }
        }
        Ok(idle)
    }

    /// Wait for the next frame (pings answered); `false` once the stream ended.
    async fn next(&mut self) -> bool {
        match self {
            Idle::Ws(ws) => matches!(ws.next().await, Ok(Some(Event::Message(_)))),
            Idle::Sse(sse) => matches!(sse.next().await, Ok(Some(_))),
        }
    }
}

async fn measure(args: &Args, template: Template, pid: Option<u32>, nofile: u64) -> Result<()> {
    let rooms = target::room_names(&target::run_prefix(), args.rooms.max(1));
    let locals = target::source_addrs(args.source_addrs.max(1));
    let target_count = args.connections.min(args.run.max_requests);
    let rss_before = pid.and_then(spawn::tree_rss_kib);
    let self_before = spawn::rss_kib(std::process::id());
    let timeline = Timeline::start(
        Duration::from_millis(250),
        args.run.duration + args.hold + Duration::from_secs(30),
    );
    let open = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let limit = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let started = Instant::now();
    let deadline = started + args.run.duration;
    let mut tasks = Vec::with_capacity(target_count as usize);
    let mut handshake = Vec::new();
    let (lat_tx, mut lat_rx) = tokio::sync::mpsc::channel::<u64>(4096);
    for i in 0..target_count {
        if Instant::now() >= deadline {
            break;
        }
        let permit = limit.clone().acquire_owned().await?;
        let url = template.url(&rooms[i as usize % rooms.len()]);
        let (template, local, framing) = (
            template.clone(),
            locals[i as usize % locals.len()],
            args.framing,
        );
        let (open, closed, failed, counter) = (
            open.clone(),
            closed.clone(),
            failed.clone(),
            timeline.counter.clone(),
        );
        let (stop, stopping, first_error, lat_tx) = (
            stop.clone(),
            stopping.clone(),
            first_error.clone(),
            lat_tx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let connected = Idle::open(&template, &url, local, framing).await;
            drop(permit);
            let mut idle = match connected {
                Ok(idle) => idle,
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut f) = first_error.lock() {
                        f.get_or_insert_with(|| format!("{e:#}"));
                    }
                    return;
                }
            };
            let _full = lat_tx.try_send(t0.elapsed().as_micros() as u64);
            open.fetch_add(1, Ordering::Relaxed);
            counter.fetch_add(1, Ordering::Relaxed);
            // Idle: read (answering pings) until told to stop or the server closes.
            loop {
                tokio::select! {
                    open = idle.next() => if !open {
                        if !stopping.load(Ordering::Relaxed) {
                            closed.fetch_add(1, Ordering::Relaxed);
                        }
                        break;
                    },
                    () = stop.notified() => break,
                }
            }
        }));
        while let Ok(v) = lat_rx.try_recv() {
            handshake.push(v);
        }
    }
    // Wait for the last connects to finish.
    let _all = limit.acquire_many(args.concurrency.max(1) as u32).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = pid.and_then(spawn::tree_rss_kib);
    let self_after = spawn::rss_kib(std::process::id());
    let opened = open.load(Ordering::Relaxed);
    eprintln!(
        "{opened} connections open in {connect_secs:.1}s; holding for {:?}",
        args.hold
    );
    tokio::time::sleep(args.hold).await;
    let closed_during_hold = closed.load(Ordering::Relaxed);
    let rss_end = pid.and_then(spawn::tree_rss_kib);
    stopping.store(true, Ordering::Relaxed);
    stop.notify_waiters();
    for t in tasks {
        t.abort();
    }
    drop(lat_tx);
    while let Some(v) = lat_rx.recv().await {
        handshake.push(v);
    }
    let mut hist = report::histogram();
    for v in handshake {
        report::record(&mut hist, v);
    }

    let label = args
        .run
        .label
        .clone()
        .unwrap_or_else(|| format!("{}conns-{}addrs", args.connections, args.source_addrs));
    let mut report = Report::new(
        "connections",
        &label,
        args.spawn.target_name(),
        serde_json::to_value(args)?,
    );
    report.figure("nofile_soft_limit", nofile as f64);
    report.figure("connections_target", target_count as f64);
    report.figure("connections_open", opened as f64);
    report.figure("connect_failures", failed.load(Ordering::Relaxed) as f64);
    report.figure("closed_by_server_during_hold", closed_during_hold as f64);
    report.figure("connect_seconds", connect_secs);
    report.figure(
        "connects_per_s",
        (opened as f64 / connect_secs.max(1e-9)).round(),
    );
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        report.figure("server_rss_before_kib", b as f64);
        report.figure("server_rss_after_kib", a as f64);
        report.figure(
            "server_rss_per_conn_kib",
            (a.saturating_sub(b)) as f64 / opened.max(1) as f64,
        );
    }
    if let Some(e) = rss_end {
        report.figure("server_rss_end_of_hold_kib", e as f64);
    }
    if let (Some(b), Some(a)) = (self_before, self_after) {
        report.figure(
            "harness_rss_per_conn_kib",
            (a.saturating_sub(b)) as f64 / opened.max(1) as f64,
        );
    }
    report.latency("connect_to_hello", &hist);
    report.timeline = timeline.finish();
    report.timeline_label = "connections opened".into();
    if let Ok(f) = first_error.lock()
        && let Some(e) = f.as_ref()
    {
        report.notes.push(format!("first connect error: {e}"));
    }
    report.finish(&args.run.out)
}
