//! Rooms, history and paging, through the public room API.

use std::sync::Arc;
use std::time::Duration;

use super::testing::Recorded;
use super::*;
use crate::rooms::room::now_ms;
use bytes::Bytes;

fn rooms(per_room: usize) -> Rooms {
    Rooms::new(
        Retention {
            per_room,
            max_age: Duration::from_secs(3600),
        },
        1000,
    )
}

fn room(name: &str) -> RoomId {
    RoomId::parse(name).unwrap()
}

fn post(rooms: &Rooms, r: &str, seq: u64, id: &str) {
    let op = RoomOp::Post {
        id: Some(MessageId::parse(id).unwrap()),
        data: Bytes::from(format!(r#"{{"id":"{id}","text":"m{seq}"}}"#)),
    };
    rooms.apply(&room(r), Seq(seq), now_ms(), &op).unwrap();
}

fn op(rooms: &Rooms, r: &str, seq: u64, op: RoomOp) -> Outcome {
    rooms.apply(&room(r), Seq(seq), now_ms(), &op).unwrap()
}

fn json(b: &Bytes) -> serde_json::Value {
    serde_json::from_slice(b).unwrap()
}

fn page(rooms: &Rooms, r: &str, cursor: Cursor, limit: usize) -> (Vec<u64>, Page) {
    let p = rooms.get(&room(r)).unwrap().page(cursor, limit);
    let seqs = p
        .messages
        .iter()
        .map(|m| json(m)["seq"].as_u64().unwrap())
        .collect();
    (seqs, p)
}

#[test]
fn an_empty_room_has_an_empty_page() {
    let rooms = rooms(100);
    let _reader = Recorded::new(&rooms, &room("a"), None);
    let (seqs, p) = page(&rooms, "a", Cursor::Newest, 50);
    assert!(seqs.is_empty());
    assert!(!p.has_more);
    assert_eq!((p.next_before, p.next_after), (None, None));
}

#[test]
fn exactly_one_page_has_no_more() {
    let rooms = rooms(1000);
    for i in 1..=50 {
        post(&rooms, "a", i * 2, &format!("m{i}"));
    }
    let (seqs, p) = page(&rooms, "a", Cursor::Newest, 50);
    assert_eq!(seqs, (1..=50).map(|i| i * 2).collect::<Vec<_>>());
    assert!(!p.has_more);
    assert_eq!((p.next_before, p.next_after), (None, None));
}

#[test]
fn paging_back_walks_oldest_first_pages_to_the_start() {
    let rooms = rooms(1000);
    for i in 1..=120 {
        post(&rooms, "a", i, &format!("m{i}"));
    }
    let (seqs, p) = page(&rooms, "a", Cursor::Newest, 50);
    assert_eq!(seqs, (71..=120).collect::<Vec<_>>());
    assert!(p.has_more);
    assert_eq!(p.next_before, Some(Seq(71)));
    assert_eq!(p.next_after, None);
    let (seqs, p) = page(&rooms, "a", Cursor::Before(Seq(71)), 50);
    assert_eq!(seqs, (21..=70).collect::<Vec<_>>());
    assert_eq!(
        (p.next_before, p.next_after),
        (Some(Seq(21)), Some(Seq(70)))
    );
    let (seqs, p) = page(&rooms, "a", Cursor::Before(Seq(21)), 50);
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    assert!(!p.has_more);
    assert_eq!(p.next_before, None);
    // Forward from the start.
    let (seqs, p) = page(&rooms, "a", Cursor::After(Seq(0)), 50);
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    assert!(p.has_more);
    assert_eq!(p.next_after, Some(Seq(50)));
    assert_eq!(p.next_before, None);
}

#[test]
fn before_the_first_and_after_the_head_are_empty() {
    let rooms = rooms(1000);
    for i in 10..=15 {
        post(&rooms, "a", i, &format!("m{i}"));
    }
    let (seqs, p) = page(&rooms, "a", Cursor::Before(Seq(10)), 50);
    assert!(seqs.is_empty() && !p.has_more);
    let (seqs, p) = page(&rooms, "a", Cursor::After(Seq(15)), 50);
    assert!(seqs.is_empty() && !p.has_more);
    let (seqs, _) = page(&rooms, "a", Cursor::After(Seq(999)), 50);
    assert!(seqs.is_empty());
}

#[test]
fn a_deleted_message_in_the_middle_of_a_page_never_appears() {
    let rooms = rooms(1000);
    for i in 1..=10 {
        post(&rooms, "a", i, &format!("m{i}"));
    }
    let del = |id: &str| RoomOp::Delete {
        id: MessageId::parse(id).unwrap(),
    };
    assert_eq!(
        op(&rooms, "a", 11, del("m5")),
        Outcome::Pushed(EventKind::Delete)
    );
    // Deleting again is idempotent: no event, head unchanged.
    assert_eq!(op(&rooms, "a", 12, del("m5")), Outcome::Unchanged);
    assert_eq!(rooms.get(&room("a")).unwrap().head(), Seq(11));
    let (seqs, p) = page(&rooms, "a", Cursor::Before(Seq(9)), 4);
    assert_eq!(seqs, vec![3, 4, 6, 7, 8][1..].to_vec());
    assert!(p.has_more);
    let (seqs, _) = page(&rooms, "a", Cursor::Newest, 50);
    assert_eq!(seqs, vec![1, 2, 3, 4, 6, 7, 8, 9, 10]);
    assert_eq!(rooms.get(&room("a")).unwrap().info().messages, 9);
}

#[test]
fn an_updated_message_appears_in_its_latest_form_where_it_was() {
    let rooms = rooms(1000);
    post(&rooms, "a", 1, "x");
    post(&rooms, "a", 2, "y");
    let put = RoomOp::Put {
        id: MessageId::parse("x").unwrap(),
        data: Bytes::from_static(br#"{"text":"edited"}"#),
    };
    assert_eq!(op(&rooms, "a", 3, put), Outcome::Pushed(EventKind::Update));
    let p = rooms.get(&room("a")).unwrap().page(Cursor::Newest, 50);
    let first = json(&p.messages[0]);
    assert_eq!(first["type"], "message");
    assert_eq!(first["seq"], 1);
    assert_eq!(first["id"], "x");
    assert_eq!(first["data"]["text"], "edited");
    assert_eq!(first["updated"], 3);
    assert!(json(&p.messages[1]).get("updated").is_none());
}

#[test]
fn updating_an_unknown_message_is_refused_and_changes_nothing() {
    let rooms = rooms(1000);
    post(&rooms, "a", 1, "x");
    let put = RoomOp::Put {
        id: MessageId::parse("nope").unwrap(),
        data: Bytes::from_static(b"{}"),
    };
    let err = rooms.apply(&room("a"), Seq(2), now_ms(), &put).unwrap_err();
    assert!(matches!(err, RoomError::UnknownMessage { .. }), "{err:?}");
    assert_eq!(rooms.get(&room("a")).unwrap().head(), Seq(1));
    let dup = RoomOp::Post {
        id: Some(MessageId::parse("x").unwrap()),
        data: Bytes::from_static(b"{}"),
    };
    assert!(matches!(
        rooms.apply(&room("a"), Seq(3), now_ms(), &dup),
        Err(RoomError::DuplicateId { .. })
    ));
}

#[test]
fn frames_have_the_documented_shape() {
    let rooms = rooms(1000);
    let sub = Recorded::new(&rooms, &room("a"), None);
    post(&rooms, "a", 7, "m1");
    let live = sub.live();
    let f = &live[0];
    assert_eq!(f.seq, Some(Seq(7)));
    let v: serde_json::Value = serde_json::from_str(f.json()).unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["seq"], 7);
    assert_eq!(v["id"], "m1");
    assert_eq!(v["data"], serde_json::json!({"id": "m1", "text": "m7"}));
    assert!(v["ts"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(f.sse.starts_with(b"event: message\nid: 7\ndata: {"));
    assert_eq!(
        sub.hello(),
        serde_json::json!({"type":"hello","room":"a","head":0,"oldest":1})
    );
}

#[test]
fn a_resume_gets_exactly_the_events_after_its_cursor_then_live_ones() {
    let rooms = rooms(1000);
    for i in 1..=5 {
        post(&rooms, "a", i * 10, &format!("m{i}"));
    }
    let sub = Recorded::new(&rooms, &room("a"), Some(Seq(20)));
    assert!(sub.reset().is_none());
    assert_eq!(sub.backlog(), vec![30, 40, 50]);
    assert_eq!(sub.hello()["head"], 50);
    post(&rooms, "a", 60, "m6");
    assert_eq!(sub.live_seqs(), vec![60]);
    assert_eq!(rooms.get(&room("a")).unwrap().info().subscribers, 1);
    drop(sub);
    assert_eq!(rooms.get(&room("a")).unwrap().info().subscribers, 0);
}

#[test]
fn a_cursor_behind_trimmed_history_gets_a_reset_and_the_whole_log() {
    let rooms = rooms(3);
    for i in 1..=6 {
        post(&rooms, "a", i, &format!("m{i}"));
    }
    let r = rooms.get(&room("a")).unwrap();
    assert_eq!(r.retained(), (3, 3));
    let sub = Recorded::new(&rooms, &room("a"), Some(Seq(2)));
    assert_eq!(
        sub.reset().unwrap(),
        serde_json::json!({"type":"reset","reason":"history_trimmed","oldest":4})
    );
    assert_eq!(sub.backlog(), vec![4, 5, 6]);
    // Right at the edge: nothing after 3 was trimmed.
    let sub = Recorded::new(&rooms, &room("a"), Some(Seq(3)));
    assert!(sub.reset().is_none());
    assert_eq!(sub.backlog().len(), 3);
    // A cursor from the future.
    let sub = Recorded::new(&rooms, &room("a"), Some(Seq(99)));
    assert_eq!(sub.reset().unwrap()["reason"], "cursor_ahead");
    assert!(sub.backlog().is_empty());
}

#[test]
fn a_cursor_ahead_of_the_room_but_within_the_log_waits_for_the_rest() {
    let rooms = rooms(1000);
    post(&rooms, "a", 1, "m1");
    // The log holds up to 10; this host has applied only 1 (it is rebuilding).
    rooms.note_log_head(shared::Offset(10));
    let sub = Recorded::new(&rooms, &room("a"), Some(Seq(5)));
    assert!(sub.reset().is_none(), "a cursor within the log is valid");
    assert!(sub.backlog().is_empty());
    post(&rooms, "a", 5, "m5");
    post(&rooms, "a", 6, "m6");
    assert_eq!(
        sub.live_seqs(),
        vec![6],
        "the client gets what it has not seen, once"
    );
    // Beyond anything the log holds: a cursor from another log.
    let sub = Recorded::new(&rooms, &room("a"), Some(Seq(11)));
    assert!(sub.reset().is_some());
}

#[test]
fn ephemeral_events_are_pushed_and_never_stored() {
    let rooms = rooms(1000);
    post(&rooms, "a", 1, "m1");
    let live = Recorded::new(&rooms, &room("a"), None);
    let typing = RoomOp::Event {
        name: "typing".into(),
        data: Bytes::from_static(br#"{"who":"ann"}"#),
        ephemeral: true,
    };
    assert_eq!(
        op(&rooms, "a", 2, typing),
        Outcome::Pushed(EventKind::Event)
    );
    let frames = live.live();
    let v: serde_json::Value = serde_json::from_str(frames[0].json()).unwrap();
    assert_eq!(v["event"], "typing");
    assert_eq!(v["ephemeral"], true);
    let r = rooms.get(&room("a")).unwrap();
    assert_eq!(r.head(), Seq(2));
    assert_eq!(r.retained(), (1, 1));
    let sub = Recorded::new(&rooms, &room("a"), Some(Seq(0)));
    assert_eq!(sub.backlog(), vec![1]);
    assert!(sub.reset().is_none());
}

#[test]
fn history_older_than_the_age_limit_is_dropped() {
    let rooms = Rooms::new(
        Retention {
            per_room: 100,
            max_age: Duration::from_secs(60),
        },
        10,
    );
    let old = now_ms() - 120_000;
    let msg = |id: &str| RoomOp::Post {
        id: Some(MessageId::parse(id).unwrap()),
        data: Bytes::from_static(b"{}"),
    };
    rooms.apply(&room("a"), Seq(1), old, &msg("old")).unwrap();
    assert_eq!(rooms.get(&room("a")).unwrap().retained(), (0, 0));
    rooms
        .apply(&room("a"), Seq(2), now_ms(), &msg("new"))
        .unwrap();
    assert_eq!(rooms.get(&room("a")).unwrap().retained(), (1, 1));
    assert_eq!(rooms.stored_events(), 1);
    assert_eq!(rooms.stored_messages(), 1);
}

fn typing() -> RoomOp {
    RoomOp::Event {
        name: "typing".into(),
        data: Bytes::from_static(b"{}"),
        ephemeral: true,
    }
}

#[test]
fn the_sweeper_removes_only_idle_empty_unwatched_rooms() {
    let rooms = rooms(10);
    // Written, but nothing retained (an ephemeral event only).
    op(&rooms, "idle", 1, typing());
    let watched = Recorded::new(&rooms, &room("watched"), None);
    op(&rooms, "watched", 2, typing());
    post(&rooms, "full", 3, "m1");
    rooms.fan_out_now();
    let later = now_ms() + registry::ROOM_IDLE_AFTER.as_millis() as u64 + 1000;
    assert_eq!(rooms.sweep(now_ms()), 0, "recently touched rooms stay");
    assert_eq!(rooms.sweep(later), 1);
    assert!(rooms.get(&room("idle")).is_none());
    assert!(rooms.get(&room("watched")).is_some());
    assert!(rooms.get(&room("full")).is_some());
    assert_eq!(rooms.held(), 2, "the removed room gave its slot back");
    drop(watched);
    assert_eq!(rooms.sweep(later + 120_000), 1);
    assert_eq!(rooms.len(), 1);
}

#[test]
fn the_room_limit_refuses_new_rooms_with_events_only() {
    let rooms = Rooms::new(
        Retention {
            per_room: 10,
            max_age: Duration::from_secs(60),
        },
        2,
    );
    post(&rooms, "a", 1, "m1");
    post(&rooms, "b", 2, "m2");
    let msg = RoomOp::Post {
        id: None,
        data: Bytes::from_static(b"{}"),
    };
    let err = rooms.apply(&room("c"), Seq(3), now_ms(), &msg).unwrap_err();
    assert_eq!(err, RoomError::TooManyRooms { max: 2 });
    assert!(
        rooms.get(&room("c")).is_none(),
        "a refused write leaves nothing behind"
    );
    post(&rooms, "a", 4, "m4");
    assert_eq!(rooms.held(), 2);
}

#[test]
fn readers_never_take_room_slots_and_cost_nothing_once_gone() {
    let rooms = Rooms::new(
        Retention {
            per_room: 10,
            max_age: Duration::from_secs(60),
        },
        2,
    );
    // Many readers of rooms without events.
    let readers: Vec<Recorded> = (0..100)
        .map(|i| Recorded::new(&rooms, &room(&format!("r{i}")), Some(Seq(0))))
        .collect();
    assert_eq!(rooms.len(), 100);
    assert_eq!(rooms.held(), 0);
    // Writes to new rooms still succeed up to the limit, and one of them is a read room.
    post(&rooms, "r7", 1, "m1");
    post(&rooms, "new", 2, "m2");
    assert_eq!(readers[7].live_seqs(), vec![1]);
    assert_eq!(rooms.held(), 2);
    let msg = RoomOp::Post {
        id: None,
        data: Bytes::from_static(b"{}"),
    };
    assert_eq!(
        rooms.apply(&room("r8"), Seq(3), now_ms(), &msg),
        Err(RoomError::TooManyRooms { max: 2 })
    );
    // Readers leaving remove the rooms they alone kept.
    drop(readers);
    assert_eq!(rooms.len(), 2);
    assert!(rooms.get(&room("r7")).is_some() && rooms.get(&room("new")).is_some());
}

#[test]
fn a_new_log_resets_subscribers_and_closes_their_stream() {
    let rooms = rooms(10);
    post(&rooms, "a", 5, "m1");
    let live = Recorded::new(&rooms, &room("a"), None);
    rooms.clear_for_new_log();
    let frames = live.live();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].seq, None);
    assert!(frames[0].json().contains(r#""reason":"new_log""#));
    assert!(live.ended());
    assert!(rooms.is_empty());
    assert_eq!(rooms.stored_events(), 0);
    assert_eq!(rooms.held(), 0);
    // The room comes back fresh and takes lower seqs from the new log.
    post(&rooms, "a", 1, "m1");
    assert_eq!(rooms.get(&room("a")).unwrap().head(), Seq(1));
    assert!(live.live().is_empty(), "nothing after the end");
}

#[test]
fn a_subscriber_sees_every_event_exactly_once_across_concurrent_writes_and_fan_outs() {
    let rooms = rooms(100_000);
    let r = room("race");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Every cursor below is within the room when its subscriber joins.
    for i in 1..=500 {
        post(&rooms, "race", i, &format!("m{i}"));
    }
    let writer = {
        let rooms = rooms.clone();
        std::thread::spawn(move || {
            for i in 501..=2000 {
                post(&rooms, "race", i, &format!("m{i}"));
            }
        })
    };
    let fanout = {
        let (rooms, done) = (rooms.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                rooms.fan_out_now();
                std::thread::yield_now();
            }
        })
    };
    let mut subs = Vec::new();
    for k in 0..50 {
        subs.push((k, Recorded::new(&rooms, &r, Some(Seq(k * 10)))));
    }
    writer.join().unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    fanout.join().unwrap();
    for (k, sub) in subs {
        assert!(sub.reset().is_none());
        let mut seen = sub.backlog();
        seen.extend(sub.live_seqs());
        let start = k * 10 + 1;
        assert_eq!(seen, (start..=2000).collect::<Vec<_>>(), "subscriber {k}");
    }
}

/// Rough memory cost of retained history: run with
/// `cargo nextest run -p ekg --run-ignored only measure_history` (release for timings).
#[test]
#[ignore = "measurement; prints numbers"]
fn measure_history_memory_and_paging_speed() {
    fn rss_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }
    let per_room = 1000;
    let room_count = 200;
    let rooms = rooms(per_room);
    let payload = format!(r#"{{"user":"someone","text":"{}"}}"#, "x".repeat(114));
    assert_eq!(payload.len(), 142);
    let before = rss_bytes();
    let mut seq = 0;
    for i in 0..per_room {
        for r in 0..room_count {
            seq += 1;
            let op = RoomOp::Post {
                id: Some(MessageId::parse(&format!("m{i}")).unwrap()),
                data: Bytes::from(payload.clone()),
            };
            rooms
                .apply(&room(&format!("room{r}")), Seq(seq), now_ms(), &op)
                .unwrap();
        }
    }
    let after = rss_bytes();
    let events = (per_room * room_count) as u64;
    println!(
        "retained {events} message events ({}-byte payload): {:.0} bytes per event (RSS growth {} MiB)",
        payload.len(),
        (after - before) as f64 / events as f64,
        (after - before) >> 20
    );
    let r = rooms.get(&room("room7")).unwrap();
    let mut samples = Vec::new();
    for k in 0..2000u64 {
        let cursor = Cursor::Before(Seq(100_000 + (k * 37) % 100_000));
        let t = std::time::Instant::now();
        let p = r.page(cursor, 50);
        samples.push(t.elapsed());
        assert!(p.messages.len() <= 50);
    }
    samples.sort();
    println!(
        "page of 50: p50 {:?}, p99 {:?}",
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100]
    );
    let _keep = Arc::clone(&r);
}
