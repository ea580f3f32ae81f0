//! Connecting to NATS, creating or checking the stream, and the epoch derived from it.

use std::time::Duration;

use async_nats::jetstream::{self, Context, stream};
use async_nats::{Client, ConnectOptions};
use sha2::{Digest, Sha256};
use shared::Epoch;

use super::{JetStreamConfig, JetStreamError};

/// Connect to the first reachable server of `cfg.urls`. Fails (instead of retrying forever)
/// when none answers within `cfg.request_timeout`; reconnects on its own afterwards.
///
/// # Errors
/// [`JetStreamError::Connect`] naming the servers tried.
pub(super) async fn connect(
    cfg: &JetStreamConfig,
    name: &str,
) -> Result<(Client, Context), JetStreamError> {
    let addrs = cfg
        .urls
        .iter()
        .map(|u| u.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| JetStreamError::Connect(format!("bad NATS URL: {e}")))?;
    let options = ConnectOptions::new()
        .name(name)
        .connection_timeout(cfg.request_timeout)
        .request_timeout(Some(cfg.request_timeout))
        // Keep trying every known server while running: a NATS node restart is routine.
        .max_reconnects(None);
    let connect = async_nats::connect_with_options(addrs, options);
    // The client tries each server once; bound the whole attempt too.
    let limit = cfg.request_timeout * u32::try_from(cfg.urls.len().max(1)).unwrap_or(1);
    let client = match tokio::time::timeout(limit, connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Err(JetStreamError::Connect(format!(
                "cannot connect to NATS at {}: {e}",
                cfg.urls.join(",")
            )));
        }
        Err(_) => {
            return Err(JetStreamError::Connect(format!(
                "no NATS server at {} answered within {limit:?}",
                cfg.urls.join(",")
            )));
        }
    };
    let js = jetstream::ContextBuilder::new()
        .timeout(cfg.request_timeout)
        .max_ack_inflight(cfg.max_pending_appends.max(1))
        // A full window is `Busy` (503 + Retry-After), never an unbounded wait.
        .backpressure_on_inflight(false)
        .build(client.clone());
    Ok((client, js))
}

/// The stream configuration reflektor creates, and expects to find.
pub(super) fn wanted(cfg: &JetStreamConfig) -> stream::Config {
    stream::Config {
        name: cfg.stream.clone(),
        description: Some("reflektor intake log: one record per accepted request".into()),
        subjects: vec![cfg.subject()],
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        storage: stream::StorageType::File,
        num_replicas: cfg.replicas,
        max_age: cfg.max_age,
        max_bytes: i64::try_from(cfg.max_bytes).unwrap_or(i64::MAX),
        duplicate_window: cfg.duplicate_window,
        max_messages: -1,
        max_messages_per_subject: -1,
        max_consumers: -1,
        ..Default::default()
    }
}

/// Differences between an existing stream's settings and the ones asked for, as operator-facing
/// sentences (empty when they match).
pub(super) fn differences(have: &stream::Config, want: &stream::Config) -> Vec<String> {
    let mut out = Vec::new();
    if have.subjects != want.subjects {
        out.push(format!(
            "subjects are {:?}, not {:?}",
            have.subjects, want.subjects
        ));
    }
    if have.num_replicas != want.num_replicas {
        out.push(format!(
            "it has {} replicas, --replicas asks for {}",
            have.num_replicas, want.num_replicas
        ));
    }
    if have.max_age != want.max_age {
        out.push(format!(
            "max_age is {}, --retention asks for {}",
            human(have.max_age),
            human(want.max_age)
        ));
    }
    if have.max_bytes != want.max_bytes {
        out.push(format!(
            "max_bytes is {}, --retention-bytes asks for {}",
            have.max_bytes, want.max_bytes
        ));
    }
    if have.duplicate_window != want.duplicate_window {
        out.push(format!(
            "duplicate_window is {}, --dedupe-window asks for {}",
            human(have.duplicate_window),
            human(want.duplicate_window)
        ));
    }
    if have.storage != want.storage {
        out.push(format!("storage is {:?}, not file", have.storage));
    }
    if have.retention != want.retention {
        out.push(format!("retention is {:?}, not limits", have.retention));
    }
    if have.discard != want.discard {
        out.push(format!("discard is {:?}, not old", have.discard));
    }
    if have.max_messages > 0 || have.max_messages_per_subject > 0 {
        out.push("it limits the number of messages".into());
    }
    if have.sealed || have.deny_delete || have.deny_purge {
        out.push("it is sealed or denies delete or purge".into());
    }
    out
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Find the stream, or create it. An existing stream must have the settings the flags ask for.
///
/// # Errors
/// [`JetStreamError::Mismatch`] listing every difference; [`JetStreamError::Create`] when
/// JetStream refuses the stream (not enough nodes for the replicas, JetStream disabled);
/// [`JetStreamError::Request`] when JetStream does not answer.
pub(super) async fn ensure(
    js: &Context,
    cfg: &JetStreamConfig,
) -> Result<stream::Stream, JetStreamError> {
    let want = wanted(cfg);
    match js.get_stream(&cfg.stream).await {
        Ok(mut found) => {
            let info = found
                .info()
                .await
                .map_err(|e| JetStreamError::Request(format!("stream {} info: {e}", cfg.stream)))?;
            let diffs = differences(&info.config, &want);
            if !diffs.is_empty() {
                return Err(JetStreamError::Mismatch {
                    stream: cfg.stream.clone(),
                    differences: diffs,
                });
            }
            Ok(found)
        }
        Err(e) => match e.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(err)
                if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                js.create_stream(want).await.map_err(|e| {
                    JetStreamError::Create(format!(
                        "cannot create stream {} with {} replicas: {e} (JetStream needs at least {} nodes that have it enabled)",
                        cfg.stream, cfg.replicas, cfg.replicas
                    ))
                })
            }
            _ => Err(JetStreamError::Request(format!(
                "cannot look up stream {}: {e} (is JetStream enabled on the NATS servers?)",
                cfg.stream
            ))),
        },
    }
}

/// The epoch of the log a stream holds: derived from its name and creation time, so every
/// instance computes the same one and a stream deleted and created again is a new log.
pub(super) fn epoch_of(name: &str, info: &stream::Info) -> Epoch {
    let created = info.created.unix_timestamp_nanos();
    let mut h = Sha256::new();
    h.update(b"reflektor-jetstream-epoch\0");
    h.update(name.as_bytes());
    h.update([0]);
    h.update(created.to_le_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // Epoch 0 means "no log" to a host.
    Epoch(u64::from_le_bytes(first).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matching_stream_has_no_differences_and_each_setting_is_named() {
        let cfg = JetStreamConfig::new(vec!["nats://127.0.0.1:4222".into()]);
        let want = wanted(&cfg);
        assert!(differences(&want, &want).is_empty());
        let mut have = want.clone();
        have.num_replicas = 1;
        have.max_age = Duration::from_secs(3600);
        let diffs = differences(&have, &want);
        assert_eq!(diffs.len(), 2, "{diffs:?}");
        assert!(diffs[0].contains("1 replicas") && diffs[0].contains("--replicas asks for 3"));
        assert!(
            diffs[1].contains("max_age is 1h") && diffs[1].contains("--retention asks for 1day")
        );
    }
}
