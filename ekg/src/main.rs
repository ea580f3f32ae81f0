//! The ekg binary: flags to [`ekg::Config`], logs to stderr, bind, announce, serve.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let args = ekg::Args::parse();
    shared::telemetry::init_tracing("ekg=info");
    let config = match ekg::Config::try_from(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ekg: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ekg: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: ekg::Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    let shutdown = shutdown_on_signal()?;
    shared::telemetry::announce("ekg", addr);
    ekg::run(listener, config, shutdown).await
}

/// A token cancelled by the first SIGTERM or SIGINT. The handlers are installed before this
/// returns, so a signal that arrives right after the listening line is never lost.
fn shutdown_on_signal() -> anyhow::Result<shared::shutdown::CancellationToken> {
    let token = shared::shutdown::CancellationToken::new();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let t = token.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
            }
            t.cancel();
        });
    }
    #[cfg(not(unix))]
    {
        let t = token.clone();
        tokio::spawn(async move {
            shared::shutdown::signal().await;
            t.cancel();
        });
    }
    Ok(token)
}
