//! Ingest through the router: batches, replayed writes, standalone writes.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use shared::batch::{self, IngestAck};
use shared::sign::Signer;
use shared::{Epoch, Method, Offset, Record};
use tokio::sync::broadcast::error::TryRecvError;
use tower::ServiceExt;

use crate::config::{Config, Mode};
use crate::rooms::{Cursor, RoomId, Seq};
use crate::state::AppState;
use crate::{rooms::now_ms, router};

const SECRET: &str = "s3cret";

fn state(secret: Option<&str>) -> AppState {
    let config = Config {
        secret: secret.map(str::to_owned),
        max_message_bytes: 1024,
        ..Config::default()
    };
    AppState::new(config, Default::default())
}

fn standalone() -> AppState {
    let config = Config {
        mode: Mode::Standalone {
            token: "tok".into(),
        },
        ..Config::default()
    };
    AppState::new(config, Default::default())
}

fn record(offset: u64, method: Method, target: &str, body: &str) -> Bytes {
    Record {
        offset: Offset(offset),
        timestamp_ms: now_ms(),
        method,
        target: target.into(),
        content_type: Some("application/json".into()),
        idempotency_key: None,
        headers: vec![],
        body: Bytes::from(body.to_owned()),
    }
    .to_bytes()
}

fn msg(offset: u64, room: &str, id: &str) -> Bytes {
    record(
        offset,
        Method::Post,
        &format!("/rooms/{room}/messages"),
        &format!(r#"{{"id":"{id}","text":"hello {offset}"}}"#),
    )
}

struct Sent {
    status: StatusCode,
    json: serde_json::Value,
}

async fn send(state: &AppState, req: Request<Body>) -> Sent {
    let resp = router(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    Sent { status, json }
}

fn batch_request(
    epoch: u64,
    prev: u64,
    head: u64,
    records: &[Bytes],
    secret: Option<&str>,
) -> Request<Body> {
    let body = batch::encode(Epoch(epoch), Offset(prev), Offset(head), records);
    let mut req = Request::post(batch::INGEST_PATH).header("content-type", batch::CONTENT_TYPE);
    if let Some(secret) = secret {
        for (name, value) in Signer::new(secret.as_bytes()).headers(
            "POST",
            batch::INGEST_PATH,
            Epoch(epoch),
            Offset(prev),
            &body,
        ) {
            req = req.header(name, value);
        }
    }
    req.body(Body::from(body)).unwrap()
}

async fn ingest(state: &AppState, prev: u64, head: u64, records: &[Bytes]) -> Sent {
    send(state, batch_request(7, prev, head, records, Some(SECRET))).await
}

fn ack(sent: &Sent) -> IngestAck {
    serde_json::from_value(sent.json.clone()).unwrap()
}

fn page_seqs(state: &AppState, room: &str) -> Vec<u64> {
    let Some(r) = state.rooms.get(&RoomId::parse(room).unwrap()) else {
        return Vec::new();
    };
    r.page(Cursor::Newest, 200)
        .messages
        .iter()
        .map(|m| {
            serde_json::from_slice::<serde_json::Value>(m).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn an_unsigned_or_forged_batch_is_refused_and_applies_nothing() {
    let state = state(Some(SECRET));
    let records = [msg(1, "a", "m1")];
    let sent = send(&state, batch_request(7, 0, 1, &records, None)).await;
    assert_eq!(sent.status, StatusCode::UNAUTHORIZED);
    assert_eq!(sent.json["error"], "unauthorized");
    let sent = send(&state, batch_request(7, 0, 1, &records, Some("guess"))).await;
    assert_eq!(sent.status, StatusCode::UNAUTHORIZED);
    // Signed for another prev than the batch carries.
    let mut req = batch_request(7, 0, 1, &records, Some(SECRET));
    let body = batch::encode(Epoch(7), Offset(0), Offset(1), &records);
    for (name, value) in Signer::new(SECRET.as_bytes()).headers(
        "POST",
        batch::INGEST_PATH,
        Epoch(7),
        Offset(5),
        &body,
    ) {
        req.headers_mut().insert(name, value.parse().unwrap());
    }
    assert_eq!(send(&state, req).await.status, StatusCode::UNAUTHORIZED);
    assert!(state.rooms.is_empty());
    assert_eq!(state.ingest.cursor().applied, Offset(0));
    assert!(!state.ingest.is_ready());
}

#[tokio::test]
async fn a_batch_with_broken_framing_is_a_400() {
    let state = state(None);
    let req = Request::post(batch::INGEST_PATH)
        .body(Body::from("RFKB nonsense"))
        .unwrap();
    let sent = send(&state, req).await;
    assert_eq!(sent.status, StatusCode::BAD_REQUEST);
    assert_eq!(sent.json["error"], "bad_batch");
}

#[tokio::test]
async fn records_apply_in_order_and_duplicates_are_skipped() {
    let state = state(Some(SECRET));
    let first = [msg(1, "a", "m1"), msg(2, "a", "m2"), msg(3, "b", "m3")];
    let sent = ingest(&state, 0, 3, &first).await;
    assert_eq!(sent.status, StatusCode::OK);
    assert_eq!(
        sent.json,
        serde_json::json!({"applied": 3, "epoch": "0000000000000007"})
    );
    // A resend overlapping what was applied: only offset 4 is new.
    let mut sub = state
        .rooms
        .subscribe(&RoomId::parse("a").unwrap(), None)
        .unwrap();
    let again = [
        msg(1, "a", "m1"),
        msg(2, "a", "m2"),
        msg(3, "b", "m3"),
        msg(4, "a", "m4"),
    ];
    let sent = ingest(&state, 0, 4, &again).await;
    assert_eq!(ack(&sent).applied, Offset(4));
    assert!(ack(&sent).rejected.is_empty());
    assert_eq!(page_seqs(&state, "a"), vec![1, 2, 4]);
    assert_eq!(page_seqs(&state, "b"), vec![3]);
    assert_eq!(sub.live.try_recv().unwrap().seq, Some(Seq(4)));
    assert_eq!(sub.live.try_recv().unwrap_err(), TryRecvError::Empty);
}

#[tokio::test]
async fn a_batch_ahead_of_what_was_applied_is_a_409_with_the_ack() {
    let state = state(Some(SECRET));
    ingest(&state, 0, 2, &[msg(1, "a", "m1"), msg(2, "a", "m2")]).await;
    let sent = ingest(&state, 5, 7, &[msg(6, "a", "m6"), msg(7, "a", "m7")]).await;
    assert_eq!(sent.status, StatusCode::CONFLICT);
    assert_eq!(ack(&sent).applied, Offset(2));
    assert_eq!(page_seqs(&state, "a"), vec![1, 2]);
    // A heartbeat ahead is refused the same way (that is how a rewind is noticed).
    assert_eq!(ingest(&state, 9, 9, &[]).await.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_bad_record_is_rejected_on_its_own_and_the_rest_apply() {
    let state = state(Some(SECRET));
    let records = [
        msg(1, "a", "m1"),
        record(2, Method::Post, "/rooms/a/messages", "{not json"),
        record(3, Method::Put, "/rooms/a/messages/ghost", r#"{"x":1}"#),
        record(4, Method::Post, "/rooms/bad room/messages", "{}"),
        record(
            5,
            Method::Put,
            "/rooms/a/messages/m1",
            r#"{"text":"edited"}"#,
        ),
        record(
            6,
            Method::Post,
            "/rooms/a/messages",
            &format!(r#"{{"t":"{}"}}"#, "x".repeat(2000)),
        ),
        record(7, Method::Post, "/nowhere", "{}"),
        msg(8, "a", "m8"),
    ];
    let sent = ingest(&state, 0, 8, &records).await;
    assert_eq!(sent.status, StatusCode::OK);
    let ack = ack(&sent);
    assert_eq!(ack.applied, Offset(8));
    let rejected: Vec<(u64, u16)> = ack
        .rejected
        .iter()
        .map(|r| (r.offset.0, r.status))
        .collect();
    assert_eq!(
        rejected,
        vec![(2, 400), (3, 404), (4, 400), (6, 413), (7, 404)]
    );
    assert!(ack.rejected[1].error.starts_with("unknown_message"));
    assert_eq!(page_seqs(&state, "a"), vec![1, 8]);
    let room = state.rooms.get(&RoomId::parse("a").unwrap()).unwrap();
    assert_eq!(room.head(), Seq(8));
    let page = room.page(Cursor::Newest, 10);
    let first: serde_json::Value = serde_json::from_slice(&page.messages[0]).unwrap();
    assert_eq!(first["data"]["text"], "edited");
    assert_eq!(first["updated"], 5);
}

#[tokio::test]
async fn a_new_epoch_resets_rooms_and_subscribers() {
    let state = state(Some(SECRET));
    ingest(
        &state,
        0,
        3,
        &[msg(1, "a", "m1"), msg(2, "a", "m2"), msg(3, "a", "m3")],
    )
    .await;
    let mut live = state
        .rooms
        .subscribe(&RoomId::parse("a").unwrap(), None)
        .unwrap()
        .live;
    let sent = send(
        &state,
        batch_request(8, 0, 1, &[msg(1, "a", "n1")], Some(SECRET)),
    )
    .await;
    assert_eq!(sent.status, StatusCode::OK);
    assert_eq!(
        sent.json,
        serde_json::json!({"applied": 1, "epoch": "0000000000000008"})
    );
    let reset = live.try_recv().unwrap();
    assert!(reset.json().contains(r#""type":"reset""#));
    assert_eq!(live.try_recv().unwrap_err(), TryRecvError::Closed);
    assert_eq!(page_seqs(&state, "a"), vec![1]);
    assert_eq!(state.ingest.cursor().epoch, Epoch(8));
}

#[tokio::test]
async fn ephemeral_events_are_pushed_but_never_in_history() {
    let state = state(Some(SECRET));
    let room = RoomId::parse("a").unwrap();
    let mut live = state.rooms.subscribe(&room, None).unwrap().live;
    let records = [
        msg(1, "a", "m1"),
        record(
            2,
            Method::Post,
            "/rooms/a/events",
            r#"{"type":"typing","data":{"who":"x"},"ephemeral":true}"#,
        ),
        record(
            3,
            Method::Post,
            "/rooms/a/events",
            r#"{"type":"pinned","data":1}"#,
        ),
    ];
    ingest(&state, 0, 3, &records).await;
    let seqs: Vec<_> = (0..3)
        .map(|_| live.try_recv().unwrap().seq.unwrap().0)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    let sub = state.rooms.subscribe(&room, Some(Seq(0))).unwrap();
    let stored: Vec<_> = sub.backlog.iter().map(|f| f.seq.unwrap().0).collect();
    assert_eq!(stored, vec![1, 3]);
    assert_eq!(sub.covered, Seq(3));
}

#[tokio::test]
async fn readiness_flips_once_the_head_is_reached() {
    let state = state(Some(SECRET));
    let readyz = || Request::get("/readyz").body(Body::empty()).unwrap();
    assert_eq!(
        send(&state, readyz()).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    ingest(&state, 0, 4, &[msg(1, "a", "m1"), msg(2, "a", "m2")]).await;
    let sent = send(&state, readyz()).await;
    assert_eq!(sent.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sent.json["error"], "not_ready");
    ingest(&state, 2, 4, &[msg(3, "a", "m3"), msg(4, "a", "m4")]).await;
    let sent = send(&state, readyz()).await;
    assert_eq!(sent.status, StatusCode::OK);
    assert_eq!(sent.json["applied"], 4);
    // A host that starts with nothing to catch up becomes ready on the first heartbeat.
    let idle = self::state(Some(SECRET));
    ingest(&idle, 0, 0, &[]).await;
    assert!(idle.ingest.is_ready());
}

fn write(method: &str, path: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(path)
}

#[tokio::test]
async fn standalone_writes_need_the_token_and_get_their_own_seqs() {
    let state = standalone();
    assert!(state.ingest.is_ready());
    let post = |auth: Option<&str>| {
        let mut b = write("POST", "/rooms/a/messages");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(Body::from(r#"{"id":"m1"}"#)).unwrap()
    };
    assert_eq!(
        send(&state, post(None)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&state, post(Some("Bearer nope"))).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(state.rooms.is_empty());
    let sent = send(&state, post(Some("Bearer tok"))).await;
    assert_eq!(
        (sent.status, sent.json.clone()),
        (StatusCode::OK, serde_json::json!({"seq": 1}))
    );
    // A duplicate id is refused and takes no seq.
    assert_eq!(
        send(&state, post(Some("Bearer tok"))).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let req = write("POST", "/rooms/a/events")
        .header("authorization", "Bearer tok")
        .body(Body::from(r#"{"type":"typing","ephemeral":true}"#))
        .unwrap();
    assert_eq!(send(&state, req).await.json, serde_json::json!({"seq": 2}));
    let req = write("DELETE", "/rooms/a/messages/m1")
        .header("authorization", "Bearer tok")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&state, req).await.json, serde_json::json!({"seq": 3}));
    let req = write("DELETE", "/rooms/a/messages/m1")
        .header("authorization", "Bearer tok")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&state, req).await.json["unchanged"], true);
    // A reflektor batch has no place on a standalone host.
    let sent = send(&state, batch_request(7, 0, 1, &[msg(1, "a", "x")], None)).await;
    assert_eq!(sent.status, StatusCode::FORBIDDEN);
    let big = write("POST", "/rooms/a/messages")
        .header("authorization", "Bearer tok")
        .body(Body::from(format!(r#"{{"t":"{}"}}"#, "x".repeat(70_000))))
        .unwrap();
    let sent = send(&state, big).await;
    assert_eq!(sent.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(sent.json["error"], "body_too_large");
}

#[tokio::test]
async fn replayed_writes_are_signed_and_applied_once_at_their_offset() {
    let state = state(Some(SECRET));
    let signed = |offset: u64, secret: &str| {
        let body = r#"{"id":"r1","text":"hi"}"#;
        let mut req = write("POST", "/rooms/a/messages");
        for (name, value) in Signer::new(secret.as_bytes()).headers(
            "POST",
            "/rooms/a/messages",
            Epoch(7),
            Offset(offset),
            body.as_bytes(),
        ) {
            req = req.header(name, value);
        }
        req.body(Body::from(body)).unwrap()
    };
    let unsigned = write("POST", "/rooms/a/messages")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(
        send(&state, unsigned).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&state, signed(40, "wrong")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let sent = send(&state, signed(40, SECRET)).await;
    assert_eq!(
        (sent.status, sent.json),
        (StatusCode::OK, serde_json::json!({"seq": 40}))
    );
    let sent = send(&state, signed(40, SECRET)).await;
    assert_eq!(sent.json, serde_json::json!({"seq": 40, "duplicate": true}));
    assert_eq!(page_seqs(&state, "a"), vec![40]);
    assert_eq!(state.ingest.cursor().applied, Offset(40));
    // A bearer token means nothing to a relayed host.
    let req = write("POST", "/rooms/a/messages")
        .header("authorization", "Bearer tok")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(send(&state, req).await.status, StatusCode::UNAUTHORIZED);
}
