//! How a log is configured.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::io::{Filesystem, StdFilesystem};

/// When an append counts as durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Answer after `fdatasync`, group-committed across concurrent appends.
    Always,
    /// Answer after `write(2)`; `fdatasync` every `fsync_interval`.
    Interval,
    /// Answer after `write(2)`; never `fdatasync` except when sealing a segment or closing.
    Never,
}

impl FsyncPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Interval => "interval",
            FsyncPolicy::Never => "never",
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of `always`, `interval`, `never`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fsync policy {0:?} (expected always, interval or never)")]
pub struct ParseFsyncPolicyError(pub String);

impl FromStr for FsyncPolicy {
    type Err = ParseFsyncPolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "interval" => Ok(FsyncPolicy::Interval),
            "never" => Ok(FsyncPolicy::Never),
            other => Err(ParseFsyncPolicyError(other.to_owned())),
        }
    }
}

/// Where the log lives and how it behaves. See the module docs for what each knob trades.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Directory holding `meta` and the segment files, e.g. `<data-dir>/log`.
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// How often the syncer `fdatasync`s under [`FsyncPolicy::Interval`].
    pub fsync_interval: Duration,
    /// A segment is sealed once it has grown past this size.
    pub segment_bytes: u64,
    /// Appends fail with `QuotaFull` once the segment files would grow past this size.
    pub max_disk_bytes: u64,
    /// Appends waiting for the writer thread; beyond it appends fail with `Busy`.
    pub append_queue: usize,
    /// Recent encoded records kept in memory for readers.
    pub cache_bytes: usize,
    /// How far back [`Opened::recent_keys`](super::Opened::recent_keys) reaches: the
    /// idempotency keys of records accepted within this window are read back on open, from
    /// every segment written to within it.
    pub keys_window: Duration,
    /// Most bytes of idempotency keys read back on open (the newest are kept).
    pub keys_max_bytes: usize,
    /// Every file operation goes through this (a test injects disk faults here).
    pub fs: Arc<dyn Filesystem>,
}

impl LogConfig {
    /// Defaults: `interval` every 5 ms, 64 MiB segments, 8 GiB quota, 16384 queued appends,
    /// 64 MiB cache, keys of the last 10 minutes (at most 64 MiB of them), the real disk.
    pub fn new(dir: PathBuf) -> LogConfig {
        LogConfig {
            dir,
            fsync: FsyncPolicy::Interval,
            fsync_interval: Duration::from_millis(5),
            segment_bytes: 64 << 20,
            max_disk_bytes: 8 << 30,
            append_queue: 16384,
            cache_bytes: 64 << 20,
            keys_window: Duration::from_secs(600),
            keys_max_bytes: 64 << 20,
            fs: Arc::new(StdFilesystem),
        }
    }
}
