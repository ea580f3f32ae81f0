//! `stack`: reflektor and one ekg host wired together on the embedded defaults, for trying the
//! product on one machine. Prints the demo page and intake URLs; Ctrl-C stops both cleanly.
//!
//! ```text
//! ./scripts/start            # builds, then runs this
//! stack --data-dir ./data --intake-port 7070 --ekg-port 7080
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tests::Launch;

/// Run reflektor and an ekg host together on loopback.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Where reflektor keeps its log and cursors, and where both services write their logs.
    #[arg(long, env = "STACK_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// reflektor's intake port.
    #[arg(long, env = "STACK_INTAKE_PORT", default_value_t = 7070)]
    intake_port: u16,
    /// ekg's port (demo page, WebSocket, SSE, history).
    #[arg(long, env = "STACK_EKG_PORT", default_value_t = 7080)]
    ekg_port: u16,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let secret = local_secret(&data_dir)?;
    let intake = SocketAddr::from(([127, 0, 0, 1], args.intake_port));
    let ekg_addr = SocketAddr::from(([127, 0, 0, 1], args.ekg_port));
    let intake_url = format!("http://{intake}");

    let mut ekg = Launch::new("ekg", &data_dir)?
        .listen(ekg_addr)
        .args(["--secret", &secret, "--cors-origin", "*"])
        .start()
        .await
        .context("start ekg")?;
    let mut reflektor = Launch::new("reflektor", &data_dir)?
        .listen(intake)
        .arg("--data-dir")
        .arg(data_dir.join("reflektor"))
        .args([
            "--host",
            &ekg.url(),
            "--secret",
            &secret,
            "--cors-origin",
            "*",
        ])
        .start()
        .await
        .context("start reflektor")?;

    let stop = shared::shutdown::on_signal().context("install signal handlers")?;
    let demo = format!("{}/?room=lobby&intake={intake_url}", ekg.url());
    println!("reflektor intake  {intake_url}");
    println!("ekg host          {}", ekg.url());
    println!("demo page         {demo}");
    for svc in [&reflektor, &ekg] {
        if let Some(log) = svc.log_path() {
            println!("{:<18}{}", format!("{} log", svc.name()), log.display());
        }
    }
    println!();
    println!(
        "post a message:   curl -X POST {intake_url}/rooms/lobby/messages -H 'content-type: application/json' -d '{{\"user\":\"you\",\"text\":\"hello\"}}'"
    );
    println!("follow the room:  curl -N {}/rooms/lobby/sse", ekg.url());
    println!("Ctrl-C stops both.");

    stop.cancelled().await;
    println!("stopping...");
    let r = reflektor.terminate(Duration::from_secs(15)).await;
    let e = ekg.terminate(Duration::from_secs(15)).await;
    println!(
        "reflektor: {}",
        r.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())
    );
    println!(
        "ekg:       {}",
        e.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())
    );
    Ok(())
}

/// The signing secret for this data directory: made once, kept in `secret` (mode 0600).
fn local_secret(dir: &std::path::Path) -> Result<String> {
    let path = dir.join("secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().to_owned();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let s: String = (0..32).map(|_| fastrand::alphanumeric()).collect();
    std::fs::write(&path, &s).with_context(|| format!("write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(s)
}
