//! The ekg binary: flags to [`ekg::Config`], logs to stderr, bind, announce, serve.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let args = ekg::Args::parse();
    shared::telemetry::init_tracing("ekg=info,shared=info", args.log_format);
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
    // Handlers first: a SIGTERM right after the listening line is a clean shutdown.
    let shutdown = shared::shutdown::on_signal().context("cannot install signal handlers")?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    shared::telemetry::announce("ekg", addr);
    ekg::run(listener, config, shutdown).await
}
