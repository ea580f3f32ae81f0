//! HTTP load loops shared by the scenarios: open loop at a fixed rate, closed loop to saturation.
//!
//! **Open loop.** The target rate is split evenly over `connections` keep-alive connections;
//! connection `i` schedules its `k`-th request at `start + (k + i/connections) * interval`.
//! Latency is corrected for coordinated omission: when a connection is still busy with an
//! earlier answer at a request's scheduled time, that request's latency is measured from the
//! *scheduled* time, so a server stall counts against every request it delayed. When the
//! connection is idle it sleeps until the scheduled time and measures from the actual send:
//! tokio's timer wakes up to 1 ms late and that lateness is the harness's, not the server's
//! (it is reported separately as `timer_lag`).
//!
//! **Closed loop.** Each connection sends the next request as soon as the last one is answered;
//! the completion rate is the saturation throughput at that concurrency.
//!
//! Both stop issuing at `duration` or after `max_requests` in total, whichever comes first, and
//! then wait for what is in flight (each request has its own timeout).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;

use crate::http::Conn;
use crate::report::{self, Timeline};

/// What to send and how to judge the answer.
pub(crate) trait Workload: Send + Sync + 'static {
    /// Format request `k` of connection `conn` into `buf` (called right before it is sent).
    fn request(&self, conn: usize, k: u64, buf: &mut Vec<u8>);
    /// `true` when the answer counts as a success.
    fn response(&self, conn: usize, k: u64, status: u16, body: &[u8]) -> bool;
    /// Request `k` of `conn` got no answer (transport error or timeout).
    fn error(&self, _conn: usize, _k: u64) {}
}

/// Fixed rate or as fast as possible.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    /// Requests per second over all connections.
    Open {
        rate: f64,
    },
    Closed,
}

#[derive(Debug, Clone)]
pub(crate) struct Drive {
    pub(crate) addr: SocketAddr,
    pub(crate) connections: usize,
    pub(crate) mode: Mode,
    pub(crate) duration: Duration,
    pub(crate) max_requests: u64,
    /// Source addresses to spread connections over (empty: the kernel's choice).
    pub(crate) local_addrs: Vec<IpAddr>,
}

/// What a drive measured.
pub(crate) struct Outcome {
    /// Corrected latency (open loop) or service time (closed loop), successful requests.
    pub(crate) latency: Histogram<u64>,
    /// From the actual write to the answer, successful requests.
    pub(crate) service: Histogram<u64>,
    /// How late the timer woke an idle connection (open loop).
    pub(crate) timer_lag: Histogram<u64>,
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    /// First time to last answer.
    pub(crate) elapsed: Duration,
    pub(crate) timeline: Vec<(f64, f64)>,
    /// A few error messages or unexpected statuses, for the report.
    pub(crate) error_samples: Vec<String>,
}

struct ConnOutcome {
    latency: Histogram<u64>,
    service: Histogram<u64>,
    timer_lag: Histogram<u64>,
    ok: u64,
    errors: u64,
    last: Instant,
    error_samples: Vec<String>,
}

/// Run the drive to its end.
pub(crate) async fn run<W: Workload>(d: Drive, work: Arc<W>) -> Result<Outcome> {
    let connections = d.connections.max(1);
    let timeline = Timeline::start(
        Duration::from_millis(250),
        d.duration + Duration::from_secs(30),
    );
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + d.duration;
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        let local = (!d.local_addrs.is_empty()).then(|| d.local_addrs[i % d.local_addrs.len()]);
        let work = work.clone();
        let issued = issued.clone();
        let counter = timeline.counter.clone();
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            one_connection(
                i,
                connections,
                local,
                &d,
                start,
                end,
                &*work,
                &issued,
                &counter,
            )
            .await
        }));
    }
    let mut outs = Vec::with_capacity(connections);
    for t in tasks {
        outs.push(t.await?);
    }
    let last = outs.iter().map(|o| o.last).max().unwrap_or(start);
    Ok(Outcome {
        latency: report::merge(outs.iter().map(|o| &o.latency)),
        service: report::merge(outs.iter().map(|o| &o.service)),
        timer_lag: report::merge(outs.iter().map(|o| &o.timer_lag)),
        ok: outs.iter().map(|o| o.ok).sum(),
        errors: outs.iter().map(|o| o.errors).sum(),
        elapsed: last.saturating_duration_since(start),
        timeline: timeline.finish(),
        error_samples: outs
            .iter()
            .flat_map(|o| o.error_samples.iter().cloned())
            .take(5)
            .collect(),
    })
}

#[allow(clippy::too_many_arguments)]
async fn one_connection<W: Workload>(
    i: usize,
    connections: usize,
    local: Option<IpAddr>,
    d: &Drive,
    start: Instant,
    end: Instant,
    work: &W,
    issued: &AtomicU64,
    completed: &AtomicU64,
) -> ConnOutcome {
    let mut out = ConnOutcome {
        latency: report::histogram(),
        service: report::histogram(),
        timer_lag: report::histogram(),
        ok: 0,
        errors: 0,
        last: start,
        error_samples: Vec::new(),
    };
    let interval = match d.mode {
        Mode::Open { rate } => Some(Duration::from_secs_f64(connections as f64 / rate.max(1e-3))),
        Mode::Closed => None,
    };
    let offset = interval
        .map(|iv| iv.mul_f64(i as f64 / connections as f64))
        .unwrap_or_default();
    let mut conn: Option<Conn> = None;
    let mut buf = Vec::with_capacity(1024);
    tokio::time::sleep_until(start.into()).await;
    let mut k: u64 = 0;
    loop {
        let scheduled = match interval {
            Some(iv) => start + offset + iv.mul_f64(k as f64),
            None => Instant::now(),
        };
        if scheduled >= end || Instant::now() >= end {
            break;
        }
        if issued.fetch_add(1, Ordering::Relaxed) >= d.max_requests {
            break;
        }
        // Connect (or reconnect after an error) before the scheduled time counts.
        if conn.is_none() {
            match Conn::open(d.addr, local).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    out.errors += 1;
                    sample(&mut out.error_samples, format!("connect: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    k += 1;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let now = Instant::now();
        let measure_from = if now < scheduled {
            tokio::time::sleep_until(scheduled.into()).await;
            let woke = Instant::now();
            report::record(&mut out.timer_lag, (woke - scheduled).as_micros() as u64);
            woke
        } else if interval.is_some() {
            // Behind schedule because an earlier answer came late: count the wait.
            scheduled
        } else {
            now
        };
        work.request(i, k, &mut buf);
        let sent = Instant::now();
        match c.request(&buf).await {
            Ok(status) => {
                let done = Instant::now();
                if work.response(i, k, status, &c.body) {
                    out.ok += 1;
                    completed.fetch_add(1, Ordering::Relaxed);
                    report::record(&mut out.latency, (done - measure_from).as_micros() as u64);
                    report::record(&mut out.service, (done - sent).as_micros() as u64);
                } else {
                    out.errors += 1;
                    let body = String::from_utf8_lossy(&c.body)
                        .chars()
                        .take(200)
                        .collect::<String>();
                    sample(&mut out.error_samples, format!("status {status}: {body}"));
                }
                out.last = done;
            }
            Err(e) => {
                out.errors += 1;
                work.error(i, k);
                sample(&mut out.error_samples, format!("{e:#}"));
                conn = None;
            }
        }
        k += 1;
    }
    out
}

fn sample(v: &mut Vec<String>, s: String) {
    if v.len() < 3 {
        v.push(s);
    }
}

/// [`run`] on a thread and runtime of its own. A publisher that shares a runtime with
/// thousands of subscriber tasks keeps its schedule only as well as those tasks let it, so
/// the rate (and the send time stamped into each message) would depend on the subscribers'
/// load rather than on the server.
///
/// # Errors
/// The thread or its runtime cannot be started, or [`run`] fails.
pub(crate) async fn run_on_own_thread<W: Workload>(d: Drive, work: Arc<W>) -> Result<Outcome> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || {
            let out = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(run(d, work)));
            // The receiver only goes away if the scenario itself was dropped.
            let _receiver_gone = tx.send(out);
        })?;
    rx.await?
}
