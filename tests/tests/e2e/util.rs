//! Shared pieces of the end-to-end tests.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use tests::Reflektor;

/// A chat message body.
pub(crate) fn message(n: u64) -> Value {
    json!({"id": format!("m{n}"), "user": "ada", "text": format!("message {n}")})
}

/// Posts `max` messages to a room through reflektor, retrying each (with its
/// idempotency key) while reflektor is down. Keeps the offsets reflektor acknowledged.
pub(crate) struct Publisher {
    acked: Arc<Mutex<BTreeSet<u64>>>,
    count: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Publisher {
    /// Start posting to `room` at `url` (reflektor's base URL, which may change across restarts:
    /// it is read from `addr` each time). Stops by itself after `max` messages.
    pub(crate) fn start(
        url: Arc<std::sync::Mutex<String>>,
        token: &str,
        room: &str,
        max: u64,
    ) -> Publisher {
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let count = Arc::new(AtomicU64::new(0));
        let (a, c) = (acked.clone(), count.clone());
        let token = token.to_owned();
        let room = room.to_owned();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut n = 0;
            while n < max {
                n += 1;
                let key = format!("{room}-{n}");
                // Retry this message until acknowledged (or told to stop), bounded per message.
                for _attempt in 0..2_000 {
                    let base = url.lock().unwrap().clone();
                    let resp = client
                        .post(format!("{base}/rooms/{room}/messages"))
                        .bearer_auth(&token)
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
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        Publisher { acked, count, task }
    }

    pub(crate) fn acked_count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Wait for the publisher to run to its `max`.
    pub(crate) async fn join(self) -> BTreeSet<u64> {
        let _ = self.task.await;
        self.acked.lock().await.clone()
    }
}

/// Shared, swappable base URL of a reflektor (it keeps its port across restarts).
pub(crate) fn url_of(r: &Reflektor) -> Arc<std::sync::Mutex<String>> {
    Arc::new(std::sync::Mutex::new(r.svc.url()))
}

/// Seqs of `message` frames.
pub(crate) fn message_seqs(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["type"] == "message")
        .filter_map(|f| f["seq"].as_u64())
        .collect()
}

/// How long any end-to-end condition may take to become true.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);
