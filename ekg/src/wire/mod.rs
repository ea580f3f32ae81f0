//! The wire form of events: [`Seq`] (an event's position) and [`Frame`] (one event or control
//! message, encoded once for every transport and shared by every subscriber). The frames are
//! listed in `docs/PROTOCOL.md` section 4.
//!
//! Rooms build frames when ops apply and keep them as history; streams write them to sockets.
//! Neither copies nor re-encodes a frame per subscriber.

mod frame;

pub use frame::{Frame, Seq};
