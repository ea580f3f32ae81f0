//! A minimal HTTP/1.1 keep-alive client for the load paths.
//!
//! The harness shares two cores with the servers it measures, so the request path must cost as
//! little as possible: a request is a pre-formatted byte buffer written to one connection, and
//! the answer is read into a reused buffer (status line, `Content-Length` or chunked body). No
//! pipelining: one request in flight per connection, which is what an API server's pool does.
//! Control-plane calls (adding a host, polling lag) use `reqwest` instead.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How long one request may take before the connection counts as broken.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response head or body the client accepts.
const MAX_RESPONSE: usize = 16 << 20;

/// Connect to `addr`, binding the local end to `local` first when given.
pub(crate) async fn connect(addr: SocketAddr, local: Option<IpAddr>) -> Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    if let Some(ip) = local {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("bind {ip}"))?;
    }
    let stream = tokio::time::timeout(REQUEST_TIMEOUT, socket.connect(addr))
        .await
        .context("connect timed out")?
        .with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Format a request. `headers` are extra `(name, value)` pairs.
pub(crate) fn format_request(
    buf: &mut Vec<u8>,
    method: &str,
    path: &str,
    host: SocketAddr,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    use std::io::Write;
    buf.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(buf, "{method} {path} HTTP/1.1\r\nhost: {host}\r\n");
    for (k, v) in headers {
        let _ = write!(buf, "{k}: {v}\r\n");
    }
    if !body.is_empty() || method != "GET" {
        let _ = write!(buf, "content-length: {}\r\n", body.len());
    }
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(body);
}

/// One keep-alive connection.
pub(crate) struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    /// The body of the last response.
    pub(crate) body: Vec<u8>,
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr, local: Option<IpAddr>) -> Result<Conn> {
        Ok(Conn {
            stream: connect(addr, local).await?,
            rbuf: BytesMut::with_capacity(8192),
            body: Vec::new(),
        })
    }

    /// Send one formatted request and read its answer; the status code (body in `self.body`).
    pub(crate) async fn request(&mut self, req: &[u8]) -> Result<u16> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(req))
            .await
            .context("request timed out")?
    }

    async fn exchange(&mut self, req: &[u8]) -> Result<u16> {
        self.stream.write_all(req).await.context("write request")?;
        // Head.
        let head_end = loop {
            if let Some(i) = find(&self.rbuf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head =
            std::str::from_utf8(&self.rbuf[..head_end]).context("response head is not UTF-8")?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line in {:?}", head.lines().next()))?;
        let mut length = None;
        let mut chunked = false;
        for line in head.lines().skip(1) {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = Some(v.parse::<usize>().context("bad content-length")?);
            } else if k.eq_ignore_ascii_case("transfer-encoding")
                && v.eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
        self.rbuf.advance(head_end);
        self.body.clear();
        if chunked {
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.rbuf, b"\r\n") {
                        break i;
                    }
                    self.fill().await?;
                };
                let size_str = std::str::from_utf8(&self.rbuf[..line_end]).context("chunk size")?;
                let size =
                    usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
                        .context("bad chunk size")?;
                self.rbuf.advance(line_end + 2);
                while self.rbuf.len() < size + 2 {
                    self.fill().await?;
                }
                self.body.extend_from_slice(&self.rbuf[..size]);
                self.rbuf.advance(size + 2);
                if size == 0 {
                    break;
                }
                if self.body.len() > MAX_RESPONSE {
                    bail!("response body too large");
                }
            }
        } else {
            let len = length.unwrap_or(0);
            if len > MAX_RESPONSE {
                bail!("response body too large");
            }
            while self.rbuf.len() < len {
                self.fill().await?;
            }
            self.body.extend_from_slice(&self.rbuf[..len]);
            self.rbuf.advance(len);
        }
        Ok(status)
    }

    async fn fill(&mut self) -> Result<()> {
        if self.rbuf.len() > MAX_RESPONSE {
            bail!("response too large");
        }
        self.rbuf.reserve(8192);
        let n = self
            .stream
            .read_buf(&mut self.rbuf)
            .await
            .context("read response")?;
        if n == 0 {
            bail!("connection closed by server");
        }
        Ok(())
    }
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A JSON body `{"n":k,"pad":"...","t":<unix µs>}` of exactly `size` bytes where possible.
pub(crate) fn message_body(buf: &mut Vec<u8>, t_micros: u64, n: u64, size: usize) {
    use std::io::Write;
    buf.clear();
    let _ = write!(buf, "{{\"n\":{n},\"t\":{t_micros},\"pad\":\"");
    let fixed = buf.len() + 2;
    buf.resize(buf.len() + size.saturating_sub(fixed), b'x');
    buf.extend_from_slice(b"\"}");
}

/// Microseconds since the Unix epoch (the clock shared by publisher and subscribers).
pub(crate) fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Send `GET` for `url` (`scheme` + `host:port/path?query`) with `extra` header lines (each
/// ending in `\r\n`) and read the response head. Returns the buffer (the head, plus whatever
/// of the body arrived with it) and where the head ends; the caller checks the status.
///
/// # Errors
/// `url` does not start with `scheme`, the head is over 64 KiB, or the connection failed.
pub(crate) async fn get_head(
    stream: &mut TcpStream,
    scheme: &str,
    url: &str,
    extra: &str,
    capacity: usize,
) -> Result<(Vec<u8>, usize)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix(scheme)
        .with_context(|| format!("not a {scheme} URL: {url}"))?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(capacity);
    loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            return Ok((buf, i + 4));
        }
        if buf.len() > 64 << 10 {
            anyhow::bail!("response head over 64 KiB");
        }
        if stream.read_buf(&mut buf).await? == 0 {
            anyhow::bail!("connection closed before the response head");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_bodies_have_the_requested_size_and_parse() {
        let mut b = Vec::new();
        message_body(&mut b, 1_700_000_000_000_000, 12, 100);
        assert_eq!(b.len(), 100);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["n"], 12);
        assert_eq!(v["t"], 1_700_000_000_000_000u64);
    }

    #[tokio::test]
    async fn reads_content_length_and_chunked_answers_on_one_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 10\r\n\r\n{\"id\":\"1\"}")
                .await
                .unwrap();
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .await
                .unwrap();
        });
        let mut c = Conn::open(addr, None).await.unwrap();
        let mut req = Vec::new();
        format_request(&mut req, "POST", "/x", addr, &[], b"{}");
        assert_eq!(c.request(&req).await.unwrap(), 202);
        assert_eq!(c.body, b"{\"id\":\"1\"}");
        format_request(&mut req, "GET", "/y", addr, &[], b"");
        assert_eq!(c.request(&req).await.unwrap(), 200);
        assert_eq!(c.body, b"abcde");
    }
}
