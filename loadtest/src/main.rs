//! `loadtest`: the benchmark harness for reflektor and ekg.
//!
//! One subcommand per scenario (`intake`, `fanout`, `connections`, `history`, `rebuild`). Each
//! run is bounded by `--duration` and `--max-requests`, targets loopback only, prints a human
//! summary, and writes a JSON report and an SVG plot under `--out`. With `--spawn` a scenario
//! starts the real binaries itself (and kills them when it ends); otherwise it drives the URLs
//! it is given, so it can load any pub/sub server that speaks HTTP POST and WebSocket/SSE.

mod drive;
mod http;
mod report;
mod scenario;
mod server;
mod sseread;
mod target;
mod wsread;

use anyhow::Result;
use clap::{Parser, Subcommand};

use scenario::{connections, fanout, history, intake, rebuild};

#[derive(Parser, Debug)]
#[command(name = "loadtest", about = "Benchmark harness for reflektor and ekg")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Open-loop (fixed rate) or closed-loop (saturation) POSTs to reflektor's intake.
    Intake(intake::Args),
    /// Subscribers over rooms, a publisher at a fixed rate: deliveries/s and end-to-end latency.
    Fanout(fanout::Args),
    /// Many idle WebSocket connections: the server's resident memory per connection.
    Connections(connections::Args),
    /// History page requests at a fixed rate against a pre-filled room.
    History(history::Args),
    /// Time for an empty ekg host to catch up with a log of N records.
    Rebuild(rebuild::Args),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.scenario {
            Scenario::Intake(args) => intake::run(args).await,
            Scenario::Fanout(args) => fanout::run(args).await,
            Scenario::Connections(args) => connections::run(args).await,
            Scenario::History(args) => history::run(args).await,
            Scenario::Rebuild(args) => rebuild::run(args).await,
        }
    })
}
