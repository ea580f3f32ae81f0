//! Segment files: naming, header, and frames.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::{BufMut, BytesMut};
use shared::{Epoch, Record};
use tracing::warn;

use super::io::Filesystem;

const SEGMENT_MAGIC: [u8; 4] = *b"RFKS";
const SEGMENT_VERSION: u32 = 1;
/// Size of a segment's header; the first frame starts here.
pub(super) const HEADER_LEN: u64 = 24;
/// `len` + `crc32` in front of every record.
pub(super) const FRAME_HEADER_LEN: usize = 8;
/// The shortest possible encoded record (every field empty).
pub(super) const MIN_RECORD_LEN: usize = 8 + 8 + 1 + 2 + 2 + 2 + 1 + 4;
const SEGMENT_SUFFIX: &str = ".seg";

/// A segment the log knows of.
#[derive(Clone, Debug)]
pub(super) struct SegmentEntry {
    pub(super) path: PathBuf,
    /// File size; for the active segment, its size when it became active (the writer tracks
    /// the live size and records it here when sealing).
    pub(super) bytes: u64,
}

/// `00000000000000000001.seg`
pub(super) fn file_name(base: u64) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Every segment in `dir`, by base offset.
pub(super) fn list(dir: &Path) -> io::Result<BTreeMap<u64, PathBuf>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(at(dir))? {
        let entry = entry.map_err(at(dir))?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_file_name) {
            out.insert(base, entry.path());
        }
    }
    Ok(out)
}

pub(super) fn encode_header(epoch: Epoch, base: u64) -> [u8; HEADER_LEN as usize] {
    let mut out = [0u8; HEADER_LEN as usize];
    out[..4].copy_from_slice(&SEGMENT_MAGIC);
    out[4..8].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    out[8..16].copy_from_slice(&epoch.0.to_le_bytes());
    out[16..24].copy_from_slice(&base.to_le_bytes());
    out
}

/// Check a header against the log's epoch and the base the file name gives.
pub(super) fn check_header(header: &[u8], epoch: Epoch, base: u64) -> Result<(), String> {
    if header.len() < HEADER_LEN as usize {
        return Err(format!("header is {} bytes long", header.len()));
    }
    if header[..4] != SEGMENT_MAGIC {
        return Err("bad segment magic".into());
    }
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if version != SEGMENT_VERSION {
        return Err(format!("unsupported segment version {version}"));
    }
    let found_epoch = u64_at(header, 8);
    if found_epoch != epoch.0 {
        return Err(format!(
            "segment belongs to epoch {}, the log is {epoch}",
            Epoch(found_epoch)
        ));
    }
    let found_base = u64_at(header, 16);
    if found_base != base {
        return Err(format!(
            "header says base {found_base}, file name says {base}"
        ));
    }
    Ok(())
}

/// Create a new segment: header, `fdatasync`, then `fsync` the directory so the name survives.
/// The file is opened for appending (and reading, for recovery and rollback). When any step
/// after the creation fails, the file is deleted again (best effort), so a failed attempt
/// leaves nothing a later one trips over.
pub(super) fn create(
    fs: &dyn Filesystem,
    dir: &Path,
    epoch: Epoch,
    base: u64,
) -> io::Result<(File, PathBuf)> {
    let path = dir.join(file_name(base));
    let file = fs.create_new(&path).map_err(at(&path))?;
    let ready = fs
        .write_all(&file, &encode_header(epoch, base))
        .and_then(|()| fs.sync_data(&file))
        .map_err(at(&path))
        .and_then(|()| fs.sync_dir(dir).map_err(at(dir)));
    if let Err(e) = ready {
        drop(file);
        if let Err(removing) = fs.remove_file(&path) {
            warn!(segment = %path.display(), error = %removing, "cannot delete a segment whose creation failed");
        }
        return Err(e);
    }
    Ok((file, path))
}

/// Name the file an I/O error happened on, for the operator.
pub(super) fn at(path: &Path) -> impl Fn(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Append one frame for `record` to `out`; returns where the record bytes sit in `out`.
pub(super) fn put_frame(out: &mut BytesMut, record: &Record) -> Range<usize> {
    let start = out.len();
    out.put_u32_le(0);
    out.put_u32_le(0);
    record.encode(out);
    let end = out.len();
    let body = start + FRAME_HEADER_LEN..end;
    let len = (end - body.start) as u32;
    let crc = crc32fast::hash(&out[body.clone()]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    body
}

/// What is wrong with the bytes at a frame position.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FrameError {
    /// The buffer ends inside the frame (or its header).
    Incomplete,
    /// The length field cannot be right.
    BadLength(u32),
    /// The record bytes do not match the checksum.
    BadCrc,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Incomplete => f.write_str("frame cut short"),
            FrameError::BadLength(len) => write!(f, "implausible frame length {len}"),
            FrameError::BadCrc => f.write_str("checksum mismatch"),
        }
    }
}

/// Parse the frame header at the start of `buf`: (record length, crc).
pub(super) fn frame_header(buf: &[u8]) -> Result<(usize, u32), FrameError> {
    if buf.len() < FRAME_HEADER_LEN {
        return Err(FrameError::Incomplete);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if (len as usize) < MIN_RECORD_LEN {
        return Err(FrameError::BadLength(len));
    }
    Ok((len as usize, crc))
}

/// Check the whole frame at the start of `buf`; returns the record's byte range in `buf` and
/// its offset.
pub(super) fn check_frame(buf: &[u8]) -> Result<(Range<usize>, u64), FrameError> {
    let (len, crc) = frame_header(buf)?;
    let end = FRAME_HEADER_LEN + len;
    if buf.len() < end {
        return Err(FrameError::Incomplete);
    }
    let record = &buf[FRAME_HEADER_LEN..end];
    if crc32fast::hash(record) != crc {
        return Err(FrameError::BadCrc);
    }
    Ok((FRAME_HEADER_LEN..end, u64_at(record, 0)))
}

pub(super) fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The idempotency key of an encoded record (already CRC-checked), without decoding the rest.
pub(super) fn peek_idempotency_key(record: &[u8]) -> Option<&str> {
    let mut at = 8 + 8 + 1;
    let mut field = || -> Option<&[u8]> {
        let len = u16::from_le_bytes([*record.get(at)?, *record.get(at + 1)?]) as usize;
        let value = record.get(at + 2..at + 2 + len)?;
        at += 2 + len;
        Some(value)
    };
    let _target = field()?;
    let _content_type = field()?;
    let key = field()?;
    if key.is_empty() {
        return None;
    }
    std::str::from_utf8(key).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use shared::{Method, Offset};

    #[test]
    fn names_sort_by_base_and_parse_back() {
        assert_eq!(file_name(1), "00000000000000000001.seg");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("1.seg"), None);
        assert_eq!(parse_file_name("0000000000000000000x.seg"), None);
    }

    #[test]
    fn a_frame_checks_and_carries_the_key() {
        let record = Record {
            offset: Offset(9),
            timestamp_ms: 5,
            method: Method::Post,
            target: "/a".into(),
            content_type: Some("text/plain".into()),
            idempotency_key: Some("key-1".into()),
            headers: vec![],
            body: Bytes::from_static(b"hello"),
        };
        let mut buf = BytesMut::new();
        let range = put_frame(&mut buf, &record);
        let (checked, offset) = check_frame(&buf).unwrap();
        assert_eq!((checked, offset), (range.clone(), 9));
        assert_eq!(peek_idempotency_key(&buf[range]), Some("key-1"));
        let mut bad = buf.to_vec();
        bad[20] ^= 0x40;
        assert_eq!(check_frame(&bad), Err(FrameError::BadCrc));
        assert_eq!(
            check_frame(&buf[..buf.len() - 1]),
            Err(FrameError::Incomplete)
        );
    }
}
