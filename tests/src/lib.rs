//! Harness for end-to-end tests and the local stack launcher: runs the real `reflektor` and
//! `ekg` binaries, finds them by the one line each prints on stdout once serving, and talks to
//! them over loopback like an API server and a browser would.
//!
//! - [`process`]: start, SIGKILL, SIGSTOP/SIGCONT, SIGTERM and restart the binaries; children are
//!   killed when their handle drops.
//! - [`clients`]: WebSocket and SSE subscribers that record every frame they receive.
//! - [`wait`]: poll a condition against a deadline (never a bare sleep).
//!
//! Binaries are looked up next to the running executable (`target/<profile>/`), or taken from
//! `REFLEKTOR_BIN` / `EKG_BIN`. Build them first: `cargo build --bins`.

pub mod clients;
pub mod process;
pub mod stack;
pub mod wait;

pub use clients::{Frame, SseClient, WsClient};
pub use process::{Ekg, Reflektor, Service};
pub use stack::Stack;
pub use wait::{wait_for, wait_until};
