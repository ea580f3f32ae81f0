//! [`JetStreamLog`]: the log in a JetStream stream, and the tasks that follow it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, Context, stream};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use shared::{Epoch, Offset, Record};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::super::cache::Cache;
use super::super::{AppendError, LogStats, ReadError};
use super::{JetStreamConfig, JetStreamError, stream as setup};

/// How often the stream's state (oldest record, size, identity) is looked up.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Pause before the follower subscribes again after its subscription failed.
const FOLLOW_RETRY: Duration = Duration::from_millis(200);
/// Catch-up readers kept open between reads (one per host that reads older records).
const MAX_READERS: usize = 32;
/// A catch-up reader unused this long is dropped; the server forgets it a little later.
const READER_IDLE: Duration = Duration::from_secs(20);
/// Bytes a record may carry beyond its body: the record header, target, headers, and room for
/// the NATS message headers (`Nats-Msg-Id`).
const RECORD_OVERHEAD: usize = 72 * 1024;

/// Cheap to clone; every clone is the same log.
#[derive(Clone)]
pub struct JetStreamLog {
    inner: Arc<Inner>,
}

/// Owned by the handles only: dropping the last handle stops the background tasks.
struct Inner {
    shared: Arc<Shared>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A pull consumer positioned at `next`, kept for the next read from there.
struct Reader {
    next: u64,
    consumer: consumer::Consumer<pull::Config>,
    used: tokio::time::Instant,
}

/// Shared by the handles and the background tasks.
struct Shared {
    cfg: JetStreamConfig,
    client: Client,
    js: Context,
    stream: stream::Stream,
    subject: String,
    epoch: Epoch,
    /// Creation time of the stream (ns), to notice it being replaced.
    created: i128,
    /// Newest record known to be stored (acknowledged by a quorum of replicas).
    head: AtomicU64,
    head_tx: watch::Sender<Offset>,
    /// Oldest record still in the stream (`head + 1` when it is empty).
    oldest: AtomicU64,
    /// Size of the stream as JetStream last reported it.
    bytes: AtomicU64,
    /// Recent records with their offsets patched in, filled by the follower.
    cache: Mutex<Cache>,
    readers: Mutex<VecDeque<Reader>>,
    /// Set by `close`: appends fail with `Closed`.
    closed: AtomicBool,
    /// Largest encoded record the NATS servers accept.
    max_record_bytes: usize,
    /// Why the stream is unusable right now (deleted), if it is.
    missing: Mutex<Option<String>>,
    /// Cancelled when the stream was replaced by another one (a new epoch): this process must
    /// stop, its cursors and idempotency window belong to the old log.
    replaced: CancellationToken,
    replaced_why: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The stored payload with the stream sequence written into the record's offset field (the
/// record was published before JetStream gave it a sequence).
fn with_offset(stream: &str, seq: u64, payload: &Bytes) -> Result<Bytes, ReadError> {
    let corrupt = |detail: String| ReadError::Corrupt {
        segment: std::path::PathBuf::from(format!("jetstream:{stream}")),
        position: seq,
        detail,
    };
    if let Err(e) = Record::decode(payload.clone()) {
        return Err(corrupt(format!(
            "message {seq} is not a reflektor record: {e}"
        )));
    }
    let mut b = BytesMut::from(&payload[..]);
    b[..8].copy_from_slice(&seq.to_le_bytes());
    Ok(b.freeze())
}

/// What JetStream's identifier for a published record is made of: the `Idempotency-Key` itself
/// when it is printable ASCII, else its hex form (a NATS header value cannot carry every byte
/// an HTTP header can).
pub(super) fn message_id(key: &str) -> String {
    if key.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        key.to_owned()
    } else {
        format!("hex:{}", hex_of(key.as_bytes()))
    }
}

fn hex_of(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

impl JetStreamLog {
    /// Connect, find or create the stream (checking its settings), start following it.
    ///
    /// `max_record_bytes` is the largest record intake will append; when the NATS servers'
    /// `max_payload` is smaller, it is lowered (see [`JetStreamLog::max_record_bytes`]).
    ///
    /// # Errors
    /// See [`JetStreamError`]: unreachable servers, a stream with other settings, a stream
    /// JetStream cannot place (fewer nodes than replicas).
    pub async fn open(cfg: JetStreamConfig) -> Result<(JetStreamLog, Context), JetStreamError> {
        let (client, js) = setup::connect(&cfg, "reflektor").await?;
        let mut stream = setup::ensure(&js, &cfg).await?;
        let info = stream
            .info()
            .await
            .map_err(|e| JetStreamError::Request(format!("stream {} info: {e}", cfg.stream)))?
            .clone();
        let epoch = setup::epoch_of(&cfg.stream, &info);
        let (oldest, head) = bounds(&info.state);
        let max_payload = client.server_info().max_payload;
        let max_record_bytes = max_payload.saturating_sub(1024);
        let (head_tx, _) = watch::channel(Offset(head));
        let shared = Arc::new(Shared {
            subject: cfg.subject(),
            cache: Mutex::new(Cache::new(cfg.cache_bytes)),
            cfg,
            client,
            js: js.clone(),
            stream,
            epoch,
            created: info.created.unix_timestamp_nanos(),
            head: AtomicU64::new(head),
            head_tx,
            oldest: AtomicU64::new(oldest),
            bytes: AtomicU64::new(info.state.bytes),
            readers: Mutex::new(VecDeque::new()),
            closed: AtomicBool::new(false),
            max_record_bytes,
            missing: Mutex::new(None),
            replaced: CancellationToken::new(),
            replaced_why: Mutex::new(None),
        });
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        tasks.spawn(follow(shared.clone(), head + 1, stop.clone()));
        tasks.spawn(refresh(shared.clone(), stop.clone()));
        info!(
            stream = %shared.cfg.stream,
            %epoch,
            replicas = info.config.num_replicas,
            oldest,
            head,
            "JetStream log open"
        );
        Ok((
            JetStreamLog {
                inner: Arc::new(Inner {
                    shared,
                    tasks,
                    stop,
                }),
            },
            js,
        ))
    }

    pub fn epoch(&self) -> Epoch {
        self.inner.shared.epoch
    }

    /// Largest encoded record the NATS servers accept (their `max_payload` less room for the
    /// message headers).
    pub fn max_record_bytes(&self) -> usize {
        self.inner.shared.max_record_bytes
    }

    /// The body size that still fits [`Self::max_record_bytes`] with a record's largest
    /// metadata.
    pub fn max_body_bytes(&self) -> usize {
        self.max_record_bytes().saturating_sub(RECORD_OVERHEAD)
    }

    /// Append one record; resolves with its offset (the stream sequence) once JetStream
    /// acknowledged it, i.e. a quorum of the stream's replicas stored it. A record whose
    /// `Idempotency-Key` JetStream saw within the duplicate window resolves with the first
    /// record's offset and `true`.
    ///
    /// # Errors
    /// `Busy` when too many appends wait for acknowledgement, `Closed`, `TooLarge`, `Unavailable` when
    /// JetStream did not acknowledge (unreachable, no quorum, stream missing): the record may
    /// or may not be stored; a client retrying with the same key gets one record.
    pub async fn append(&self, record: Record) -> Result<(Offset, bool), AppendError> {
        let shared = &self.inner.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(AppendError::Closed);
        }
        if record.validate().is_err() || record.encoded_len() > shared.max_record_bytes {
            return Err(AppendError::TooLarge);
        }
        let mut publish = PublishMessage::build().payload(record.to_bytes());
        if let Some(key) = &record.idempotency_key {
            publish = publish.message_id(message_id(key));
        }
        let ack = shared
            .js
            .send_publish(shared.subject.clone(), publish)
            .await
            .map_err(|e| match e.kind() {
                PublishErrorKind::MaxAckPending => AppendError::Busy,
                PublishErrorKind::MaxPayloadExceeded => AppendError::TooLarge,
                _ => AppendError::Unavailable(format!("JetStream publish failed: {e}")),
            })?;
        let ack = ack.await.map_err(|e| {
            let missing = lock(&shared.missing).clone();
            AppendError::Unavailable(match missing {
                Some(why) => why,
                None => format!("JetStream did not acknowledge the record: {e}"),
            })
        })?;
        Ok((Offset(ack.sequence), ack.duplicate))
    }

    pub fn head(&self) -> Offset {
        Offset(self.inner.shared.head.load(Ordering::Acquire))
    }

    pub fn oldest(&self) -> Offset {
        Offset(self.inner.shared.oldest.load(Ordering::Acquire))
    }

    pub fn watch_head(&self) -> watch::Receiver<Offset> {
        self.inner.shared.head_tx.subscribe()
    }

    /// Up to `max_records` / `max_bytes` (at least one record when any is available) records
    /// with offset `>= from` and `<= head()`, in order, from the cache when they are recent and
    /// from the stream otherwise. `from` of zero means "from the oldest".
    ///
    /// # Errors
    /// `Trimmed` when `from` is below the oldest record, `Corrupt` when a message on the
    /// stream's subject is not a record, `Io` when JetStream did not answer.
    pub async fn read(
        &self,
        from: Offset,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Bytes>, ReadError> {
        let shared = &self.inner.shared;
        let from = from.max(Offset(1));
        let head = self.head();
        let oldest = self.oldest();
        if from < oldest {
            return Err(ReadError::Trimmed { oldest });
        }
        if from > head || max_records == 0 {
            return Ok(Vec::new());
        }
        if let Some(records) = lock(&shared.cache).read(from, head, max_records, max_bytes) {
            return Ok(records);
        }
        let want = usize::try_from(head.0 - from.0 + 1)
            .unwrap_or(usize::MAX)
            .min(max_records);
        fetch(shared, from.0, want, max_bytes).await
    }

    /// Acceptance time (Unix ms) of the record at `offset`, if it is retained and visible.
    pub async fn timestamp_of(&self, offset: Offset) -> Option<u64> {
        if offset == Offset::ZERO || offset < self.oldest() || offset > self.head() {
            return None;
        }
        let cached = lock(&self.inner.shared.cache).get(offset);
        let record = match cached {
            Some(r) => r,
            None => self.read(offset, 1, 0).await.ok()?.into_iter().next()?,
        };
        Record::peek_timestamp_ms(&record)
    }

    pub fn stats(&self) -> LogStats {
        let shared = &self.inner.shared;
        LogStats {
            segments: 0,
            bytes: shared.bytes.load(Ordering::Relaxed),
            oldest: self.oldest(),
            head: self.head(),
        }
    }

    /// Why the log cannot take appends right now (its stream is gone), if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        lock(&self.inner.shared.missing).clone()
    }

    /// Resolves when the stream was replaced by a new one (deleted and created again): this
    /// log is over and the process must start again on the new one. The reason is returned.
    pub async fn replaced(&self) -> String {
        self.inner.shared.replaced.cancelled().await;
        lock(&self.inner.shared.replaced_why)
            .clone()
            .unwrap_or_else(|| "the stream was replaced".into())
    }

    /// Stop taking appends, stop following the stream, flush the connection.
    ///
    /// # Errors
    /// The final flush to the server failed (appends already answered are stored either way).
    pub async fn close(&self) -> Result<(), JetStreamError> {
        self.inner.shared.closed.store(true, Ordering::Release);
        self.inner.stop.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        self.inner
            .shared
            .client
            .flush()
            .await
            .map_err(|e| JetStreamError::Request(format!("flush: {e}")))
    }
}

/// (oldest, head) of a stream's state.
fn bounds(state: &stream::State) -> (u64, u64) {
    let head = state.last_sequence;
    let oldest = if state.messages == 0 {
        head + 1
    } else {
        state.first_sequence.max(1)
    };
    (oldest, head)
}

impl Shared {
    /// Make records up to `head` visible to readers (never moves backwards).
    fn publish_head(&self, head: u64) {
        let previous = self.head.fetch_max(head, Ordering::AcqRel);
        if head > previous {
            self.head_tx.send_if_modified(|visible| {
                if head > visible.0 {
                    *visible = Offset(head);
                    true
                } else {
                    false
                }
            });
        }
    }

    fn take_reader(&self, next: u64) -> Option<consumer::Consumer<pull::Config>> {
        let mut readers = lock(&self.readers);
        let now = tokio::time::Instant::now();
        readers.retain(|r| now.duration_since(r.used) < READER_IDLE);
        let pos = readers.iter().position(|r| r.next == next)?;
        readers.remove(pos).map(|r| r.consumer)
    }

    fn keep_reader(&self, next: u64, consumer: consumer::Consumer<pull::Config>) {
        let mut readers = lock(&self.readers);
        readers.push_back(Reader {
            next,
            consumer,
            used: tokio::time::Instant::now(),
        });
        while readers.len() > MAX_READERS {
            readers.pop_front();
        }
    }
}

/// Read records from `from` off the stream with a pull consumer, reusing the one a previous
/// read left at `from`.
async fn fetch(
    shared: &Shared,
    from: u64,
    want: usize,
    max_bytes: usize,
) -> Result<Vec<Bytes>, ReadError> {
    let io = |what: &str, e: &dyn std::fmt::Display| ReadError::Io(format!("{what}: {e}"));
    let consumer = match shared.take_reader(from) {
        Some(c) => c,
        None => shared
            .stream
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ack_policy: AckPolicy::None,
                filter_subject: shared.subject.clone(),
                inactive_threshold: READER_IDLE * 2,
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| io("cannot open a stream reader", &e))?,
    };
    // The server stops a batch at its byte limit; keep room for one record of any size so a
    // large record alone is never refused.
    let server_bytes = max_bytes.saturating_add(shared.max_record_bytes + 4096);
    let mut batch = consumer
        .fetch()
        .max_messages(want)
        .max_bytes(server_bytes)
        .messages()
        .await
        .map_err(|e| io("stream read failed", &e))?;
    let mut out = Vec::with_capacity(want.min(1024));
    let mut bytes = 0usize;
    let mut next = from;
    let mut consumer_ok = true;
    while let Some(msg) = batch.next().await {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                consumer_ok = false;
                if out.is_empty() {
                    return Err(io("stream read failed", &e));
                }
                break;
            }
        };
        let seq = msg
            .info()
            .map_err(|e| io("stream message without metadata", &e))?
            .stream_sequence;
        if out.is_empty() && seq > from && from < shared.oldest.load(Ordering::Acquire) {
            return Err(ReadError::Trimmed {
                oldest: Offset(seq),
            });
        }
        let record = with_offset(&shared.cfg.stream, seq, &msg.payload)?;
        next = seq + 1;
        if !out.is_empty() && bytes + record.len() > max_bytes {
            // Read past the limit: this reader is no longer at `next`; drop it.
            consumer_ok = false;
            break;
        }
        bytes += record.len();
        out.push(record);
    }
    if out.is_empty() {
        // Nothing came back although `from` is at or below the head: it was trimmed meanwhile
        // or the replica answering has not caught up. Look again shortly.
        refresh_once(shared).await;
        let oldest = shared.oldest.load(Ordering::Acquire);
        if from < oldest {
            return Err(ReadError::Trimmed {
                oldest: Offset(oldest),
            });
        }
        return Ok(out);
    }
    if consumer_ok {
        shared.keep_reader(next, consumer);
    }
    Ok(out)
}

/// Follow the stream from `from`: every stored record goes into the cache and moves the head.
async fn follow(shared: Arc<Shared>, mut from: u64, stop: CancellationToken) {
    loop {
        let consumer = shared
            .stream
            .create_consumer(pull::OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                filter_subject: shared.subject.clone(),
                ..Default::default()
            })
            .await;
        let messages = match consumer {
            Ok(c) => c.messages().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match messages {
            Ok(mut messages) => loop {
                let next = tokio::select! {
                    m = messages.next() => m,
                    () = stop.cancelled() => return,
                };
                let msg = match next {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        debug!(err = %e, "stream follower interrupted; subscribing again");
                        break;
                    }
                    None => break,
                };
                let Ok(info) = msg.info() else {
                    continue;
                };
                let seq = info.stream_sequence;
                match with_offset(&shared.cfg.stream, seq, &msg.payload) {
                    Ok(record) => lock(&shared.cache).push(seq, record),
                    // Readers meet it again and report it; the cache just skips it.
                    Err(e) => error!(%e, "a message on the log's subject is not a record"),
                }
                shared.publish_head(seq);
                from = seq + 1;
            },
            Err(e) => debug!(err = %e, "cannot follow the stream yet"),
        }
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_RETRY) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Keep the oldest record, the size and the head current, and notice the stream being
/// deleted or replaced.
async fn refresh(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        refresh_once(&shared).await;
        if shared.replaced.is_cancelled() {
            return;
        }
    }
}

async fn refresh_once(shared: &Shared) {
    match shared.stream.get_info().await {
        Ok(info) => {
            let created = info.created.unix_timestamp_nanos();
            if created != shared.created {
                let why = format!(
                    "stream {} was deleted and created again: it is a new log (epoch {} -> {}); restart reflektor to relay it",
                    shared.cfg.stream,
                    shared.epoch,
                    setup::epoch_of(&shared.cfg.stream, &info)
                );
                error!("{why}");
                *lock(&shared.missing) = Some(why.clone());
                *lock(&shared.replaced_why) = Some(why);
                shared.replaced.cancel();
                return;
            }
            if lock(&shared.missing).take().is_some() {
                info!(stream = %shared.cfg.stream, "stream is back");
            }
            let (oldest, head) = bounds(&info.state);
            shared.publish_head(head);
            shared.oldest.fetch_max(oldest, Ordering::AcqRel);
            shared.bytes.store(info.state.bytes, Ordering::Relaxed);
        }
        Err(e) => {
            let gone = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<jetstream::Error>())
                .is_some_and(|err| err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND);
            if gone {
                let why = format!(
                    "stream {} does not exist any more: intake answers 503 until it is created again (then restart reflektor)",
                    shared.cfg.stream
                );
                let mut missing = lock(&shared.missing);
                if missing.is_none() {
                    error!("{why}");
                }
                *missing = Some(why);
            } else {
                warn!(err = %e, stream = %shared.cfg.stream, "cannot read the stream's state");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_keep_printable_keys_and_hex_encode_the_rest() {
        assert_eq!(message_id("order-42"), "order-42");
        assert_eq!(message_id("a b"), "hex:612062");
        assert_eq!(message_id("é"), "hex:c3a9");
    }

    #[test]
    fn an_empty_stream_has_its_oldest_record_just_past_the_head() {
        let state = |messages: u64, first: u64, last: u64| -> stream::State {
            serde_json::from_value(serde_json::json!({
                "messages": messages, "bytes": 0, "first_seq": first,
                "first_ts": "1970-01-01T00:00:00Z", "last_seq": last,
                "last_ts": "1970-01-01T00:00:00Z", "consumer_count": 0,
            }))
            .unwrap()
        };
        assert_eq!(bounds(&state(0, 0, 0)), (1, 0));
        assert_eq!(bounds(&state(5, 8, 12)), (8, 12));
        // Everything was deleted by the limits: JetStream reports the next sequence as first.
        assert_eq!(bounds(&state(0, 13, 12)), (13, 12));
    }
}
