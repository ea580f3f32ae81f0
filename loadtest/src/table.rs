//! `loadtest table DIR`: the side-by-side view of a bench session.
//!
//! Reads every report (`*.json`, recursively) under the directories given, groups them by
//! scenario and label (the shape), and within a shape by target (`ours`, `nchan`, the limit
//! servers). Each shape becomes one markdown table with a row per figure and a column per
//! target; a cell is the median over the runs of that target (with the range and the number
//! of runs when there were several). Alongside, `compare-<scenario>-<label>.svg` overlays each
//! target's main latency curve and throughput timeline (from its first run). Writes
//! `summary.md` in the first directory and prints it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::report::{self, Report};

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Args {
    /// Directories holding the reports of one session.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
}

/// Column order.
const TARGETS: [&str; 7] = [
    "ours",
    "nchan",
    "limit-thread",
    "limit-task",
    "limit-coalesce",
    "limit-202",
    "external",
];

/// One row: a caption and how to read its value from a report.
struct Row {
    caption: &'static str,
    value: fn(&Report) -> Option<f64>,
    /// Decimal places shown.
    digits: usize,
}

fn fig(r: &Report, name: &str) -> Option<f64> {
    r.figures.get(name).copied()
}

fn lat_ms(r: &Report, name: &str, p: u32) -> Option<f64> {
    let l = r.latencies.get(name)?;
    let us = match p {
        50 => l.p50_us,
        99 => l.p99_us,
        _ => l.p999_us,
    };
    Some(us as f64 / 1e3)
}

/// Cores used by the servers (everything but the harness and the machine total).
fn server_cores(r: &Report) -> Option<f64> {
    let v: Vec<f64> = r
        .figures
        .iter()
        .filter(|(k, _)| {
            k.starts_with("cpu_cores_")
                && !matches!(
                    k.as_str(),
                    "cpu_cores_harness" | "cpu_cores_machine_all_processes" | "cpu_cores_wrk"
                )
        })
        .map(|(_, v)| *v)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum())
}

fn rows(scenario: &str) -> Vec<Row> {
    let common = [
        Row {
            caption: "server cores",
            value: server_cores,
            digits: 2,
        },
        Row {
            caption: "machine cores (all processes)",
            value: |r| fig(r, "cpu_cores_machine_all_processes"),
            digits: 2,
        },
        Row {
            caption: "load average at start",
            value: |r| fig(r, "loadavg_1m_at_start"),
            digits: 2,
        },
    ];
    let mut out = match scenario {
        "fanout" => vec![
            Row {
                caption: "deliveries/s (steady median)",
                value: |r| fig(r, "deliveries_per_s_steady_median"),
                digits: 0,
            },
            Row {
                caption: "e2e p50 (ms)",
                value: |r| lat_ms(r, "e2e", 50),
                digits: 2,
            },
            Row {
                caption: "e2e p99 (ms)",
                value: |r| lat_ms(r, "e2e", 99),
                digits: 2,
            },
            Row {
                caption: "e2e p99.9 (ms)",
                value: |r| lat_ms(r, "e2e", 999),
                digits: 2,
            },
            Row {
                caption: "lost + duplicate + out of order",
                value: |r| Some(fig(r, "lost")? + fig(r, "duplicates")? + fig(r, "out_of_order")?),
                digits: 0,
            },
            Row {
                caption: "harness cores",
                value: |r| fig(r, "cpu_cores_harness"),
                digits: 2,
            },
        ],
        "intake" => vec![
            Row {
                caption: "answered 2xx per s",
                value: |r| fig(r, "rate_achieved_per_s"),
                digits: 0,
            },
            Row {
                caption: "p50 (ms)",
                value: |r| lat_ms(r, "202_corrected", 50).or_else(|| lat_ms(r, "202", 50)),
                digits: 3,
            },
            Row {
                caption: "p99 (ms)",
                value: |r| lat_ms(r, "202_corrected", 99).or_else(|| lat_ms(r, "202", 99)),
                digits: 3,
            },
            Row {
                caption: "errors",
                value: |r| fig(r, "errors"),
                digits: 0,
            },
        ],
        "wrk" => vec![
            Row {
                caption: "answered 2xx per s",
                value: |r| fig(r, "requests_per_s_ok"),
                digits: 0,
            },
            Row {
                caption: "p50 (ms, wrk)",
                value: |r| Some(fig(r, "latency_p50_us")? / 1e3),
                digits: 3,
            },
            Row {
                caption: "p99 (ms, wrk)",
                value: |r| Some(fig(r, "latency_p99_us")? / 1e3),
                digits: 3,
            },
            Row {
                caption: "non-2xx + socket errors",
                value: |r| Some(fig(r, "non_2xx")? + fig(r, "socket_errors")?),
                digits: 0,
            },
            Row {
                caption: "wrk cores",
                value: |r| fig(r, "cpu_cores_wrk"),
                digits: 2,
            },
        ],
        "connections" => vec![
            Row {
                caption: "connections open",
                value: |r| fig(r, "connections_open"),
                digits: 0,
            },
            Row {
                caption: "set-up time (s)",
                value: |r| fig(r, "connect_seconds"),
                digits: 2,
            },
            Row {
                caption: "server memory per connection (KiB)",
                value: |r| fig(r, "server_rss_per_conn_kib"),
                digits: 2,
            },
            Row {
                caption: "failed + closed during hold",
                value: |r| {
                    Some(fig(r, "connect_failures")? + fig(r, "closed_by_server_during_hold")?)
                },
                digits: 0,
            },
        ],
        "rooms" => vec![
            Row {
                caption: "rooms opened",
                value: |r| fig(r, "rooms_opened"),
                digits: 0,
            },
            Row {
                caption: "resident bytes per room",
                value: |r| fig(r, "bytes_per_room"),
                digits: 0,
            },
            Row {
                caption: "shared-memory bytes per room (Nchan)",
                value: |r| fig(r, "shared_bytes_per_room"),
                digits: 0,
            },
            Row {
                caption: "writes/s opening rooms",
                value: |r| fig(r, "open_writes_per_s"),
                digits: 0,
            },
            Row {
                caption: "writes/s into one room",
                value: |r| fig(r, "existing_writes_per_s"),
                digits: 0,
            },
            Row {
                caption: "opening / existing",
                value: |r| fig(r, "open_to_existing"),
                digits: 2,
            },
        ],
        _ => Vec::new(),
    };
    out.extend(common);
    out
}

/// The latency series a comparison plot overlays.
fn main_latency(scenario: &str) -> &'static [&'static str] {
    match scenario {
        "fanout" => &["e2e"],
        "intake" => &["202_corrected", "202"],
        "connections" => &["connect_to_hello"],
        "rooms" => &["open_write"],
        _ => &[],
    }
}

fn fmt(v: f64, digits: usize) -> String {
    if digits == 0 {
        let n = v.round() as i64;
        // Thousands separated with commas.
        let s = n.abs().to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if n < 0 { format!("-{out}") } else { out }
    } else {
        format!("{v:.digits$}")
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn cell(values: Vec<f64>, digits: usize) -> String {
    match values.len() {
        0 => "–".to_owned(),
        1 => fmt(values[0], digits),
        n => {
            let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!(
                "{} ({}–{}, {n} runs)",
                fmt(median(values), digits),
                fmt(lo, digits),
                fmt(hi, digits)
            )
        }
    }
}

fn collect(dir: &Path, out: &mut Vec<Report>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path)?;
            match serde_json::from_str::<Report>(&text) {
                Ok(r) => out.push(r),
                Err(e) => eprintln!("skipping {}: {e}", path.display()),
            }
        }
    }
    Ok(())
}

/// The markdown of every shape, in scenario then label order.
fn render(reports: &[Report]) -> String {
    let mut shapes: BTreeMap<(&str, &str), BTreeMap<&str, Vec<&Report>>> = BTreeMap::new();
    for r in reports {
        shapes
            .entry((&r.scenario, &r.label))
            .or_default()
            .entry(&r.target)
            .or_default()
            .push(r);
    }
    let mut md = String::new();
    for ((scenario, label), targets) in &shapes {
        let cols: Vec<&str> = TARGETS
            .iter()
            .copied()
            .filter(|t| targets.contains_key(t))
            .chain(targets.keys().copied().filter(|t| !TARGETS.contains(t)))
            .collect();
        md.push_str(&format!("\n### {scenario} {label}\n\n| |"));
        for c in &cols {
            md.push_str(&format!(" {c} |"));
        }
        md.push_str("\n|---|");
        md.push_str(&"---|".repeat(cols.len()));
        md.push('\n');
        for row in rows(scenario) {
            let cells: Vec<String> = cols
                .iter()
                .map(|c| {
                    let values = targets[c].iter().filter_map(|r| (row.value)(r)).collect();
                    cell(values, row.digits)
                })
                .collect();
            if cells.iter().all(|c| c == "–") {
                continue;
            }
            md.push_str(&format!("| {} |", row.caption));
            for c in cells {
                md.push_str(&format!(" {c} |"));
            }
            md.push('\n');
        }
    }
    md
}

/// One plot per shape overlaying the targets' first runs.
fn plots(reports: &[Report], out: &Path) -> Result<()> {
    let mut shapes: BTreeMap<(&str, &str), BTreeMap<&str, &Report>> = BTreeMap::new();
    for r in reports {
        shapes
            .entry((&r.scenario, &r.label))
            .or_default()
            .entry(&r.target)
            .or_insert(r);
    }
    for ((scenario, label), targets) in shapes {
        if targets.len() < 2 {
            continue;
        }
        let mut curves = Vec::new();
        let mut timelines = Vec::new();
        let mut rate_label = String::new();
        for (target, r) in &targets {
            if let Some(l) = main_latency(scenario)
                .iter()
                .find_map(|n| r.latencies.get(*n))
            {
                curves.push(((*target).to_owned(), l.curve.as_slice()));
            }
            timelines.push(((*target).to_owned(), r.timeline.as_slice()));
            rate_label = format!("{} per second", r.timeline_label);
        }
        if curves.is_empty() && timelines.iter().all(|(_, t)| t.is_empty()) {
            continue;
        }
        let svg = report::plot(
            &format!("{scenario} [{label}]: targets side by side"),
            &curves,
            &timelines,
            &rate_label,
        );
        let path = out.join(format!(
            "compare-{scenario}-{}.svg",
            label.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
        ));
        std::fs::write(&path, svg).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

pub(crate) fn run(args: &Args) -> Result<()> {
    let mut reports = Vec::new();
    for d in &args.dirs {
        collect(d, &mut reports)?;
    }
    let out = &args.dirs[0];
    let md = render(&reports);
    let path = out.join("summary.md");
    std::fs::write(&path, &md).with_context(|| format!("write {}", path.display()))?;
    plots(&reports, out)?;
    println!("{md}");
    eprintln!("wrote {} and the compare-*.svg plots", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn report(target: &str, rate: f64) -> Report {
        let mut r = Report::new("wrk", "64c", target, serde_json::json!({}));
        r.figure("requests_per_s_ok", rate);
        r
    }

    #[test]
    fn targets_side_by_side_with_medians_of_repeated_runs() {
        let reports = vec![
            report("limit-202", 150_000.0),
            report("ours", 80_000.0),
            report("ours", 90_000.0),
            report("ours", 70_000.0),
        ];
        let md = render(&reports);
        assert!(md.contains("### wrk 64c"), "{md}");
        assert!(md.contains("| | ours | limit-202 |"), "{md}");
        assert!(
            md.contains("| answered 2xx per s | 80,000 (70,000–90,000, 3 runs) | 150,000 |"),
            "{md}"
        );
        assert!(
            !md.contains("wrk cores"),
            "rows without values are left out: {md}"
        );
    }
}
