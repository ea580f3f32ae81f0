//! `accept-202`: a bare hyper HTTP/1.1 server (the stack reflektor's listener is built on)
//! answering `202 {"id":"N"}` to every POST once its body is read, `405` to anything else.
//! Nothing is logged, stored or forwarded: the ceiling for an intake on this machine.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub(super) fn run(listener: std::net::TcpListener) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        let ids = Arc::new(AtomicU64::new(0));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _nodelay = stream.set_nodelay(true);
            let ids = ids.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(req, ids.clone()));
                let _closed = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn answer(
    req: Request<Incoming>,
    ids: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    if req.method() != Method::POST {
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return Ok(resp);
    }
    if req.into_body().collect().await.is_err() {
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(resp);
    }
    let id = ids.fetch_add(1, Ordering::Relaxed) + 1;
    *resp.body_mut() = Full::new(Bytes::from(format!("{{\"id\":\"{id}\"}}")));
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
