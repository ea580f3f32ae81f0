//! Reading records from segment files (off the runtime, in `spawn_blocking`).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use shared::Offset;

use super::ReadError;
use super::segment::{self, FRAME_HEADER_LEN, HEADER_LEN};
use super::state::{State, read_lock};

/// Read-ahead buffer for scanning a segment.
const READ_BUFFER: usize = 256 << 10;

/// What a read asked for and has collected so far.
struct Want {
    /// Next offset to return.
    cur: u64,
    head: u64,
    max_records: usize,
    max_bytes: usize,
    /// Every record read so far, back to back: one allocation per read, not per record.
    buf: BytesMut,
    /// Where each record sits in `buf`.
    records: Vec<Range<usize>>,
}

impl Want {
    fn full(&self) -> bool {
        self.records.len() >= self.max_records || self.cur > self.head
    }

    /// The segment holding `cur` is gone (retention): what was read so far, or `Trimmed`.
    fn trimmed(self, state: &State) -> Result<Vec<Bytes>, ReadError> {
        if self.records.is_empty() {
            Err(ReadError::Trimmed {
                oldest: state.oldest(),
            })
        } else {
            Ok(self.into_records())
        }
    }

    /// The records read, as slices of one shared buffer.
    fn into_records(self) -> Vec<Bytes> {
        let buf = self.buf.freeze();
        self.records.into_iter().map(|r| buf.slice(r)).collect()
    }
}

/// Records from `from` up to `head` within the limits (at least one), across segments.
pub(super) fn read(
    state: &State,
    from: Offset,
    head: Offset,
    max_records: usize,
    max_bytes: usize,
) -> Result<Vec<Bytes>, ReadError> {
    let mut want = Want {
        cur: from.0,
        head: head.0,
        max_records,
        max_bytes,
        buf: BytesMut::with_capacity(max_bytes.clamp(4096, READ_BUFFER)),
        records: Vec::new(),
    };
    while !want.full() {
        let (segment, next_base) = {
            let segments = read_lock(&state.segments);
            let segment = segments
                .range(..=want.cur)
                .next_back()
                .map(|(base, entry)| (*base, entry.path.clone()));
            let next_base = segments.range(want.cur + 1..).next().map(|(base, _)| *base);
            (segment, next_base)
        };
        let Some((base, path)) = segment else {
            return want.trimmed(state);
        };
        if want.cur < state.oldest().0 {
            return want.trimmed(state);
        }
        let file = match state.cfg.fs.open_read(&path) {
            Ok(file) => file,
            // Retention deleted it since we looked.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return want.trimmed(state);
            }
            Err(e) => return Err(ReadError::Io(format!("{}: {e}", path.display()))),
        };
        let stopped = read_segment(state, file, base, &path, next_base.is_some(), &mut want)?;
        if stopped || want.full() {
            break;
        }
        match next_base {
            Some(next) if next == want.cur => {}
            Some(next) => {
                return Err(ReadError::Corrupt {
                    segment: path,
                    position: 0,
                    detail: format!(
                        "segment ends before offset {}, but the next segment starts at {next}",
                        want.cur
                    ),
                });
            }
            None => break,
        }
    }
    Ok(want.into_records())
}

/// Scan one segment for `want`. Returns true when the limits stopped the read.
fn read_segment(
    state: &State,
    file: File,
    base: u64,
    path: &Path,
    sealed: bool,
    want: &mut Want,
) -> Result<bool, ReadError> {
    let corrupt = |position: u64, detail: String| ReadError::Corrupt {
        segment: PathBuf::from(path),
        position,
        detail,
    };
    let io_error = |e: io::Error| ReadError::Io(format!("{}: {e}", path.display()));
    let mut header = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut header, 0)
        .map_err(|e| corrupt(0, format!("reading the header: {e}")))?;
    segment::check_header(&header, state.epoch, base).map_err(|d| corrupt(0, d))?;

    let (mut expected, mut pos) = state.hint(base, want.cur).unwrap_or((base, HEADER_LEN));
    let mut reader = BufReader::with_capacity(READ_BUFFER, file);
    reader.seek(SeekFrom::Start(pos)).map_err(io_error)?;
    loop {
        if want.full() {
            state.add_hint(expected, base, pos);
            return Ok(true);
        }
        // Frame header and the record's offset.
        let mut head = [0u8; FRAME_HEADER_LEN + 8];
        let n = read_up_to(&mut reader, &mut head).map_err(io_error)?;
        if n == 0 && sealed {
            // The caller checks that the next segment starts where this one ended.
            return Ok(false);
        }
        if n == 0 {
            // Everything up to the head is written before the head moves, and a record past
            // this segment would be in a newer segment, seen when this one was looked up.
            return Err(corrupt(
                pos,
                format!(
                    "the active segment ends before offset {expected}, below the head {}",
                    want.head
                ),
            ));
        }
        if n < head.len() {
            return Err(corrupt(pos, "frame cut short".into()));
        }
        let (len, crc) = segment::frame_header(&head).map_err(|e| corrupt(pos, e.to_string()))?;
        let offset = segment::u64_at(&head, FRAME_HEADER_LEN);
        if offset != expected {
            return Err(corrupt(
                pos,
                format!("frame carries offset {offset}, expected {expected}"),
            ));
        }
        if offset < want.cur {
            reader.seek_relative(len as i64 - 8).map_err(io_error)?;
            pos += (FRAME_HEADER_LEN + len) as u64;
            expected += 1;
            continue;
        }
        if !want.records.is_empty() && want.buf.len() + len > want.max_bytes {
            state.add_hint(expected, base, pos);
            return Ok(true);
        }
        let start = want.buf.len();
        want.buf.resize(start + len, 0);
        let record = &mut want.buf[start..];
        record[..8].copy_from_slice(&head[FRAME_HEADER_LEN..]);
        let read = reader.read_exact(&mut record[8..]);
        if let Err(e) = read {
            want.buf.truncate(start);
            return match e.kind() {
                io::ErrorKind::UnexpectedEof => Err(corrupt(pos, "frame cut short".into())),
                _ => Err(io_error(e)),
            };
        }
        if crc32fast::hash(&want.buf[start..]) != crc {
            return Err(corrupt(
                pos,
                format!("checksum mismatch in the frame of offset {offset}"),
            ));
        }
        want.records.push(start..start + len);
        pos += (FRAME_HEADER_LEN + len) as u64;
        expected += 1;
        want.cur = expected;
    }
}

/// Fill `buf` unless the file ends first; returns how much was read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
