//! Reading request bodies with a limit, answering 413 past it.

use axum::body::Body;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

use super::ApiError;

/// The whole body, or `413 body_too_large` past `limit` bytes (read no further than that).
///
/// # Errors
/// 413 over the limit; 400 if the client broke off the body.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(format!(
            "the body is over the limit of {limit} bytes"
        ))),
        Err(e) => Err(ApiError::bad_request(
            "bad_body",
            format!("the body could not be read: {e}"),
        )),
    }
}
