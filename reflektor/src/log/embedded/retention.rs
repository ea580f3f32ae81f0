//! Deleting old segments once every host has passed them and the window allows it.

use std::fs;
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use shared::Offset;
use tracing::info;

use super::LogError;
use super::state::{State, read_lock, write_lock};

/// See [`Log::retain`](super::Log::retain).
pub(super) fn retain(
    state: &State,
    min_cursor: Offset,
    max_age: Duration,
    max_bytes: u64,
) -> Result<usize, LogError> {
    let now = SystemTime::now();
    let mut deleted = 0;
    loop {
        let (base, path, next_base) = {
            let segments = read_lock(&state.segments);
            let mut iter = segments.iter();
            let (Some((base, entry)), Some((next_base, _))) = (iter.next(), iter.next()) else {
                break; // only the active segment is left
            };
            (*base, entry.path.clone(), *next_base)
        };
        // Its last record is next_base - 1.
        if next_base > min_cursor.0 {
            break;
        }
        let over_size = state.total_bytes.load(Ordering::Relaxed) > max_bytes;
        let too_old = match fs::metadata(&path).and_then(|m| m.modified()) {
            Ok(modified) => now.duration_since(modified).is_ok_and(|age| age >= max_age),
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(e.into()),
        };
        if !over_size && !too_old {
            break;
        }
        let removed = {
            let mut segments = write_lock(&state.segments);
            let removed = segments.remove(&base);
            if removed.is_some() {
                state.oldest.fetch_max(next_base, Ordering::AcqRel);
            }
            removed
        };
        let Some(removed) = removed else {
            continue; // a concurrent call took it
        };
        state
            .total_bytes
            .fetch_sub(removed.bytes, Ordering::Relaxed);
        state.drop_hints_below(next_base);
        match state.cfg.fs.remove_file(&removed.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        info!(segment = %removed.path.display(), oldest = next_base, "deleted a log segment");
        deleted += 1;
    }
    if deleted > 0 {
        state.cfg.fs.sync_dir(&state.cfg.dir)?;
    }
    Ok(deleted)
}
