use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tests::{Ekg, WsClient, wait_for};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::util::DEADLINE;

/// A client that stops reading is closed with 4008 "lagging"; the server's memory stays
/// bounded and the other clients of the room keep receiving everything.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_the_room_keeps_flowing() {
    let dir = tempfile::tempdir().unwrap();
    let ekg = Ekg::start(
        dir.path(),
        &["--standalone", "--token", "tok", "--send-queue", "32"],
    )
    .await
    .unwrap();
    let url = format!("{}/rooms/big/ws", ekg.svc.ws_url());
    let healthy = WsClient::connect(&url).await.unwrap();
    let (stalled, _) = WsClient::connect_stalled(&url).await.unwrap();
    wait_for("hello", DEADLINE, || async {
        !healthy.of_type("hello").is_empty()
    })
    .await
    .unwrap();
    let rss_before = ekg.svc.rss_kib().unwrap();

    let client = reqwest::Client::new();
    let pad = "x".repeat(4000);
    let total = 3000u64;
    for n in 1..=total {
        let resp = client
            .post(format!("{}/rooms/big/messages", ekg.svc.url()))
            .bearer_auth("tok")
            .json(&json!({"id": format!("m{n}"), "text": pad}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "post {n}: {}", resp.status());
    }
    wait_for("the healthy client has every event", DEADLINE, || async {
        healthy.seqs().len() as u64 >= total
    })
    .await
    .unwrap();
    let seqs = healthy.seqs();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));

    // 12 MB went to the room; the stalled client's share must not pile up in the server.
    let rss_after = ekg.svc.rss_kib().unwrap();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "server memory grew from {rss_before} KiB to {rss_after} KiB with a stalled client"
    );

    // Reading what the stalled socket holds ends in the lagging close.
    let mut ws = WebSocketStream::from_raw_socket(stalled, Role::Client, None).await;
    let close = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Close(frame) = msg {
                return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
            }
        }
        None
    })
    .await
    .expect("the stalled client's stream ends");
    assert_eq!(close, Some((4008, "lagging".to_owned())));

    let metrics = client
        .get(format!("{}/metrics", ekg.svc.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ekg_lagging_disconnects_total") && !l.ends_with(" 0")),
        "lagging disconnect counted"
    );
}
