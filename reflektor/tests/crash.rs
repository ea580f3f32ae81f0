//! reflektor killed with SIGKILL in the middle of a stream of posts, then restarted on the same
//! data directory: every acknowledged id reaches the host, in increasing order, with nothing
//! skipped.
//!
//! `the_bar_50k_posts_64_clients_sigkill_midway` is the full-size run, ignored by default:
//! `cargo test --release -p reflektor --test crash -- --ignored --nocapture`

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{RecordingHost, start_reflektor, strictly_increasing};
use tests::{Service, Signal, wait_for};

struct Phase {
    acked: Vec<u64>,
    latencies_us: Vec<u64>,
    took: Duration,
}

/// `clients` tasks post until `budget` posts have been attempted in total, or the server goes
/// away. When `kill_after` acknowledgements have been seen, reflektor gets the signal.
async fn post_stream(
    r: &Service,
    clients: usize,
    budget: Arc<AtomicUsize>,
    kill_after: Option<(usize, Signal)>,
) -> Phase {
    let url = r.url();
    let started = Instant::now();
    let acked_count = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, budget, acked_count) = (client.clone(), budget.clone(), acked_count.clone());
        let url = format!("{url}/rooms/r{}/messages", c % 8);
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut lat = Vec::new();
            loop {
                // Claim one post from the budget.
                if budget
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
                    .is_err()
                {
                    break;
                }
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(format!("{{\"client\":{c},\"n\":{}}}", acked.len()))
                    .send()
                    .await;
                let Ok(resp) = resp else {
                    budget.fetch_add(1, Ordering::SeqCst);
                    break;
                };
                if resp.status() != 202 {
                    budget.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                let Ok(v) = resp.json::<serde_json::Value>().await else {
                    budget.fetch_add(1, Ordering::SeqCst);
                    break;
                };
                lat.push(t.elapsed().as_micros() as u64);
                acked.push(v["id"].as_str().unwrap().parse::<u64>().unwrap());
                acked_count.fetch_add(1, Ordering::SeqCst);
            }
            (acked, lat)
        }));
    }
    let killer = async {
        if let Some((after, signal)) = kill_after {
            wait_for(
                "enough acknowledgements",
                Duration::from_secs(120),
                async || acked_count.load(Ordering::SeqCst) >= after,
            )
            .await
            .unwrap();
            r.signal(signal).unwrap();
        }
    };
    let posts = async {
        let mut phase = Phase {
            acked: Vec::new(),
            latencies_us: Vec::new(),
            took: Duration::ZERO,
        };
        for t in tasks {
            let (acked, lat) = t.await.unwrap();
            assert!(strictly_increasing(&acked), "one client's ids increase");
            phase.acked.extend(acked);
            phase.latencies_us.extend(lat);
        }
        phase
    };
    let ((), mut phase) = tokio::join!(killer, posts);
    phase.took = started.elapsed();
    phase
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

async fn crash_run(total: usize, clients: usize, extra: &[&str]) {
    crash_run_with(total, clients, extra, Signal::Kill).await;
}

async fn crash_run_with(total: usize, clients: usize, extra: &[&str], signal: Signal) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("r");
    let host = RecordingHost::start().await;
    let mut args = vec!["--host", host.url.as_str()];
    args.extend_from_slice(extra);
    let mut r = start_reflektor(&data, &args).await;
    let budget = Arc::new(AtomicUsize::new(total));
    let first = post_stream(&r, clients, budget.clone(), Some((total / 2, signal))).await;
    let status = r.wait_exit(Duration::from_secs(12)).await.unwrap();
    if signal == Signal::Term {
        assert!(status.success(), "SIGTERM exit status {status:?}");
    }
    let delivered_before_restart = host.offsets().len();
    let r = start_reflektor(&data, &args).await;
    let second = post_stream(&r, clients, budget.clone(), None).await;
    assert_eq!(
        budget.load(Ordering::SeqCst),
        0,
        "every post answered after the restart"
    );
    let acked: Vec<u64> = first.acked.iter().chain(&second.acked).copied().collect();
    assert_eq!(acked.len(), total);
    let unique: HashSet<u64> = acked.iter().copied().collect();
    assert_eq!(unique.len(), acked.len(), "no id given twice");
    let t = Instant::now();
    wait_for(
        "every acknowledged id delivered",
        Duration::from_secs(120),
        async || host.has_all(&acked),
    )
    .await
    .unwrap();
    let catch_up = t.elapsed();
    let got = host.offsets();
    assert!(strictly_increasing(&got), "applied in increasing order");
    host.with(|s| assert!(s.gaps.is_empty(), "no offset skipped: {:?}", s.gaps));
    let mut lat = first.latencies_us.clone();
    lat.extend(&second.latencies_us);
    lat.sort_unstable();
    let (batches, requests) = host.with(|s| (s.batch_sizes.len(), s.requests));
    eprintln!(
        "crash run: {total} posts from {clients} clients; {} acknowledged before the signal in {:?} ({:.0}/s), \
         {} after restart in {:?} ({:.0}/s); host had {} before restart, {} records total after; \
         all delivered {:?} after the last post; intake latency p50 {} us, p99 {} us, p99.9 {} us, max {} us; \
         {batches} batches in {requests} host requests",
        first.acked.len(),
        first.took,
        first.acked.len() as f64 / first.took.as_secs_f64(),
        second.acked.len(),
        second.took,
        second.acked.len() as f64 / second.took.as_secs_f64().max(1e-9),
        delivered_before_restart,
        got.len(),
        catch_up,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 0.999),
        lat.last().copied().unwrap_or(0),
    );
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_a_stream_loses_no_acknowledged_record() {
    crash_run(2_000, 8, &["--fsync", "interval"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_with_fsync_always_loses_no_acknowledged_record() {
    crash_run(600, 8, &["--fsync", "always"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_stream_exits_zero_and_loses_no_acknowledged_record() {
    crash_run_with(1_000, 8, &["--fsync", "interval"], Signal::Term).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "full-size run; use --release"]
async fn the_bar_50k_posts_64_clients_sigkill_midway() {
    let total = std::env::var("BAR_POSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    crash_run(total, 64, &["--fsync", "interval"]).await;
}
