//! The embedded log: append-only segment files on reflektor's own disk (the default backend).
//!
//! Intake appends records; the log gives each one the next [`Offset`](shared::Offset) and answers
//! once the record is durable per [`FsyncPolicy`]. Delivery workers read records back in offset
//! order, from memory when they are recent and from disk otherwise. Retention deletes whole
//! segments once every host has passed them and they fall outside the retention window.
//!
//! # Constraints
//!
//! - One process owns a log directory (`Log::open` takes a lock on `<dir>/lock` and refuses a
//!   directory another process holds); a single writer thread owns the active segment. Nothing
//!   else writes to segment files.
//! - No record is acknowledged or visible unless every `fdatasync` that may cover it
//!   succeeded (see "Disk faults").
//! - Offsets are consecutive: the first record is `1`, every accepted record gets the previous
//!   offset plus one, and an offset is never reused (a rejected append consumes no offset).
//! - A record is visible to readers ([`Log::head`], [`Log::read`], [`Log::watch_head`]) only once
//!   it is durable under the policy: after `fdatasync` under `always` and `interval`, after
//!   `write(2)` under `never`. Readers therefore never see a record that a crash could take back.
//! - Nothing on the async runtime blocks on the disk: appends go through a bounded queue
//!   (`try_send`; a full queue is [`AppendError::Busy`]) to the writer thread, disk reads run in
//!   `spawn_blocking`, and no lock is held across an `.await`.
//!
//! # On-disk layout (all integers little-endian)
//!
//! ```text
//! <dir>/meta                          written once, atomically (tmp + fsync + rename + fsync dir)
//!     magic    [u8; 4]  "RFKM"
//!     version  u32      1
//!     epoch    u64      random, non-zero; fixed for the life of the log
//!     crc32    u32      over the 16 bytes above
//!
//! <dir>/lock                          empty; locked (flock) while a process has the log open
//!
//! <dir>/00000000000000000001.seg      segments, named by their base offset (20 digits)
//!     header (24 bytes)
//!         magic    [u8; 4]  "RFKS"
//!         version  u32      1
//!         epoch    u64      must equal the meta epoch
//!         base     u64      offset of the first record; must equal the file name
//!     frames, back to back, offsets consecutive from `base`
//!         len      u32      length of the record bytes
//!         crc32    u32      crc32 (IEEE, crc32fast) of the record bytes
//!         record   [u8; len] exactly `shared::Record::encode` output; its first 8 bytes are
//!                           the record's offset
//! ```
//!
//! Because offsets are consecutive and a segment is named by its first offset, the segment that
//! holds offset `o` is the one with the greatest base `<= o`, and a sealed segment's last offset
//! is the next segment's base minus one: no index file is needed, and opening the log reads no
//! sealed segment to find the head (only, for idempotency keys, those of the dedupe window;
//! see "Recovery"). Within a segment a reader scans frames from the start (or from a
//! position hint the writer and earlier reads leave every ~1 MiB), checking every frame's length
//! and offset, and the CRC of every frame it returns.
//!
//! # Writing and durability
//!
//! The writer thread takes one queued append, drains whatever else is queued (up to
//! 4 MiB of records), checks the disk quota, assigns consecutive offsets, encodes all
//! frames into one buffer and issues one `write_all`. Then, per policy:
//!
//! - `always`: the batch's appends wait in the sync queue. A syncer thread claims everything
//!   written so far, `fdatasync`s the active segment, publishes the new head and answers every
//!   append the sync covered (group commit). Several syncers run, so a sync starts as soon as a
//!   batch is written even while an earlier one is in flight; the writer meanwhile writes the
//!   next batch. Neither the disk waits on the writer nor the writer on the disk.
//! - `interval`: appends are answered after `write(2)`; one syncer `fdatasync`s at most every
//!   `fsync_interval` (at once when it has been idle longer than that) and then publishes the
//!   head. An `fdatasync` never blocks a write.
//! - `never`: appends are answered and the head is published after `write(2)`.
//!
//! Data handed to `write(2)` lives in the kernel's page cache, so a killed process (SIGKILL,
//! panic, OOM) loses nothing acknowledged under any policy. A power loss loses nothing
//! acknowledged under `always`, at most `fsync_interval` of acknowledged records under
//! `interval`, and whatever the kernel had not flushed under `never`.
//!
//! A segment is sealed when it has grown past `segment_bytes` (checked before each batch, so a
//! segment may overshoot by at most one batch): the writer `fdatasync`s it, creates the next
//! segment (header + `fdatasync`), `fsync`s the directory, and only then points the syncers at
//! the new file, so every byte of a sealed segment is durable before anything after it is.
//!
//! # Disk faults
//!
//! Every file operation goes through a [`Filesystem`] (`io.rs`), so tests make any of them
//! answer `EIO` or `ENOSPC`. What the log does:
//!
//! - **A failed `fdatasync`** (by a syncer, or by the writer sealing a segment or closing)
//!   stops the log for good: after a failed write-back the kernel may have dropped the pages,
//!   and Linux reports the error only once per file, to whichever concurrent `fdatasync`
//!   checks first. So a successful sync counts only once every sync that overlapped it has
//!   returned successfully too (`syncer.rs` explains the tickets); after a failure no record is
//!   acknowledged or made visible, every waiting append gets [`AppendError::Failed`], and so
//!   does every later one. [`Log::failure`] says why (reflektor's `/readyz` turns 503).
//! - **A failed `write(2)`** (a full disk) is taken back (`ftruncate` to the previous length)
//!   and the batch answered with [`AppendError::Unavailable`]: no offset was used, and the next
//!   append tries again. If taking it back fails too, the log stops as above.
//! - **A segment that cannot be created** when sealing (a full disk): the sealed segment is
//!   synced, the half-made file deleted (or, if even that fails, replaced by the next attempt)
//!   and the batch answered with [`AppendError::Unavailable`]. Every later batch tries again,
//!   so appends succeed as soon as the disk has room; nothing needs a restart.
//!
//! A failed read of a segment is a [`ReadError::Io`]; the reader retries.
//!
//! # Quota
//!
//! The log tracks the total size of its segment files. An append that would take it past
//! `max_disk_bytes` fails with [`AppendError::QuotaFull`] and consumes no offset; retention is
//! what makes room again.
//!
//! # Recovery
//!
//! [`Log::open`] lists the segments (names give base offsets), takes sealed sizes from file
//! metadata, and scans only the last (active) segment, checking every frame's length, CRC and
//! that offsets are consecutive from the base. At the first invalid frame it looks further in
//! the file for any frame with a valid CRC and a plausible offset:
//!
//! - one exists: the damage is in the middle of acknowledged data. Opening fails with
//!   [`LogError::Corrupt`] naming the segment and byte position; nothing is skipped silently and
//!   an operator has to decide (restore, or cut the file by hand).
//! - none exists: it is a torn tail (a write the crash interrupted). The file is truncated there,
//!   `fdatasync`ed, and the cut is reported in [`Opened::truncated_bytes`].
//!
//! A torn tail can only hold records that were never acknowledged under `always`; under the
//! other policies only records not yet handed to `write(2)` completely. Damage confined to the
//! very last frame cannot be told apart from a torn tail and is treated as one. Damage in a
//! sealed segment is found when it is read: [`ReadError::Corrupt`].
//!
//! After a power loss, data that was written but not yet synced may be gone; on ext4 (ordered
//! data mode, the default) the file's size never runs ahead of its data, so that loss shows up
//! as a shorter file or a torn tail, not as a hole in the middle.
//!
//! A directory that holds `meta` but no segment (they were removed, or only `meta` was
//! restored) is a new log: it gets a new epoch, so no offset is handed out twice under one
//! epoch and every host starts over from the new log.
//!
//! The idempotency keys of the records accepted within `keys_window` come back in
//! [`Opened::recent_keys`] so intake can rebuild its whole dedupe window: those of the active
//! segment from the scan above, and those of the sealed segments last written within the
//! window, read newest first until `keys_max_bytes` of keys are found. This is the only time
//! opening reads sealed segments (at most a window's worth of them).
//!
//! # Reading
//!
//! The writer keeps the most recent encoded records in an in-memory cache bounded by
//! `cache_bytes` (slices of the buffers it wrote: no copy). [`Log::read`] serves from it when it
//! can and otherwise reads the segment off the runtime, into one buffer per call that the
//! returned records share. Reads stop at the visible head.
//!
//! # Retention
//!
//! [`Log::retain`] deletes sealed segments oldest first while the oldest one's records are all
//! below the slowest host's cursor AND it falls outside the retention window: its newest record
//! (the file's modification time, when the writer last wrote to it) is older than `max_age`, or
//! the log is larger than `max_bytes`. The active segment is never deleted. [`Log::oldest`]
//! moves up to the next segment's base; a reader asking for less gets [`ReadError::Trimmed`].

mod config;
mod handle;
mod io;
#[cfg(test)]
pub(crate) use io::faulty;
mod meta;
mod reader;
mod recovery;
mod retention;
mod segment;
mod state;
mod syncer;
mod writer;

#[cfg(test)]
mod tests;

// What both backends share, under the names the embedded log's files have always used.
use super::cache;
pub use super::{AppendError, LogError, LogStats, ReadError};

pub use config::{FsyncPolicy, LogConfig, ParseFsyncPolicyError};
pub use handle::{Log, Opened};
pub use io::{Filesystem, StdFilesystem};
