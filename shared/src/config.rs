//! Parsing helpers for flags both binaries take: durations, byte sizes and secrets.

use std::path::Path;
use std::time::Duration;

/// Parse a duration such as `500ms`, `30s`, `24h` or `7d`.
///
/// # Errors
/// A message naming the bad value.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Parse a byte size such as `1048576`, `64KiB`, `1MiB`, `10GB` (decimal and binary units).
///
/// # Errors
/// A message naming the bad value.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number and a unit like 64KiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => return Err(format!("invalid size {s:?}: unknown unit {other:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

/// A secret given either inline or as a file (trailing newline trimmed). Empty means none.
///
/// # Errors
/// The file cannot be read, or both forms were given.
pub fn read_secret(
    inline: Option<&str>,
    file: Option<&Path>,
    what: &str,
) -> Result<Option<String>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!("give the {what} inline or as a file, not both")),
        (Some(v), None) => Ok(Some(v.to_owned()).filter(|v| !v.is_empty())),
        (None, Some(path)) => {
            let v = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))?;
            let v = v.trim_end_matches(['\r', '\n']).to_owned();
            if v.is_empty() {
                Err(format!("the {what} file {} is empty", path.display()))
            } else {
                Ok(Some(v))
            }
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_bytes("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_bytes("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_bytes("64 KiB").unwrap(), 64 << 10);
        assert_eq!(parse_bytes("2GB").unwrap(), 2_000_000_000);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("1XB").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn secrets_come_inline_or_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "abc\n").unwrap();
        assert_eq!(
            read_secret(None, Some(&f), "secret").unwrap().as_deref(),
            Some("abc")
        );
        assert_eq!(
            read_secret(Some("x"), None, "secret").unwrap().as_deref(),
            Some("x")
        );
        assert_eq!(read_secret(None, None, "secret").unwrap(), None);
        assert!(read_secret(Some("x"), Some(&f), "secret").is_err());
        assert!(read_secret(None, Some(&dir.path().join("missing")), "secret").is_err());
    }
}
