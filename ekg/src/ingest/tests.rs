//! Ingest through the router: batches, replayed writes, standalone writes.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use shared::batch::{self, IngestAck};
use shared::sign::{Signed, Signer, unix_ms};
use shared::{Epoch, Method, Offset, Record};
use tower::ServiceExt;

use crate::config::{Config, Mode};
use crate::rooms::testing::Recorded;
use crate::rooms::{Cursor, RoomId, Seq};
use crate::state::AppState;
use crate::{rooms::now_ms, router};

const SECRET: &str = "s3cret";

/// A relayed host signed with `secret`, or taking unsigned ingest (`--insecure-unsigned-ingest`).
fn state(secret: Option<&str>) -> AppState {
    with_config(Config {
        secrets: secret.map(str::to_owned).into_iter().collect(),
        insecure_unsigned_ingest: secret.is_none(),
        ..Config::default()
    })
}

fn with_config(config: Config) -> AppState {
    let config = Config {
        max_message_bytes: 1024,
        ..config
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
    } else {
        req = req
            .header("x-reflektor-epoch", Epoch(epoch).to_string())
            .header("x-reflektor-offset", prev.to_string());
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
    assert_eq!(sent.json["error"], "signature_required");
    let sent = send(&state, batch_request(7, 0, 1, &records, Some("guess"))).await;
    assert_eq!(sent.status, StatusCode::UNAUTHORIZED);
    assert_eq!(sent.json["error"], "bad_signature");
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
        .header("content-type", batch::CONTENT_TYPE)
        .header("x-reflektor-epoch", "0000000000000007")
        .header("x-reflektor-offset", "0")
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
    let sub = Recorded::new(&state.rooms, &RoomId::parse("a").unwrap(), None);
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
    assert_eq!(sub.live_seqs(), vec![4]);
}

#[tokio::test]
async fn a_batch_ahead_of_what_was_applied_is_a_409_with_the_ack() {
    let state = state(Some(SECRET));
    ingest(&state, 0, 2, &[msg(1, "a", "m1"), msg(2, "a", "m2")]).await;
    let sent = ingest(&state, 5, 7, &[msg(6, "a", "m6"), msg(7, "a", "m7")]).await;
    assert_eq!(sent.status, StatusCode::CONFLICT);
    assert_eq!(sent.json["error"], "out_of_order");
    assert_eq!(ack(&sent).applied, Offset(2));
    assert_eq!(ack(&sent).epoch, Epoch(7));
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
    let live = Recorded::new(&state.rooms, &RoomId::parse("a").unwrap(), None);
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
    let frames = live.live();
    assert_eq!(frames.len(), 1, "only the reset");
    assert!(frames[0].json().contains(r#""type":"reset""#));
    assert!(live.ended());
    assert_eq!(page_seqs(&state, "a"), vec![1]);
    assert_eq!(state.ingest.cursor().epoch, Epoch(8));
}

#[tokio::test]
async fn ephemeral_events_are_pushed_but_never_in_history() {
    let state = state(Some(SECRET));
    let room = RoomId::parse("a").unwrap();
    let live = Recorded::new(&state.rooms, &room, None);
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
    assert_eq!(live.live_seqs(), vec![1, 2, 3]);
    let sub = Recorded::new(&state.rooms, &room, Some(Seq(0)));
    assert_eq!(sub.backlog(), vec![1, 3]);
    assert_eq!(sub.hello()["head"], 3);
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

/// A replayed write as reflektor sends it: signed for its method, target, epoch and offset.
fn replayed(
    method: &str,
    target: &str,
    epoch: u64,
    offset: u64,
    body: &str,
    secret: &str,
) -> Request<Body> {
    let mut req = write(method, target);
    for (name, value) in Signer::new(secret.as_bytes()).headers(
        method,
        target,
        Epoch(epoch),
        Offset(offset),
        body.as_bytes(),
    ) {
        req = req.header(name, value);
    }
    req.body(Body::from(body.to_owned())).unwrap()
}

fn post(offset: u64, id: &str) -> Request<Body> {
    replayed(
        "POST",
        "/rooms/a/messages",
        7,
        offset,
        &format!(r#"{{"id":"{id}"}}"#),
        SECRET,
    )
}

#[tokio::test]
async fn replayed_writes_are_signed_and_applied_once_at_their_offset() {
    let state = state(Some(SECRET));
    let unsigned = write("POST", "/rooms/a/messages")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(
        send(&state, unsigned).await.status,
        StatusCode::UNAUTHORIZED
    );
    let forged = replayed("POST", "/rooms/a/messages", 7, 1, "{}", "wrong");
    assert_eq!(send(&state, forged).await.status, StatusCode::UNAUTHORIZED);
    let sent = send(&state, post(1, "r1")).await;
    assert_eq!(
        (sent.status, sent.json),
        (StatusCode::OK, serde_json::json!({"seq": 1}))
    );
    let sent = send(&state, post(1, "r1")).await;
    assert_eq!(sent.json, serde_json::json!({"seq": 1, "duplicate": true}));
    assert_eq!(page_seqs(&state, "a"), vec![1]);
    assert_eq!(state.ingest.cursor().applied, Offset(1));
    // A bearer token means nothing to a relayed host.
    let req = write("POST", "/rooms/a/messages")
        .header("authorization", "Bearer tok")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(send(&state, req).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_replayed_write_that_would_skip_offsets_is_a_409_with_the_host_position() {
    let state = state(Some(SECRET));
    assert_eq!(send(&state, post(1, "m1")).await.status, StatusCode::OK);
    let sent = send(&state, post(3, "m3")).await;
    assert_eq!(sent.status, StatusCode::CONFLICT);
    assert_eq!(sent.json["error"], "out_of_order");
    // The body reads as a batch acknowledgement: resend from applied + 1.
    assert_eq!(ack(&sent).applied, Offset(1));
    assert_eq!(ack(&sent).epoch, Epoch(7));
    assert_eq!(page_seqs(&state, "a"), vec![1]);
    assert_eq!(send(&state, post(2, "m2")).await.status, StatusCode::OK);
    assert_eq!(send(&state, post(3, "m3")).await.status, StatusCode::OK);
    assert_eq!(page_seqs(&state, "a"), vec![1, 2, 3]);
    // A fresh host is rebuilt from the start, never from wherever reflektor stands.
    let fresh = self::state(Some(SECRET));
    let sent = send(&fresh, post(40, "m40")).await;
    assert_eq!(sent.status, StatusCode::CONFLICT);
    assert_eq!(ack(&sent).applied, Offset(0));
    assert!(fresh.rooms.is_empty());
}

#[tokio::test]
async fn a_signed_prev_lets_a_replayed_write_follow_a_gap_in_the_log() {
    let state = state(Some(SECRET));
    let body = r#"{"id":"m40"}"#;
    let after_gap = |prev: u64, signed_prev: u64| {
        // Records 1..=39 were trimmed before this host got them: reflektor says so, signed.
        let signed = Signed {
            method: "POST",
            target: "/rooms/a/messages",
            epoch: Epoch(7),
            offset: Offset(40),
            prev: Some(Offset(signed_prev)),
            timestamp_ms: unix_ms(),
        };
        write("POST", "/rooms/a/messages")
            .header("x-reflektor-epoch", Epoch(7).to_string())
            .header("x-reflektor-offset", "40")
            .header("x-reflektor-prev", prev.to_string())
            .header("x-reflektor-timestamp", signed.timestamp_ms.to_string())
            .header(
                "x-reflektor-signature",
                Signer::new(SECRET.as_bytes()).sign(&signed, body.as_bytes()),
            )
            .body(Body::from(body))
            .unwrap()
    };
    // A prev the signature does not cover cannot make a host skip offsets.
    let sent = send(&state, after_gap(0, 39)).await;
    assert_eq!(sent.status, StatusCode::UNAUTHORIZED);
    assert_eq!(state.ingest.cursor().applied, Offset(0));
    let sent = send(&state, after_gap(0, 0)).await;
    assert_eq!(
        (sent.status, sent.json),
        (StatusCode::OK, serde_json::json!({"seq": 40}))
    );
    // A prev at or above the offset is nonsense.
    let mut req = after_gap(40, 40);
    req.headers_mut()
        .insert("x-reflektor-prev", "41".parse().unwrap());
    assert_eq!(send(&state, req).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_replayed_write_refused_on_its_merits_consumes_its_offset() {
    let state = state(Some(SECRET));
    let bad_json = replayed("POST", "/rooms/a/messages", 7, 1, "{not json", SECRET);
    let sent = send(&state, bad_json).await;
    assert_eq!(
        (sent.status, sent.json["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_json"))
    );
    let ghost = replayed("PUT", "/rooms/a/messages/ghost", 7, 2, "{}", SECRET);
    assert_eq!(send(&state, ghost).await.status, StatusCode::NOT_FOUND);
    let not_utf8 = {
        let body: &[u8] = b"{\"id\":\"x\",\"t\":\"\xff\"}";
        let mut req = write("POST", "/rooms/a/messages");
        for (name, value) in Signer::new(SECRET.as_bytes()).headers(
            "POST",
            "/rooms/a/messages",
            Epoch(7),
            Offset(3),
            body,
        ) {
            req = req.header(name, value);
        }
        req.body(Body::from(body)).unwrap()
    };
    let sent = send(&state, not_utf8).await;
    assert_eq!(
        (sent.status, sent.json["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_json"))
    );
    assert_eq!(state.ingest.cursor().applied, Offset(3));
    assert_eq!(send(&state, post(4, "m4")).await.status, StatusCode::OK);
    assert_eq!(page_seqs(&state, "a"), vec![4]);
}

#[tokio::test]
async fn a_refusal_that_is_not_the_records_fault_consumes_nothing() {
    let state = with_config(Config {
        secrets: vec![SECRET.into()],
        max_rooms: 1,
        ..Config::default()
    });
    assert_eq!(send(&state, post(1, "m1")).await.status, StatusCode::OK);
    let other_room = replayed("POST", "/rooms/b/messages", 7, 2, "{}", SECRET);
    let sent = send(&state, other_room).await;
    assert_eq!(sent.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sent.json["error"], "too_many_rooms");
    assert_eq!(state.ingest.cursor().applied, Offset(1));
    assert_eq!(
        send(&state, post(3, "m3")).await.status,
        StatusCode::CONFLICT
    );
    // In a batch: the records before it apply, the batch stops there, and a batch that
    // starts with it is refused whole (so reflektor backs off).
    let batch = [msg(2, "a", "m2"), msg(3, "c", "m3"), msg(4, "a", "m4")];
    let sent = ingest(&state, 1, 4, &batch).await;
    assert_eq!(sent.status, StatusCode::OK);
    assert_eq!(ack(&sent).applied, Offset(2));
    assert!(ack(&sent).rejected.is_empty());
    let sent = ingest(&state, 2, 4, &batch[1..]).await;
    assert_eq!(sent.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sent.json["error"], "too_many_rooms");
    assert_eq!(state.ingest.cursor().applied, Offset(2));
    assert_eq!(page_seqs(&state, "a"), vec![1, 2]);
}

#[tokio::test]
async fn a_delivery_from_a_log_the_host_left_cannot_wipe_it() {
    let state = state(Some(SECRET));
    ingest(&state, 0, 2, &[msg(1, "a", "m1"), msg(2, "a", "m2")]).await;
    let new_log = send(
        &state,
        batch_request(8, 0, 1, &[msg(1, "a", "n1")], Some(SECRET)),
    )
    .await;
    assert_eq!(new_log.status, StatusCode::OK);
    // The old log's deliveries, re-sent (or from a reflektor still on it): refused, no wipe.
    let old = send(
        &state,
        batch_request(7, 2, 3, &[msg(3, "a", "m3")], Some(SECRET)),
    )
    .await;
    assert_eq!(old.status, StatusCode::CONFLICT);
    assert_eq!(old.json["error"], "old_epoch");
    assert_eq!(ack(&old).epoch, Epoch(8));
    assert_eq!(ack(&old).applied, Offset(1));
    let replay = replayed("POST", "/rooms/a/messages", 7, 1, "{}", SECRET);
    assert_eq!(send(&state, replay).await.json["error"], "old_epoch");
    assert_eq!(state.ingest.cursor().epoch, Epoch(8));
    assert_eq!(page_seqs(&state, "a"), vec![1]);
}

#[tokio::test]
async fn a_delivery_outside_the_signature_window_is_refused() {
    let state = state(Some(SECRET));
    let body = batch::encode(Epoch(7), Offset(0), Offset(1), &[msg(1, "a", "m1")]);
    let sent_at = unix_ms() - 6 * 60 * 1000;
    let signed = Signed {
        method: "POST",
        target: batch::INGEST_PATH,
        epoch: Epoch(7),
        offset: Offset(0),
        prev: None,
        timestamp_ms: sent_at,
    };
    let req = Request::post(batch::INGEST_PATH)
        .header("content-type", batch::CONTENT_TYPE)
        .header("x-reflektor-epoch", Epoch(7).to_string())
        .header("x-reflektor-offset", "0")
        .header("x-reflektor-timestamp", sent_at.to_string())
        .header(
            "x-reflektor-signature",
            Signer::new(SECRET.as_bytes()).sign(&signed, &body),
        )
        .body(Body::from(body))
        .unwrap();
    let sent = send(&state, req).await;
    assert_eq!(sent.status, StatusCode::UNAUTHORIZED);
    assert_eq!(sent.json["error"], "stale_delivery");
    assert!(state.rooms.is_empty());
}

#[tokio::test]
async fn any_configured_secret_is_accepted_so_a_secret_rotates_without_downtime() {
    let state = with_config(Config {
        secrets: vec!["new-secret".into(), "old-secret".into()],
        ..Config::default()
    });
    let old = replayed("POST", "/rooms/a/messages", 7, 1, "{}", "old-secret");
    assert_eq!(send(&state, old).await.status, StatusCode::OK);
    let new = replayed("POST", "/rooms/a/messages", 7, 2, "{}", "new-secret");
    assert_eq!(send(&state, new).await.status, StatusCode::OK);
    let other = replayed("POST", "/rooms/a/messages", 7, 3, "{}", "third");
    assert_eq!(send(&state, other).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_signed_delivery_cannot_be_sent_to_another_path_or_as_another_method() {
    let state = state(Some(SECRET));
    let mut other_path = replayed("POST", "/rooms/a/messages", 7, 1, "{}", SECRET);
    *other_path.uri_mut() = "/rooms/b/messages".parse().unwrap();
    let sent = send(&state, other_path).await;
    assert_eq!(
        (sent.status, sent.json["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("bad_signature"))
    );
    ingest(&state, 0, 1, &[msg(1, "a", "m1")]).await;
    let mut other_method = replayed("PUT", "/rooms/a/messages/m1", 7, 2, "{}", SECRET);
    *other_method.method_mut() = axum::http::Method::DELETE;
    assert_eq!(
        send(&state, other_method).await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut other_query = replayed("POST", "/rooms/a/messages?x=1", 7, 2, "{}", SECRET);
    *other_query.uri_mut() = "/rooms/a/messages?x=2".parse().unwrap();
    assert_eq!(
        send(&state, other_query).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(page_seqs(&state, "a"), vec![1]);
}

#[tokio::test]
async fn a_host_without_a_secret_or_the_explicit_flag_takes_nothing() {
    let state = AppState::new(Config::default(), Default::default());
    let sent = send(
        &state,
        batch_request(7, 0, 1, &[msg(1, "a", "m1")], Some(SECRET)),
    )
    .await;
    assert_eq!(
        (sent.status, sent.json["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("no_secret"))
    );
    let sent = send(&state, post(1, "m1")).await;
    assert_eq!(sent.status, StatusCode::UNAUTHORIZED);
    assert!(state.rooms.is_empty());
}

#[tokio::test]
async fn ingest_headers_are_checked_before_the_body_is_read() {
    let state = with_config(Config {
        secrets: vec![SECRET.into()],
        max_ingest_requests: 1,
        ..Config::default()
    });
    // Wrong content type for a batch.
    let mut req = batch_request(7, 0, 1, &[msg(1, "a", "m1")], Some(SECRET));
    req.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    let sent = send(&state, req).await;
    assert_eq!(sent.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A declared length over the limit: refused without reading (the body here never ends).
    let (_tx, never) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
    let endless = Body::from_stream(tokio_stream_from(never));
    let mut req = post(1, "m1");
    *req.body_mut() = endless;
    req.headers_mut().insert(
        "content-length",
        (crate::ingest::MAX_REPLAYED_BYTES + 1)
            .to_string()
            .parse()
            .unwrap(),
    );
    let sent = send(&state, req).await;
    assert_eq!(sent.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Every ingest slot in use: 503 with Retry-After, before any body is read.
    let slot = state.ingest.admit().unwrap();
    let resp = router(state.clone()).oneshot(post(1, "m1")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    drop(slot);
    assert_eq!(send(&state, post(1, "m1")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_a_408() {
    let state = with_config(Config {
        secrets: vec![SECRET.into()],
        body_read_timeout: std::time::Duration::from_millis(100),
        ..Config::default()
    });
    let (_tx, never) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
    let mut req = post(1, "m1");
    *req.body_mut() = Body::from_stream(tokio_stream_from(never));
    let sent = send(&state, req).await;
    assert_eq!(sent.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(sent.json["error"], "body_timeout");
    // The slot it held is free again.
    assert!(state.ingest.admit().is_ok());
}

/// A body stream fed by a channel (it never ends while the sender lives).
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<axum::body::Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<axum::body::Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
