//! Harness for tests that run the real `reflektor` binary against a recording host.
//!
//! - [`start_reflektor`]: the binary on `127.0.0.1:0` with its own data directory, through the
//!   workspace's launcher (`tests::Launch`); the child is killed when its handle drops.
//! - [`RecordingHost`]: an axum server on `127.0.0.1:0` that speaks the batch protocol
//!   (`/_reflektor/ingest`, applying each offset once, refusing a `prev` above what it applied
//!   with `409`) and records replayed requests on any other path. It can be told to fail.
//!
//! Waiting is `tests::wait_for` (a condition polled against a deadline, never a sleep).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use shared::batch::{Batch, IngestAck};
use shared::{Epoch, Offset, Record};
use tests::{Launch, Service};

/// `GET url` and its JSON body.
pub async fn get_json(client: &reqwest::Client, url: String) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// Start the reflektor binary on a fresh port with `--data-dir data_dir` and `args`; returns
/// once it has announced itself. Its stderr logs go next to the data directory.
pub async fn start_reflektor(data_dir: &Path, args: &[&str]) -> Service {
    let logs = data_dir.parent().unwrap_or(data_dir);
    Launch::with_bin("reflektor", env!("CARGO_BIN_EXE_reflektor"), logs)
        .log_filter("reflektor=debug")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .start()
        .await
        .unwrap()
}

/// How the recording host answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Apply everything.
    Normal,
    /// Answer every request with this status (e.g. 503) without applying anything.
    FailWith(u16),
}

/// One request the host received and applied.
#[derive(Clone, Debug)]
pub struct Received {
    pub offset: Offset,
    pub method: String,
    pub target: String,
    pub body: Bytes,
    pub idempotency_key: Option<String>,
}

#[derive(Default)]
pub struct HostState {
    pub behaviour: Option<Behaviour>,
    /// Bodies refused with 400 (the whole request).
    pub poison: HashSet<Vec<u8>>,
    /// Delay before answering, for the first `slow_requests` requests.
    pub slow: Duration,
    pub slow_requests: usize,
    pub applied: Offset,
    /// Every record applied, in the order applied.
    pub received: Vec<Received>,
    /// Records per accepted batch (heartbeats excluded).
    pub batch_sizes: Vec<usize>,
    /// Records skipped over: a batch whose first new record was not `applied + 1`.
    pub gaps: Vec<(Offset, Offset)>,
    pub requests: usize,
    pub rewinds_answered: usize,
    pub signed: usize,
}

/// A host that records what it is sent.
#[derive(Clone)]
pub struct RecordingHost {
    pub url: String,
    pub state: Arc<Mutex<HostState>>,
}

impl RecordingHost {
    pub async fn start() -> RecordingHost {
        let state = Arc::new(Mutex::new(HostState {
            behaviour: Some(Behaviour::Normal),
            ..HostState::default()
        }));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        RecordingHost { url, state }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut HostState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    pub fn offsets(&self) -> Vec<u64> {
        self.with(|s| s.received.iter().map(|r| r.offset.0).collect())
    }

    pub fn has_all(&self, ids: &[u64]) -> bool {
        let got: HashSet<u64> = self.offsets().into_iter().collect();
        ids.iter().all(|i| got.contains(i))
    }

    /// Forget everything applied, as a host restarted empty would.
    pub fn lose_state(&self) {
        self.with(|s| s.applied = Offset::ZERO);
    }
}

async fn handle(
    State(state): State<Arc<Mutex<HostState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delay = {
        let mut s = state.lock().unwrap();
        s.requests += 1;
        if headers.contains_key("x-reflektor-signature") {
            s.signed += 1;
        }
        if s.requests <= s.slow_requests {
            s.slow
        } else {
            Duration::ZERO
        }
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut s = state.lock().unwrap();
    if let Some(Behaviour::FailWith(code)) = s.behaviour.clone() {
        return (StatusCode::from_u16(code).unwrap(), "failing on purpose").into_response();
    }
    if uri.path() == "/_reflektor/ingest" {
        let batch = match Batch::parse(body) {
            Ok(b) => b,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        };
        let ack = |s: &HostState| IngestAck {
            applied: s.applied,
            epoch: Epoch(batch.header.epoch.0),
            rejected: vec![],
        };
        if batch.header.prev > s.applied {
            s.rewinds_answered += 1;
            return (StatusCode::CONFLICT, axum::Json(ack(&s))).into_response();
        }
        let mut records = Vec::new();
        for (_, rec) in batch.decode_records() {
            let Ok(rec) = rec else {
                return (StatusCode::BAD_REQUEST, "bad record").into_response();
            };
            if s.poison.contains(rec.body.as_ref()) {
                return (StatusCode::BAD_REQUEST, "poison record").into_response();
            }
            records.push(rec);
        }
        let mut applied_now = 0;
        for rec in records {
            if rec.offset <= s.applied {
                continue;
            }
            if rec.offset != s.applied.next() {
                let gap = (s.applied, rec.offset);
                s.gaps.push(gap);
            }
            s.applied = rec.offset;
            applied_now += 1;
            s.received.push(received(&rec));
        }
        if batch.header.count > 0 {
            s.batch_sizes.push(batch.header.count as usize);
        }
        let _ = applied_now;
        return (StatusCode::OK, axum::Json(ack(&s))).into_response();
    }
    // Replay mode.
    if s.poison.contains(body.as_ref()) {
        return (StatusCode::BAD_REQUEST, "poison request").into_response();
    }
    let offset = headers
        .get("x-reflektor-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .map(Offset)
        .unwrap_or_default();
    s.received.push(Received {
        offset,
        method: method.to_string(),
        target: uri.to_string(),
        body,
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    s.applied = s.applied.max(offset);
    StatusCode::NO_CONTENT.into_response()
}

fn received(rec: &Record) -> Received {
    Received {
        offset: rec.offset,
        method: rec.method.as_str().to_owned(),
        target: rec.target.clone(),
        body: rec.body.clone(),
        idempotency_key: rec.idempotency_key.clone(),
    }
}

/// POST `body` to `path`; the 202's id.
pub async fn post_id(client: &reqwest::Client, url: &str, body: String) -> u64 {
    let resp = client.post(url).body(body).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let v: serde_json::Value = resp.json().await.unwrap();
    v["id"].as_str().unwrap().parse().unwrap()
}

/// Ids strictly increasing?
pub fn strictly_increasing(ids: &[u64]) -> bool {
    ids.windows(2).all(|w| w[0] < w[1])
}
