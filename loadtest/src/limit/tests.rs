#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use super::*;
use crate::http::{Conn, format_request};
use crate::scenario::subscriber::{frame_type, num_after};
use crate::wsread::{Event, WsReader};

/// Start `kind` on a thread of its own (it serves until the test process ends).
fn serve(kind: Kind) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || match kind {
        Kind::FanoutThread => thread::run(listener),
        Kind::FanoutTask => task::run(listener, false),
        Kind::FanoutCoalesce => task::run(listener, true),
        Kind::Accept202 => accept::run(listener),
    });
    addr
}

async fn subscribe(addr: SocketAddr, room: &str) -> WsReader {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut ws = WsReader::handshake(tcp, &format!("ws://{addr}/rooms/{room}/ws"))
        .await
        .unwrap();
    match ws.next().await.unwrap() {
        Some(Event::Message(m)) => assert_eq!(frame_type(m), Some(&b"hello"[..])),
        other => panic!("expected hello, got {other:?}"),
    }
    ws
}

async fn post(conn: &mut Conn, addr: SocketAddr, room: &str, n: u64) -> u64 {
    let mut req = Vec::new();
    let body = format!(r#"{{"n":{n},"t":1,"pad":"x"}}"#);
    format_request(
        &mut req,
        "POST",
        &format!("/rooms/{room}/messages"),
        addr,
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(conn.request(&req).await.unwrap(), 202);
    num_after(&conn.body, b"\"id\":\"").unwrap()
}

/// Every message of a room reaches each of its subscribers once, in order, with the room's
/// seq; another room's subscriber sees none of them.
async fn fans_out_in_order(kind: Kind) {
    let addr = serve(kind);
    let mut subs = vec![subscribe(addr, "a").await, subscribe(addr, "a").await];
    let mut other = subscribe(addr, "b").await;
    let mut conn = Conn::open(addr, None).await.unwrap();
    for n in 0..300 {
        assert_eq!(post(&mut conn, addr, "a", n).await, n + 1, "seq per room");
    }
    for ws in &mut subs {
        for n in 0..300u64 {
            let Some(Event::Message(m)) = ws.next().await.unwrap() else {
                panic!("stream ended at {n}");
            };
            assert_eq!(frame_type(m), Some(&b"message"[..]));
            assert_eq!(num_after(m, b"\"seq\":"), Some(n + 1));
            assert_eq!(num_after(m, b"\"n\":"), Some(n));
        }
    }
    assert_eq!(post(&mut conn, addr, "b", 7).await, 1);
    let Some(Event::Message(m)) = other.next().await.unwrap() else {
        panic!("room b's subscriber got nothing");
    };
    assert_eq!(num_after(m, b"\"n\":"), Some(7), "only room b's message");
}

#[tokio::test]
async fn the_one_thread_server_fans_out_in_order() {
    fans_out_in_order(Kind::FanoutThread).await;
}

#[tokio::test]
async fn the_task_per_connection_server_fans_out_in_order() {
    fans_out_in_order(Kind::FanoutTask).await;
}

#[tokio::test]
async fn the_coalescing_server_fans_out_in_order() {
    fans_out_in_order(Kind::FanoutCoalesce).await;
}

#[tokio::test]
async fn the_bare_server_answers_202_to_posts_only() {
    let addr = serve(Kind::Accept202);
    let mut conn = Conn::open(addr, None).await.unwrap();
    assert_eq!(post(&mut conn, addr, "r", 0).await, 1);
    assert_eq!(post(&mut conn, addr, "r", 1).await, 2);
    let mut req = Vec::new();
    format_request(&mut req, "GET", "/x", addr, &[], b"");
    assert_eq!(conn.request(&req).await.unwrap(), 405);
}

#[test]
fn request_heads_are_classified() {
    let publish = b"POST /rooms/r1/messages HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello";
    let (head, len) = wire::parse(publish).unwrap().unwrap();
    assert!(matches!(head, wire::Head::Publish { ref room, length: 5 } if room == "r1"));
    assert_eq!(
        len,
        publish.len() - 5,
        "the head ends where the body starts"
    );
    let (head, _) = wire::parse(
        b"GET /rooms/r2/ws HTTP/1.1\r\nupgrade: websocket\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap()
    .unwrap();
    assert!(
        matches!(head, wire::Head::Subscribe { ref room, ref accept } if room == "r2" && accept == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert!(wire::parse(b"GET /rooms/r2/ws HTT").unwrap().is_none());
    let (head, _) = wire::parse(b"GET /other HTTP/1.1\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(matches!(head, wire::Head::Other));
}
