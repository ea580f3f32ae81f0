//! Every metric ekg exports, by name, in one place. Rendered at `GET /metrics` through
//! `shared::telemetry::prometheus()`.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `ekg_connections` | gauge | `transport` = `ws` \| `sse` | open streaming connections |
//! | `ekg_connections_refused_total` | counter | | upgrades refused at `--max-connections` |
//! | `ekg_rooms` | gauge | | rooms held in memory |
//! | `ekg_history_events` | gauge | | events retained for resume, all rooms |
//! | `ekg_history_messages` | gauge | | messages retained for paging, all rooms |
//! | `ekg_events_applied_total` | counter | `kind` = `message` \| `update` \| `delete` \| `event` | events applied and pushed |
//! | `ekg_applied_offset` | gauge | | the highest reflektor offset (or standalone seq) applied |
//! | `ekg_ingest_batches_total` | counter | | batches (heartbeats included) accepted |
//! | `ekg_rejected_records_total` | counter | `status` | records refused on their own merits |
//! | `ekg_lagging_disconnects_total` | counter | `transport` | clients closed for not keeping up |
//! | `ekg_epoch_resets_total` | counter | | times a new log (epoch) replaced all rooms |
//! | `ekg_ready` | gauge | | 1 once caught up with the log |

use crate::rooms::Transport;

pub const CONNECTIONS: &str = "ekg_connections";
pub const CONNECTIONS_REFUSED: &str = "ekg_connections_refused_total";
pub const ROOMS: &str = "ekg_rooms";
pub const HISTORY_EVENTS: &str = "ekg_history_events";
pub const HISTORY_MESSAGES: &str = "ekg_history_messages";
pub const EVENTS_APPLIED: &str = "ekg_events_applied_total";
pub const APPLIED_OFFSET: &str = "ekg_applied_offset";
pub const INGEST_BATCHES: &str = "ekg_ingest_batches_total";
pub const REJECTED_RECORDS: &str = "ekg_rejected_records_total";
pub const LAGGING_DISCONNECTS: &str = "ekg_lagging_disconnects_total";
pub const EPOCH_RESETS: &str = "ekg_epoch_resets_total";
pub const READY: &str = "ekg_ready";

/// Count a client closed because it could not keep up with its room.
pub fn lagging_disconnect(transport: Transport) {
    metrics::counter!(LAGGING_DISCONNECTS, "transport" => transport.as_str()).increment(1);
}
