//! [`AppState`]: what every handler and stream shares.

use std::sync::Arc;

use shared::shutdown::{CancellationToken, TaskTracker};

use crate::config::Config;
use crate::ingest::IngestLog;
pub use crate::rooms::Rooms;
pub use crate::streams::{ConnectionLimiter, ConnectionPermit, Transport};

/// Shared by every handler; cheap to clone (every field is a handle).
#[derive(Clone, Debug)]
pub struct AppState {
    /// Every room on this host.
    pub rooms: Rooms,
    pub config: Arc<Config>,
    /// Cancelled on SIGTERM: streams send `reconnect` and close over `config.drain_window`.
    pub shutdown: CancellationToken,
    /// `--max-connections`: streams take a permit before they upgrade (503 when none is left).
    pub connections: ConnectionLimiter,
    /// Stream tasks spawned here are awaited (with a deadline) before `run` returns.
    pub tasks: TaskTracker,
    /// The log position this host has applied, its epoch and its readiness.
    pub ingest: Arc<IngestLog>,
}

impl AppState {
    pub fn new(config: Config, shutdown: CancellationToken) -> AppState {
        let rooms = Rooms::new(config.retention, config.max_rooms);
        let connections = ConnectionLimiter::new(config.max_connections);
        let ingest = Arc::new(IngestLog::new(&config));
        AppState {
            rooms,
            config: Arc::new(config),
            shutdown,
            connections,
            tasks: TaskTracker::new(),
            ingest,
        }
    }
}
