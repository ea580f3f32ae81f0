//! `stack`: reflektor and one ekg host wired together on the embedded defaults, for trying the
//! product on one machine. Prints the demo page and intake URLs; Ctrl-C stops both cleanly.
//! With `--cluster`: three NATS nodes, two reflektor instances sharing the log in JetStream and
//! two ekg hosts.
//!
//! ```text
//! ./scripts/start            # builds, then runs this
//! stack --data-dir ./data --intake-port 7070 --ekg-port 7080
//! stack --cluster            # reflektor on 7070 and 7071, ekg on 7080 and 7081
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
    /// A local cluster: three NATS nodes, two reflektor instances (intake port and the next),
    /// two ekg hosts (ekg port and the next).
    #[arg(long)]
    cluster: bool,
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
    if args.cluster {
        return cluster(&args, &data_dir, &secret).await;
    }

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

/// `--cluster`: NATS x3, reflektor x2, ekg x2, until Ctrl-C.
async fn cluster(args: &Args, data_dir: &std::path::Path, secret: &str) -> Result<()> {
    let nats_dir = data_dir.join("nats");
    std::fs::create_dir_all(&nats_dir)?;
    println!("starting three NATS nodes (JetStream cluster)...");
    let mut nats = tests::nats::NatsCluster::start(&nats_dir, 3)
        .await
        .context("start the NATS cluster")?;
    let mut ekgs = Vec::new();
    for i in 0..2u16 {
        let addr = SocketAddr::from(([127, 0, 0, 1], args.ekg_port + i));
        ekgs.push(
            Launch::new("ekg", data_dir)?
                .listen(addr)
                .args(["--secret", secret, "--cors-origin", "*"])
                .start()
                .await
                .context("start ekg")?,
        );
    }
    let mut reflektors = Vec::new();
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let addr = SocketAddr::from(([127, 0, 0, 1], args.intake_port + u16::try_from(i)?));
        let mut launch = Launch::new("reflektor", data_dir)?
            .listen(addr)
            .arg("--data-dir")
            .arg(data_dir.join(format!("reflektor-{name}")))
            .args([
                "--nats",
                &nats.urls(),
                "--secret",
                secret,
                "--cors-origin",
                "*",
            ]);
        for e in &ekgs {
            launch = launch.args(["--host", &e.url()]);
        }
        reflektors.push(launch.start().await.context("start reflektor")?);
    }
    let stop = shared::shutdown::on_signal().context("install signal handlers")?;
    for n in &nats.nodes {
        println!(
            "NATS {}           {} (monitoring http://{})",
            n.name,
            n.url(),
            n.monitor
        );
    }
    for r in &reflektors {
        println!(
            "reflektor intake  {} (hosts: {}/_reflektor/hosts)",
            r.url(),
            r.url()
        );
    }
    for e in &ekgs {
        println!("ekg host          {}", e.url());
    }
    println!(
        "demo page         {}/?room=lobby&intake={}",
        ekgs[0].url(),
        reflektors[0].url()
    );
    println!("logs              {}", data_dir.display());
    println!();
    println!(
        "post to either instance (one Idempotency-Key is one record on both):\n  curl -X POST {}/rooms/lobby/messages -H 'content-type: application/json' -H 'Idempotency-Key: k1' -d '{{\"text\":\"hello\"}}'",
        reflektors[1].url()
    );
    println!(
        "follow the room on either host:  curl -N {}/rooms/lobby/sse",
        ekgs[1].url()
    );
    println!("Ctrl-C stops everything.");
    stop.cancelled().await;
    println!("stopping...");
    for r in &mut reflektors {
        let status = r.terminate(Duration::from_secs(15)).await;
        println!(
            "reflektor: {}",
            status
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string())
        );
    }
    for e in &mut ekgs {
        let status = e.terminate(Duration::from_secs(15)).await;
        println!(
            "ekg:       {}",
            status
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string())
        );
    }
    for n in &mut nats.nodes {
        if let Err(e) = n.stop().await {
            println!("NATS {}: {e:#}", n.name);
        }
    }
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
