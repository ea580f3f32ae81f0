//! The `meta` file: the log's epoch, written once and atomically.

use std::fs;
use std::io;
use std::path::Path;

use shared::Epoch;
use tracing::warn;

use super::LogError;
use super::io::Filesystem;

const META_MAGIC: [u8; 4] = *b"RFKM";
const META_VERSION: u32 = 1;
const META_LEN: usize = 20;
const META_FILE: &str = "meta";
const META_TMP: &str = "meta.tmp";

/// Read the epoch of the log in `dir`, or start a new log (a new epoch) when it holds no
/// segment.
///
/// A directory with a `meta` file but no segment gets a new epoch too: its segments were
/// removed (by hand, or a restore that brought back only `meta`), and reusing the old epoch
/// would hand out offsets again that hosts already applied under it, which they would then
/// skip. With a new epoch every host starts over from the new log.
///
/// # Errors
/// [`LogError::BadMeta`] when `meta` is damaged, of another version, or missing next to
/// existing segments (a new epoch would make hosts take old records for a new log).
pub(super) fn load_or_create(
    fs: &dyn Filesystem,
    dir: &Path,
    has_segments: bool,
) -> Result<Epoch, LogError> {
    let path = dir.join(META_FILE);
    let existing = match fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(super::segment::at(&path)(e).into()),
    };
    match existing {
        Some(bytes) if has_segments => decode(&bytes),
        None if has_segments => Err(LogError::BadMeta(format!(
            "{} is missing but segments exist",
            path.display()
        ))),
        existing => {
            let epoch = Epoch(fastrand::u64(1..));
            if let Some(bytes) = existing {
                let old = decode(&bytes).map_or_else(|e| e.to_string(), |e| e.to_string());
                warn!(
                    dir = %dir.display(),
                    old_epoch = %old,
                    new_epoch = %epoch,
                    "the log directory has a meta file but no segments: starting a new log \
                     (new epoch), so no offset is handed out twice; every host starts over"
                );
            }
            write(fs, dir, epoch).map_err(super::segment::at(&path))?;
            Ok(epoch)
        }
    }
}

fn encode(epoch: Epoch) -> [u8; META_LEN] {
    let mut out = [0u8; META_LEN];
    out[..4].copy_from_slice(&META_MAGIC);
    out[4..8].copy_from_slice(&META_VERSION.to_le_bytes());
    out[8..16].copy_from_slice(&epoch.0.to_le_bytes());
    let crc = crc32fast::hash(&out[..16]);
    out[16..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Result<Epoch, LogError> {
    if bytes.len() != META_LEN {
        return Err(LogError::BadMeta(format!(
            "expected {META_LEN} bytes, found {}",
            bytes.len()
        )));
    }
    if bytes[..4] != META_MAGIC {
        return Err(LogError::BadMeta("bad magic".into()));
    }
    let version = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if version != META_VERSION {
        return Err(LogError::BadMeta(format!("unsupported version {version}")));
    }
    let crc = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    if crc != crc32fast::hash(&bytes[..16]) {
        return Err(LogError::BadMeta("checksum mismatch".into()));
    }
    let mut epoch = [0u8; 8];
    epoch.copy_from_slice(&bytes[8..16]);
    Ok(Epoch(u64::from_le_bytes(epoch)))
}

/// tmp + fsync + rename + fsync dir: a crash leaves either the old `meta` or the new one.
fn write(fs: &dyn Filesystem, dir: &Path, epoch: Epoch) -> io::Result<()> {
    let tmp = dir.join(META_TMP);
    let file = std::fs::File::create(&tmp)?;
    fs.write_all(&file, &encode(epoch))?;
    fs.sync_data(&file)?;
    drop(file);
    std::fs::rename(&tmp, dir.join(META_FILE))?;
    fs.sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_rejects_damage() {
        let bytes = encode(Epoch(0xdead_beef));
        assert_eq!(decode(&bytes).unwrap(), Epoch(0xdead_beef));
        let mut bad = bytes;
        bad[9] ^= 1;
        assert!(matches!(decode(&bad), Err(LogError::BadMeta(_))));
        assert!(matches!(decode(&bytes[..10]), Err(LogError::BadMeta(_))));
    }
}
