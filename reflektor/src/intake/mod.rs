//! Intake: turn an HTTP request into a durable record, then answer.
//!
//! # Responsibility
//! Every request outside the reserved `/_reflektor/` prefix (and `GET /metrics`, `/healthz`,
//! `/readyz`) is intake. `POST`, `PUT`, `PATCH` and `DELETE` are appended to the log; the answer
//! is `202 {"id":"<offset>"}` only once [`crate::log::Log::append`] has resolved, i.e. the record
//! is durable per `--fsync`. Statuses and bodies follow `docs/PROTOCOL.md` section 1:
//! 405 (+`Allow`), 413, 401, 503 (+`Retry-After: 1`) for a full quota or append stage and while
//! shutting down. Every error body is `{"error": "<code>", "message": "..."}` ([`AppError`]).
//!
//! # Invariants
//! - Nothing half-written: the body is read completely (and the limit enforced while reading,
//!   never by truncation) before anything is appended.
//! - One `Idempotency-Key` within the dedupe window maps to one offset ([`dedupe`]). Concurrent
//!   repeats wait for the first attempt; a failed first attempt lets the next one try.
//! - The token is compared in constant time.
//!
//! # Record
//! Method, target (path and query as received), body bytes untouched, `Content-Type`,
//! `Idempotency-Key`, the `--keep-header` headers, and the acceptance time in Unix ms.

pub mod dedupe;
mod error;
mod handler;

pub use dedupe::Dedupe;
pub use error::AppError;
pub(crate) use handler::{authorized, intake};

#[cfg(test)]
mod tests;
