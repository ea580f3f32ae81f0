//! One host of the pool: its address, mode and delivery state.

use std::fmt;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use shared::Offset;
use tokio_util::sync::CancellationToken;

/// How a host is fed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostMode {
    /// Batches to `URL/_reflektor/ingest`.
    Batch,
    /// Each record as its original request.
    Replay,
}

/// Where a host without a stored cursor starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// The oldest retained record: the host gets the whole retained log.
    Oldest,
    /// The next record appended: the host gets only what comes after it was added.
    Tail,
}

/// A host's base URL: `http://` or `https://`, no trailing slash.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HostUrl(String);

impl HostUrl {
    /// # Errors
    /// A message saying why `s` is not a usable base URL.
    pub fn parse(s: &str) -> Result<HostUrl, String> {
        let t = s.trim().trim_end_matches('/');
        let url = reqwest::Url::parse(t).map_err(|e| format!("invalid URL {s:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "invalid URL {s:?}: expected http://HOST[:PORT][/PATH]"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("invalid URL {s:?}: no query or fragment allowed"));
        }
        Ok(HostUrl(t.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The stable id of the host with this URL.
    pub fn id(&self) -> HostId {
        HostId(format!("{:08x}", crc32fast::hash(self.0.as_bytes())))
    }
}

impl fmt::Display for HostUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Stable id of a host: derived from its URL, so the same URL keeps its id across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HostId(pub String);

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A copy of a host's delivery state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostSnapshot {
    /// Next offset to send.
    pub cursor: Offset,
    /// What the host is believed to have applied.
    pub applied: Offset,
    /// False after a failed delivery (transport error, retryable status, unreadable log).
    pub healthy: bool,
    pub last_error: Option<String>,
    /// Unix ms of the last answered delivery.
    pub last_success_at: Option<u64>,
    /// Retries since the host was added or reflektor started.
    pub retries: u64,
    /// Cluster mode: the instance delivering to the host (as last written to the host table).
    pub owner: Option<String>,
}

/// One host of the pool, shared by its worker, the pool and the ops endpoints.
pub struct Host {
    pub id: HostId,
    pub url: HostUrl,
    pub mode: HostMode,
    /// Cancelled when the host is removed or reflektor shuts down; ends the worker.
    pub stop: CancellationToken,
    /// What the worker stops on: `stop` itself, or in cluster mode a child of it for one lease
    /// term (cancelled when the lease is lost).
    term: Mutex<CancellationToken>,
    /// Cluster mode: true while this instance holds the host's lease (its state is then the
    /// live one, not a copy of the host table's).
    pub(crate) leased: std::sync::atomic::AtomicBool,
    /// Held only for field updates, never across an await.
    state: Mutex<HostSnapshot>,
    /// From each record's acceptance to this host's acknowledgement of it
    /// (`reflektor_delivery_latency_seconds`).
    pub(crate) latency: shared::telemetry::LatencyHistogram,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Host {
    pub(crate) fn new(
        url: HostUrl,
        mode: HostMode,
        cursor: Offset,
        applied: Offset,
        stop: CancellationToken,
    ) -> Host {
        Host {
            id: url.id(),
            url,
            mode,
            term: Mutex::new(stop.clone()),
            leased: std::sync::atomic::AtomicBool::new(false),
            stop,
            state: Mutex::new(HostSnapshot {
                cursor,
                applied,
                healthy: true,
                last_error: None,
                last_success_at: None,
                retries: 0,
                owner: None,
            }),
            latency: shared::telemetry::LatencyHistogram::new(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut HostSnapshot) -> R) -> R {
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            // A panic while holding this lock cannot leave the plain fields inconsistent.
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// The token delivery stops on (see `term`).
    pub(crate) fn term(&self) -> CancellationToken {
        match self.term.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Start a lease term: delivery runs until the returned token (a child of `stop`) is
    /// cancelled.
    pub(crate) fn begin_term(&self) -> CancellationToken {
        let term = self.stop.child_token();
        match self.term.lock() {
            Ok(mut g) => *g = term.clone(),
            Err(p) => *p.into_inner() = term.clone(),
        }
        term
    }

    /// Take the delivery state another instance left (cluster mode): cursor, applied, and what
    /// the operations endpoint shows.
    pub(crate) fn load(&self, s: HostSnapshot) {
        self.with(|mine| *mine = s);
    }

    pub fn snapshot(&self) -> HostSnapshot {
        self.with(|s| s.clone())
    }

    pub fn cursor(&self) -> Offset {
        self.with(|s| s.cursor)
    }

    pub fn applied(&self) -> Offset {
        self.with(|s| s.applied)
    }

    /// Everything up to and including `last` is delivered.
    pub(crate) fn advance(&self, last: Offset) {
        self.with(|s| {
            if last >= s.cursor {
                s.cursor = last.next();
            }
            s.applied = s.applied.max(last);
        });
    }

    /// Move past `offset` without claiming the host applied it (it refused the record).
    pub(crate) fn skip(&self, offset: Offset) {
        self.with(|s| s.cursor = s.cursor.max(offset.next()));
    }

    /// The host acknowledged a batch ending at `last` and said it has applied `applied`.
    /// A host that says it applied less than the batch is sent the rest again from just after
    /// what it applied: moving on would make the next batch's `prev` skip records it never got.
    pub(crate) fn acknowledged(&self, last: Offset, applied: Offset) {
        self.with(|s| {
            s.cursor = if applied >= last {
                s.cursor.max(last.next())
            } else {
                applied.next()
            };
            s.applied = applied;
        });
    }

    /// The host reported it applied only `applied`: send again from just after it.
    pub(crate) fn rewind(&self, applied: Offset, oldest: Offset) {
        self.with(|s| {
            s.applied = applied;
            s.cursor = applied.next().max(oldest);
        });
    }

    /// The records before `oldest` were trimmed before this host got them.
    pub(crate) fn jump_to(&self, oldest: Offset) {
        self.with(|s| s.cursor = s.cursor.max(oldest));
    }

    pub(crate) fn answered(&self, now_ms: u64) {
        self.with(|s| {
            s.healthy = true;
            s.last_success_at = Some(now_ms);
        });
    }

    /// The host answered, but refused something (kept as the last error; still healthy).
    pub(crate) fn refused(&self, now_ms: u64, error: String) {
        self.with(|s| {
            s.healthy = true;
            s.last_success_at = Some(now_ms);
            s.last_error = Some(error);
        });
    }

    pub(crate) fn failed(&self, error: String, retry: bool) {
        self.with(|s| {
            s.healthy = false;
            s.last_error = Some(error);
            if retry {
                s.retries += 1;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised_and_checked() {
        let u = HostUrl::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:8080");
        assert_eq!(
            u.id(),
            HostUrl::parse("http://127.0.0.1:8080").unwrap().id()
        );
        assert!(HostUrl::parse("ftp://x").is_err());
        assert!(HostUrl::parse("not a url").is_err());
        assert!(HostUrl::parse("http://x/?q=1").is_err());
    }

    fn batch_host() -> Host {
        Host::new(
            HostUrl::parse("http://h").unwrap(),
            HostMode::Batch,
            Offset(1),
            Offset::ZERO,
            CancellationToken::new(),
        )
    }

    #[test]
    fn rewind_never_goes_below_the_oldest_retained_record() {
        let h = batch_host();
        h.advance(Offset(10));
        assert_eq!((h.cursor(), h.applied()), (Offset(11), Offset(10)));
        h.rewind(Offset(3), Offset(1));
        assert_eq!((h.cursor(), h.applied()), (Offset(4), Offset(3)));
        h.rewind(Offset(0), Offset(5));
        assert_eq!((h.cursor(), h.applied()), (Offset(5), Offset(0)));
    }

    #[test]
    fn an_ack_for_less_than_the_batch_sends_the_rest_again() {
        let h = batch_host();
        h.acknowledged(Offset(10), Offset(10));
        assert_eq!((h.cursor(), h.applied()), (Offset(11), Offset(10)));
        // The host applied only up to 14 of a batch ending at 20.
        h.acknowledged(Offset(20), Offset(14));
        assert_eq!((h.cursor(), h.applied()), (Offset(15), Offset(14)));
    }
}
