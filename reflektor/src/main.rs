//! The reflektor binary: flags, tracing, bind, run until SIGTERM/SIGINT.

use std::process::ExitCode;

use clap::Parser;
use reflektor::Config;
use reflektor::config::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("reflektor: {e}");
            return ExitCode::from(2);
        }
    };
    shared::telemetry::init_tracing("reflektor=info");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("reflektor: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let shutdown = shared::shutdown::on_signal();
        reflektor::run_with(listener, config, shutdown, |addr| {
            shared::telemetry::announce("reflektor", addr);
        })
        .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("reflektor: {e:#}");
            ExitCode::FAILURE
        }
    }
}
