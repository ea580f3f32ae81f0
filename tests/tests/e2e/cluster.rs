//! Cluster mode on a real three-node NATS JetStream cluster on loopback: two reflektor
//! instances sharing one replicated stream, feeding two ekg hosts, under a steady stream of
//! posts with idempotency keys sent to either instance.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::clients::assert_strictly_increasing;
use tests::nats::NatsCluster;
use tests::process::Launch;
use tests::stack::{SECRET, TOKEN};
use tests::{Ekg, Reflektor, SseClient, WsClient, wait_for};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::util::{DEADLINE, message, message_seqs};

/// Lease TTL of the tests' instances: a killed deliverer is replaced within about this long.
const LEASE_TTL: &str = "2s";

/// Start a reflektor instance of the cluster in `dir/<name>`.
async fn instance(dir: &Path, name: &str, nats: &str, hosts: &[String]) -> Reflektor {
    let own = dir.join(name);
    std::fs::create_dir_all(&own).unwrap();
    let mut args = vec![
        "--nats",
        nats,
        "--replicas",
        "3",
        "--lease-ttl",
        LEASE_TTL,
        "--secret",
        SECRET,
        "--token",
        TOKEN,
    ];
    for h in hosts {
        args.push("--host");
        args.push(h);
    }
    Reflektor::start(&own, &args).await.unwrap()
}

/// Posts `max` messages with idempotency keys, each to the next instance in turn (a load
/// balancer); a post that fails is retried with the same key on the other instance.
struct Publisher {
    acked: Arc<Mutex<BTreeSet<u64>>>,
    count: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Publisher {
    fn start(urls: Vec<String>, room: &str, max: u64) -> Publisher {
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let count = Arc::new(AtomicU64::new(0));
        let (a, c) = (acked.clone(), count.clone());
        let room = room.to_owned();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            for n in 1..=max {
                let key = format!("{room}-{n}");
                for attempt in 0..3_000u64 {
                    let base = &urls[usize::try_from((n + attempt) % 2).unwrap()];
                    let resp = client
                        .post(format!("{base}/rooms/{room}/messages"))
                        .bearer_auth(TOKEN)
                        .header("idempotency-key", &key)
                        .header("content-type", "application/json")
                        .body(message(n).to_string())
                        .send()
                        .await;
                    if let Ok(r) = resp
                        && r.status().as_u16() == 202
                    {
                        let v: Value = r.json().await.unwrap_or_default();
                        if let Some(id) = v["id"].as_str().and_then(|s| s.parse().ok()) {
                            a.lock().await.insert(id);
                            c.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                    // Bounded retry pace while an instance or a NATS node is down.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        Publisher { acked, count, task }
    }

    fn acked_count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    async fn wait_acked(&self, n: u64) {
        wait_for(
            &format!("{n} acknowledged posts"),
            DEADLINE * 2,
            async || self.acked_count() >= n,
        )
        .await
        .unwrap();
    }

    async fn join(self) -> BTreeSet<u64> {
        let _ = self.task.await;
        self.acked.lock().await.clone()
    }
}

/// Which instance (by pid) delivers to each host, as `/_reflektor/hosts` on `r` shows it.
async fn owners(r: &Reflektor) -> Option<Vec<u32>> {
    let v = r.hosts().await.ok()?;
    v["hosts"]
        .as_array()?
        .iter()
        .map(|h| {
            // "reflektor-<pid>-<random>"
            h["owner"].as_str()?.split('-').nth(1)?.parse().ok()
        })
        .collect()
}

/// Every acknowledged offset reached the client exactly once, in order, and nothing else did.
async fn assert_exactly(name: &str, c: &tests::clients::Recorder, acked: &BTreeSet<u64>) {
    wait_for(
        &format!("every acknowledged offset at the {name} client"),
        DEADLINE,
        async || {
            let seen: BTreeSet<u64> = message_seqs(&c.frames()).into_iter().collect();
            acked.is_subset(&seen)
        },
    )
    .await
    .unwrap();
    let seqs = message_seqs(&c.frames());
    assert_strictly_increasing(&seqs).unwrap();
    let seen: BTreeSet<u64> = seqs.into_iter().collect();
    assert_eq!(
        &seen, acked,
        "{name}: no record other than the acknowledged ones"
    );
}

/// The whole fault sequence on one cluster (starting a cluster takes a few seconds, so the
/// scenarios share it): the same key to both instances is one record; the delivering instance
/// is SIGKILLed and another takes over; a NATS node is SIGKILLed and restarted; all three are
/// restarted one by one. WebSocket and SSE clients on two hosts see every acknowledged post
/// once, in order; then the stream is replaced and every host starts the new log.
#[tokio::test]
async fn the_cluster_loses_nothing_when_an_instance_or_a_nats_node_dies() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsCluster::start(dir.path(), 3).await.unwrap();
    let urls = nats.urls();
    let e1 = Ekg::start(dir.path(), &["--secret", SECRET]).await.unwrap();
    let e2 = Ekg::start(dir.path(), &["--secret", SECRET]).await.unwrap();
    let hosts = vec![e1.svc.url(), e2.svc.url()];
    let mut a = instance(dir.path(), "a", &urls, &hosts).await;
    let mut b = instance(dir.path(), "b", &urls, &hosts).await;
    for e in [&e1, &e2] {
        wait_for("ekg ready", DEADLINE, async || e.ready().await)
            .await
            .unwrap();
    }

    // One Idempotency-Key sent to both instances: one record, one id.
    let first = post_with_key(&a, "twice", "dup-1").await;
    let second = post_with_key(&b, "twice", "dup-1").await;
    assert_eq!(
        first.0, second.0,
        "the same key gets the same id on both instances"
    );
    assert_eq!(
        (first.1, second.1),
        (false, true),
        "the repeat says it is one"
    );

    let ws = WsClient::connect(&format!("{}/rooms/r/ws", e1.svc.ws_url()))
        .await
        .unwrap();
    let sse = SseClient::connect(&format!("{}/rooms/r/sse", e2.svc.url()), None)
        .await
        .unwrap();
    for c in [&ws.rec, &sse.rec] {
        wait_for("hello", DEADLINE, async || !c.of_type("hello").is_empty())
            .await
            .unwrap();
    }
    let publisher = Publisher::start(vec![a.svc.url(), b.svc.url()], "r", 700);

    // 1. SIGKILL the instance delivering to the first host; the other takes over.
    publisher.wait_acked(100).await;
    let before = wait_for("an owner for every host", DEADLINE, async || {
        owners(&a).await
    })
    .await
    .unwrap();
    let (victim, survivor) = if Some(before[0]) == a.svc.pid() {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let dead = victim.svc.pid().unwrap();
    let killed_at = Instant::now();
    victim.svc.kill().await.unwrap();
    let after = wait_for("another instance takes over", DEADLINE, async || {
        owners(survivor)
            .await
            .filter(|o| o.iter().all(|pid| *pid != dead))
    })
    .await
    .unwrap();
    let takeover = killed_at.elapsed();
    assert!(after.iter().all(|p| Some(*p) == survivor.svc.pid()));
    assert!(
        takeover < Duration::from_secs(10),
        "takeover took {takeover:?}"
    );
    victim.svc.restart().await.unwrap();

    // 2. SIGKILL one NATS node, then bring it back.
    publisher.wait_acked(250).await;
    nats.nodes[2].kill().await.unwrap();
    publisher.wait_acked(350).await;
    nats.nodes[2].restart().await.unwrap();

    // 3. A rolling restart of all three nodes.
    for i in 0..3 {
        publisher
            .wait_acked(400 + 80 * u64::try_from(i).unwrap())
            .await;
        nats.nodes[i].stop().await.unwrap();
        nats.nodes[i].restart().await.unwrap();
    }
    let acked = publisher.join().await;
    assert_eq!(acked.len(), 700, "every post was eventually acknowledged");
    assert_exactly("WebSocket", &ws.rec, &acked).await;
    assert_exactly("SSE", &sse.rec, &acked).await;
    for e in [&e1, &e2] {
        let history = e.all_messages("r").await.unwrap();
        assert_eq!(history.len(), 700, "every host holds every message once");
    }

    // 4. The stream deleted and created again is a new log: the running instances stop (a
    //    supervisor starts them again), and every host resets its rooms and tells its clients.
    let epoch_before = a.hosts().await.unwrap()["epoch"].clone();
    replace_stream(&urls, "reflektor").await;
    for r in [&mut a, &mut b] {
        let status = r.svc.wait_exit(DEADLINE).await.unwrap();
        assert!(
            !status.success(),
            "an instance whose log was replaced exits with failure"
        );
        assert!(
            r.svc.stderr().contains("new log"),
            "{}",
            r.svc.stderr_tail()
        );
        r.svc.restart().await.unwrap();
    }
    assert_ne!(a.hosts().await.unwrap()["epoch"], epoch_before);
    let (id, _) = post_with_key(&b, "r", "after-replace").await;
    assert_eq!(id, 1, "the new log starts at offset 1");
    for c in [&ws.rec, &sse.rec] {
        wait_for("the client is told the log is new", DEADLINE, async || {
            c.of_type("reset").iter().any(|f| f["reason"] == "new_log")
        })
        .await
        .unwrap();
    }
    wait_for("the hosts applied the new log", DEADLINE, async || {
        let mut ok = true;
        for e in [&e1, &e2] {
            ok &= e
                .all_messages("r")
                .await
                .is_ok_and(|m| m.len() == 1 && m[0]["seq"] == 1);
        }
        ok
    })
    .await
    .unwrap();
}

/// POST one message with `key`; (offset, whether the answer says it was a repeat).
async fn post_with_key(r: &Reflektor, room: &str, key: &str) -> (u64, bool) {
    let resp = reqwest::Client::new()
        .post(format!("{}/rooms/{room}/messages", r.svc.url()))
        .bearer_auth(TOKEN)
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(json!({"text": key}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let replayed = resp.headers().contains_key("idempotency-replayed");
    let v: Value = resp.json().await.unwrap();
    (v["id"].as_str().unwrap().parse().unwrap(), replayed)
}

/// Delete the stream and create it again with the same settings, as an operator might (each
/// step retried while the cluster settles after the restarts).
async fn replace_stream(urls: &str, name: &str) {
    let addrs: Vec<async_nats::ServerAddr> = urls.split(',').map(|u| u.parse().unwrap()).collect();
    let client = async_nats::connect(addrs).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let config = wait_for("the stream's settings", DEADLINE, async || {
        let mut stream = js.get_stream(name).await.ok()?;
        Some(stream.info().await.ok()?.config.clone())
    })
    .await
    .unwrap();
    wait_for("the stream deleted", DEADLINE, async || {
        js.delete_stream(name).await.is_ok()
    })
    .await
    .unwrap();
    wait_for("the stream created again", DEADLINE, async || {
        js.create_stream(config.clone()).await.is_ok()
    })
    .await
    .unwrap();
}

/// Bad configuration is a clear error at start, never a hang: no NATS reachable, fewer nodes
/// than `--replicas`, a stream whose settings differ from the flags.
#[tokio::test]
async fn bad_cluster_configuration_stops_reflektor_at_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(dir.path(), 1).await.unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("nats://{}", free.local_addr().unwrap());
    drop(free);
    let url = nats.urls();
    let run = async |args: &[&str]| {
        let exited = Launch::new("reflektor", dir.path())
            .unwrap()
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .run_to_exit(Duration::from_secs(30))
            .await
            .unwrap();
        assert!(!exited.status.success(), "{args:?} started");
        exited.stderr
    };
    let err = run(&["--nats", &nowhere]).await;
    assert!(err.contains("NATS"), "{err}");
    let err = run(&["--nats", &url, "--replicas", "3"]).await;
    assert!(err.contains("3 replicas"), "{err}");
    // Create the stream with the defaults (one replica here), then ask for other settings.
    let ok = Launch::new("reflektor", dir.path())
        .unwrap()
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--nats", &url, "--replicas", "1"])
        .start()
        .await
        .unwrap();
    drop(ok);
    let err = run(&["--nats", &url, "--replicas", "1", "--retention", "1h"]).await;
    assert!(err.contains("--retention asks for 1h"), "{err}");
}
