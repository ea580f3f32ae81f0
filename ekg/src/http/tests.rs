//! The read API through the router: paging parameters, room names, errors, static files.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bytes::Bytes;
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::config::{Config, CorsOrigins};
use crate::rooms::{MessageId, RoomId, RoomOp, Seq, now_ms};
use crate::router;
use crate::state::AppState;

/// A host that has caught up with its log.
fn state() -> AppState {
    let state = AppState::new(Config::default(), Default::default());
    state.ingest.set_ready();
    state
}

async fn get(state: &AppState, uri: &str) -> (StatusCode, serde_json::Value) {
    let resp = router(state.clone())
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

fn fill(state: &AppState, room: &str, seqs: impl Iterator<Item = u64>) {
    let id = RoomId::parse(room).unwrap();
    for s in seqs {
        let op = RoomOp::Post {
            id: Some(MessageId::parse(&format!("m{s}")).unwrap()),
            data: Bytes::from(format!(r#"{{"n":{s}}}"#)),
        };
        state.rooms.apply(&id, Seq(s), now_ms(), &op).unwrap();
    }
}

#[tokio::test]
async fn bad_limits_cursors_and_room_names_are_400s() {
    let state = state();
    for uri in [
        "/rooms/a/messages?limit=0",
        "/rooms/a/messages?limit=201",
        "/rooms/a/messages?limit=lots",
        "/rooms/a/messages?limit=",
        "/rooms/a/messages?before=-1",
        "/rooms/a/messages?before=1e3",
        "/rooms/a/messages?after=99999999999999999999999",
        "/rooms/a/messages?before=3&after=1",
    ] {
        let (status, body) = get(&state, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(
            body["error"].as_str().unwrap().starts_with("bad_"),
            "{uri}: {body}"
        );
        assert!(body["message"].is_string());
    }
    for uri in [
        "/rooms/a%20b/messages",
        "/rooms/%ZZ/messages",
        &format!("/rooms/{}/messages", "x".repeat(129)),
        "/rooms/caf%C3%A9",
    ] {
        let (status, body) = get(&state, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(body["error"], "bad_room", "{uri}");
    }
    assert!(state.rooms.is_empty(), "reads never create rooms");
}

#[tokio::test]
async fn pages_have_the_documented_shape() {
    let state = state();
    fill(&state, "lobby", 1..=60);
    let (status, body) = get(&state, "/rooms/lobby/messages").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["room"], "lobby");
    let msgs = body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 50);
    assert_eq!(msgs[0]["seq"], 11);
    assert_eq!(msgs[49]["seq"], 60);
    assert_eq!(msgs[0]["data"], serde_json::json!({"n": 11}));
    assert_eq!(body["has_more"], true);
    assert_eq!(body["next_before"], 11);
    assert_eq!(body["next_after"], serde_json::Value::Null);
    let (_, body) = get(&state, "/rooms/lobby/messages?before=11&limit=200").await;
    assert_eq!(body["messages"].as_array().unwrap().len(), 10);
    assert_eq!(body["has_more"], false);
    assert_eq!(body["next_before"], serde_json::Value::Null);
    assert_eq!(body["next_after"], 10);
    let (_, body) = get(&state, "/rooms/lobby/messages?after=58").await;
    let seqs: Vec<_> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![59, 60]);
    // A room nobody wrote to is empty, not an error.
    let (status, body) = get(&state, "/rooms/nobody/messages").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        serde_json::json!({"room":"nobody","messages":[],"has_more":false,"next_before":null,"next_after":null})
    );
}

#[tokio::test]
async fn room_info_shows_head_oldest_messages_and_subscribers() {
    let state = state();
    fill(&state, "a", [3, 9].into_iter());
    let _sub =
        crate::rooms::testing::Recorded::new(&state.rooms, &RoomId::parse("a").unwrap(), None);
    let (status, body) = get(&state, "/rooms/a").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        serde_json::json!({"room":"a","head":9,"oldest":3,"messages":2,"subscribers":1})
    );
    let (_, body) = get(&state, "/rooms/empty").await;
    assert_eq!(body["head"], 0);
}

#[tokio::test]
async fn health_metrics_static_files_and_unknown_paths() {
    let state = state();
    assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
    let resp = router(state.clone())
        .oneshot(
            Request::patch("/rooms/a/messages/m1")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("method_not_allowed"));
    let (status, body) = get(&state, "/nope").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    for (uri, ctype) in [
        ("/ekg.js", "text/javascript; charset=utf-8"),
        ("/", "text/html; charset=utf-8"),
        ("/metrics", "text/plain; version=0.0.4; charset=utf-8"),
    ] {
        let resp = router(state.clone())
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{uri}");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], ctype, "{uri}");
    }
}

#[tokio::test]
async fn cors_headers_follow_the_configured_origins() {
    let config = Config {
        cors_origins: CorsOrigins::List(vec!["https://app.example".parse().unwrap()]),
        ..Config::default()
    };
    let state = AppState::new(config, Default::default());
    let req = |origin: &str| {
        Request::get("/rooms/a/messages")
            .header(header::ORIGIN, origin)
            .body(Body::empty())
            .unwrap()
    };
    let resp = router(state.clone())
        .oneshot(req("https://app.example"))
        .await
        .unwrap();
    assert_eq!(
        resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example"
    );
    let resp = router(state)
        .oneshot(req("https://evil.example"))
        .await
        .unwrap();
    assert!(
        resp.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
}

#[tokio::test]
async fn run_serves_until_shutdown_then_returns_ok() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = shared::shutdown::CancellationToken::new();
    let config = Config {
        drain_window: std::time::Duration::from_millis(200),
        secrets: vec!["0123456789abcdef".into()],
        ..Config::default()
    };
    let server = tokio::spawn(crate::run(listener, config, shutdown.clone()));
    let resp = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    shutdown.cancel();
    let result = tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("run returns within the drain deadline")
        .unwrap();
    assert!(result.is_ok());
    assert!(
        reqwest::get(format!("http://{addr}/healthz"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn run_refuses_a_configuration_that_lets_anyone_write() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = crate::run(listener, Config::default(), Default::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--secret"), "{err}");
}

#[tokio::test]
async fn room_reads_wait_until_the_host_has_caught_up() {
    let state = AppState::new(Config::default(), Default::default());
    fill(&state, "a", 1..=3);
    for uri in [
        "/rooms/a",
        "/rooms/a/messages",
        "/rooms/a/ws",
        "/rooms/a/sse",
    ] {
        let (status, body) = get(&state, uri).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert_eq!(body["error"], "not_ready", "{uri}");
    }
    let (status, _) = get(&state, "/healthz").await;
    assert_eq!(status, StatusCode::OK, "health does not wait");
    state.ingest.set_ready();
    let (status, body) = get(&state, "/rooms/a/messages").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["messages"].as_array().unwrap().len(), 3);
}
