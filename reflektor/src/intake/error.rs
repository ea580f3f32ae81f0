//! The one error type every HTTP handler answers with.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Methods intake relays, for the `Allow` header of a 405.
pub(crate) const ALLOWED_METHODS: &str = "POST, PUT, PATCH, DELETE";

/// What went wrong, mapped to a status and a JSON body `{"error", "message"}`.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Intake got a method it does not relay.
    #[error("method {0} is not accepted; use POST, PUT, PATCH or DELETE")]
    MethodNotAllowed(String),
    /// The body is larger than `--max-body`.
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// An operations endpoint got a method it does not serve.
    #[error("this endpoint does not take {method}; it takes {allow}")]
    OpsMethodNotAllowed { method: String, allow: &'static str },
    /// `--token` is set and the request did not carry it.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// The log's quota or its append stage is full; the client should retry soon.
    #[error("{0}")]
    Overloaded(String),
    /// The process is stopping.
    #[error("reflektor is shutting down")]
    ShuttingDown,
    /// The log stopped accepting appends (a failed fdatasync): not ready until restarted.
    #[error("the log stopped accepting appends: {0}")]
    LogFailed(String),
    /// The request is malformed; `code` names the problem.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Something the caller cannot fix; the detail is logged, not sent.
    #[error("internal error")]
    Internal(String),
    /// A host answered badly to an operation forwarded to it (redrive).
    #[error("{0}")]
    Upstream(String),
}

impl AppError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::MethodNotAllowed(_) | AppError::OpsMethodNotAllowed { .. } => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            AppError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::Overloaded(_) | AppError::ShuttingDown | AppError::LogFailed(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AppError::MethodNotAllowed(_) | AppError::OpsMethodNotAllowed { .. } => {
                "method_not_allowed"
            }
            AppError::BodyTooLarge { .. } => "body_too_large",
            AppError::Unauthorized => "unauthorized",
            AppError::Overloaded(_) => "overloaded",
            AppError::ShuttingDown => "shutting_down",
            AppError::LogFailed(_) => "log_failed",
            AppError::BadRequest { code, .. } => code,
            AppError::NotFound(_) => "not_found",
            AppError::Conflict(_) => "conflict",
            AppError::Internal(_) => "internal",
            AppError::Upstream(_) => "upstream_failed",
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let AppError::Internal(detail) = &self {
            tracing::error!(%detail, "request failed");
        }
        let status = self.status();
        let body = Json(json!({"error": self.code(), "message": self.to_string()}));
        let mut resp = (status, body).into_response();
        let headers = resp.headers_mut();
        match self {
            AppError::MethodNotAllowed(_) => {
                headers.insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
            }
            AppError::OpsMethodNotAllowed { allow, .. } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            AppError::Overloaded(_) | AppError::ShuttingDown => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            AppError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}
