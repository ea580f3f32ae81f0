//! HTTP: the read API, the error type every handler answers with, health, metrics and the
//! static browser files.
//!
//! - [`ApiError`] (`errors.rs`): status + `{"error": code, "message": text}`; 503 carries
//!   `Retry-After: 1`. The one place where the domain errors of `rooms` and `ingest` become
//!   status codes.
//! - `history.rs`: `GET /rooms/{room}/messages` pages the room's message view (oldest first
//!   within a page, `has_more`, `next_before`, `next_after`; default 50, max 200) and
//!   `GET /rooms/{room}`. Pages are written around the stored message JSON, not re-encoded.
//! - `ops.rs`: `/healthz`, `/readyz` (503 until caught up), `/metrics`, `/ekg.js`, `/`.
//! - `cors.rs`: the `--cors-origin` layer.

mod cors;
mod errors;
pub mod history;
pub(crate) mod ops;

#[cfg(test)]
mod tests;

pub(crate) use cors::cors_layer;
pub use errors::ApiError;
