//! Small file helpers.

use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Replace `path` with `data` atomically: write a temporary file beside it, fsync it, rename it
/// over `path`, fsync the directory. A crash leaves either the old or the new content.
///
/// # Errors
/// Any step failed; `path` then still holds its old content.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}
