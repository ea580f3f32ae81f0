//! Unit tests of the streaming transports.
