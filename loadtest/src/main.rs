//! `loadtest`: the benchmark harness for reflektor and ekg.
//!
//! One subcommand per scenario (`intake`, `fanout`, `connections`, `rooms`, `history`,
//! `rebuild`, `wrk`). Each run is bounded by `--duration` and `--max-requests`, targets
//! loopback only, prints a human summary, and writes a JSON report and an SVG plot under
//! `--out`. With `--spawn` a scenario starts its servers itself (and kills them when it ends):
//! ours, or with `--target` Nchan or a limit server, so the same shape runs against each;
//! otherwise it drives the URLs it is given, so it can load any pub/sub server that speaks
//! HTTP POST and WebSocket/SSE. `limit` runs a limit server; `table` puts a session's reports
//! side by side.

mod drive;
mod http;
mod limit;
mod report;
mod scenario;
mod spawn;
mod sseread;
mod table;
mod target;
mod wsread;

use anyhow::Result;
use clap::{Parser, Subcommand};

use scenario::{connections, fanout, history, intake, rebuild, rooms, wrk};

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
    /// Intake saturation with wrk (64 connections by default).
    Wrk(wrk::Args),
    /// Subscribers over rooms, a publisher at a fixed rate: deliveries/s and end-to-end latency.
    Fanout(fanout::Args),
    /// Many idle WebSocket or SSE connections: set-up time and memory per connection.
    Connections(connections::Args),
    /// Memory per room holding one message; writes that open rooms vs writes to one room.
    Rooms(rooms::Args),
    /// History page requests at a fixed rate against a pre-filled room.
    History(history::Args),
    /// Time for an empty ekg host to catch up with a log of N records.
    Rebuild(rebuild::Args),
    /// Run a limit server (the least a server can do) until killed.
    Limit(limit::Args),
    /// Put the reports of a bench session side by side (markdown and comparison plots).
    Table(table::Args),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.scenario {
        // These run on their own runtime (or none).
        Scenario::Limit(args) => return limit::run(args),
        Scenario::Table(args) => return table::run(args),
        _ => {}
    }
    report::note_start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.scenario {
            Scenario::Intake(args) => intake::run(args).await,
            Scenario::Wrk(args) => wrk::run(args).await,
            Scenario::Fanout(args) => fanout::run(args).await,
            Scenario::Connections(args) => connections::run(args).await,
            Scenario::Rooms(args) => rooms::run(args).await,
            Scenario::History(args) => history::run(args).await,
            Scenario::Rebuild(args) => rebuild::run(args).await,
            Scenario::Limit(_) | Scenario::Table(_) => Ok(()),
        }
    })
}
