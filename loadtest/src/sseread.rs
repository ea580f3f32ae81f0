//! A lean Server-Sent Events client for subscribers: one `GET` with
//! `Accept: text/event-stream`, the response head, then the body de-chunked and split into
//! events in place, in one read buffer per connection. Each event's `data` is handed out as a
//! slice of that buffer: no allocation and no UTF-8 validation per event. Like `wsread.rs`, it
//! exists because the harness shares the cores with the servers it measures, and a
//! general-purpose client (one `reqwest` client per subscriber, hyper's body decoding, a copy
//! of every chunk) costs several times more per event at hundreds of thousands of events per
//! second.
//!
//! Buffer layout, left to right: consumed bytes, decoded body bytes not yet handed out
//! (`d0..d1`), a gap (chunk-size lines already parsed), raw bytes not yet decoded
//! (`raw..len`). Decoding moves a chunk's payload down to `d1` so the decoded bytes are
//! contiguous, except when nothing decoded is pending: then the decoded region simply jumps to
//! the chunk's payload where it lies. A server that sends each event as its own chunk (ekg
//! does) therefore has its events read without any copy at all.
//!
//! Only what a subscriber needs: `200` with a `Transfer-Encoding: chunked` body, a
//! `Content-Length` body, or a body until the connection closes. Lines end with `\n` or
//! `\r\n` (a lone `\r` is not a line end here); an event is dispatched at a blank line if it
//! has `data`; several `data:` lines are joined with `\n` (the only case that copies).
//! Comments (`: ping`) and every other field (`event:`, `id:`, `retry:`) are skipped: the
//! JSON in `data` carries its own `"type"`.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Largest event (and response head) a subscriber accepts.
const MAX_EVENT: usize = 16 << 20;
/// Initial read buffer per connection, and the least free space offered to one read.
const READ_BUFFER: usize = 16 << 10;
/// Longest chunk-size or trailer line.
const MAX_LINE: usize = 1024;

/// One event stream after a `200` head.
pub(crate) struct SseReader {
    stream: TcpStream,
    dec: Decoder,
}

impl SseReader {
    /// Connect to `addr` (from `local` when given) and request `url`
    /// (`http://host:port/path?query`).
    ///
    /// # Errors
    /// The connection failed, or the server did not answer `200`.
    pub(crate) async fn open(addr: SocketAddr, local: Option<IpAddr>, url: &str) -> Result<Self> {
        let stream = crate::http::connect(addr, local).await?;
        Self::start(stream, url).await
    }

    /// Send the request for `url` on `stream` and read the response head.
    ///
    /// # Errors
    /// The server did not answer `200`, or the connection failed.
    pub(crate) async fn start(mut stream: TcpStream, url: &str) -> Result<Self> {
        let (buf, head_end) = crate::http::get_head(
            &mut stream,
            "http://",
            url,
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n",
            READ_BUFFER,
        )
        .await?;
        let body = parse_head(&buf[..head_end], buf.get(head_end..).unwrap_or_default())?;
        Ok(SseReader {
            stream,
            dec: Decoder::new(buf, head_end, body),
        })
    }

    /// The next event's `data`; `Ok(None)` when the stream ended cleanly (the last chunk,
    /// the end of a `Content-Length` body, or the connection closed after a body without
    /// either). Cancel-safe: no bytes are lost if the future is dropped.
    ///
    /// # Errors
    /// A malformed body, an event over 16 MiB, the connection closed inside a chunked or
    /// `Content-Length` body, or an I/O error.
    pub(crate) async fn next(&mut self) -> Result<Option<&[u8]>> {
        loop {
            if let Some(found) = self.dec.event()? {
                return Ok(Some(self.dec.data(found)));
            }
            if self.dec.body == Body::Done {
                return Ok(None);
            }
            self.dec.prepare_read()?;
            if self.stream.read_buf(&mut self.dec.buf).await? == 0 {
                return match self.dec.body {
                    Body::Close => Ok(None),
                    _ => bail!("connection closed inside the response body"),
                };
            }
        }
    }
}

/// Check the head (status `200`) and pick the body framing. `after` is what followed the
/// head, quoted in the error for a refused stream.
fn parse_head(head: &[u8], after: &[u8]) -> Result<Body> {
    let mut lines = head.split(|&b| b == b'\n').map(trim_cr);
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, |&b| b == b' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with(b"HTTP/1.") || code != b"200" {
        let body = &after[..after.len().min(300)];
        bail!(
            "event stream refused: {} {}",
            String::from_utf8_lossy(status_line),
            String::from_utf8_lossy(body)
        );
    }
    let mut body = Body::Close;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // The last coding applied is the one that frames the body.
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                body = Body::Chunked(Chunk::Size);
            }
        } else if name.eq_ignore_ascii_case(b"content-length") && body == Body::Close {
            let len = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .context("bad content-length")?;
            body = if len == 0 {
                Body::Done
            } else {
                Body::Length(len)
            };
        }
    }
    Ok(body)
}

/// How the response body is framed, and where decoding stands in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Chunked(Chunk),
    /// A `Content-Length` body with this many bytes still to come.
    Length(usize),
    /// The body runs until the connection closes.
    Close,
    /// The body has ended (its last chunk, or its last byte).
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's payload, with this many bytes still to come.
    Data(usize),
    /// Expecting the CRLF after a payload.
    DataEnd,
    /// After the last chunk: trailer lines up to a blank one.
    Trailers,
}

/// Where an event's data lies.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    /// One `data:` line: a range of the buffer.
    Slice(Range<usize>),
    /// Several, joined in `multi`.
    Joined,
}

/// The buffer and the decoding state; no I/O, so every byte split can be tested.
struct Decoder {
    buf: Vec<u8>,
    /// Decoded body bytes not yet handed out.
    d0: usize,
    d1: usize,
    /// The start of a line in `d0..=d1` before which no blank line is left to find.
    scan: usize,
    /// Start of the bytes not yet decoded (up to `buf.len()`).
    raw: usize,
    body: Body,
    /// Data of an event with several `data:` lines.
    multi: Vec<u8>,
}

impl Decoder {
    fn new(buf: Vec<u8>, start: usize, body: Body) -> Decoder {
        Decoder {
            buf,
            d0: start,
            d1: start,
            scan: start,
            raw: start,
            body,
            multi: Vec::new(),
        }
    }

    fn data(&self, found: Found) -> &[u8] {
        match found {
            Found::Slice(r) => &self.buf[r],
            Found::Joined => &self.multi,
        }
    }

    /// The next complete event with data among the bytes received so far.
    fn event(&mut self) -> Result<Option<Found>> {
        loop {
            while let Some((block_end, next)) = self.blank_line() {
                let block = self.d0..block_end;
                self.d0 = next;
                self.scan = next;
                if let Some(found) = self.dispatch(block) {
                    return Ok(Some(found));
                }
            }
            if !self.decode()? {
                return Ok(None);
            }
        }
    }

    /// The next blank line in the decoded bytes: (where the event before it ends, where the
    /// next one starts). Moves `scan` past the lines known not to be blank.
    fn blank_line(&mut self) -> Option<(usize, usize)> {
        let b = &self.buf[..self.d1];
        let mut s = self.scan;
        loop {
            match b.get(s..)? {
                [b'\n', ..] => return Some((s, s + 1)),
                [b'\r', b'\n', ..] => return Some((s, s + 2)),
                _ => {}
            }
            let Some(i) = b[s..].iter().position(|&c| c == b'\n') else {
                self.scan = s;
                return None;
            };
            s += i + 1;
            self.scan = s;
        }
    }

    /// The data of the event in `block` (its lines, each ending in `\n`), if it has any.
    fn dispatch(&mut self, block: Range<usize>) -> Option<Found> {
        let mut first: Option<Range<usize>> = None;
        let mut joined = false;
        let mut s = block.start;
        while s < block.end {
            let nl = self.buf[s..block.end]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(block.end, |i| s + i);
            let line_end = if nl > s && self.buf[nl - 1] == b'\r' {
                nl - 1
            } else {
                nl
            };
            let line = s..line_end;
            s = nl + 1;
            let Some(value) = data_value(&self.buf, line) else {
                continue;
            };
            match &first {
                None => first = Some(value),
                Some(f) => {
                    if !joined {
                        self.multi.clear();
                        self.multi.extend_from_slice(&self.buf[f.clone()]);
                        joined = true;
                    }
                    self.multi.push(b'\n');
                    self.multi.extend_from_slice(&self.buf[value]);
                }
            }
        }
        if joined {
            Some(Found::Joined)
        } else {
            first.map(Found::Slice)
        }
    }

    /// Decode what the raw bytes allow; whether anything changed (new decoded bytes or the
    /// end of the body).
    fn decode(&mut self) -> Result<bool> {
        let len = self.buf.len();
        let before = (self.d1, self.body);
        loop {
            match self.body {
                Body::Done => break,
                Body::Close => {
                    self.d1 = len;
                    self.raw = len;
                    break;
                }
                Body::Length(left) => {
                    let take = left.min(len - self.raw);
                    self.d1 += take;
                    self.raw += take;
                    self.body = if take == left {
                        Body::Done
                    } else {
                        Body::Length(left - take)
                    };
                    break;
                }
                Body::Chunked(Chunk::Size) => {
                    let Some(line) = self.line()? else { break };
                    let text = &self.buf[line];
                    let digits = text
                        .split(|&c| c == b';')
                        .next()
                        .unwrap_or_default()
                        .trim_ascii();
                    let size = std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| usize::from_str_radix(d, 16).ok())
                        .with_context(|| {
                            format!("bad chunk size {:?}", String::from_utf8_lossy(text))
                        })?;
                    self.body = Body::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                }
                Body::Chunked(Chunk::Data(left)) => {
                    let take = left.min(len - self.raw);
                    if take == 0 {
                        break;
                    }
                    if self.d0 == self.d1 {
                        // Nothing pending: the payload is read where it lies.
                        self.d0 = self.raw;
                        self.d1 = self.raw;
                        self.scan = self.raw;
                    } else if self.d1 != self.raw {
                        self.buf.copy_within(self.raw..self.raw + take, self.d1);
                    }
                    self.d1 += take;
                    self.raw += take;
                    self.body = Body::Chunked(if take == left {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left - take)
                    });
                }
                Body::Chunked(Chunk::DataEnd) => match self.buf.get(self.raw..self.raw + 2) {
                    None => break,
                    Some(b"\r\n") => {
                        self.raw += 2;
                        self.body = Body::Chunked(Chunk::Size);
                    }
                    Some(_) => bail!("a chunk does not end with CRLF"),
                },
                Body::Chunked(Chunk::Trailers) => {
                    let Some(line) = self.line()? else { break };
                    if line.is_empty() {
                        self.body = Body::Done;
                    }
                }
            }
        }
        Ok((self.d1, self.body) != before)
    }

    /// The CRLF-terminated line at `raw` (without its CRLF), consumed; `None` if incomplete.
    fn line(&mut self) -> Result<Option<Range<usize>>> {
        let rest = &self.buf[self.raw..];
        match crate::http::find(rest, b"\r\n") {
            Some(i) => {
                let line = self.raw..self.raw + i;
                self.raw += i + 2;
                Ok(Some(line))
            }
            None if rest.len() > MAX_LINE => bail!("chunk-size or trailer line too long"),
            None => Ok(None),
        }
    }

    /// Make room for the next read: drop consumed bytes and the gap when they are most of the
    /// buffer, and offer at least [`READ_BUFFER`] of free space.
    fn prepare_read(&mut self) -> Result<()> {
        let len = self.buf.len();
        if self.d0 == self.d1 && self.raw == len {
            self.buf.clear();
            (self.d0, self.d1, self.scan, self.raw) = (0, 0, 0, 0);
        } else {
            let pending = (self.d1 - self.d0) + (len - self.raw);
            if pending > MAX_EVENT {
                bail!("event over {MAX_EVENT} bytes");
            }
            if (len - pending) * 2 >= len {
                let decoded = self.d1 - self.d0;
                self.buf.copy_within(self.d0..self.d1, 0);
                self.buf.copy_within(self.raw..len, decoded);
                self.buf.truncate(pending);
                self.scan -= self.d0;
                (self.d0, self.d1, self.raw) = (0, decoded, decoded);
            }
        }
        if self.buf.capacity() - self.buf.len() < READ_BUFFER {
            self.buf.reserve(READ_BUFFER);
        }
        Ok(())
    }
}

/// The value of a `data` field line (`data:value`, one leading space dropped; a bare `data`
/// is an empty value); `None` for comments and other fields.
fn data_value(buf: &[u8], line: Range<usize>) -> Option<Range<usize>> {
    let l = &buf[line.clone()];
    if l == b"data" {
        return Some(line.end..line.end);
    }
    let rest = l.strip_prefix(b"data:")?;
    let skip = usize::from(rest.first() == Some(&b' '));
    Some(line.start + 5 + skip..line.end)
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A chunked body as ekg's axum/hyper stack sends it: `retry`, a comment, events (each
    /// its own chunk) and the last chunk.
    fn chunked(pieces: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces {
            out.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
            out.extend_from_slice(p);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    fn ekg_stream() -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut pieces: Vec<Vec<u8>> = vec![
            b"retry: 2000\n\n".to_vec(),
            b"event: hello\ndata: {\"type\":\"hello\",\"head\":0}\n\n".to_vec(),
            b": ping\n\n".to_vec(),
        ];
        let mut want = vec![b"{\"type\":\"hello\",\"head\":0}".to_vec()];
        for seq in 1..=3u64 {
            let json = format!("{{\"type\":\"message\",\"seq\":{seq}}}");
            pieces.push(format!("event: message\nid: {seq}\ndata: {json}\n\n").into_bytes());
            want.push(json.into_bytes());
        }
        // Two events in one chunk, and one event over two chunks.
        pieces.push(b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\n".to_vec());
        want.push(b"{\"a\":1}".to_vec());
        want.push(b"{\"b\":2}".to_vec());
        pieces.push(b"event: lagging\nda".to_vec());
        pieces.push(b"ta: {\"type\":\"lagging\"}\n\n".to_vec());
        want.push(b"{\"type\":\"lagging\"}".to_vec());
        let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        (chunked(&refs), want)
    }

    /// Feed `parts` one read at a time, as `next` does, collecting every event; whether the
    /// body ended.
    fn run(body: Body, parts: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
        let mut dec = Decoder::new(Vec::new(), 0, body);
        let mut got = Vec::new();
        for part in parts {
            dec.prepare_read().unwrap();
            dec.buf.extend_from_slice(part);
            while let Some(f) = dec.event().unwrap() {
                got.push(dec.data(f).to_vec());
            }
        }
        (got, dec.body == Body::Done)
    }

    #[test]
    fn events_split_at_every_byte_position_decode_the_same() {
        let (stream, want) = ekg_stream();
        assert_eq!(
            run(Body::Chunked(Chunk::Size), &[&stream]),
            (want.clone(), true)
        );
        for k in 0..=stream.len() {
            let (a, b) = stream.split_at(k);
            assert_eq!(
                run(Body::Chunked(Chunk::Size), &[a, b]),
                (want.clone(), true),
                "split at {k}"
            );
        }
        for k in 0..stream.len() {
            for j in k..=stream.len() {
                let parts = [&stream[..k], &stream[k..j], &stream[j..]];
                assert_eq!(
                    run(Body::Chunked(Chunk::Size), &parts).0,
                    want,
                    "split at {k} and {j}"
                );
            }
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(
            run(Body::Chunked(Chunk::Size), &bytes),
            (want.clone(), true)
        );
    }

    #[test]
    fn one_event_per_chunk_is_read_in_place() {
        let stream = chunked(&[b"data: {\"n\":1}\n\n", b"data: {\"n\":2}\n\n"]);
        let mut dec = Decoder::new(stream, 0, Body::Chunked(Chunk::Size));
        let f = dec.event().unwrap().unwrap();
        assert_eq!(
            f,
            Found::Slice(9..16),
            "no copy: the payload where it arrived"
        );
        assert_eq!(dec.data(f), b"{\"n\":1}");
        let f = dec.event().unwrap().unwrap();
        assert_eq!(dec.data(f), b"{\"n\":2}");
        assert_eq!(dec.event().unwrap(), None);
        assert_eq!(dec.body, Body::Done);
    }

    #[test]
    fn multi_line_data_crlf_lines_comments_and_other_fields() {
        let body = b": comment\r\nretry: 10\r\n\r\nid: 7\nevent: x\ndata:first\ndata: second\n\
                     data\n: between\ndata:  two spaces\n\nfield-without-colon\n\ndata: last\r\n\r\n\
                     data: incomplete\n";
        let (got, done) = run(Body::Close, &[body]);
        assert_eq!(
            got,
            vec![b"first\nsecond\n\n two spaces".to_vec(), b"last".to_vec()]
        );
        assert!(!done, "a body until close ends with the connection");
        let (split, _) = run(Body::Close, &body.chunks(3).collect::<Vec<_>>());
        assert_eq!(split, got);
    }

    #[test]
    fn content_length_bodies_end_at_their_length() {
        let (got, done) = run(Body::Length(15), &[b"data: {\"x\":1}\n\ndata: ignored\n\n"]);
        assert_eq!((got, done), (vec![b"{\"x\":1}".to_vec()], true));
    }

    #[test]
    fn malformed_chunking_is_an_error() {
        let mut dec = Decoder::new(b"zz\r\n".to_vec(), 0, Body::Chunked(Chunk::Size));
        assert!(dec.event().is_err());
        let mut dec = Decoder::new(b"2\r\nabX\r\n".to_vec(), 0, Body::Chunked(Chunk::Size));
        assert!(dec.event().is_err());
    }

    #[test]
    fn heads_pick_the_body_framing() {
        assert_eq!(
            parse_head(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                b""
            )
            .unwrap(),
            Body::Chunked(Chunk::Size)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"").unwrap(),
            Body::Length(5)
        );
        assert_eq!(
            parse_head(
                b"HTTP/1.0 200 OK\r\ncontent-type: text/event-stream\r\n\r\n",
                b""
            )
            .unwrap(),
            Body::Close
        );
        let err = parse_head(b"HTTP/1.1 503 Service Unavailable\r\n\r\n", b"{\"error\"}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("503") && err.contains("{\"error\"}"), "{err}");
    }

    /// Serve one connection: check the request, write `answer` in `parts` (flushed one by
    /// one), then close.
    async fn serve(parts: Vec<Vec<u8>>) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            while crate::http::find(&req, b"\r\n\r\n").is_none() {
                assert!(s.read_buf(&mut req).await.unwrap() > 0);
            }
            for p in parts {
                s.write_all(&p).await.unwrap();
                s.flush().await.unwrap();
            }
            String::from_utf8(req).unwrap()
        });
        (addr, server)
    }

    #[tokio::test]
    async fn reads_a_chunked_event_stream_from_a_socket_to_its_end() {
        let (stream, want) = ekg_stream();
        let mut parts = vec![
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                .to_vec(),
        ];
        parts.extend(stream.chunks(7).map(<[u8]>::to_vec));
        let (addr, server) = serve(parts).await;
        let mut r = SseReader::open(addr, None, &format!("http://{addr}/rooms/a/sse?after=3"))
            .await
            .unwrap();
        for w in &want {
            assert_eq!(r.next().await.unwrap(), Some(&w[..]));
        }
        assert_eq!(
            r.next().await.unwrap(),
            None,
            "the last chunk ends the stream"
        );
        let req = server.await.unwrap();
        assert!(
            req.starts_with("GET /rooms/a/sse?after=3 HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(req.contains("Accept: text/event-stream\r\n"), "{req}");
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_chunk_is_an_error_and_a_refusal_is_an_error() {
        let (addr, _server) = serve(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\ndata: {}\n\n".to_vec(),
        ])
        .await;
        let mut r = SseReader::open(addr, None, &format!("http://{addr}/s"))
            .await
            .unwrap();
        assert_eq!(r.next().await.unwrap(), Some(&b"{}"[..]));
        assert!(
            r.next().await.is_err(),
            "closed 6 bytes short of the chunk's end"
        );

        let (addr, _server) = serve(vec![
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 32\r\nretry-after: 1\r\n\r\n\
              {\"error\":\"too_many_connections\"}"
                .to_vec(),
        ])
        .await;
        let err = SseReader::open(addr, None, &format!("http://{addr}/s"))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("503"), "{err}");
    }
}
