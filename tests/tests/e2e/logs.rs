//! Operations: JSON log lines and a clean exit on a SIGTERM that arrives right away.

use std::path::Path;
use std::time::Duration;

use tests::Launch;

/// Start `name` with `LOG_FORMAT=json` and its default log filter, SIGTERM it the moment it
/// has printed its listening line, and return its exit status and stderr.
async fn start_and_terminate_at_once(
    dir: &Path,
    name: &str,
    args: &[&str],
) -> (std::process::ExitStatus, String) {
    let mut svc = Launch::new(name, dir)
        .unwrap()
        .env("LOG_FORMAT", "json")
        .default_log_filter()
        .args(args)
        .start()
        .await
        .unwrap();
    let status = svc.terminate(Duration::from_secs(20)).await.unwrap();
    (status, svc.stderr())
}

/// Every stderr line is one JSON object with a timestamp, a level, a target and a message.
fn assert_json_lines(name: &str, stderr: &str) -> Vec<serde_json::Value> {
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty(), "{name} logged nothing");
    for l in &lines {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(l.get(field).is_some(), "{name}: no {field} in {l}");
        }
    }
    lines
}

#[tokio::test]
async fn both_binaries_log_json_lines_and_a_sigterm_right_after_the_listening_line_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("reflektor");
    let data = data.to_str().unwrap();
    for (name, args) in [
        ("reflektor", vec!["--data-dir", data]),
        ("ekg", vec!["--secret", "json-log-secret"]),
    ] {
        let (status, stderr) = start_and_terminate_at_once(dir.path(), name, &args).await;
        assert!(
            status.success(),
            "{name} exited {status}; stderr:\n{stderr}"
        );
        let lines = assert_json_lines(name, &stderr);
        assert!(
            lines
                .iter()
                .any(|l| l["message"] == "SIGTERM received, shutting down"),
            "{name} did not log the signal:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn the_log_format_flag_picks_text_or_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("reflektor");
    let data = data.to_str().unwrap();
    // The flag wins over the environment.
    let (status, stderr) = start_and_terminate_at_once(
        dir.path(),
        "reflektor",
        &["--data-dir", data, "--log-format", "text"],
    )
    .await;
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.contains("SIGTERM received")),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_err()),
        "text lines expected:\n{stderr}"
    );
    let out = Launch::new("ekg", dir.path())
        .unwrap()
        .args(["--log-format", "yaml"])
        .run_to_exit(Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = out.stderr;
    assert!(
        err.contains("--log-format") && err.contains("json"),
        "{err}"
    );
}
