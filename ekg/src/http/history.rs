//! The read API: `GET /rooms/{room}/messages` (history paging) and `GET /rooms/{room}`.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, BytesMut};

use super::ApiError;
use crate::rooms::{Cursor, DEFAULT_PAGE, MAX_PAGE, RoomId, RoomInfo, Seq};
use crate::state::AppState;

/// The `{room}` path segment as a [`RoomId`], or 400.
pub(crate) fn room_from_path(
    path: Result<Path<String>, PathRejection>,
) -> Result<RoomId, ApiError> {
    let Path(room) = path.map_err(|_| {
        ApiError::bad_request(
            "bad_room",
            "room names are 1-128 characters of A-Z a-z 0-9 _ . : -",
        )
    })?;
    Ok(RoomId::parse(&room)?)
}

/// Parse `before`, `after` and `limit` from a query string.
///
/// # Errors
/// 400 `bad_cursor` / `bad_limit` for anything that is not a plain decimal in range, an
/// unknown parameter, or both cursors at once.
pub fn parse_page_query(query: Option<&str>) -> Result<(Cursor, usize), ApiError> {
    let mut before = None;
    let mut after = None;
    let mut limit = DEFAULT_PAGE;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "before" => before = Some(Seq(parse_cursor(value)?)),
            "after" => after = Some(Seq(parse_cursor(value)?)),
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "bad_limit",
                            format!("limit must be a whole number from 1 to {MAX_PAGE}"),
                        )
                    })?;
            }
            _ => {}
        }
    }
    let cursor = match (before, after) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "bad_cursor",
                "give before or after, not both",
            ));
        }
        (Some(b), None) => Cursor::Before(b),
        (None, Some(a)) => Cursor::After(a),
        (None, None) => Cursor::Newest,
    };
    Ok((cursor, limit))
}

fn parse_cursor(value: &str) -> Result<u64, ApiError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(
            "bad_cursor",
            "a cursor is a seq: a whole number",
        ));
    }
    value
        .parse()
        .map_err(|_| ApiError::bad_request("bad_cursor", "the cursor is out of range"))
}

/// `GET /rooms/{room}/messages?before=|after=&limit=`.
pub(crate) async fn messages(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let room = room_from_path(path)?;
    let (cursor, limit) = parse_page_query(query.as_deref())?;
    let page = state
        .rooms
        .get(&room)
        .map(|r| r.page(cursor, limit))
        .unwrap_or_default();
    // The messages are stored as their JSON; the page is written around them, not re-encoded.
    let size = 96 + room.as_str().len() + page.messages.iter().map(|m| m.len() + 1).sum::<usize>();
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(br#"{"room":""#);
    out.put_slice(room.as_str().as_bytes());
    out.put_slice(br#"","messages":["#);
    for (i, m) in page.messages.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(m);
    }
    out.put_slice(br#"],"has_more":"#);
    out.put_slice(if page.has_more { b"true" } else { b"false" });
    out.put_slice(br#","next_before":"#);
    put_opt(&mut out, page.next_before);
    out.put_slice(br#","next_after":"#);
    put_opt(&mut out, page.next_after);
    out.put_u8(b'}');
    Ok(([(header::CONTENT_TYPE, "application/json")], out.freeze()).into_response())
}

fn put_opt(out: &mut BytesMut, seq: Option<Seq>) {
    match seq {
        Some(s) => out.put_slice(s.to_string().as_bytes()),
        None => out.put_slice(b"null"),
    }
}

/// `GET /rooms/{room}`: head, oldest, message count and subscribers on this host.
pub(crate) async fn room_info(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<RoomInfo>, ApiError> {
    let room = room_from_path(path)?;
    let info = state.rooms.get(&room).map_or_else(
        || RoomInfo {
            room: room.to_string(),
            head: Seq::ZERO,
            oldest: Seq(1),
            messages: 0,
            subscribers: 0,
        },
        |r| r.info(),
    );
    Ok(Json(info))
}
