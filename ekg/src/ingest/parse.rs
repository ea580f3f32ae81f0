//! From a write request (method, path, body) to the room and the [`RoomOp`] it asks for.
//! Batch records, replayed requests and standalone writes all go through [`parse_write`].

use bytes::Bytes;
use serde::Deserialize;
use shared::Method;

use super::RecordError;
use crate::rooms::{MAX_NAME_LEN, MessageId, RoomId, RoomOp};

/// Parse one write. `path` has no query. `max_body` is `--max-message-bytes`. A body is
/// UTF-8 JSON or refused: the same bytes go to every transport, so they must be text.
///
/// # Errors
/// [`RecordError::NoRoute`] for a path outside the write API, `MethodNotAllowed` for a method
/// it does not take, `TooLarge` for a body over `max_body`, `NotUtf8`, `BadJson`, ... for a
/// bad room, id or body.
pub fn parse_write(
    method: Method,
    path: &str,
    body: &Bytes,
    max_body: usize,
) -> Result<(RoomId, RoomOp), RecordError> {
    let rest = path.strip_prefix("/rooms/").ok_or(RecordError::NoRoute)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let (room, op) = match (method, segments.as_slice()) {
        (Method::Post, [room, "messages"]) => (room, Kind::Post),
        (Method::Put, [room, "messages", id]) => (room, Kind::Put(id)),
        (Method::Delete, [room, "messages", id]) => (room, Kind::Delete(id)),
        (Method::Post, [room, "events"]) => (room, Kind::Event),
        (_, [_, "messages"] | [_, "messages", _] | [_, "events"]) => {
            return Err(RecordError::MethodNotAllowed {
                method: method.as_str(),
                path: path.to_owned(),
            });
        }
        _ => return Err(RecordError::NoRoute),
    };
    let room = RoomId::parse(room)?;
    if body.len() > max_body {
        return Err(RecordError::TooLarge {
            len: body.len(),
            max: max_body,
        });
    }
    // serde_json checks UTF-8 only in the strings it decodes, not in those it skips.
    if std::str::from_utf8(body).is_err() {
        return Err(RecordError::NotUtf8);
    }
    let op = match op {
        Kind::Post => {
            let data = json_object(body)?;
            let probe: Probe = serde_json::from_slice(&data).map_err(bad_json)?;
            let id = probe.id.map(IdValue::into_id).transpose()?;
            RoomOp::Post { id, data }
        }
        Kind::Put(id) => RoomOp::Put {
            id: MessageId::parse(id)?,
            data: {
                let data = json_object(body)?;
                serde_json::from_slice::<serde::de::IgnoredAny>(&data).map_err(bad_json)?;
                data
            },
        },
        Kind::Delete(id) => RoomOp::Delete {
            id: MessageId::parse(id)?,
        },
        Kind::Event => {
            let e: EventBody = serde_json::from_slice(body).map_err(bad_json)?;
            if e.kind.is_empty() || e.kind.len() > MAX_NAME_LEN {
                return Err(RecordError::BadEventType);
            }
            let data = serde_json::to_vec(&e.data).map_err(bad_json)?;
            RoomOp::Event {
                name: e.kind,
                data: Bytes::from(data),
                ephemeral: e.ephemeral,
            }
        }
    };
    Ok((room, op))
}

enum Kind<'a> {
    Post,
    Put(&'a str),
    Delete(&'a str),
    Event,
}

/// The fields of a posted message ekg reads; the rest is carried as is.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    id: Option<IdValue>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IdValue {
    Text(String),
    Number(serde_json::Number),
    Other(serde::de::IgnoredAny),
}

impl IdValue {
    fn into_id(self) -> Result<MessageId, RecordError> {
        match self {
            IdValue::Text(s) => Ok(MessageId::parse(&s)?),
            IdValue::Number(n) if n.is_u64() || n.is_i64() => Ok(MessageId::parse(&n.to_string())?),
            _ => Err(RecordError::BadIdType),
        }
    }
}

#[derive(Deserialize)]
struct EventBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: serde_json::Value,
    #[serde(default)]
    ephemeral: bool,
}

/// The body, trimmed, if it is a JSON object (syntax checked by the caller's parse).
fn json_object(body: &Bytes) -> Result<Bytes, RecordError> {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let end = body
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    if body.get(start) != Some(&b'{') {
        return Err(RecordError::BadJson(
            "the body must be a JSON object".into(),
        ));
    }
    Ok(body.slice(start..end))
}

fn bad_json(e: serde_json::Error) -> RecordError {
    RecordError::BadJson(format!("the body is not valid JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: Method, path: &str, body: &str) -> Result<(RoomId, RoomOp), RecordError> {
        parse_write(method, path, &Bytes::from(body.to_owned()), 1024)
    }

    #[test]
    fn a_post_keeps_its_body_and_reads_its_id() {
        let (room, op) = parse(
            Method::Post,
            "/rooms/lobby/messages",
            " {\"id\":7,\"t\":\"x\"}\n",
        )
        .unwrap();
        assert_eq!(room.as_str(), "lobby");
        assert_eq!(
            op,
            RoomOp::Post {
                id: Some(MessageId::parse("7").unwrap()),
                data: Bytes::from_static(b"{\"id\":7,\"t\":\"x\"}"),
            }
        );
        let (_, op) = parse(Method::Post, "/rooms/lobby/messages", "{}").unwrap();
        assert!(matches!(op, RoomOp::Post { id: None, .. }));
    }

    #[test]
    fn bad_writes_get_their_own_status() {
        let big = "x".repeat(2000);
        let status = |m, p, b| {
            crate::http::ApiError::from(parse(m, p, b).unwrap_err())
                .status
                .as_u16()
        };
        assert_eq!(status(Method::Post, "/rooms/a b/messages", "{}"), 400);
        assert_eq!(status(Method::Post, "/rooms/a/messages", "[1]"), 400);
        assert_eq!(status(Method::Post, "/rooms/a/messages", "{\"x\":"), 400);
        assert_eq!(
            status(Method::Post, "/rooms/a/messages", "{\"id\":[1]}"),
            400
        );
        assert_eq!(
            status(Method::Post, "/rooms/a/messages", "{\"id\":\"a/b\"}"),
            400
        );
        assert_eq!(status(Method::Post, "/rooms/a/messages", big.as_str()), 413);
        assert_eq!(status(Method::Patch, "/rooms/a/messages/1", "{}"), 405);
        assert_eq!(status(Method::Post, "/elsewhere", "{}"), 404);
        assert_eq!(status(Method::Post, "/rooms/a/events", "{\"data\":1}"), 400);
        assert_eq!(status(Method::Put, "/rooms/a/messages/1", "nope"), 400);
    }

    #[test]
    fn a_body_that_is_not_utf8_is_refused_on_every_write() {
        // Invalid UTF-8 inside a string serde_json would only skip: the id probe reads `id`.
        let bytes = Bytes::from_static(b"{\"id\":\"m\",\"t\":\"\xff\xfe\"}");
        for (method, path) in [
            (Method::Post, "/rooms/a/messages"),
            (Method::Put, "/rooms/a/messages/m"),
            (Method::Post, "/rooms/a/events"),
        ] {
            assert_eq!(
                parse_write(method, path, &bytes, 1024).unwrap_err(),
                RecordError::NotUtf8,
                "{path}"
            );
        }
    }

    #[test]
    fn an_event_is_parsed_with_defaults() {
        let (_, op) = parse(
            Method::Post,
            "/rooms/a/events",
            r#"{"type":"typing","ephemeral":true}"#,
        )
        .unwrap();
        assert_eq!(
            op,
            RoomOp::Event {
                name: "typing".into(),
                data: Bytes::from_static(b"null"),
                ephemeral: true
            }
        );
    }
}
