//! Dead letters in a JetStream stream, so every instance lists and redrives the same ones.
//!
//! Stream `<stream>_dead_letters`, subject `reflektor.<stream>.dead`, file storage, the log's
//! replicas, at most `max_entries` messages (the oldest go first: JetStream's `max_msgs` with
//! discard old). Each message is one [`DeadLetter`] as JSON (the record's bytes in base64);
//! its stream sequence is its id. A redrive that succeeds deletes that message.

use std::sync::Arc;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::{self, Context, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use shared::Offset;

use crate::delivery::{DeadLetter, DeadLetterView, Host};
use crate::ops::metrics;

#[derive(Debug)]
pub struct StreamDeadLetters {
    js: Context,
    stream: stream::Stream,
    subject: String,
    max_entries: usize,
}

impl StreamDeadLetters {
    /// Find or create the stream.
    ///
    /// # Errors
    /// JetStream refused or did not answer.
    pub(crate) async fn open(
        js: &Context,
        log_stream: &str,
        replicas: usize,
        max_entries: usize,
    ) -> Result<StreamDeadLetters, String> {
        let subject = format!("reflektor.{log_stream}.dead");
        let name = format!("{log_stream}_dead_letters");
        let stream = js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                description: Some("reflektor dead letters: records a host refused".into()),
                subjects: vec![subject.clone()],
                storage: stream::StorageType::File,
                num_replicas: replicas,
                max_messages: i64::try_from(max_entries).unwrap_or(i64::MAX),
                discard: stream::DiscardPolicy::Old,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot open stream {name}: {e}"))?;
        let this = StreamDeadLetters {
            js: js.clone(),
            stream,
            subject,
            max_entries,
        };
        metrics::dead_letters(this.len().await);
        Ok(this)
    }

    async fn len(&self) -> usize {
        match self.stream.get_info().await {
            Ok(i) => usize::try_from(i.state.messages).unwrap_or(usize::MAX),
            Err(_) => 0,
        }
    }

    /// Store a refused record; resolves once JetStream acknowledged it.
    ///
    /// # Errors
    /// JetStream did not acknowledge.
    pub(crate) async fn add(
        self: &Arc<Self>,
        host: &Host,
        offset: Offset,
        record: Bytes,
        status: u16,
        error: String,
    ) -> std::io::Result<()> {
        let d = DeadLetter {
            id: 0,
            host_id: host.id.clone(),
            host_url: host.url.to_string(),
            offset,
            status,
            error,
            at_ms: crate::now_ms(),
            record,
        };
        let body = serde_json::to_vec(&d)?;
        self.js
            .publish(self.subject.clone(), body.into())
            .await
            .map_err(std::io::Error::other)?
            .await
            .map_err(std::io::Error::other)?;
        metrics::dead_letters(self.len().await);
        Ok(())
    }

    fn decode(seq: u64, payload: &[u8]) -> Option<DeadLetter> {
        let mut d: DeadLetter = serde_json::from_slice(payload).ok()?;
        d.id = seq;
        Some(d)
    }

    /// Every entry, oldest first (at most `max_entries`).
    ///
    /// # Errors
    /// JetStream did not answer.
    pub(crate) async fn list(&self) -> Result<Vec<DeadLetterView>, String> {
        let info = self.stream.get_info().await.map_err(|e| e.to_string())?;
        let total = usize::try_from(info.state.messages)
            .unwrap_or(usize::MAX)
            .min(self.max_entries);
        let mut out = Vec::with_capacity(total);
        if total == 0 {
            return Ok(out);
        }
        let consumer = self
            .stream
            .create_consumer(pull::OrderedConfig {
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while out.len() < total {
            let next = tokio::time::timeout_at(deadline, messages.next()).await;
            let Ok(Some(Ok(msg))) = next else { break };
            let Ok(info) = msg.info() else { continue };
            let (seq, pending) = (info.stream_sequence, info.pending);
            if let Some(d) = Self::decode(seq, &msg.payload) {
                out.push(d.view());
            }
            if pending == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// One entry by id.
    ///
    /// # Errors
    /// JetStream did not answer.
    pub(crate) async fn get(&self, id: u64) -> Result<Option<DeadLetter>, String> {
        match self.stream.get_raw_message(id).await {
            Ok(m) if m.subject.as_str() == self.subject => Ok(Self::decode(id, &m.payload)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                Ok(None)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Forget an entry (after a successful redrive); false when it is not there.
    ///
    /// # Errors
    /// JetStream did not answer.
    pub(crate) async fn remove(&self, id: u64) -> std::io::Result<bool> {
        let removed = match self.stream.delete_message(id).await {
            Ok(done) => done,
            Err(e) if e.to_string().contains("no message found") => false,
            Err(e) => return Err(std::io::Error::other(e)),
        };
        metrics::dead_letters(self.len().await);
        Ok(removed)
    }
}
