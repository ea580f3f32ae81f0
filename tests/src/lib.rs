//! The test harness of the workspace: the one launcher for the real binaries, the one
//! deadline-bounded wait, and clients that talk to the services over loopback like an API
//! server and a browser would. The end-to-end tests (`tests/tests/e2e`), the local stack
//! launcher (`src/bin/stack.rs`), reflektor's and ekg's integration tests (as a
//! dev-dependency) and `loadtest` (as a dependency) all start processes through it. It depends
//! on no service crate (only `shared`), so any of them can use it without a cycle.
//!
//! - [`process`]: [`Launch`] a binary (clean environment, port 0, its `... listening on
//!   http://ADDR` line read with a deadline, stderr in a log file) into a [`Service`]
//!   (SIGTERM/SIGKILL/SIGSTOP helpers, restart on the same port, killed when dropped).
//! - [`wait`]: [`wait_for`] a condition against a deadline (never a bare sleep).
//! - [`stack`]: [`Reflektor`], [`Ekg`] and a [`Stack`] of both, wired as an operator would.
//! - [`clients`]: WebSocket and SSE subscribers that record every frame they receive.
//! - [`nats`]: a real NATS server or JetStream cluster on loopback, for cluster mode.
//!
//! Binaries are looked up next to the running executable (`target/<profile>/`), or taken from
//! `REFLEKTOR_BIN` / `EKG_BIN`. Build them first: `cargo build --bins`.

pub mod clients;
pub mod nats;
pub mod process;
pub mod stack;
pub mod wait;

pub use clients::{Frame, SseClient, WsClient};
pub use process::{Launch, Service, Signal};
pub use stack::{Ekg, Reflektor, Stack};
pub use wait::wait_for;
