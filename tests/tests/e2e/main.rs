#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! End-to-end tests: the real reflektor and ekg binaries together, over loopback.
//!
//! Build the binaries first (`cargo build --bins`); the harness finds them next to this test.
//!
//! - `cluster`: cluster mode on a three-node NATS cluster: instance and node faults, one key one
//!   record across instances, a replaced stream, bad configuration.
//! - `fanout`: one post reaches WebSocket and SSE clients on two hosts with the same seq.
//! - `reflektor_faults`: reflektor SIGKILLed repeatedly under a stream of posts.
//! - `host_faults`: an ekg host killed and rebuilt empty, stopped and resumed, and drained by SIGTERM.
//! - `lagging`: a client that stops reading is cut off; the room and the server's memory are fine.
//! - `bad_input`: a sweep of malformed requests, each with its documented answer.
//! - `ekg_trust`: ekg's trust boundary attacked on the real binary: unsigned start, forged, v1
//!   and stale signatures, redirected and old-epoch deliveries, offset gaps, non-UTF-8 bodies,
//!   half-sent headers, slow bodies, the ingest concurrency bound.
//! - `latency`: delivery latency histograms at ekg (per transport) and reflektor (per host).
//! - `logs`: JSON log lines on both binaries; SIGTERM right after the listening line exits 0.
//! - `prometheus`: the shipped dashboard and alert rules, through promtool and a real Prometheus.

mod bad_input;
mod cluster;
mod ekg_trust;
mod fanout;
mod host_faults;
mod lagging;
mod latency;
mod logs;
mod prometheus;
mod reflektor_faults;
mod util;
