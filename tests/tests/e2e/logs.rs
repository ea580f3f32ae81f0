//! Operations: JSON log lines and a clean exit on a SIGTERM that arrives right away.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Run `bin` with `LOG_FORMAT=json`, SIGTERM it the moment it prints its listening line, and
/// return its exit status and stderr.
async fn start_and_terminate_at_once(
    name: &str,
    args: &[&str],
) -> (std::process::ExitStatus, String) {
    let bin = tests::process::binary(name).unwrap();
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("LOG_FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::time::timeout(
        Duration::from_secs(20),
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("a listening line within 20 s")
    .unwrap()
    .expect("a listening line");
    assert!(
        line.starts_with(&format!("{name} listening on http://127.0.0.1:")),
        "{line}"
    );
    let pid = child.id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("exit within 20 s of SIGTERM")
        .unwrap();
    (out.status, String::from_utf8(out.stderr).unwrap())
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
        let (status, stderr) = start_and_terminate_at_once(name, &args).await;
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
    let (status, stderr) =
        start_and_terminate_at_once("reflektor", &["--data-dir", data, "--log-format", "text"])
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
    let out = std::process::Command::new(tests::process::binary("ekg").unwrap())
        .args(["--log-format", "yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--log-format") && err.contains("json"),
        "{err}"
    );
}
