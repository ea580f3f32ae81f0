//! Delivery: replay the log, in offset order, to every host of the pool.
//!
//! # Responsibility
//! One worker task per host ([`worker`]), never blocked by another host. A worker reads from
//! its host's cursor, sends, and moves the cursor only on the host's answer, as decided by the
//! one pure function of [`retry`] (the retry table of `docs/PROTOCOL.md` section 2).
//!
//! # Host state
//! - `cursor`: the next offset to send. Records below it are delivered (or dead-lettered).
//! - `applied`: what the host is believed to have applied; a batch carries it as `prev`, so a
//!   host that lost its state answers `409` and is rewound to `applied + 1` (never earlier
//!   than the oldest retained record).
//! - health, last error, last success, retries: what `/_reflektor/hosts` shows.
//!
//! # Invariants
//! - A host receives records in strictly increasing offset order, at least once.
//! - A record is never skipped: retryable failures retry without end (exponential backoff,
//!   full jitter, 100 ms doubling to 30 s); a corrupt read marks the host unhealthy and is
//!   retried, never stepped over. Only a non-retryable `4xx` for that one record moves past it,
//!   and the record is first stored, fsynced, in the dead-letter store ([`dead_letter`]).
//! - Records trimmed by retention before a host read them are reported and skipped to the
//!   oldest retained record (the batch's `prev` tells the host about the gap).
//!
//! # Persistence
//! Cursors are saved to `<data-dir>/hosts.json` (written to a temporary file, fsynced, renamed,
//! directory fsynced) at most about once a second when they changed, and on shutdown. A restart
//! resumes every host at its saved cursor; at-least-once delivery covers the last second. The
//! file also holds the log's epoch: cursors saved for another log are discarded.
//!
//! ```json
//! {"version":1,"epoch":"00ab..","hosts":[{"id":"1a2b3c4d","url":"http://..","mode":"batch",
//!   "cursor":42,"applied":41}]}
//! ```
//!
//! Retention ([`pool`]) runs every 10 s with the lowest cursor of the pool, so a segment is only
//! deleted once every host has passed it and it is outside the retention window.

mod cluster;
pub mod dead_letter;
mod host;
mod letters;
pub mod pool;
pub mod retry;
mod sender;
mod worker;

pub use dead_letter::{DeadLetter, DeadLetterView, DeadLetters};
pub use host::{Host, HostId, HostMode, HostSnapshot, HostUrl, StartAt};
pub use letters::DeadLetterStore;
pub use pool::{Pool, PoolError};
