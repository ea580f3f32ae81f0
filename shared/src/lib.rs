//! What reflektor and its hosts speak.
//!
//! - [`ids`]: the [`Offset`] a record gets in the log and the [`Epoch`] of the log itself.
//! - [`record`]: one relayed request, and its binary encoding (the same bytes in the log, in a
//!   batch, and in a dead-letter entry, so a body is never re-encoded on its way to a host).
//! - [`batch`]: the versioned batch format reflektor posts to a host's ingest endpoint, and the
//!   acknowledgement the host answers with.
//! - [`sign`]: HMAC-SHA256 signatures over method, target, epoch, offset, time and body.
//! - [`serve`]: the HTTP listener both services run (timeouts, connection cap, `TCP_NODELAY`).
//! - [`config`], [`telemetry`], [`shutdown`]: helpers both binaries use in the same way.
//!
//! The full protocol is written down in `docs/PROTOCOL.md` at the root of the repository.

pub mod batch;
pub mod config;
pub mod ids;
pub mod record;
pub mod serve;
pub mod shutdown;
pub mod sign;
pub mod telemetry;

pub use ids::{Epoch, Offset};
pub use record::{Method, Record, WireError};
