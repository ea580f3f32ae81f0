//! The scenarios, one module each, and the arguments they share.
//!
//! Every scenario: parses its `Args`, optionally starts the servers (`--spawn`; `--target`
//! picks ours, Nchan or a limit server, see [`crate::spawn`]), drives load bounded by `--duration` and `--max-requests`, and ends with a
//! [`crate::report::Report`] (summary on stdout, JSON + SVG under `--out`). Spawned servers are
//! killed before the scenario returns, on success or error.
//!
//! - `intake`: POSTs to reflektor, open loop (fixed rate, coordinated-omission corrected) or
//!   closed loop (saturation).
//! - `fanout`: WebSocket/SSE subscribers, a fixed-rate publisher, end-to-end latency and
//!   lost/duplicate/out-of-order counts.
//! - `wrk`: intake saturation measured by wrk.
//! - `connections`: idle WebSocket or SSE connections from many source addresses; set-up time
//!   and server RSS each.
//! - `rooms`: memory per room holding one message; opening rooms vs writing to one.
//! - `history`: history page requests at a fixed rate.
//! - `rebuild`: catch-up speed of an empty host added to a filled log.

pub(crate) mod common;
pub(crate) mod connections;
pub(crate) mod fanout;
pub(crate) mod history;
pub(crate) mod intake;
pub(crate) mod rebuild;
pub(crate) mod rooms;
pub(crate) mod subscriber;
pub(crate) mod wrk;
