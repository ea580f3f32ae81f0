//! What can go wrong, one variant per failure a caller acts on differently.

use std::io;
use std::path::PathBuf;

use shared::Offset;

/// Why an append was not accepted. None of these consumed an offset, except `Failed` after a
/// failed `fdatasync` (the record may or may not be in the log; the client retries).
#[derive(Clone, Debug, thiserror::Error)]
pub enum AppendError {
    /// The bounded append queue is full: answer 503 with `Retry-After`.
    #[error("the log's append queue is full")]
    Busy,
    /// The disk quota is reached: answer 503 with `Retry-After`.
    #[error("the log's disk quota is full")]
    QuotaFull,
    /// The log is shutting down: answer 503.
    #[error("the log is closed")]
    Closed,
    /// The record does not fit the wire format: answer 413.
    #[error("the record is too large for the log")]
    TooLarge,
    /// Nothing was written and the log expects to recover by itself: a write failed and was
    /// taken back, or the next segment could not be created (the disk is full). Answer 503 with
    /// `Retry-After`; appends succeed again once the disk has room.
    #[error("the log cannot take appends right now: {0}")]
    Unavailable(String),
    /// The log stopped accepting appends for good: an `fdatasync` failed (the kernel may have
    /// dropped data it had been given) or a failed write could not be taken back. Answer 503;
    /// an operator has to look and restart (see [`Log::failure`](super::Log::failure)).
    #[error("the log stopped accepting appends: {0}")]
    Failed(String),
}

/// Why a read returned no records.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// `from` is below the oldest retained offset; restart at `oldest`.
    #[error("offsets before {oldest} are no longer retained")]
    Trimmed { oldest: Offset },
    /// A stored frame failed its checks. Never skipped silently.
    #[error("corrupt log segment {} at byte {position}: {detail}", segment.display())]
    Corrupt {
        segment: PathBuf,
        position: u64,
        detail: String,
    },
    #[error("log read failed: {0}")]
    Io(String),
}

/// Why the log could not be opened, trimmed or closed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log I/O failed: {0}")]
    Io(#[from] io::Error),
    /// Damaged data followed by valid records: an operator has to look.
    #[error("corrupt log segment {} at byte {position}: {detail}", segment.display())]
    Corrupt {
        segment: PathBuf,
        position: u64,
        detail: String,
    },
    /// The `meta` file is missing (while segments exist), damaged, or of another version.
    #[error("bad log meta file: {0}")]
    BadMeta(String),
    /// JetStream did not answer (cluster mode).
    #[error("JetStream: {0}")]
    JetStream(String),
}
