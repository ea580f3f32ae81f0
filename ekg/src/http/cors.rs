//! Cross-origin reads for browsers on other origins (`--cors-origin`).

use axum::http::{HeaderName, Method, header};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::config::CorsOrigins;

/// The CORS layer for the configured origins, if any. Only reads are offered cross-origin:
/// writes come from API servers, never from browsers.
pub(crate) fn cors_layer(origins: &CorsOrigins) -> Option<CorsLayer> {
    let allow = match origins {
        CorsOrigins::None => return None,
        CorsOrigins::Any => AllowOrigin::from(Any),
        CorsOrigins::List(list) => AllowOrigin::list(list.iter().cloned()),
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::HEAD])
            .allow_headers([
                HeaderName::from_static("last-event-id"),
                header::CONTENT_TYPE,
            ])
            .max_age(std::time::Duration::from_secs(3600)),
    )
}
