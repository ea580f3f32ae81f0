//! Opening a log: find the segments, scan the active one, cut a torn tail, refuse corruption.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shared::{Epoch, Offset, Record};
use tracing::{info, warn};

use super::LogError;
use super::io::Filesystem;
use super::segment::{self, FRAME_HEADER_LEN, HEADER_LEN, MIN_RECORD_LEN, SegmentEntry};

/// An idempotency key found in the log: (key, offset, acceptance time in Unix ms).
pub(super) type FoundKey = (String, Offset, u64);
/// What one found key counts against `keys_max_bytes` besides its own bytes.
const KEY_OVERHEAD: usize = 16;

/// Leave a reader position hint every this many bytes of a segment.
pub(super) const HINT_EVERY: u64 = 1 << 20;

/// The state of the log on disk after recovery.
pub(super) struct Recovered {
    pub(super) segments: BTreeMap<u64, SegmentEntry>,
    pub(super) total_bytes: u64,
    pub(super) active: File,
    pub(super) active_base: u64,
    pub(super) active_len: u64,
    /// The offset the next append gets.
    pub(super) next: u64,
    pub(super) recent_keys: Vec<FoundKey>,
    pub(super) truncated_bytes: u64,
    /// Bytes of segment data read while opening (only the active segment's).
    pub(super) scanned_bytes: u64,
    /// (offset, file position) in the active segment, every [`HINT_EVERY`] bytes.
    pub(super) hints: Vec<(u64, u64)>,
}

/// Which idempotency keys recovery reads back.
#[derive(Clone, Copy, Debug)]
pub(super) struct KeysWanted {
    /// Keys of records accepted within this window before now.
    pub(super) window: Duration,
    /// At most this many bytes of keys (the newest win).
    pub(super) max_bytes: usize,
}

/// Recover the log in `dir` whose segments are `found` (by base offset).
pub(super) fn recover(
    fs: &dyn Filesystem,
    dir: &Path,
    epoch: Epoch,
    found: BTreeMap<u64, PathBuf>,
    keys: KeysWanted,
) -> Result<Recovered, LogError> {
    let mut segments = BTreeMap::new();
    let mut total_bytes = 0;
    let Some((&active_base, active_path)) = found.iter().next_back() else {
        let (active, path) = segment::create(fs, dir, epoch, 1)?;
        segments.insert(
            1,
            SegmentEntry {
                path,
                bytes: HEADER_LEN,
            },
        );
        return Ok(Recovered {
            segments,
            total_bytes: HEADER_LEN,
            active,
            active_base: 1,
            active_len: HEADER_LEN,
            next: 1,
            recent_keys: Vec::new(),
            truncated_bytes: 0,
            scanned_bytes: 0,
            hints: Vec::new(),
        });
    };
    let active_path = active_path.clone();
    if let Some(path) = found.get(&0) {
        return Err(LogError::Corrupt {
            segment: path.clone(),
            position: 0,
            detail: "a segment cannot start at offset 0".into(),
        });
    }
    for (&base, path) in found.range(..active_base) {
        let bytes = path.metadata().map_err(segment::at(path))?.len();
        total_bytes += bytes;
        segments.insert(
            base,
            SegmentEntry {
                path: path.clone(),
                bytes,
            },
        );
    }

    let mut file = fs
        .open_append(&active_path)
        .map_err(segment::at(&active_path))?;
    let named = active_path.clone();
    let at = segment::at(&named);
    let mut data = Vec::new();
    file.read_to_end(&mut data).map_err(&at)?;
    let scanned_bytes = data.len() as u64;
    let mut truncated_bytes = 0;

    if data.len() < HEADER_LEN as usize {
        // Created but the header never made it to disk: the segment holds nothing.
        warn!(segment = %active_path.display(), len = data.len(), "rewriting a torn segment header");
        truncated_bytes = data.len() as u64;
        fs.set_len(&file, 0).map_err(&at)?;
        fs.write_all(&file, &segment::encode_header(epoch, active_base))
            .map_err(&at)?;
        fs.sync_data(&file).map_err(&at)?;
        data.clear();
        data.extend_from_slice(&segment::encode_header(epoch, active_base));
    }
    segment::check_header(&data, epoch, active_base).map_err(|detail| LogError::Corrupt {
        segment: active_path.clone(),
        position: 0,
        detail,
    })?;

    let scan = scan_frames(&data, active_base);
    if let Some((position, problem)) = scan.invalid_at {
        if let Some(found) = find_valid_frame(&data, position, scan.next) {
            return Err(LogError::Corrupt {
                segment: active_path,
                position: position as u64,
                detail: format!(
                    "{problem} (expected offset {}), yet a valid frame follows at byte {found}",
                    scan.next
                ),
            });
        }
        let cut = (data.len() - position) as u64;
        warn!(
            segment = %active_path.display(),
            position,
            bytes = cut,
            %problem,
            "cutting a torn tail off the log"
        );
        fs.set_len(&file, position as u64).map_err(&at)?;
        fs.sync_data(&file).map_err(&at)?;
        // O_APPEND writes go to the new end; keep the cursor there too for clarity.
        file.seek(SeekFrom::End(0)).map_err(&at)?;
        truncated_bytes += cut;
    }
    let active_len = scan.valid_len as u64;
    total_bytes += active_len;
    let since = SystemTime::now()
        .checked_sub(keys.window)
        .unwrap_or(UNIX_EPOCH);
    let since_ms = since
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut recent_keys: Vec<FoundKey> = scan
        .keys
        .into_iter()
        .filter(|(_, _, ts)| *ts >= since_ms)
        .collect();
    let used: usize = recent_keys.iter().map(|k| k.0.len() + KEY_OVERHEAD).sum();
    let sealed = sealed_keys(
        fs,
        epoch,
        &segments,
        since,
        since_ms,
        keys.max_bytes.saturating_sub(used),
    );
    if !sealed.is_empty() {
        recent_keys.splice(0..0, sealed);
    }
    segments.insert(
        active_base,
        SegmentEntry {
            path: active_path,
            bytes: active_len,
        },
    );
    Ok(Recovered {
        segments,
        total_bytes,
        active: file,
        active_base,
        active_len,
        next: scan.next,
        recent_keys,
        truncated_bytes,
        scanned_bytes,
        hints: scan.hints,
    })
}

/// Idempotency keys of records accepted since `since_ms` in the sealed `segments`, oldest
/// first: the newest segments are read first, down to the first one last written before
/// `since`, and reading stops once `max_bytes` of keys are found. A segment that cannot be
/// read to its end gives the keys before the problem, with a WARN: the record data itself is
/// checked again when delivery reads it.
fn sealed_keys(
    fs: &dyn Filesystem,
    epoch: Epoch,
    segments: &BTreeMap<u64, SegmentEntry>,
    since: SystemTime,
    since_ms: u64,
    max_bytes: usize,
) -> Vec<FoundKey> {
    let started = Instant::now();
    let mut per_segment: Vec<Vec<FoundKey>> = Vec::new();
    let mut bytes = 0;
    let mut read_segments = 0;
    for (&base, entry) in segments.iter().rev() {
        let modified = match entry.path.metadata().and_then(|m| m.modified()) {
            Ok(modified) => modified,
            Err(e) => {
                warn!(segment = %entry.path.display(), error = %e, "cannot read a segment's time; idempotency keys before it are not restored");
                break;
            }
        };
        if modified < since {
            break; // its newest record, and every older segment's, is out of the window
        }
        let mut keys = Vec::new();
        if let Err(e) = keys_in_segment(fs, epoch, base, &entry.path, since_ms, &mut keys) {
            warn!(segment = %entry.path.display(), error = %e, "cannot read every idempotency key of a segment; the ones after the problem are not restored");
        }
        read_segments += 1;
        // The newest keys of this segment win when it does not fit whole.
        let mut keep = 0;
        for key in keys.iter().rev() {
            let cost = key.0.len() + KEY_OVERHEAD;
            if bytes + cost > max_bytes {
                break;
            }
            bytes += cost;
            keep += 1;
        }
        let full = keep < keys.len();
        keys.drain(..keys.len() - keep);
        per_segment.push(keys);
        if full {
            break;
        }
    }
    if read_segments > 0 {
        info!(
            segments = read_segments,
            keys = per_segment.iter().map(Vec::len).sum::<usize>(),
            took_ms = started.elapsed().as_millis() as u64,
            "read idempotency keys back from sealed segments"
        );
    }
    per_segment.into_iter().rev().flatten().collect()
}

/// Append to `out` the keys of the records in one sealed segment accepted since `since_ms`.
fn keys_in_segment(
    fs: &dyn Filesystem,
    epoch: Epoch,
    base: u64,
    path: &Path,
    since_ms: u64,
    out: &mut Vec<FoundKey>,
) -> io::Result<()> {
    let invalid = |detail: String| io::Error::new(io::ErrorKind::InvalidData, detail);
    let mut reader = BufReader::with_capacity(256 << 10, fs.open_read(path)?);
    let mut header = [0u8; HEADER_LEN as usize];
    reader.read_exact(&mut header)?;
    segment::check_header(&header, epoch, base).map_err(invalid)?;
    let mut record = Vec::new();
    let mut expected = base;
    loop {
        let mut frame = [0u8; FRAME_HEADER_LEN];
        match reader.read_exact(&mut frame) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let (len, crc) = segment::frame_header(&frame).map_err(|e| invalid(e.to_string()))?;
        record.resize(len, 0);
        reader.read_exact(&mut record)?;
        if crc32fast::hash(&record) != crc || segment::u64_at(&record, 0) != expected {
            return Err(invalid(format!(
                "frame of offset {expected} fails its checks"
            )));
        }
        if let Some(key) = segment::peek_idempotency_key(&record) {
            let ts = Record::peek_timestamp_ms(&record).unwrap_or(0);
            if ts >= since_ms {
                out.push((key.to_owned(), Offset(expected), ts));
            }
        }
        expected += 1;
    }
}

struct Scan {
    /// Offset the next valid frame would carry.
    next: u64,
    /// End of the last valid frame.
    valid_len: usize,
    /// Position of the first invalid frame, and what is wrong with it.
    invalid_at: Option<(usize, String)>,
    keys: Vec<FoundKey>,
    hints: Vec<(u64, u64)>,
}

fn scan_frames(data: &[u8], base: u64) -> Scan {
    let mut pos = HEADER_LEN as usize;
    let mut next = base;
    let mut keys = Vec::new();
    let mut hints = Vec::new();
    let mut last_hint = pos;
    while pos < data.len() {
        let (range, offset) = match segment::check_frame(&data[pos..]) {
            Ok(frame) => frame,
            Err(e) => {
                return Scan {
                    next,
                    valid_len: pos,
                    invalid_at: Some((pos, e.to_string())),
                    keys,
                    hints,
                };
            }
        };
        if offset != next {
            return Scan {
                next,
                valid_len: pos,
                invalid_at: Some((pos, format!("frame carries offset {offset}"))),
                keys,
                hints,
            };
        }
        if pos - last_hint >= HINT_EVERY as usize {
            hints.push((offset, pos as u64));
            last_hint = pos;
        }
        let record = &data[pos + range.start..pos + range.end];
        if let Some(key) = segment::peek_idempotency_key(record) {
            let ts = Record::peek_timestamp_ms(record).unwrap_or(0);
            keys.push((key.to_owned(), Offset(offset), ts));
        }
        next += 1;
        pos += range.end;
    }
    Scan {
        next,
        valid_len: pos,
        invalid_at: None,
        keys,
        hints,
    }
}

/// A frame after `bad` with a valid checksum and an offset that could follow `expected`: proof
/// that the damage at `bad` is not a torn tail.
fn find_valid_frame(data: &[u8], bad: usize, expected: u64) -> Option<usize> {
    let most_frames = (data.len() / (FRAME_HEADER_LEN + MIN_RECORD_LEN)) as u64 + 1;
    let last_start = data.len().checked_sub(FRAME_HEADER_LEN + MIN_RECORD_LEN)?;
    (bad + 1..=last_start).find(|&at| {
        let Ok((len, _)) = segment::frame_header(&data[at..]) else {
            return false;
        };
        if at + FRAME_HEADER_LEN + len > data.len() {
            return false;
        }
        let offset = segment::u64_at(data, at + FRAME_HEADER_LEN);
        if offset < expected || offset > expected + most_frames {
            return false;
        }
        segment::check_frame(&data[at..]).is_ok()
    })
}
