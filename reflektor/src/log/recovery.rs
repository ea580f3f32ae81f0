//! Opening a log: find the segments, scan the active one, cut a torn tail, refuse corruption.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use shared::{Epoch, Offset, Record};
use tracing::warn;

use super::LogError;
use super::segment::{self, FRAME_HEADER_LEN, HEADER_LEN, MIN_RECORD_LEN, SegmentEntry};

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
    pub(super) recent_keys: Vec<(String, Offset, u64)>,
    pub(super) truncated_bytes: u64,
    /// Bytes of segment data read while opening (only the active segment's).
    pub(super) scanned_bytes: u64,
    /// (offset, file position) in the active segment, every [`HINT_EVERY`] bytes.
    pub(super) hints: Vec<(u64, u64)>,
}

/// Recover the log in `dir` whose segments are `found` (by base offset).
pub(super) fn recover(
    dir: &Path,
    epoch: Epoch,
    found: BTreeMap<u64, PathBuf>,
) -> Result<Recovered, LogError> {
    let mut segments = BTreeMap::new();
    let mut total_bytes = 0;
    let Some((&active_base, active_path)) = found.iter().next_back() else {
        let (active, path) = segment::create(dir, epoch, 1)?;
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

    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(&active_path)
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
        file.set_len(0).map_err(&at)?;
        file.write_all(&segment::encode_header(epoch, active_base))
            .map_err(&at)?;
        file.sync_data().map_err(&at)?;
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
        file.set_len(position as u64).map_err(&at)?;
        file.sync_data().map_err(&at)?;
        // O_APPEND writes go to the new end; keep the cursor there too for clarity.
        file.seek(SeekFrom::End(0)).map_err(&at)?;
        truncated_bytes += cut;
    }
    let active_len = scan.valid_len as u64;
    total_bytes += active_len;
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
        recent_keys: scan.keys,
        truncated_bytes,
        scanned_bytes,
        hints: scan.hints,
    })
}

struct Scan {
    /// Offset the next valid frame would carry.
    next: u64,
    /// End of the last valid frame.
    valid_len: usize,
    /// Position of the first invalid frame, and what is wrong with it.
    invalid_at: Option<(usize, String)>,
    keys: Vec<(String, Offset, u64)>,
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
