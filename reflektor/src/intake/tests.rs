//! Intake answers, through the real router without a socket.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::{AppState, Config, router};

async fn state(token: Option<&str>, max_body: usize) -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_dir(dir.path().to_path_buf());
    config.token = token.map(str::to_owned);
    config.max_body = max_body;
    let state = AppState::open(config, CancellationToken::new())
        .await
        .unwrap();
    (state, dir)
}

async fn call(state: &AppState, req: Request<Body>) -> (StatusCode, header::HeaderMap, Value) {
    let resp = router(state.clone()).oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, json)
}

fn post(path: &str, body: &'static str) -> Request<Body> {
    Request::post(path).body(Body::from(body)).unwrap()
}

#[tokio::test]
async fn accepted_requests_get_increasing_ids() {
    let (s, _dir) = state(None, 1024).await;
    let (st, _, a) = call(&s, post("/rooms/a/messages?x=1", "{}")).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let (_, _, b) = call(
        &s,
        Request::delete("/rooms/a/messages/1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let id = |v: &Value| v["id"].as_str().unwrap().parse::<u64>().unwrap();
    assert!(id(&b) > id(&a));
    s.log.close().await.unwrap();
}

#[tokio::test]
async fn other_methods_get_405_with_allow() {
    let (s, _dir) = state(None, 1024).await;
    let (st, h, v) = call(&s, Request::get("/rooms/a").body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(h[header::ALLOW], "POST, PUT, PATCH, DELETE");
    assert_eq!(v["error"], "method_not_allowed");
    assert!(v["message"].is_string());
    // GET /healthz is a probe, POST /healthz is intake.
    let (st, _, _) = call(&s, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = call(&s, post("/healthz", "x")).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    s.log.close().await.unwrap();
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_even_without_a_length() {
    let (s, _dir) = state(None, 8).await;
    let (st, _, v) = call(&s, post("/x", "123456789")).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(v["error"], "body_too_large");
    let chunks = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"12345")),
        Ok(bytes::Bytes::from_static(b"6789")),
    ]);
    let req = Request::post("/x").body(Body::from_stream(chunks)).unwrap();
    let (st, _, _) = call(&s, req).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s.log.head(), shared::Offset::ZERO, "nothing half-written");
    let (st, _, _) = call(&s, post("/x", "12345678")).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    s.log.close().await.unwrap();
}

#[tokio::test]
async fn the_token_guards_intake_and_ops_but_not_probes() {
    let (s, _dir) = state(Some("t0k"), 1024).await;
    let (st, h, v) = call(&s, post("/x", "{}")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"], "unauthorized");
    assert!(h.contains_key(header::WWW_AUTHENTICATE));
    let wrong = Request::post("/x")
        .header(header::AUTHORIZATION, "Bearer nope")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&s, wrong).await.0, StatusCode::UNAUTHORIZED);
    let right = Request::post("/x")
        .header(header::AUTHORIZATION, "Bearer t0k")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&s, right).await.0, StatusCode::ACCEPTED);
    let ops = Request::get("/_reflektor/hosts")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&s, ops).await.0, StatusCode::UNAUTHORIZED);
    let unknown = Request::get("/_reflektor/nothing")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&s, unknown).await.0, StatusCode::UNAUTHORIZED);
    let probe = Request::get("/readyz").body(Body::empty()).unwrap();
    assert_eq!(call(&s, probe).await.0, StatusCode::OK);
    s.log.close().await.unwrap();
}

#[tokio::test]
async fn a_repeated_idempotency_key_answers_the_first_id() {
    let (s, _dir) = state(None, 1024).await;
    let req = || {
        Request::post("/x")
            .header("idempotency-key", "k1")
            .body(Body::from("a"))
            .unwrap()
    };
    let (st, h1, a) = call(&s, req()).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert!(!h1.contains_key("idempotency-replayed"));
    let (st, h2, b) = call(&s, req()).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(a, b);
    assert_eq!(h2["idempotency-replayed"], "true");
    let (_, _, c) = call(&s, post("/x", "next")).await;
    let id = |v: &Value| v["id"].as_str().unwrap().parse::<u64>().unwrap();
    assert_eq!(id(&c), id(&a) + 1, "the repeat appended nothing");
    s.log.close().await.unwrap();
}

#[tokio::test]
async fn shutting_down_answers_503_and_readyz_fails() {
    let (s, _dir) = state(None, 1024).await;
    s.shutdown.cancel();
    let (st, h, v) = call(&s, post("/x", "{}")).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h[header::RETRY_AFTER], "1");
    assert_eq!(v["error"], "shutting_down");
    let (st, _, _) = call(&s, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    s.log.close().await.unwrap();
}

#[tokio::test]
async fn hosts_can_be_added_listed_and_removed_with_bad_input_refused() {
    let (s, _dir) = state(None, 1024).await;
    let add = |body: &'static str| {
        Request::post("/_reflektor/hosts")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let (st, _, v) = call(&s, add(r#"{"url":"http://127.0.0.1:9","mode":"replay"}"#)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["mode"], "replay");
    let (st, _, v) = call(&s, add(r#"{"url":"http://127.0.0.1:9/"}"#)).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(v["error"], "conflict");
    for bad in [
        r#"{"url":"ftp://x"}"#,
        r#"{"url":"http://x","mode":"fast"}"#,
        "nope",
    ] {
        let (st, _, v) = call(&s, add(bad)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(v["error"], "bad_host");
    }
    let (_, _, v) = call(
        &s,
        Request::get("/_reflektor/hosts")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(v["hosts"][0]["id"], id.as_str());
    let del = Request::delete(format!("/_reflektor/hosts/{id}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&s, del).await.0, StatusCode::OK);
    let del = Request::delete(format!("/_reflektor/hosts/{id}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&s, del).await.0, StatusCode::NOT_FOUND);
    s.pool.stop(std::time::Duration::from_secs(1)).await;
    s.log.close().await.unwrap();
}

#[tokio::test]
async fn a_configured_origin_gets_cors_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_dir(dir.path().to_path_buf());
    config.cors_origins = vec!["http://page.example".into()];
    let s = AppState::open(config, CancellationToken::new())
        .await
        .unwrap();
    let preflight = Request::options("/rooms/a/messages")
        .header(header::ORIGIN, "http://page.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
        .body(Body::empty())
        .unwrap();
    let (st, h, _) = call(&s, preflight).await;
    assert!(st.is_success(), "{st}");
    assert_eq!(
        h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "http://page.example"
    );
    let req = Request::post("/x")
        .header(header::ORIGIN, "http://page.example")
        .body(Body::from("{}"))
        .unwrap();
    let (st, h, _) = call(&s, req).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(
        h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "http://page.example"
    );
    s.log.close().await.unwrap();
}

#[tokio::test]
async fn a_full_disk_answers_503_until_it_has_room_and_a_failed_sync_makes_readyz_503() {
    use crate::log::faulty::{EIO, ENOSPC, FaultyFs, Op};
    let dir = tempfile::tempdir().unwrap();
    let fs = std::sync::Arc::new(FaultyFs::default());
    let config = Config::for_dir(dir.path().to_path_buf());
    let s = AppState::open_on(config, CancellationToken::new(), fs.clone())
        .await
        .unwrap();
    let (st, _, _) = call(&s, post("/x", "1")).await;
    assert_eq!(st, StatusCode::ACCEPTED);

    fs.fail_always(Op::Write, ENOSPC);
    let (st, h, v) = call(&s, post("/x", "2")).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("overloaded"))
    );
    assert_eq!(h[header::RETRY_AFTER], "1");
    let (st, _, _) = call(&s, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::OK, "a full disk is not a failed log");
    fs.heal(Op::Write);
    let (st, _, v) = call(&s, post("/x", "3")).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(v["id"], "2", "the refused request used no offset");

    // Under the default `interval` policy the answer comes before the sync; the sync fails.
    fs.fail_always(Op::SyncData, EIO);
    let (st, _, _) = call(&s, post("/x", "4")).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while s.log.failure().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sync never failed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (st, _, v) = call(&s, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("log_failed"))
    );
    let (st, _, v) = call(&s, post("/x", "5")).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("overloaded"))
    );
}
