//! One host's delivery loop: read from the cursor, send, act on the answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shared::batch::IngestAck;
use shared::{Offset, Record};
use tracing::{debug, error, info, warn};

use super::StartAt;
use super::letters::DeadLetterStore;
use super::retry::{self, Action, Answer};
use super::sender::{Reply, Sender};
use super::{Host, HostMode};
use crate::log::{Log, ReadError};
use crate::ops::metrics;

/// An idle batch host gets an empty batch this often.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(2);
/// Longest host answer kept in a dead-letter entry or a host's last error.
const MAX_ERROR_BYTES: usize = 4 << 10;

/// What every worker shares.
pub(crate) struct Ctx {
    pub(crate) log: Log,
    pub(crate) sender: Sender,
    pub(crate) dead_letters: DeadLetterStore,
    pub(crate) batch_max_records: usize,
    pub(crate) batch_max_bytes: usize,
    /// Where a host whose cursor belongs to another log starts again.
    pub(crate) new_host_start: StartAt,
}

/// How sending something ended, once retries are over.
enum Final {
    Acked(Option<IngestAck>),
    Rewind(Offset),
    Refused { status: u16, error: String },
}

/// Deliver to `host` until it is removed or reflektor shuts down.
pub(crate) async fn run(host: Arc<Host>, ctx: Arc<Ctx>) {
    info!("delivery started");
    let mut head_rx = ctx.log.watch_head();
    let mut read_failures: u32 = 0;
    // As if a heartbeat were due: an idle host learns the head (and reports what it applied)
    // as soon as the worker starts.
    let mut last_sent = Instant::now()
        .checked_sub(HEARTBEAT)
        .unwrap_or_else(Instant::now);
    while !host.term().is_cancelled() {
        head_rx.borrow_and_update();
        let cursor = host.cursor();
        let read = ctx
            .log
            .read(cursor, ctx.batch_max_records, ctx.batch_max_bytes)
            .await;
        let records = match read {
            Ok(r) => {
                read_failures = 0;
                r
            }
            Err(ReadError::Trimmed { oldest }) => {
                warn!(%cursor, %oldest, "records trimmed before this host received them; continuing at the oldest retained record");
                host.jump_to(oldest);
                continue;
            }
            Err(e) => {
                let msg = match &e {
                    ReadError::Corrupt {
                        segment,
                        position,
                        detail,
                    } => {
                        error!(%cursor, segment = %segment.display(), position, %detail, "log is corrupt at this host's cursor; delivery is stuck until it is repaired");
                        format!(
                            "log corrupt in {} at byte {position}: {detail}",
                            segment.display()
                        )
                    }
                    other => {
                        warn!(%cursor, err = %other, "log read failed");
                        format!("log read failed: {other}")
                    }
                };
                host.failed(msg, false);
                if !pause(&host, retry::backoff(read_failures)).await {
                    break;
                }
                read_failures = read_failures.saturating_add(1);
                continue;
            }
        };
        if records.is_empty() {
            let idle = last_sent.elapsed();
            if host.mode == HostMode::Batch && idle >= HEARTBEAT {
                heartbeat(&host, &ctx).await;
                last_sent = Instant::now();
                continue;
            }
            tokio::select! {
                changed = head_rx.changed() => {
                    if changed.is_err() {
                        // The log is closed: nothing more will come.
                        host.term().cancelled_owned().await;
                    }
                }
                () = tokio::time::sleep(HEARTBEAT.saturating_sub(idle)) => {}
                () = host.term().cancelled_owned() => break,
            }
            continue;
        }
        let done = match host.mode {
            HostMode::Batch => deliver_batch(&host, &ctx, records).await,
            HostMode::Replay => deliver_replay(&host, &ctx, records).await,
        };
        if done.is_none() {
            break;
        }
        last_sent = Instant::now();
    }
    info!("delivery stopped");
}

/// Sleep unless the host is stopped first; false when stopped.
async fn pause(host: &Host, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = host.term().cancelled_owned() => false,
    }
}

fn last_offset(records: &[Bytes]) -> Offset {
    records
        .last()
        .and_then(|r| Record::peek_offset(r))
        .unwrap_or_default()
}

async fn deliver_batch(host: &Host, ctx: &Ctx, records: Vec<Bytes>) -> Option<()> {
    match send_until_final(host, ctx, Payload::Batch(&records)).await? {
        Final::Acked(ack) => acked(host, ctx, &records, ack).await?,
        Final::Rewind(applied) => rewind(host, ctx, applied),
        Final::Refused { status, error } if records.len() == 1 => {
            dead_letter(host, ctx, &records[0], status, error).await?;
            host.skip(last_offset(&records));
        }
        Final::Refused { status, .. } => {
            debug!(
                status,
                count = records.len(),
                "batch refused; sending its records one at a time"
            );
            for rec in &records {
                let one = std::slice::from_ref(rec);
                match send_until_final(host, ctx, Payload::Batch(one)).await? {
                    Final::Acked(ack) => acked(host, ctx, one, ack).await?,
                    Final::Rewind(applied) => {
                        rewind(host, ctx, applied);
                        break;
                    }
                    Final::Refused { status, error } => {
                        // Refused as a whole: the host did not apply it, so `prev` stays.
                        dead_letter(host, ctx, rec, status, error).await?;
                        host.skip(last_offset(one));
                    }
                }
            }
        }
    }
    Some(())
}

/// A batch was acknowledged: dead-letter what the host rejected, then move past the batch.
/// The ack's `applied` (which counts rejected records as consumed) becomes the next `prev`.
async fn acked(host: &Host, ctx: &Ctx, records: &[Bytes], ack: Option<IngestAck>) -> Option<()> {
    let last = last_offset(records);
    metrics::acknowledged(host, records);
    let Some(ack) = ack else {
        host.advance(last);
        return Some(());
    };
    for rej in ack.rejected {
        let Some(rec) = records
            .iter()
            .find(|r| Record::peek_offset(r) == Some(rej.offset))
        else {
            continue;
        };
        dead_letter(host, ctx, rec, rej.status, rej.error).await?;
    }
    host.acknowledged(last, ack.applied);
    Some(())
}

async fn deliver_replay(host: &Host, ctx: &Ctx, records: Vec<Bytes>) -> Option<()> {
    for rec in &records {
        match send_until_final(host, ctx, Payload::Replay(rec)).await? {
            Final::Acked(_) => metrics::acknowledged(host, std::slice::from_ref(rec)),
            Final::Rewind(_) => {}
            Final::Refused { status, error } => {
                dead_letter(host, ctx, rec, status, error).await?;
            }
        }
        host.advance(last_offset(std::slice::from_ref(rec)));
    }
    Some(())
}

fn rewind(host: &Host, ctx: &Ctx, applied: Offset) {
    let oldest = ctx.log.oldest();
    warn!(%applied, believed = %host.applied(), "host applied less than believed; rewinding");
    host.rewind(applied, oldest);
}

async fn dead_letter(
    host: &Host,
    ctx: &Ctx,
    record: &Bytes,
    status: u16,
    error: String,
) -> Option<()> {
    let offset = Record::peek_offset(record).unwrap_or_default();
    warn!(%offset, status, %error, "host refused the record; dead-lettered");
    let mut failures = 0;
    loop {
        match ctx
            .dead_letters
            .add(host, offset, record.clone(), status, error.clone())
            .await
        {
            Ok(()) => return Some(()),
            Err(e) => {
                // Without a stored copy the record cannot be skipped: retry the store.
                error!(%offset, err = %e, "cannot store a dead letter; delivery to this host waits");
                host.failed(format!("cannot store a dead letter: {e}"), false);
                if !pause(host, retry::backoff(failures)).await {
                    return None;
                }
                failures = failures.saturating_add(1);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Payload<'a> {
    Batch(&'a [Bytes]),
    Replay(&'a Bytes),
}

/// Send until the answer is final (anything but a retry); `None` when stopped meanwhile.
async fn send_until_final(host: &Host, ctx: &Ctx, payload: Payload<'_>) -> Option<Final> {
    let mut attempt: u32 = 0;
    loop {
        let started = Instant::now();
        let reply = tokio::select! {
            r = send(host, ctx, payload) => r,
            () = host.term().cancelled_owned() => return None,
        };
        metrics::delivery_latency(&host.id, started.elapsed());
        let (action, ack) = judge(host.mode, &reply);
        let now = crate::now_ms();
        match action {
            Action::Advance => {
                host.answered(now);
                return Some(Final::Acked(ack));
            }
            Action::Rewind => {
                host.answered(now);
                let applied = ack.map(|a| a.applied).unwrap_or_default();
                return Some(Final::Rewind(applied));
            }
            Action::DeadLetter => {
                let (status, error) = describe(&reply);
                host.refused(now, format!("{status}: {error}"));
                return Some(Final::Refused { status, error });
            }
            Action::Retry => {
                let (status, error) = describe(&reply);
                let delay = retry::backoff(attempt);
                debug!(status, %error, attempt, ?delay, "delivery failed; retrying");
                host.failed(
                    if status == 0 {
                        error
                    } else {
                        format!("{status}: {error}")
                    },
                    true,
                );
                metrics::delivery_retry(&host.id);
                if !pause(host, delay).await {
                    return None;
                }
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

async fn send(host: &Host, ctx: &Ctx, payload: Payload<'_>) -> Reply {
    match payload {
        Payload::Batch(records) => {
            ctx.sender
                .send_batch(&host.url, host.applied(), ctx.log.head(), records)
                .await
        }
        Payload::Replay(record) => ctx.sender.send_replay(&host.url, record).await,
    }
}

fn judge(mode: HostMode, reply: &Reply) -> (Action, Option<IngestAck>) {
    let ack = match (mode, &reply.answer) {
        (HostMode::Batch, Answer::Status(200 | 409)) => {
            serde_json::from_slice::<IngestAck>(&reply.body).ok()
        }
        _ => None,
    };
    (retry::action(mode, &reply.answer, ack.is_some()), ack)
}

/// Status (0 without one) and a short text for a failed or refused attempt.
fn describe(reply: &Reply) -> (u16, String) {
    match &reply.answer {
        Answer::Status(s) => {
            let body = &reply.body[..reply.body.len().min(MAX_ERROR_BYTES)];
            (*s, String::from_utf8_lossy(body).into_owned())
        }
        Answer::Timeout => (0, "timed out".into()),
        Answer::Transport(e) => (0, e.clone()),
        Answer::Unsendable(e) => (0, format!("cannot be sent: {e}")),
    }
}

/// An empty batch to an idle host: tells it the head and checks what it has applied.
async fn heartbeat(host: &Host, ctx: &Ctx) {
    let reply = send(host, ctx, Payload::Batch(&[])).await;
    let (action, ack) = judge(host.mode, &reply);
    let now = crate::now_ms();
    match action {
        Action::Advance => host.answered(now),
        Action::Rewind => {
            host.answered(now);
            rewind(host, ctx, ack.map(|a| a.applied).unwrap_or_default());
        }
        Action::Retry | Action::DeadLetter => {
            let (status, error) = describe(&reply);
            debug!(status, %error, "heartbeat failed");
            host.failed(format!("heartbeat: {status} {error}"), false);
        }
    }
}

/// Send one dead-lettered record to its host again, out of band.
///
/// # Errors
/// The host's answer, when it was not a 2xx (or a batch ack that rejects the record again).
pub(crate) async fn redrive(host: &Host, sender: &Sender, record: &Bytes) -> Result<(), String> {
    let reply = match host.mode {
        HostMode::Batch => {
            // prev just below the record. A host past it skips it (it applies each offset
            // once), so for batch hosts a redrive only helps one that is still behind it.
            let offset = Record::peek_offset(record).unwrap_or_default();
            sender
                .send_batch(
                    &host.url,
                    offset.prev(),
                    offset,
                    std::slice::from_ref(record),
                )
                .await
        }
        HostMode::Replay => sender.send_replay(&host.url, record).await,
    };
    let (action, ack) = judge(host.mode, &reply);
    match (action, ack) {
        (Action::Advance, Some(ack)) if !ack.rejected.is_empty() => {
            let r = &ack.rejected[0];
            Err(format!("host rejected it again: {} {}", r.status, r.error))
        }
        (Action::Advance, _) => Ok(()),
        _ => {
            let (status, error) = describe(&reply);
            Err(format!("host answered {status}: {error}"))
        }
    }
}
