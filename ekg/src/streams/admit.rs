//! Admission of a stream: room and cursor validation, drain check, connection permit.

use axum::http::StatusCode;
use serde::Deserialize;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::drain::DrainTurn;
use super::pump::Pump;
use super::{ConnectionPermit, Transport};
use crate::http::ApiError;
use crate::rooms::{RoomId, Seq};
use crate::state::AppState;

/// The query string of both stream endpoints.
#[derive(Debug, Default, Deserialize)]
pub(super) struct StreamQuery {
    /// Resume cursor: the last seq the client has seen.
    after: Option<String>,
}

/// Everything a connection task owns for its lifetime.
pub(super) struct Admission {
    /// Subscribed before the upgrade, so the backlog is read at request time and live frames
    /// published during the upgrade wait in the connection's inbox.
    pub(super) pump: Pump,
    /// Held until the connection ends: frees a slot of `--max-connections` and keeps the
    /// `ekg_connections` gauge.
    pub(super) permit: ConnectionPermit,
    /// Held until the connection ends: `run` waits for it during shutdown.
    pub(super) task: TaskTrackerToken,
    pub(super) turn: DrainTurn,
}

/// Parse a cursor: a decimal seq. `source` names where it came from, for the error message.
///
/// # Errors
/// `400 bad_cursor` unless `raw` is a decimal u64.
pub(super) fn parse_cursor(raw: &str, source: &str) -> Result<Seq, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(
            "bad_cursor",
            format!("{source} must be a seq (a decimal number), got {raw:?}"),
        ));
    }
    raw.parse::<u64>().map(Seq).map_err(|_| {
        ApiError::bad_request("bad_cursor", format!("{source} is out of range: {raw:?}"))
    })
}

/// Validate a stream request: the room name and the cursor. `last_event_id` is SSE's header;
/// the query's `after` wins when both are given.
///
/// # Errors
/// `400 bad_room`, `400 bad_cursor`, or `400 bad_request` for an unparsable path or query.
pub(super) fn parse_request(
    room: Result<String, String>,
    query: Result<StreamQuery, String>,
    last_event_id: Option<&str>,
) -> Result<(RoomId, Option<Seq>), ApiError> {
    let room = room.map_err(|m| ApiError::bad_request("bad_room", m))?;
    let room = RoomId::parse(&room)?;
    let query = query.map_err(|m| ApiError::bad_request("bad_request", m))?;
    let after = match (query.after.as_deref(), last_event_id) {
        (Some(raw), _) => Some(parse_cursor(raw, "after")?),
        (None, Some(raw)) if !raw.trim().is_empty() => Some(parse_cursor(raw, "Last-Event-ID")?),
        _ => None,
    };
    Ok((room, after))
}

/// Admit a validated stream: refuse while draining, take a connection permit and a task
/// token, subscribe to the room.
///
/// # Errors
/// `503 shutting_down` once the drain started, `503 too_many_connections` at the limit. A room
/// without events is never refused: readers hold no slot of `--max-rooms`.
pub(super) fn acquire(
    state: &AppState,
    transport: Transport,
    room: RoomId,
    after: Option<Seq>,
) -> Result<Admission, ApiError> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::unavailable(
            "shutting_down",
            "this host is draining; connect to another host",
        ));
    }
    let permit = state.connections.acquire_or_503(transport)?;
    let pump = Pump::subscribe(&state.rooms, &room, after, state.config.send_queue);
    Ok(Admission {
        pump,
        permit,
        task: state.tasks.token(),
        turn: DrainTurn::draw(state.config.drain_window),
    })
}

/// The answer to a request on the WebSocket endpoint that is not a WebSocket upgrade.
pub(super) fn not_websocket(status: StatusCode, message: String) -> ApiError {
    ApiError::new(status, "websocket_required", message)
}
