//! Property-based tests of everything in ekg that parses what a stranger sends: history page
//! queries, stream resume cursors (`?after=` and `Last-Event-ID`), write bodies, and batch
//! ingest with arbitrary bodies. Whatever the input: no panic, and either a value in range or
//! a clear `4xx` with a JSON error code.
//!
//! Each property runs a few hundred cases in CI. The `#[ignore]`d `*_long` tests run at least
//! a million inputs each:
//! `cargo nextest run -p ekg --release --test parsers --run-ignored only`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::{BufMut, Bytes, BytesMut};
use ekg::config::Mode;
use ekg::http::ApiError;
use ekg::http::history::parse_page_query;
use ekg::ingest::parse::parse_write;
use ekg::rooms::{Cursor, MAX_PAGE, Seq};
use ekg::{AppState, Config, router};
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::test_runner::{Config as Cases, TestCaseError};
use shared::batch::{self, INGEST_PATH};
use shared::{Epoch, Method, Offset};
use tower::ServiceExt;

/// Cases per property in CI.
const SHORT: u32 = 512;
/// Cases per property in the long runs.
const LONG: u32 = 1_000_000;

fn cases(n: u32) -> Cases {
    Cases {
        cases: n,
        failure_persistence: None,
        ..Cases::default()
    }
}

/// Query-string text: the characters that matter to the parser, and anything else.
fn query_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z=&0-9+-]{0,40}",
        "(before|after|limit|x)=[0-9a-z%+-]{0,25}(&(before|after|limit)=[0-9-]{0,25}){0,3}",
        any::<String>(),
    ]
}

fn check_page_query(q: &str) -> Result<(), TestCaseError> {
    match parse_page_query(Some(q)) {
        Ok((_, limit)) => prop_assert!((1..=MAX_PAGE).contains(&limit), "{q:?} -> {limit}"),
        Err(e) => {
            prop_assert_eq!(e.status, StatusCode::BAD_REQUEST, "{:?}", q);
            prop_assert!(["bad_cursor", "bad_limit"].contains(&e.code), "{q:?}: {e}");
            prop_assert!(!e.message.is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(SHORT))]

    #[test]
    fn any_page_query_parses_in_range_or_is_a_clear_400(q in query_text()) {
        check_page_query(&q)?;
    }

    #[test]
    fn a_well_formed_page_query_means_what_it_says(
        seq in any::<u64>(),
        limit in 1..=MAX_PAGE,
        dir in 0..3u8,
        noise in "[a-z]{1,8}=[a-z0-9]{0,8}",
    ) {
        let (q, want) = match dir {
            0 => (format!("before={seq}&limit={limit}&{noise}"), Cursor::Before(Seq(seq))),
            1 => (format!("{noise}&after={seq}&limit={limit}"), Cursor::After(Seq(seq))),
            _ => (format!("limit={limit}"), Cursor::Newest),
        };
        // Unknown parameters are ignored, unless they happen to be a known one.
        prop_assume!(!["before", "after", "limit"].iter().any(|k| noise.starts_with(&format!("{k}="))));
        prop_assert_eq!(parse_page_query(Some(&q)).unwrap(), (want, limit));
    }
}

#[test]
#[ignore = "long run: a million inputs"]
fn any_page_query_parses_in_range_or_is_a_clear_400_long() {
    proptest!(cases(LONG), |(q in query_text())| { check_page_query(&q)?; });
}

/// A standalone host (ready at once, so reads and streams are served). Its SSE keepalive is
/// short so that streams whose response was dropped notice it and end soon.
fn host() -> AppState {
    let config = Config {
        mode: Mode::Standalone {
            token: "parsers-token-0123".into(),
        },
        sse_keepalive: std::time::Duration::from_millis(1),
        ..Config::default()
    };
    AppState::new(config, Default::default())
}

async fn status_and_error(app: &axum::Router, req: Request<Body>) -> (StatusCode, Option<String>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    if status == StatusCode::OK
        && resp
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "text/event-stream")
    {
        // A live stream: the cursor was taken; do not wait for its end.
        return (status, None);
    }
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    (status, json["error"].as_str().map(str::to_owned))
}

/// Cursor text: digits (in and out of range), and anything a header may carry.
fn cursor_text() -> impl Strategy<Value = String> {
    prop_oneof!["[0-9]{0,25}", "[ 0-9a-fA-F+.eE-]{0,12}", "[ -~]{0,30}",]
}

fn check_stream_cursor(
    rt: &tokio::runtime::Runtime,
    app: &axum::Router,
    raw: &str,
    header: bool,
) -> Result<(), TestCaseError> {
    let mut req = Request::get(if header {
        "/rooms/a/sse".to_owned()
    } else {
        let encoded: String = raw
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        format!("/rooms/a/sse?after={encoded}")
    });
    if header {
        req = req.header("last-event-id", raw);
    }
    let (status, error) = rt.block_on(status_and_error(app, req.body(Body::empty()).unwrap()));
    let valid = {
        let t = raw.trim();
        !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) && t.parse::<u64>().is_ok()
    };
    // An empty Last-Event-ID means "no cursor".
    let no_cursor = header && raw.trim().is_empty();
    if valid || no_cursor {
        // The cursor is taken; the stream opens unless every connection slot is in use.
        let opened = status == StatusCode::OK
            || (status == StatusCode::SERVICE_UNAVAILABLE
                && error.as_deref() == Some("too_many_connections"));
        prop_assert!(opened, "{:?}: {} {:?}", raw, status, error);
    } else {
        prop_assert_eq!(status, StatusCode::BAD_REQUEST, "{:?}", raw);
        prop_assert_eq!(error.as_deref(), Some("bad_cursor"), "{:?}", raw);
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn any_stream_cursor_is_taken_or_is_a_clear_400() {
    let rt = runtime();
    let app = router(host());
    proptest!(cases(SHORT), |(raw in cursor_text(), header in any::<bool>())| {
        check_stream_cursor(&rt, &app, &raw, header)?;
    });
}

#[test]
#[ignore = "long run: a million inputs"]
fn any_stream_cursor_is_taken_or_is_a_clear_400_long() {
    let rt = runtime();
    let app = router(host());
    proptest!(cases(LONG), |(raw in cursor_text(), header in any::<bool>())| {
        check_stream_cursor(&rt, &app, &raw, header)?;
    });
}

/// Write bodies: JSON-ish text, arbitrary bytes, and JSON with bytes that are not UTF-8.
fn write_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ {}\\[\\]\":,a-z0-9.eE+-]{0,60}".prop_map(String::into_bytes),
        r#"\{"(id|type|data|ephemeral|text)":("[a-z0-9]{0,8}"|[0-9]{1,20}|true|null|\[\]|\{\})\}"#
            .prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..80),
    ]
}

fn check_write(method: Method, path: &str, body: &[u8]) -> Result<(), TestCaseError> {
    match parse_write(method, path, &Bytes::copy_from_slice(body), 64) {
        Ok(_) => {
            prop_assert!(body.len() <= 64);
            prop_assert!(
                std::str::from_utf8(body).is_ok(),
                "accepted a body that is not UTF-8"
            );
            if method != Method::Delete {
                prop_assert!(
                    serde_json::from_slice::<serde_json::Value>(body).is_ok(),
                    "accepted a body that is not JSON"
                );
            }
        }
        Err(e) => {
            let e = ApiError::from(e);
            prop_assert!(e.status.is_client_error(), "{e}");
            prop_assert!(!e.code.is_empty() && !e.message.is_empty());
        }
    }
    Ok(())
}

fn write_target() -> impl Strategy<Value = (Method, String)> {
    (
        prop_oneof![
            Just(Method::Post),
            Just(Method::Put),
            Just(Method::Delete),
            Just(Method::Patch)
        ],
        prop_oneof![
            Just("/rooms/a/messages".to_owned()),
            Just("/rooms/a/messages/m1".to_owned()),
            Just("/rooms/a/events".to_owned()),
            "/rooms/[a-z/%. -]{0,12}(/messages|/events)?(/[a-z0-9]{0,4})?",
            "[ -~]{0,20}",
        ],
    )
}

proptest! {
    #![proptest_config(cases(SHORT))]

    #[test]
    fn any_write_is_a_room_op_of_utf8_json_or_a_clear_4xx(
        (method, path) in write_target(),
        body in write_body(),
    ) {
        check_write(method, &path, &body)?;
    }
}

#[test]
#[ignore = "long run: a million inputs"]
fn any_write_is_a_room_op_of_utf8_json_or_a_clear_4xx_long() {
    proptest!(cases(LONG), |((method, path) in write_target(), body in write_body())| {
        check_write(method, &path, &body)?;
    });
}

/// An unsigned relayed host (`--insecure-unsigned-ingest`): batches reach the decoder.
fn relayed() -> AppState {
    let config = Config {
        insecure_unsigned_ingest: true,
        max_message_bytes: 256,
        ..Config::default()
    };
    AppState::new(config, Default::default())
}

/// Batch bodies: random bytes, a valid header with random record framing, and valid framing
/// with increasing offsets and random record contents.
fn batch_body() -> impl Strategy<Value = Vec<u8>> {
    let records = proptest::collection::vec(
        (1..5u64, proptest::collection::vec(any::<u8>(), 0..40)),
        0..6,
    );
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..120),
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(|tail| {
            let mut b = batch::encode(Epoch(1), Offset(0), Offset(3), &[]).to_vec();
            b.truncate(b.len() - 4);
            b.put_u32_le(3);
            b.extend_from_slice(&tail);
            b
        }),
        records.prop_map(|records| {
            let mut offset = 0;
            let encoded: Vec<Bytes> = records
                .into_iter()
                .map(|(step, tail)| {
                    offset += step;
                    let mut r = BytesMut::new();
                    r.put_u64_le(offset);
                    r.put_slice(&tail);
                    r.freeze()
                })
                .collect();
            batch::encode(Epoch(1), Offset(0), Offset(offset), &encoded).to_vec()
        }),
    ]
}

/// Send one batch body to `app`, as the first batch of a log never seen before (`epoch`), so
/// one host serves every case: a new log starts it over from `prev = 0`.
fn check_batch(
    rt: &tokio::runtime::Runtime,
    app: &axum::Router,
    epoch: u64,
    mut body: Vec<u8>,
) -> Result<(), TestCaseError> {
    if body.starts_with(b"RFKB") && body.len() >= batch::HEADER_LEN {
        body[8..16].copy_from_slice(&epoch.to_le_bytes());
    }
    let req = Request::post(INGEST_PATH)
        .header("content-type", batch::CONTENT_TYPE)
        .header("x-reflektor-epoch", Epoch(epoch).to_string())
        .header("x-reflektor-offset", "0")
        .body(Body::from(body))
        .unwrap();
    let (status, error) = rt.block_on(status_and_error(app, req));
    match status.as_u16() {
        200 => {}
        400 => prop_assert_eq!(error.as_deref(), Some("bad_batch")),
        401 => prop_assert_eq!(
            error.as_deref(),
            Some("bad_signature"),
            "the header's epoch or prev is not the batch's"
        ),
        other => prop_assert!(false, "unexpected {} {:?}", other, error),
    }
    Ok(())
}

fn run_batches(n: u32) {
    let rt = runtime();
    let app = router(relayed());
    let epoch = std::cell::Cell::new(1u64);
    proptest!(cases(n), |(body in batch_body())| {
        epoch.set(epoch.get() + 1);
        check_batch(&rt, &app, epoch.get(), body)?;
    });
}

#[test]
fn any_batch_body_is_applied_record_by_record_or_a_clear_400() {
    run_batches(SHORT);
}

#[test]
#[ignore = "long run: a million inputs"]
fn any_batch_body_is_applied_record_by_record_or_a_clear_400_long() {
    run_batches(LONG);
}
