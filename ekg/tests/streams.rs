//! WebSocket and SSE streams against a real in-process ekg on 127.0.0.1:0.
//!
//! Tests, by behaviour:
//! - hello and live order (WS, SSE), SSE headers and framing
//! - resume with `?after=` during concurrent publishing: no gap, no duplicate (WS)
//! - resume with `Last-Event-ID`, and `?after=` winning over it (SSE)
//! - `reset` when the cursor is older than the retained history
//! - a stalled client is closed as lagging (4008) while another receives everything
//! - ephemeral events are pushed but never stored
//! - drain: `reconnect` then close for every stream, new streams refused, `run` returns
//! - `--max-connections` answers 503; bad room and bad cursor answer 400
//! - the WebSocket close handshake started by the client completes cleanly

mod common;

use std::time::Duration;

use common::{Server, Sse, SseClient, WAIT, WsClient, WsEvent, payload, seqs};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tests::wait_for;
use tokio_tungstenite::tungstenite;

#[tokio::test]
async fn a_websocket_says_hello_with_the_head_then_streams_live_events_in_order() {
    let server = Server::start(|_| {}).await;
    for i in 0..3 {
        server.post_message("lobby", json!({"i": i})).await;
    }
    let mut ws = WsClient::connect(&server.ws_url("/rooms/lobby/ws")).await;
    let hello = ws.frame().await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["room"], "lobby");
    let head = hello["head"].as_u64().unwrap();
    assert!(head >= 3, "{hello}");

    for i in 0..20 {
        server.post_message("lobby", json!({"i": 100 + i})).await;
    }
    let frames = ws.frames_through(head + 20).await;
    let got: Vec<i64> = frames
        .iter()
        .map(|f| f["data"]["i"].as_i64().unwrap())
        .collect();
    assert_eq!(got, (100..120).collect::<Vec<_>>());
    let s = seqs(&frames);
    assert!(s.windows(2).all(|w| w[0] < w[1]), "{s:?}");
    assert!(s[0] > head);
    assert!(frames.iter().all(|f| f["type"] == "message"));
}

#[tokio::test]
async fn resuming_a_websocket_while_events_are_published_has_no_gap_and_no_duplicate() {
    let server = Server::start(|_| {}).await;
    let room = "busy";
    for i in 0..50 {
        server.post_message(room, json!({"i": i})).await;
    }
    let cursor = server.history_seqs(room).await[19];

    let publisher = {
        let http = server.http.clone();
        let url = server.url(&format!("/rooms/{room}/messages"));
        tokio::spawn(async move {
            // Paced, so that the clients below join while it runs.
            let mut pace = tokio::time::interval(Duration::from_millis(2));
            for i in 50..250 {
                pace.tick().await;
                let resp = http
                    .post(&url)
                    .bearer_auth(common::TOKEN)
                    .json(&json!({"i": i}))
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success());
            }
        })
    };
    // Several clients resume at different moments while the publisher runs: each one once
    // the room has grown by another 40 events.
    let mut clients = Vec::new();
    let mut heads = Vec::new();
    for i in 1..=4u64 {
        wait_for("the publisher to progress", WAIT, async || {
            let (_, info) = server.get_json(&format!("/rooms/{room}")).await;
            (info["messages"].as_u64() >= Some(50 + 40 * i)).then_some(())
        })
        .await
        .unwrap();
        let mut ws =
            WsClient::connect(&server.ws_url(&format!("/rooms/{room}/ws?after={cursor}"))).await;
        let hello = ws.frame().await;
        assert_eq!(hello["type"], "hello");
        heads.push(hello["head"].as_u64().unwrap());
        clients.push(ws);
    }
    publisher.await.unwrap();

    let history = server.history_seqs(room).await;
    assert_eq!(history.len(), 250);
    // The clients really joined mid-stream: each hello's head was below the final head.
    assert!(
        heads.iter().all(|&h| h < *history.last().unwrap()),
        "{heads:?}"
    );
    let expected: Vec<u64> = history.into_iter().filter(|&s| s > cursor).collect();
    let last = *expected.last().unwrap();
    for mut ws in clients {
        let frames = ws.frames_through(last).await;
        assert!(
            frames.iter().all(|f| f["type"] == "message"),
            "no reset expected"
        );
        assert_eq!(seqs(&frames), expected);
    }
}

#[tokio::test]
async fn an_sse_stream_sends_retry_hello_and_live_events_with_ids() {
    let server = Server::start(|_| {}).await;
    let mut sse = SseClient::connect(&server.url("/rooms/news/sse"), None).await;
    assert_eq!(sse.headers["content-type"], "text/event-stream");
    assert_eq!(sse.headers["cache-control"], "no-cache");
    assert_eq!(sse.headers["x-accel-buffering"], "no");
    assert_eq!(sse.next().await, Sse::Retry(2000));
    let (event, id, hello) = sse.event().await.unwrap();
    assert_eq!((event.as_str(), id), ("hello", None));
    assert_eq!(hello["type"], "hello");

    for i in 0..5 {
        server.post_message("news", json!({"i": i})).await;
    }
    let mut last = 0;
    for i in 0..5 {
        let (event, id, data) = sse.event().await.unwrap();
        assert_eq!(event, "message");
        assert_eq!(data["data"]["i"], i);
        let seq = data["seq"].as_u64().unwrap();
        assert_eq!(id, Some(seq.to_string()));
        assert!(seq > last);
        last = seq;
    }
}

#[tokio::test]
async fn sse_resumes_from_last_event_id_and_the_query_cursor_wins_over_it() {
    let server = Server::start(|_| {}).await;
    for i in 0..10 {
        server.post_message("r", json!({"i": i})).await;
    }
    let history = server.history_seqs("r").await;
    let (c3, c7) = (history[3], history[7]);

    let mut by_header =
        SseClient::connect(&server.url("/rooms/r/sse"), Some(&c3.to_string())).await;
    assert_eq!(by_header.event().await.unwrap().0, "hello");
    let frames = by_header.frames_through(history[9]).await;
    assert_eq!(seqs(&frames), history[4..].to_vec());

    let url = server.url(&format!("/rooms/r/sse?after={c7}"));
    let mut both = SseClient::connect(&url, Some(&c3.to_string())).await;
    assert_eq!(both.event().await.unwrap().0, "hello");
    let frames = both.frames_through(history[9]).await;
    assert_eq!(seqs(&frames), history[8..].to_vec());
}

#[tokio::test]
async fn a_cursor_older_than_the_retained_history_gets_a_reset_then_the_oldest_events() {
    let server = Server::start(|c| c.retention.per_room = 5).await;
    for i in 0..20 {
        server.post_message("small", json!({"i": i})).await;
    }
    let retained = server.history_seqs("small").await;
    assert_eq!(retained.len(), 5);

    let mut ws = WsClient::connect(&server.ws_url("/rooms/small/ws?after=1")).await;
    let hello = ws.frame().await;
    assert_eq!(hello["type"], "hello");
    let reset = ws.frame().await;
    assert_eq!(reset["type"], "reset");
    assert_eq!(reset["reason"], "history_trimmed");
    assert_eq!(reset["oldest"].as_u64(), Some(retained[0]));
    let frames = ws.frames_through(*retained.last().unwrap()).await;
    assert_eq!(seqs(&frames), retained);

    let mut sse = SseClient::connect(&server.url("/rooms/small/sse?after=1"), None).await;
    assert_eq!(sse.event().await.unwrap().0, "hello");
    assert_eq!(sse.event().await.unwrap().0, "reset");
    assert_eq!(
        seqs(&sse.frames_through(*retained.last().unwrap()).await),
        retained
    );
}

#[tokio::test]
async fn a_stalled_websocket_is_closed_as_lagging_while_another_client_receives_everything() {
    let server = Server::start(|c| {
        c.send_queue = 16;
        c.max_message_bytes = 64 << 10;
    })
    .await;
    let room = "stall";
    let url = server.ws_url(&format!("/rooms/{room}/ws"));
    let mut stalled = WsClient::connect_small_window(server.addr, &url).await;
    let mut healthy = WsClient::connect(&url).await;
    assert_eq!(healthy.frame().await["type"], "hello");
    wait_for("two subscribers", WAIT, async || {
        let (_, info) = server.get_json(&format!("/rooms/{room}")).await;
        (info["subscribers"] == 2).then_some(())
    })
    .await
    .unwrap();

    // The healthy client reads everything as it comes.
    let (last_tx, mut last_rx) = tokio::sync::watch::channel(u64::MAX);
    let reader = tokio::spawn(async move {
        let mut got: Vec<u64> = Vec::new();
        loop {
            let last = *last_rx.borrow_and_update();
            if got.last().is_some_and(|&s| s >= last) {
                return got;
            }
            tokio::select! {
                _ = last_rx.changed() => {}
                next = healthy.next() => match next {
                    WsEvent::Frame(f) => got.push(f["seq"].as_u64().unwrap()),
                    other => panic!("healthy client: {other:?} after {} frames", got.len()),
                },
            }
        }
    });

    // Publish 8 KiB events until the stalled client has been let go (bounded).
    let mut posted = 0;
    let mut dropped = false;
    while posted < 3000 && !dropped {
        for _ in 0..20 {
            server.post_message(room, payload(posted, 8 << 10)).await;
            posted += 1;
        }
        let (_, info) = server.get_json(&format!("/rooms/{room}")).await;
        dropped = info["subscribers"] == 1;
    }
    assert!(
        dropped,
        "the stalled client was never disconnected after {posted} events"
    );
    let history = server.history_seqs(room).await;
    last_tx.send(*history.last().unwrap()).unwrap();
    let got = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
    assert_eq!(got, history, "the healthy client missed or repeated events");

    // The stalled client now reads: an in-order prefix of the room, then close 4008.
    assert_eq!(stalled.frame().await["type"], "hello");
    let mut prefix = Vec::new();
    let close = loop {
        match stalled.next().await {
            WsEvent::Frame(f) => prefix.push(f["seq"].as_u64().unwrap()),
            other => break other,
        }
    };
    assert_eq!(close, WsEvent::Close(4008, "lagging".into()));
    assert!(prefix.len() < history.len());
    assert_eq!(prefix, history[..prefix.len()].to_vec());
}

#[tokio::test]
async fn ephemeral_events_are_pushed_to_both_transports_but_not_stored() {
    let server = Server::start(|_| {}).await;
    let mut ws = WsClient::connect(&server.ws_url("/rooms/chat/ws")).await;
    let mut sse = SseClient::connect(&server.url("/rooms/chat/sse"), None).await;
    assert_eq!(ws.frame().await["type"], "hello");
    assert_eq!(sse.event().await.unwrap().0, "hello");

    server
        .post_event(
            "chat",
            json!({"type": "typing", "data": {"who": "ada"}, "ephemeral": true}),
        )
        .await;
    let frame = ws.frame().await;
    assert_eq!(frame["type"], "event");
    assert_eq!(frame["event"], "typing");
    assert_eq!(frame["ephemeral"], true);
    assert_eq!(frame["data"]["who"], "ada");
    let (event, _, data) = sse.event().await.unwrap();
    assert_eq!(event, "event");
    assert_eq!(data, frame);

    assert!(server.history_seqs("chat").await.is_empty());
    // A client resuming from before it does not get it back.
    let mut late = WsClient::connect(&server.ws_url("/rooms/chat/ws?after=0")).await;
    assert_eq!(late.frame().await["type"], "hello");
    server.post_message("chat", json!({"text": "hi"})).await;
    assert_eq!(late.frame().await["type"], "message");
}

#[tokio::test]
async fn draining_sends_reconnect_then_closes_every_stream_and_run_returns() {
    let mut server = Server::start(|c| c.drain_window = Duration::from_millis(300)).await;
    let mut ws_clients = Vec::new();
    for _ in 0..3 {
        let mut ws = WsClient::connect(&server.ws_url("/rooms/d/ws")).await;
        assert_eq!(ws.frame().await["type"], "hello");
        ws_clients.push(ws);
    }
    let mut sse = SseClient::connect(&server.url("/rooms/d/sse"), None).await;
    assert_eq!(sse.event().await.unwrap().0, "hello");

    server.shutdown.cancel();
    for ws in &mut ws_clients {
        let reconnect = ws.frame().await;
        assert_eq!(reconnect["type"], "reconnect");
        assert!(reconnect["after_ms"].as_u64().is_some(), "{reconnect}");
        assert_eq!(
            ws.next().await,
            WsEvent::Close(1012, "service restart".into())
        );
    }
    let (event, _, data) = sse.event().await.unwrap();
    assert_eq!(event, "reconnect");
    assert!(data["after_ms"].as_u64().is_some());
    assert_eq!(sse.event().await, None);

    server.join(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn streams_opened_after_the_drain_started_are_refused_with_503() {
    use tower::ServiceExt;
    let shutdown = shared::shutdown::CancellationToken::new();
    let config = ekg::Config {
        mode: ekg::config::Mode::Standalone {
            token: common::TOKEN.into(),
        },
        ..ekg::Config::default()
    };
    let state = ekg::AppState::new(config, shutdown.clone());
    shutdown.cancel();
    // (A WebSocket upgrade needs a real connection; the admission path is the same.)
    for path in ["/rooms/d/sse", "/rooms/d/sse?after=3"] {
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = ekg::router(state.clone()).oneshot(request).await.unwrap();
        assert_eq!(resp.status(), 503, "{path}");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "shutting_down", "{path}");
    }
}

#[tokio::test]
async fn connections_beyond_max_connections_get_503() {
    let server = Server::start(|c| c.max_connections = 2).await;
    let mut a = WsClient::connect(&server.ws_url("/rooms/m/ws")).await;
    let mut b = SseClient::connect(&server.url("/rooms/m/sse"), None).await;
    assert_eq!(a.frame().await["type"], "hello");
    assert_eq!(b.event().await.unwrap().0, "hello");

    match tokio_tungstenite::connect_async(server.ws_url("/rooms/m/ws")).await {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_ref().unwrap()).unwrap();
            assert_eq!(body["error"], "too_many_connections");
        }
        other => panic!("expected 503, got {other:?}"),
    }
    let (status, body) = server.get_json("/rooms/m/sse").await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "too_many_connections");

    // A closed stream frees its slot.
    a.close().await;
    assert!(matches!(a.next().await, WsEvent::Close(..)));
    drop(a);
    let url = server.ws_url("/rooms/m/ws");
    let mut c = wait_for("a free slot", WAIT, async || {
        tokio_tungstenite::connect_async(&url)
            .await
            .ok()
            .map(|(ws, _)| ws)
    })
    .await
    .unwrap();
    let hello = c.next().await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("hello"));
}

#[tokio::test]
async fn a_bad_room_or_cursor_is_a_400_with_a_json_error() {
    let server = Server::start(|_| {}).await;
    for (path, code) in [
        ("/rooms/bad%20room/ws", "bad_room"),
        ("/rooms/bad%20room/sse", "bad_room"),
        (&*format!("/rooms/{}/sse", "x".repeat(129)), "bad_room"),
        ("/rooms/ok/ws?after=abc", "bad_cursor"),
        ("/rooms/ok/sse?after=-1", "bad_cursor"),
        ("/rooms/ok/sse?after=", "bad_cursor"),
        ("/rooms/ok/sse?after=99999999999999999999999", "bad_cursor"),
    ] {
        let (status, body) = server.get_json(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"], code, "{path}: {body}");
        assert!(body["message"].is_string(), "{path}: {body}");
    }
    let resp = reqwest::Client::new()
        .get(server.url("/rooms/ok/sse"))
        .header("last-event-id", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // The WebSocket endpoint without an upgrade is refused with JSON too.
    let (status, body) = server.get_json("/rooms/ok/ws").await;
    assert!((400..500).contains(&status), "{status}");
    assert!(body["error"].is_string(), "{body}");
}

#[tokio::test]
async fn a_close_started_by_the_client_is_answered_and_the_connection_ends_cleanly() {
    let server = Server::start(|_| {}).await;
    let mut ws = WsClient::connect(&server.ws_url("/rooms/c/ws")).await;
    assert_eq!(ws.frame().await["type"], "hello");
    ws.ws
        .send(tungstenite::Message::Close(Some(
            tungstenite::protocol::CloseFrame {
                code: tungstenite::protocol::frame::coding::CloseCode::Normal,
                reason: "bye".into(),
            },
        )))
        .await
        .unwrap();
    // The server's answer arrives, then the stream ends without an error.
    let answer = tokio::time::timeout(WAIT, ws.ws.next()).await.unwrap();
    match answer {
        Some(Ok(tungstenite::Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1000);
        }
        other => panic!("expected the close answer, got {other:?}"),
    }
    let end = tokio::time::timeout(WAIT, ws.ws.next()).await.unwrap();
    assert!(end.is_none(), "{end:?}");
    wait_for("the subscriber to leave", WAIT, async || {
        let (_, info) = server.get_json("/rooms/c").await;
        (info["subscribers"] == 0).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn client_text_is_ignored_and_pings_keep_an_idle_websocket_alive() {
    let server = Server::start(|c| {
        c.ws_ping_interval = Duration::from_millis(100);
        c.idle_timeout = Duration::from_millis(400);
    })
    .await;
    let mut ws = WsClient::connect(&server.ws_url("/rooms/p/ws")).await;
    assert_eq!(ws.frame().await["type"], "hello");
    ws.ws
        .send(tungstenite::Message::Text("hello server".into()))
        .await
        .unwrap();
    // Reading answers the server's pings; after several idle timeouts the client is still served.
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1200);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, ws.ws.next()).await {
            Ok(Some(Ok(tungstenite::Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => break,
        }
    }
    assert!(pings >= 3, "{pings} pings");
    server.post_message("p", json!({"still": "here"})).await;
    assert_eq!(ws.frame().await["data"]["still"], "here");
}

#[tokio::test]
async fn a_websocket_peer_that_never_answers_pings_is_closed() {
    let server = Server::start(|c| {
        c.ws_ping_interval = Duration::from_millis(100);
        c.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut ws = WsClient::connect(&server.ws_url("/rooms/i/ws")).await;
    assert_eq!(ws.frame().await["type"], "hello");
    // Not reading means tungstenite never answers the pings.
    wait_for("the idle subscriber to be reaped", WAIT, async || {
        let (_, info) = server.get_json("/rooms/i").await;
        (info["subscribers"] == 0).then_some(())
    })
    .await
    .unwrap();
    // The server closed with 1001 "idle timeout"; a client that reads that late may first
    // fail to answer the pings it finds (the server is gone), so any end will do.
    loop {
        match ws.next().await {
            WsEvent::Close(code, _) => assert_eq!(code, 1001),
            WsEvent::End | WsEvent::Error(_) => break,
            WsEvent::Frame(f) => panic!("unexpected {f}"),
        }
    }
}

#[tokio::test]
async fn a_stalled_sse_client_gets_a_final_lagging_event_and_the_stream_ends() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(|c| c.send_queue = 16).await;
    let room = "sse-stall";
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    let request = format!("GET /rooms/{room}/sse HTTP/1.1\r\nHost: ekg\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    wait_for("the subscriber", WAIT, async || {
        let (_, info) = server.get_json(&format!("/rooms/{room}")).await;
        (info["subscribers"] == 1).then_some(())
    })
    .await
    .unwrap();

    let mut posted = 0;
    let mut dropped = false;
    while posted < 3000 && !dropped {
        for _ in 0..20 {
            server.post_message(room, payload(posted, 8 << 10)).await;
            posted += 1;
        }
        let (_, info) = server.get_json(&format!("/rooms/{room}")).await;
        dropped = info["subscribers"] == 0;
    }
    assert!(
        dropped,
        "the stalled client was never let go after {posted} events"
    );

    // Read the raw (chunked) response to its end: the last event is `lagging`.
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, async {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            raw.extend_from_slice(&buf[..n]);
            if n == 0 || raw.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
        }
    })
    .await
    .expect("the stream did not end");
    let text = String::from_utf8_lossy(&raw);
    let lagging = "event: lagging\ndata: {\"type\":\"lagging\"}\n\n";
    let at = text.rfind(lagging).expect("no lagging event");
    assert!(
        !text[at + lagging.len()..].contains("event:"),
        "events after lagging"
    );
    assert!(
        text.contains("event: message\nid: 1\n"),
        "the stream started with the room's events"
    );
}

#[tokio::test]
async fn an_sse_client_that_goes_away_ends_its_stream_on_the_server() {
    let server = Server::start(|c| c.sse_keepalive = Duration::from_millis(50)).await;
    let mut sse = SseClient::connect(&server.url("/rooms/gone/sse"), None).await;
    assert_eq!(sse.event().await.unwrap().0, "hello");
    // Keepalive comments arrive while the room is quiet.
    assert_eq!(sse.next().await, Sse::Comment("ping".into()));
    drop(sse);
    wait_for("the subscriber to leave", WAIT, async || {
        let (_, info) = server.get_json("/rooms/gone").await;
        (info["subscribers"] == 0).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_backlog_much_larger_than_the_send_queue_is_delivered_whole() {
    let server = Server::start(|c| c.send_queue = 8).await;
    for i in 0..300 {
        server.post_message("deep", json!({"i": i})).await;
    }
    let history = server.history_seqs("deep").await;
    let last = *history.last().unwrap();

    let mut ws = WsClient::connect(&server.ws_url("/rooms/deep/ws?after=0")).await;
    assert_eq!(ws.frame().await["type"], "hello");
    assert_eq!(seqs(&ws.frames_through(last).await), history);

    let mut sse = SseClient::connect(&server.url("/rooms/deep/sse"), Some("0")).await;
    assert_eq!(sse.event().await.unwrap().0, "hello");
    assert_eq!(seqs(&sse.frames_through(last).await), history);
}

/// Measurement (run alone: `cargo nextest run -p ekg --run-ignored only idle_`): server-side
/// resident memory per idle stream. nextest runs each test in its own process, so the RSS
/// delta is this server's (plus a bare client socket per stream, which makes it an upper
/// bound).
#[tokio::test]
#[ignore = "measurement; prints per-connection memory"]
async fn idle_streams_cost_little_memory_on_the_server() {
    let server = Server::start(|_| {}).await;
    const N: usize = 2000;
    for (path, ws) in [("/rooms/mem/ws", true), ("/rooms/mem/sse", false)] {
        // Warm up allocator and runtime, then let those connections go.
        drop(common::open_bare(&server, path, ws, 200).await);
        wait_for("warm-up streams to end", WAIT, async || {
            let (_, info) = server.get_json("/rooms/mem").await;
            (info["subscribers"] == 0).then_some(())
        })
        .await
        .unwrap();
        let before = common::rss_bytes();
        let streams = common::open_bare(&server, path, ws, N).await;
        let after = common::rss_bytes();
        let per = (after.saturating_sub(before)) / N as u64;
        eprintln!(
            "{}: {N} idle streams: RSS {} KiB -> {} KiB: {per} bytes per stream",
            if ws { "websocket" } else { "sse" },
            before / 1024,
            after / 1024
        );
        if ws {
            assert!(per < 5 * 1024, "an idle websocket costs {per} bytes");
        }
        drop(streams);
        wait_for("streams to end", WAIT, async || {
            let (_, info) = server.get_json("/rooms/mem").await;
            (info["subscribers"] == 0).then_some(())
        })
        .await
        .unwrap();
    }
}
