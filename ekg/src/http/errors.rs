//! [`ApiError`]: every failure a handler can answer with, as a status and a JSON body
//! `{"error": "<machine code>", "message": "<what was wrong>"}`.
//!
//! The domain errors of `rooms` ([`RoomError`]) and `ingest` ([`IngestError`],
//! [`RecordError`]) become HTTP here and nowhere else: the `From` impls below are the one
//! table of status codes and error codes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::ingest::{IngestError, Position, RecordError};
use crate::rooms::RoomError;

/// A failure answered to the client. The `code` is stable and machine-readable; the `message`
/// says what was wrong with the request and never carries internal details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Where this host stands in the log, for a sender that is out of step (`409`): the body
    /// then also carries `"applied"` and `"epoch"`, the shape of a batch acknowledgement.
    pub position: Option<Position>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            position: None,
        }
    }

    /// 400: a bad room name, cursor, limit, path or body.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 503 with `Retry-After: 1`: a limit is reached or the host is not ready; try again.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// The JSON body, as sent.
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({ "error": self.code, "message": self.message });
        if let (Some(p), Some(map)) = (self.position, body.as_object_mut()) {
            map.insert("applied".into(), serde_json::json!(p.applied));
            map.insert("epoch".into(), serde_json::json!(p.epoch));
        }
        body
    }
}

impl From<RoomError> for ApiError {
    fn from(e: RoomError) -> ApiError {
        let (status, code) = match &e {
            RoomError::BadRoomName => (StatusCode::BAD_REQUEST, "bad_room"),
            RoomError::BadMessageId => (StatusCode::BAD_REQUEST, "bad_message_id"),
            // Never retried, never a whole-delivery 409 (that status means "out of step").
            RoomError::StaleSeq { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "stale_seq"),
            RoomError::DuplicateId { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "duplicate_id"),
            RoomError::UnknownMessage { .. } => (StatusCode::NOT_FOUND, "unknown_message"),
            RoomError::TooManyRooms { .. } => (StatusCode::SERVICE_UNAVAILABLE, "too_many_rooms"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> ApiError {
        let (status, code) = match &e {
            RecordError::Room(room) => return ApiError::from(room.clone()),
            RecordError::BadRecord(_) => (StatusCode::BAD_REQUEST, "bad_record"),
            RecordError::NoRoute => (StatusCode::NOT_FOUND, "no_route"),
            RecordError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            RecordError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            RecordError::NotUtf8 | RecordError::BadJson(_) => (StatusCode::BAD_REQUEST, "bad_json"),
            RecordError::BadIdType => (StatusCode::BAD_REQUEST, "bad_message_id"),
            RecordError::BadEventType => (StatusCode::BAD_REQUEST, "bad_event"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> ApiError {
        let (status, code) = match &e {
            IngestError::Record(r) => return ApiError::from(r.clone()),
            IngestError::OutOfOrder(p) => {
                return ApiError {
                    position: Some(*p),
                    ..ApiError::new(StatusCode::CONFLICT, "out_of_order", e.to_string())
                };
            }
            IngestError::OldEpoch { current, .. } => {
                return ApiError {
                    position: Some(*current),
                    ..ApiError::new(StatusCode::CONFLICT, "old_epoch", e.to_string())
                };
            }
            IngestError::Standalone => (StatusCode::FORBIDDEN, "standalone"),
            IngestError::NotRelayed | IngestError::BadToken(_) => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            IngestError::NoSecret => (StatusCode::UNAUTHORIZED, "no_secret"),
            IngestError::BadDeliveryHeaders(_) => {
                (StatusCode::UNAUTHORIZED, "bad_delivery_headers")
            }
            IngestError::SignatureRequired => (StatusCode::UNAUTHORIZED, "signature_required"),
            IngestError::BadSignature(_) => (StatusCode::UNAUTHORIZED, "bad_signature"),
            IngestError::StaleDelivery { .. } => (StatusCode::UNAUTHORIZED, "stale_delivery"),
            IngestError::UnsupportedMediaType { .. } => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            IngestError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            IngestError::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            IngestError::BodyAborted(_) => (StatusCode::BAD_REQUEST, "bad_body"),
            IngestError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            IngestError::BadBatch(_) => (StatusCode::BAD_REQUEST, "bad_batch"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, code = self.code, message = %self.message, "request refused");
        } else {
            tracing::debug!(status = %self.status, code = self.code, message = %self.message, "request refused");
        }
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

#[cfg(test)]
mod tests {
    use shared::{Epoch, Offset};

    use super::*;

    #[test]
    fn an_out_of_order_delivery_is_a_409_carrying_the_host_position() {
        let p = Position {
            applied: Offset(7),
            epoch: Epoch(255),
        };
        let e = ApiError::from(IngestError::OutOfOrder(p));
        assert_eq!(e.status, StatusCode::CONFLICT);
        let body = e.body();
        assert_eq!(body["error"], "out_of_order");
        assert_eq!(body["applied"], 7);
        assert_eq!(body["epoch"], "00000000000000ff");
        // The body reads as a batch acknowledgement, so one parser serves both paths.
        let ack: shared::batch::IngestAck = serde_json::from_value(body).unwrap();
        assert_eq!((ack.applied, ack.epoch), (Offset(7), Epoch(255)));
        let old = ApiError::from(IngestError::OldEpoch {
            old: Epoch(1),
            current: p,
        });
        assert_eq!((old.status, old.code), (StatusCode::CONFLICT, "old_epoch"));
        assert_eq!(old.body()["applied"], 7);
    }

    #[test]
    fn refusals_of_a_whole_delivery_never_look_like_a_record_refusal() {
        // reflektor dead-letters a replayed record answered 400, 413 or 422; a delivery
        // problem must never be answered with one of those.
        for e in [
            IngestError::NotRelayed,
            IngestError::NoSecret,
            IngestError::BadDeliveryHeaders("x"),
            IngestError::SignatureRequired,
            IngestError::BadSignature("x".into()),
            IngestError::StaleDelivery {
                skew_ms: 1,
                window_ms: 0,
            },
            IngestError::Overloaded(1),
            IngestError::BodyTimeout(std::time::Duration::from_secs(1)),
            IngestError::Record(RecordError::Room(RoomError::TooManyRooms { max: 1 })),
        ] {
            let status = ApiError::from(e.clone()).status.as_u16();
            assert!(![400, 413, 422].contains(&status), "{e:?} -> {status}");
        }
    }

    #[test]
    fn a_503_tells_when_to_retry() {
        let resp = ApiError::from(IngestError::Overloaded(4)).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }
}
