//! Delivery latency as a metric: ekg's `ekg_delivery_latency_seconds` per transport (acceptance
//! by reflektor to the write to a client; live events only) and reflektor's
//! `reflektor_delivery_latency_seconds` per host (acceptance to the host's acknowledgement).

use tests::{SseClient, Stack, WsClient, wait_for};

use crate::util::{DEADLINE, message};

/// The value of the sample `series` (name and labels exactly as exported) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

async fn metrics(url: &str) -> String {
    reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn delivery_latency_is_recorded_per_transport_for_live_events_and_per_host_at_reflektor() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path(), 1, &[], &[]).await.unwrap();
    let ekg = &stack.ekgs[0];
    let ws = WsClient::connect(&format!("{}/rooms/lat/ws", ekg.svc.ws_url()))
        .await
        .unwrap();
    let sse = SseClient::connect(&format!("{}/rooms/lat/sse", ekg.svc.url()), None)
        .await
        .unwrap();
    for c in [&ws.rec, &sse.rec] {
        wait_for("hello", DEADLINE, || async {
            !c.of_type("hello").is_empty()
        })
        .await
        .unwrap();
    }
    for n in 1..=5 {
        stack
            .reflektor
            .post("/rooms/lat/messages", &message(n))
            .await
            .unwrap()
            .expect("202");
    }
    for c in [&ws.rec, &sse.rec] {
        wait_for("five events", DEADLINE, || async { c.seqs().len() >= 5 })
            .await
            .unwrap();
    }

    let text = metrics(&ekg.svc.url()).await;
    for transport in ["ws", "sse"] {
        let count = format!("ekg_delivery_latency_seconds_count{{transport=\"{transport}\"}}");
        assert_eq!(sample(&text, &count), Some(5.0), "{transport}:\n{text}");
        let within =
            format!("ekg_delivery_latency_seconds_bucket{{transport=\"{transport}\",le=\"10\"}}");
        assert_eq!(
            sample(&text, &within),
            Some(5.0),
            "all five within 10 s:\n{text}"
        );
        let sum = format!("ekg_delivery_latency_seconds_sum{{transport=\"{transport}\"}}");
        assert!(
            sample(&text, &sum).is_some_and(|s| (0.0..50.0).contains(&s)),
            "{text}"
        );
    }

    // A client that resumes from the start gets the five as backlog: not counted, since their
    // age says how long the client was away, not how fast the pipeline is.
    let late = WsClient::connect(&format!("{}/rooms/lat/ws?after=0", ekg.svc.ws_url()))
        .await
        .unwrap();
    wait_for("the backlog", DEADLINE, || async {
        late.rec.seqs().len() >= 5
    })
    .await
    .unwrap();
    let text = metrics(&ekg.svc.url()).await;
    assert_eq!(
        sample(
            &text,
            "ekg_delivery_latency_seconds_count{transport=\"ws\"}"
        ),
        Some(5.0),
        "backlog frames are not counted:\n{text}"
    );

    // reflektor: each record acknowledged by the host, once.
    let hosts = stack.reflektor.hosts().await.unwrap();
    let id = hosts["hosts"][0]["id"].as_str().unwrap().to_owned();
    let series = format!("reflektor_delivery_latency_seconds_count{{host=\"{id}\"}}");
    let url = stack.reflektor.svc.url();
    let count = wait_for("reflektor's acknowledgement latency", DEADLINE, || async {
        sample(&metrics(&url).await, &series).filter(|c| *c >= 5.0)
    })
    .await
    .unwrap();
    assert_eq!(count, 5.0);
    let text = metrics(&url).await;
    let within = format!("reflektor_delivery_latency_seconds_bucket{{host=\"{id}\",le=\"10\"}}");
    assert_eq!(sample(&text, &within), Some(5.0), "{text}");
}
