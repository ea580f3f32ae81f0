//! Unit tests of the pump, the drain schedule and cursor parsing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::admit::parse_cursor;
use super::drain::{DrainTurn, RECONNECT_JITTER};
use super::pump::{MAX_BATCH, Pump, PumpEnd};
use crate::rooms::{Frame, Retention, RoomId, RoomOp, Rooms, Seq};

fn rooms(send_queue: usize) -> Rooms {
    let retention = Retention {
        per_room: 10_000,
        max_age: Duration::from_secs(3600),
    };
    let _ = send_queue;
    Rooms::new(retention, 100)
}

fn post(rooms: &Rooms, room: &RoomId, seq: u64) {
    let op = RoomOp::Post {
        id: None,
        data: Bytes::from_static(b"{}"),
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let now_ms = u64::try_from(now_ms).unwrap();
    rooms.apply(room, Seq(seq), now_ms, &op).unwrap();
}

fn kinds_and_seqs(batch: &VecDeque<Arc<Frame>>) -> Vec<(String, Option<u64>)> {
    batch
        .iter()
        .map(|f| {
            let v: serde_json::Value = serde_json::from_str(f.json()).unwrap();
            (v["type"].as_str().unwrap().to_string(), f.seq.map(Seq::get))
        })
        .collect()
}

#[tokio::test]
async fn the_pump_sends_hello_then_the_backlog_then_live_frames_in_seq_order() {
    let rooms = rooms(64);
    let room = RoomId::parse("r").unwrap();
    for s in 1..=5 {
        post(&rooms, &room, s * 10);
    }
    let pump = Pump::subscribe(&rooms, &room, Some(Seq(20)), 64);
    post(&rooms, &room, 60);
    post(&rooms, &room, 70);

    let mut batch = VecDeque::new();
    pump.take_batch(&mut batch);
    assert_eq!(
        kinds_and_seqs(&batch),
        vec![
            ("hello".into(), None),
            ("message".into(), Some(30)),
            ("message".into(), Some(40)),
            ("message".into(), Some(50)),
        ]
    );
    batch.clear();
    {
        rooms.fan_out_now();
        pump.fill(true).await
    }
    .unwrap();
    pump.take_batch(&mut batch);
    assert_eq!(
        kinds_and_seqs(&batch),
        vec![("message".into(), Some(60)), ("message".into(), Some(70))]
    );
}

#[tokio::test]
async fn a_large_backlog_goes_out_in_bounded_batches_before_any_live_frame() {
    let rooms = rooms(8);
    let room = RoomId::parse("big").unwrap();
    let n = (MAX_BATCH * 2 + 10) as u64;
    for s in 1..=n {
        post(&rooms, &room, s);
    }
    let pump = Pump::subscribe(&rooms, &room, Some(Seq(0)), 8);
    post(&rooms, &room, n + 1);
    {
        rooms.fan_out_now();
        pump.fill(true).await
    }
    .unwrap();

    let mut all = Vec::new();
    let mut batch = VecDeque::new();
    loop {
        pump.take_batch(&mut batch);
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= MAX_BATCH);
        all.extend(batch.drain(..).filter_map(|f| f.seq.map(Seq::get)));
    }
    assert_eq!(all, (1..=n + 1).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_receiver_that_falls_a_whole_send_queue_behind_is_lagging() {
    let rooms = rooms(4);
    let room = RoomId::parse("lag").unwrap();
    let pump = Pump::subscribe(&rooms, &room, None, 4);
    for s in 1..=6 {
        post(&rooms, &room, s);
    }
    assert_eq!(
        {
            rooms.fan_out_now();
            pump.fill(true).await
        },
        Err(PumpEnd::Lagging)
    );
}

#[tokio::test]
async fn a_pump_queue_that_the_socket_does_not_drain_overflows_into_lagging() {
    let rooms = rooms(4);
    let room = RoomId::parse("slow").unwrap();
    let pump = Pump::subscribe(&rooms, &room, None, 4);
    for s in 1..=3 {
        post(&rooms, &room, s);
    }
    {
        rooms.fan_out_now();
        pump.fill(true).await
    }
    .unwrap();
    for s in 4..=5 {
        post(&rooms, &room, s);
    }
    // Nothing was taken: the queue holds 3, two more overflow its 4 slots.
    assert_eq!(
        {
            rooms.fan_out_now();
            pump.fill(true).await
        },
        Err(PumpEnd::Lagging)
    );
}

#[tokio::test]
async fn a_retired_room_delivers_its_reset_then_ends_the_pump() {
    let rooms = rooms(8);
    let room = RoomId::parse("old").unwrap();
    post(&rooms, &room, 1);
    let pump = Pump::subscribe(&rooms, &room, None, 8);
    rooms.clear_for_new_log();
    assert_eq!(
        {
            rooms.fan_out_now();
            pump.fill(true).await
        },
        Err(PumpEnd::RoomClosed)
    );
    let rest = pump.into_remaining();
    let json: Vec<&str> = rest.iter().map(|f| f.json()).collect();
    assert_eq!(json.len(), 2, "{json:?}");
    assert!(json[0].contains(r#""type":"hello""#));
    assert!(json[1].contains(r#""type":"reset""#), "{json:?}");
}

#[test]
fn drain_turns_spread_over_the_window_and_jitter_below_the_bound() {
    let window = Duration::from_secs(5);
    assert_eq!(DrainTurn::from_sample(0, window).delay, Duration::ZERO);
    assert_eq!(DrainTurn::from_sample(u64::MAX, window).delay, window);
    let mid = DrainTurn::from_sample(1 << 63, window).delay;
    assert!(mid > Duration::from_millis(2400) && mid < Duration::from_millis(2600));
    let max_ms = u64::try_from(RECONNECT_JITTER.as_millis()).unwrap();
    let turns: Vec<DrainTurn> = (0..1000).map(|_| DrainTurn::draw(window)).collect();
    assert!(
        turns
            .iter()
            .all(|t| t.delay <= window && t.after_ms <= max_ms)
    );
    // Uniform enough: every fifth of the window gets some connections.
    for fifth in 0..5u32 {
        let (lo, hi) = (window * fifth / 5, window * (fifth + 1) / 5);
        let n = turns
            .iter()
            .filter(|t| t.delay >= lo && t.delay < hi)
            .count();
        assert!(n > 100, "fifth {fifth}: {n}");
    }
}

#[test]
fn cursors_are_decimal_seqs_and_anything_else_is_a_bad_cursor() {
    assert_eq!(parse_cursor("42", "after").unwrap(), Seq(42));
    assert_eq!(parse_cursor("0", "after").unwrap(), Seq(0));
    for bad in [
        "",
        " ",
        "-1",
        "abc",
        "1.5",
        "0x10",
        "99999999999999999999999",
    ] {
        let err = parse_cursor(bad, "after").unwrap_err();
        assert_eq!(err.status, 400, "{bad:?}");
        assert_eq!(err.code, "bad_cursor", "{bad:?}");
    }
}

/// A sink that records what it is asked to do, and is not ready every other poll.
#[derive(Default)]
struct RecordingSink {
    sent: Vec<axum::extract::ws::Message>,
    flushes: usize,
    polls: usize,
}

impl futures_util::Sink<axum::extract::ws::Message> for RecordingSink {
    type Error = axum::Error;

    fn poll_ready(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), axum::Error>> {
        self.polls += 1;
        if self.polls.is_multiple_of(7) {
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(Ok(()))
    }

    fn start_send(
        mut self: std::pin::Pin<&mut Self>,
        item: axum::extract::ws::Message,
    ) -> Result<(), axum::Error> {
        self.sent.push(item);
        Ok(())
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), axum::Error>> {
        self.flushes += 1;
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), axum::Error>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_websocket_batch_is_fed_whole_and_flushed_once_sharing_the_frame_bytes() {
    use super::Transport;
    use super::metrics::ConnectionMetrics;
    use super::ws::Outgoing;

    let frames: Vec<Arc<Frame>> = (1..=100)
        .map(|s| {
            Arc::new(Frame::event(
                Seq(s),
                "message",
                format!(r#"{{"seq":{s}}}"#).as_bytes(),
            ))
        })
        .collect();
    let mut out = Outgoing::default();
    out.batch.extend(frames.iter().cloned());
    out.ping_due = true;
    let mut sink = RecordingSink::default();
    let metrics = ConnectionMetrics::new(Transport::Ws);
    // The sink is not ready now and then: the write resumes where it stopped.
    std::future::poll_fn(|cx| out.poll_write(cx, &mut sink, &metrics))
        .await
        .unwrap();
    assert!(!out.has_work());
    assert_eq!(sink.sent.len(), 101);
    assert!(matches!(sink.sent[0], axum::extract::ws::Message::Ping(_)));
    assert_eq!(sink.flushes, 1, "one flush for the whole batch");
    for (msg, frame) in sink.sent[1..].iter().zip(&frames) {
        let axum::extract::ws::Message::Text(text) = msg else {
            panic!("not text: {msg:?}");
        };
        // The same bytes as the frame's (a refcount, not a copy).
        assert_eq!(text.as_str().as_ptr(), frame.ws.as_str().as_ptr());
    }
}
