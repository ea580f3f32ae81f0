//! One checking subscriber (WebSocket or SSE) for the fan-out scenario.
//!
//! A subscriber connects, waits for `hello`, then reads `message` frames whose data is the
//! publisher's `{"n","t","pad"}` body. For each it records the end-to-end latency (receipt time
//! minus `t`, both Unix µs on the same machine) and checks order: every `n` is marked in a
//! bitset (a second sighting is a duplicate), an `n` below the highest seen so far is out of
//! order, and a seq not above the previous one is out of order too. Lost messages are counted at
//! the end: the room's accepted messages minus the distinct `n`s received. Frames are scanned
//! for the few numbers needed instead of being parsed into a tree: the harness shares the cores
//! with the servers.
//!
//! It stops when it has every accepted message of its room, when the drain deadline passes,
//! or when the server closes the stream (recorded as the reason).
//!
//! With [`Framing::Raw`] (Nchan) there is no hello and no envelope: the subscriber counts as
//! ready once the upgrade (or the `200` head) is in, and every frame is a published body
//! (`n` and `t` are read from it; there is no seq to check).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::http::{self, find};
use crate::report;
use crate::sseread::SseReader;
use crate::wsread::{Event, WsReader};

/// How a server frames what it sends.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) enum Framing {
    /// ekg's: a `hello` first, then `{"type":"message","seq":…,"data":BODY}`.
    Ekg,
    /// Each frame is the published body itself, no hello (Nchan).
    Raw,
}

/// What all subscribers share with the scenario.
pub(crate) struct Shared {
    pub(crate) framing: Framing,
    /// Event frames received, over all subscribers.
    pub(crate) deliveries: Arc<AtomicU64>,
    /// Subscribers that got their `hello`.
    pub(crate) ready: AtomicU64,
    /// Per room: how many distinct messages a subscriber must see (u64::MAX while publishing).
    pub(crate) expected: Vec<AtomicU64>,
}

/// Set once publishing has ended: the instant after which subscribers give up.
pub(crate) type DrainRx = watch::Receiver<Option<Instant>>;

/// What one subscriber saw.
pub(crate) struct Stats {
    pub(crate) room: usize,
    pub(crate) e2e: Histogram<u64>,
    pub(crate) received: u64,
    pub(crate) distinct: u64,
    pub(crate) duplicates: u64,
    pub(crate) out_of_order: u64,
    /// Why the stream ended early, if it did (connect error, close code, `lagging`).
    pub(crate) ended: Option<String>,
}

/// Which transport a subscribe URL uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    WebSocket,
    Sse,
}

struct Check {
    stats: Stats,
    seen: Vec<u64>,
    max_n: Option<u64>,
    last_seq: Option<u64>,
}

impl Check {
    fn new(room: usize) -> Check {
        Check {
            stats: Stats {
                room,
                e2e: report::histogram(),
                received: 0,
                distinct: 0,
                duplicates: 0,
                out_of_order: 0,
                ended: None,
            },
            seen: Vec::new(),
            max_n: None,
            last_seq: None,
        }
    }

    /// Handle one frame's JSON; an error names a frame that ends the stream.
    fn frame(&mut self, json: &[u8], shared: &Shared) -> Result<(), String> {
        if shared.framing == Framing::Ekg {
            let Some(ty) = frame_type(json) else {
                return Ok(());
            };
            match ty {
                b"message" => {}
                b"lagging" => return Err("lagging".into()),
                b"reconnect" => return Err("reconnect".into()),
                b"reset" => return Err("reset".into()),
                _ => return Ok(()),
            }
        }
        let now = http::unix_micros();
        shared.deliveries.fetch_add(1, Ordering::Relaxed);
        self.stats.received += 1;
        let (Some(n), Some(t)) = (num_after(json, b"\"n\":"), num_after(json, b"\"t\":")) else {
            return Ok(());
        };
        report::record(&mut self.stats.e2e, now.saturating_sub(t));
        if shared.framing == Framing::Ekg {
            let Some(seq) = num_after(json, b"\"seq\":") else {
                return Ok(());
            };
            if self.last_seq.is_some_and(|l| seq <= l) {
                self.stats.out_of_order += 1;
            }
            self.last_seq = Some(seq);
        }
        let (word, bit) = ((n / 64) as usize, n % 64);
        if word >= self.seen.len() {
            if word > 1 << 24 {
                return Ok(());
            }
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.stats.duplicates += 1;
            return Ok(());
        }
        self.seen[word] |= 1 << bit;
        self.stats.distinct += 1;
        if self.max_n.is_some_and(|m| n < m) {
            self.stats.out_of_order += 1;
        }
        self.max_n = Some(self.max_n.map_or(n, |m| m.max(n)));
        Ok(())
    }

    fn complete(&self, shared: &Shared) -> bool {
        shared
            .expected
            .get(self.stats.room)
            .is_some_and(|e| self.stats.distinct >= e.load(Ordering::Relaxed))
    }
}

#[allow(clippy::too_many_arguments)]
/// Run one subscriber on `url` (a `ws://` or `http://` SSE URL) for room index `room`.
pub(crate) async fn run(
    url: String,
    transport: Transport,
    addr: SocketAddr,
    local: Option<IpAddr>,
    room: usize,
    shared: Arc<Shared>,
    drain: DrainRx,
    give_up: Instant,
    connect_permit: tokio::sync::OwnedSemaphorePermit,
) -> Stats {
    let mut permit = Some(connect_permit);
    let mut check = Check::new(room);
    let result = match transport {
        Transport::WebSocket => {
            ws(
                &url,
                addr,
                local,
                &mut check,
                &shared,
                drain,
                give_up,
                &mut permit,
            )
            .await
        }
        Transport::Sse => {
            sse(
                &url,
                addr,
                local,
                &mut check,
                &shared,
                drain,
                give_up,
                &mut permit,
            )
            .await
        }
    };
    if let Err(e) = result {
        check.stats.ended = Some(format!("{e:#}"));
    }
    check.stats
}

/// Wait for the drain deadline to be set and pass; pending until then.
async fn drained(drain: &mut DrainRx) {
    loop {
        let deadline = *drain.borrow_and_update();
        match deadline {
            Some(d) => return tokio::time::sleep_until(d).await,
            None => {
                if drain.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn ws(
    url: &str,
    addr: SocketAddr,
    local: Option<IpAddr>,
    check: &mut Check,
    shared: &Shared,
    drain: DrainRx,
    give_up: Instant,
    permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<()> {
    let stream = http::connect(addr, local).await?;
    let ws = tokio::time::timeout(http::REQUEST_TIMEOUT, WsReader::handshake(stream, url))
        .await
        .context("WebSocket handshake timed out")?
        .with_context(|| format!("WebSocket handshake with {url}"))?;
    read_frames(ws, check, shared, drain, give_up, permit).await
}

#[allow(clippy::too_many_arguments)]
async fn sse(
    url: &str,
    addr: SocketAddr,
    local: Option<IpAddr>,
    check: &mut Check,
    shared: &Shared,
    drain: DrainRx,
    give_up: Instant,
    permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<()> {
    let sse = tokio::time::timeout(http::REQUEST_TIMEOUT, SseReader::open(addr, local, url))
        .await
        .context("SSE request timed out")?
        .with_context(|| format!("SSE request to {url}"))?;
    read_frames(sse, check, shared, drain, give_up, permit).await
}

/// One subscription's frames, whatever the transport.
trait Frames {
    /// The next frame's JSON; `Ok(None)` when the stream ended. Cancel-safe.
    async fn next_frame(&mut self) -> Result<Option<&[u8]>>;
}

impl Frames for WsReader {
    async fn next_frame(&mut self) -> Result<Option<&[u8]>> {
        match self.next().await.context("WebSocket")? {
            None => Ok(None),
            Some(Event::Message(bytes)) => Ok(Some(bytes)),
            Some(Event::Close(code, reason)) => bail!("closed: {code} {reason}"),
        }
    }
}

impl Frames for SseReader {
    async fn next_frame(&mut self) -> Result<Option<&[u8]>> {
        self.next().await.context("SSE read")
    }
}

/// Wait for `hello`, then check every frame until the room is complete, the drain deadline
/// passes, or the stream ends (an error saying why).
async fn read_frames<F: Frames>(
    mut frames: F,
    check: &mut Check,
    shared: &Shared,
    mut drain: DrainRx,
    give_up: Instant,
    permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<()> {
    let mut hello = false;
    if shared.framing == Framing::Raw {
        hello = true;
        *permit = None;
        shared.ready.fetch_add(1, Ordering::Relaxed);
    }
    loop {
        if hello && check.complete(shared) {
            return Ok(());
        }
        let frame = tokio::select! {
            f = frames.next_frame() => f,
            () = drained(&mut drain) => return Ok(()),
            () = tokio::time::sleep_until(give_up) => return Ok(()),
        };
        let Some(json) = frame? else {
            bail!("stream ended");
        };
        if !hello {
            if frame_type(json) == Some(b"hello") {
                hello = true;
                *permit = None;
                shared.ready.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        check.frame(json, shared).map_err(anyhow::Error::msg)?;
    }
}

/// The value of the frame's `"type"` field.
pub(crate) fn frame_type(json: &[u8]) -> Option<&[u8]> {
    let key = b"\"type\":\"";
    let i = find(json, key)? + key.len();
    let len = json[i..].iter().position(|&b| b == b'"')?;
    Some(&json[i..i + len])
}

/// The unsigned number right after `key` (e.g. `"seq":`).
pub(crate) fn num_after(json: &[u8], key: &[u8]) -> Option<u64> {
    let mut i = find(json, key)? + key.len();
    while json.get(i) == Some(&b' ') {
        i += 1;
    }
    let digits = json[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&json[i..i + digits]).ok()?.parse().ok()
}

/// Wait until `count` subscribers said hello, or fail after `deadline`.
pub(crate) async fn wait_ready(shared: &Shared, count: u64, deadline: Duration) -> Result<()> {
    ::tests::wait_for("subscribers to receive hello", deadline, async || {
        shared.ready.load(Ordering::Relaxed) >= count
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            framing: Framing::Ekg,
            deliveries: Arc::default(),
            ready: AtomicU64::new(0),
            expected: vec![AtomicU64::new(3)],
        }
    }

    fn check() -> Check {
        Check::new(0)
    }

    fn msg(seq: u64, n: u64) -> Vec<u8> {
        format!(r#"{{"type":"message","seq":{seq},"data":{{"n":{n},"pad":"x","t":1}},"ts":5}}"#)
            .into_bytes()
    }

    #[test]
    fn raw_frames_are_bodies_without_seq() {
        let s = Shared {
            framing: Framing::Raw,
            ..shared()
        };
        let mut c = check();
        for n in [0, 1, 1, 2] {
            c.frame(format!(r#"{{"n":{n},"t":1,"pad":"x"}}"#).as_bytes(), &s)
                .unwrap();
        }
        assert_eq!((c.stats.distinct, c.stats.duplicates), (3, 1));
        assert_eq!(c.stats.out_of_order, 0);
        assert!(c.complete(&s));
    }

    #[test]
    fn scanner_reads_type_and_numbers() {
        let f = msg(42, 7);
        assert_eq!(frame_type(&f), Some(&b"message"[..]));
        assert_eq!(num_after(&f, b"\"seq\":"), Some(42));
        assert_eq!(num_after(&f, b"\"n\":"), Some(7));
        assert_eq!(num_after(&f, b"\"t\":"), Some(1));
    }

    #[test]
    fn duplicates_and_reordering_are_counted() {
        let s = shared();
        let mut c = check();
        c.frame(&msg(10, 0), &s).unwrap();
        c.frame(&msg(12, 2), &s).unwrap();
        c.frame(&msg(11, 1), &s).unwrap();
        c.frame(&msg(13, 2), &s).unwrap();
        assert_eq!(c.stats.distinct, 3);
        assert_eq!(c.stats.duplicates, 1);
        assert_eq!(c.stats.out_of_order, 2); // n=1 after n=2, and seq 11 after 12
        assert!(c.complete(&s));
        assert_eq!(
            c.frame(br#"{"type":"lagging"}"#, &s),
            Err("lagging".to_owned())
        );
    }
}
