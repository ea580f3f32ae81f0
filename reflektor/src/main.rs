//! The reflektor binary: flags, tracing, bind, run until SIGTERM/SIGINT.

use std::process::ExitCode;

use clap::Parser;
use reflektor::Config;
use reflektor::config::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    let log_format = args.log_format;
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("reflektor: {e}");
            return ExitCode::from(2);
        }
    };
    shared::telemetry::init_tracing("reflektor=info,shared=info", log_format);
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
        // Handlers first: a SIGTERM right after the listening line is a clean shutdown.
        let shutdown = shared::shutdown::on_signal()
            .map_err(|e| anyhow::anyhow!("cannot install signal handlers: {e}"))?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
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
