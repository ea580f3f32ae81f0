//! `/_reflektor/ui`: the operations page, three static files embedded in the binary.
//!
//! The files hold no data: the page asks for the admin token, keeps it in the tab's session
//! storage and calls the `/_reflektor/*` JSON endpoints with it as a bearer header, so the
//! token check stays where it is (on every data endpoint) and the page itself can be served to
//! anyone. A strict Content-Security-Policy allows only these files (no inline script, no
//! other origin) and no framing, so nothing injected into a host's answer or a record's target
//! can run, and no other site can frame the page to click its buttons.

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("../../static/ui/index.html");
const OPS_JS: &str = include_str!("../../static/ui/ops.js");
const OPS_CSS: &str = include_str!("../../static/ui/ops.css");

/// Only this page's own files; fetches to this origin only; never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                HeaderName::from_static("referrer-policy"),
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /_reflektor/ui`.
pub(crate) async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /_reflektor/ui/ops.js`.
pub(crate) async fn script() -> Response {
    file("text/javascript; charset=utf-8", OPS_JS)
}

/// `GET /_reflektor/ui/ops.css`.
pub(crate) async fn style() -> Response {
    file("text/css; charset=utf-8", OPS_CSS)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use tokio_util::sync::CancellationToken;
    use tower::ServiceExt;

    use crate::{AppState, Config, router};

    async fn get(
        state: &AppState,
        path: &str,
        token: Option<&str>,
    ) -> (StatusCode, header::HeaderMap, String) {
        let mut req = Request::get(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = router(state.clone())
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn the_page_is_served_without_a_token_under_a_strict_policy_and_its_data_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_dir(dir.path().to_path_buf());
        config.token = Some("ops-secret".into());
        let state = AppState::open(config, CancellationToken::new())
            .await
            .unwrap();
        for (path, kind) in [
            ("/_reflektor/ui", "text/html"),
            ("/_reflektor/ui/ops.js", "text/javascript"),
            ("/_reflektor/ui/ops.css", "text/css"),
        ] {
            let (status, headers, body) = get(&state, path, None).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(
                headers[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with(kind)
            );
            let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
            assert!(!body.contains("ops-secret"), "{path} holds no secret");
        }
        let (_, _, html) = get(&state, "/_reflektor/ui", None).await;
        assert!(html.contains("/_reflektor/ui/ops.js") && !html.contains("<script>"));
        let (status, _, _) = get(&state, "/_reflektor/hosts", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _, _) = get(&state, "/_reflektor/hosts", Some("ops-secret")).await;
        assert_eq!(status, StatusCode::OK);
        state.log.close().await.unwrap();
    }
}
