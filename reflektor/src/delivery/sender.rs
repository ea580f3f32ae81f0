//! Building and sending one delivery (a batch, or one replayed request), signed.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use shared::sign::{EPOCH_HEADER, OFFSET_HEADER, Signer, TIMESTAMP_HEADER, unix_ms};
use shared::{Epoch, Offset, Record, batch};

use super::HostUrl;
use super::retry::Answer;

/// Most bytes of a host's answer kept (for acks and dead-letter entries).
pub(crate) const MAX_ANSWER_BYTES: usize = 64 << 10;

/// A host's reply: how the attempt ended and the start of the answer's body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) answer: Answer,
    pub(crate) body: Bytes,
}

/// Sends deliveries for every worker: one HTTP client (connection pool) and the signer.
pub(crate) struct Sender {
    client: reqwest::Client,
    signer: Option<Signer>,
    epoch: Epoch,
}

impl Sender {
    /// # Errors
    /// The HTTP client cannot be built (TLS set-up).
    pub(crate) fn new(
        secret: Option<&str>,
        epoch: Epoch,
        timeout: Duration,
    ) -> anyhow::Result<Sender> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Sender {
            client,
            signer: secret.map(|s| Signer::new(s.as_bytes())),
            epoch,
        })
    }

    pub(crate) fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Epoch, offset and the send time travel with every delivery; the signature (over the
    /// method, target, epoch, offset, time and body) when a secret is set.
    fn sign(
        &self,
        headers: &mut HeaderMap,
        method: &str,
        target: &str,
        offset: Offset,
        body: &[u8],
    ) {
        let pairs: Vec<(&'static str, String)> = match &self.signer {
            Some(signer) => signer
                .headers(method, target, self.epoch, offset, body)
                .into(),
            None => vec![
                (EPOCH_HEADER, self.epoch.to_string()),
                (OFFSET_HEADER, offset.to_string()),
                (TIMESTAMP_HEADER, unix_ms().to_string()),
            ],
        };
        for (name, value) in pairs {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
    }

    /// POST a batch (empty: a heartbeat) to the host's ingest endpoint.
    pub(crate) async fn send_batch(
        &self,
        url: &HostUrl,
        prev: Offset,
        head: Offset,
        records: &[Bytes],
    ) -> Reply {
        let body = batch::encode(self.epoch, prev, head, records);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(batch::CONTENT_TYPE));
        self.sign(&mut headers, "POST", batch::INGEST_PATH, prev, &body);
        let req = self
            .client
            .post(format!("{url}{}", batch::INGEST_PATH))
            .headers(headers)
            .body(body);
        execute(req).await
    }

    /// Send one record as its original request.
    pub(crate) async fn send_replay(&self, url: &HostUrl, record: &Bytes) -> Reply {
        let record = match Record::decode(record.clone()) {
            Ok(r) => r,
            Err(e) => return unsendable(format!("record cannot be decoded: {e}")),
        };
        let method = match reqwest::Method::from_bytes(record.method.as_str().as_bytes()) {
            Ok(m) => m,
            Err(e) => return unsendable(e.to_string()),
        };
        let mut headers = HeaderMap::new();
        let fixed = [
            ("content-type", record.content_type.as_deref()),
            ("idempotency-key", record.idempotency_key.as_deref()),
        ];
        let kept = record
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), Some(v.as_str())));
        for (name, value) in fixed.into_iter().chain(kept) {
            let Some(value) = value else { continue };
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(n), Ok(v)) => {
                    headers.append(n, v);
                }
                _ => return unsendable(format!("header {name} cannot be replayed")),
            }
        }
        self.sign(
            &mut headers,
            record.method.as_str(),
            &record.target,
            record.offset,
            &record.body,
        );
        let req = self
            .client
            .request(method, format!("{url}{}", record.target))
            .headers(headers)
            .body(record.body);
        execute(req).await
    }
}

fn unsendable(why: String) -> Reply {
    Reply {
        answer: Answer::Unsendable(why),
        body: Bytes::new(),
    }
}

async fn execute(req: reqwest::RequestBuilder) -> Reply {
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return transport(&e),
    };
    let status = resp.status().as_u16();
    let mut body = BytesMut::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if room <= chunk.len() {
                    break;
                }
            }
            Ok(None) => break,
            // The status arrived; a broken body still counts as the host's answer for a
            // refusal, but not as an acknowledgement.
            Err(e) if (200..300).contains(&status) => return transport(&e),
            Err(_) => break,
        }
    }
    Reply {
        answer: Answer::Status(status),
        body: body.freeze(),
    }
}

fn transport(e: &reqwest::Error) -> Reply {
    let answer = if e.is_timeout() {
        Answer::Timeout
    } else {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        Answer::Transport(msg)
    };
    Reply {
        answer,
        body: Bytes::new(),
    }
}
