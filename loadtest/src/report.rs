//! Measurements and their output: histograms, the human summary, a JSON file and an SVG plot.
//!
//! Each task records into its own `Histogram<u64>` in microseconds (1 µs .. 60 s, 3 significant
//! digits) and the histograms are merged with `add` when the run ends, so no lock is taken on
//! the hot path. Throughput over time comes from a shared counter sampled at a fixed period.
//! A run writes `<out>/<scenario>-<label>-<target>.json` and `.svg`; the SVG is
//! written by hand (latency by percentile on the left, throughput over time on the right).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest value a histogram tracks, in µs (60 s).
const MAX_MICROS: u64 = 60_000_000;

/// A fresh latency histogram in microseconds.
pub(crate) fn histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, MAX_MICROS, 3)
        .expect("1 µs .. 60 s at 3 significant digits are valid bounds")
}

/// Record `micros`, clamped into the histogram's range.
pub(crate) fn record(h: &mut Histogram<u64>, micros: u64) {
    let _in_range = h.record(micros.clamp(1, MAX_MICROS));
}

/// Merge many per-task histograms into one.
pub(crate) fn merge<'a>(hs: impl IntoIterator<Item = &'a Histogram<u64>>) -> Histogram<u64> {
    let mut out = histogram();
    for h in hs {
        let _in_range = out.add(h);
    }
    out
}

/// Percentiles shown in summaries and plots.
const PERCENTILES: [f64; 4] = [50.0, 90.0, 99.0, 99.9];

/// What a histogram says, in microseconds.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct LatencySummary {
    pub(crate) count: u64,
    pub(crate) mean_us: f64,
    pub(crate) p50_us: u64,
    pub(crate) p90_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    pub(crate) max_us: u64,
    /// `(percentile, µs)` from 0 to 99.999 for the plot.
    pub(crate) curve: Vec<(f64, u64)>,
}

impl LatencySummary {
    pub(crate) fn from_histogram(h: &Histogram<u64>) -> LatencySummary {
        let q = |p: f64| h.value_at_quantile(p / 100.0);
        let curve = [
            0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999,
        ]
        .iter()
        .map(|&p| (p, q(p)))
        .collect();
        LatencySummary {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: q(PERCENTILES[0]),
            p90_us: q(PERCENTILES[1]),
            p99_us: q(PERCENTILES[2]),
            p999_us: q(PERCENTILES[3]),
            max_us: h.max(),
            curve,
        }
    }

    fn line(&self) -> String {
        format!(
            "n={:<9} p50={} p90={} p99={} p99.9={} max={}",
            self.count,
            fmt_us(self.p50_us),
            fmt_us(self.p90_us),
            fmt_us(self.p99_us),
            fmt_us(self.p999_us),
            fmt_us(self.max_us)
        )
    }
}

fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// A counter sampled every `period` into `(seconds since start, events per second)`.
pub(crate) struct Timeline {
    pub(crate) counter: Arc<AtomicU64>,
    samples: Arc<std::sync::Mutex<Vec<(f64, f64)>>>,
    stop: tokio_util_stop::Stop,
}

/// A tiny stop flag so the sampler ends with the run (no extra dependency).
mod tokio_util_stop {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Clone, Default)]
    pub(crate) struct Stop(Arc<AtomicBool>);

    impl Stop {
        pub(crate) fn set(&self) {
            self.0.store(true, Ordering::Relaxed);
        }
        pub(crate) fn is_set(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
    }
}

impl Timeline {
    /// Start sampling `counter` every `period` (bounded by `limit` in total).
    pub(crate) fn start(period: Duration, limit: Duration) -> Timeline {
        let counter = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = tokio_util_stop::Stop::default();
        let (c, s, st) = (counter.clone(), samples.clone(), stop.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut last = c.load(Ordering::Relaxed);
            let mut last_t = start;
            while !st.is_set() && start.elapsed() < limit {
                tick.tick().await;
                let now = Instant::now();
                let v = c.load(Ordering::Relaxed);
                let rate = (v - last) as f64 / (now - last_t).as_secs_f64().max(1e-9);
                if let Ok(mut s) = s.lock() {
                    s.push(((now - start).as_secs_f64(), rate));
                }
                last = v;
                last_t = now;
            }
        });
        Timeline {
            counter,
            samples,
            stop,
        }
    }

    /// Stop sampling and take the samples.
    pub(crate) fn finish(&self) -> Vec<(f64, f64)> {
        self.stop.set();
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// The 1-minute load average when the harness started (see [`note_start`]).
static LOADAVG_AT_START: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

/// Remember the load average at the start of the run, for the report.
pub(crate) fn note_start() {
    if let Some(l) = crate::spawn::loadavg_1m() {
        let _set_once = LOADAVG_AT_START.set(l);
    }
}

/// One run's results.
#[derive(Debug, Serialize, serde::Deserialize)]
pub(crate) struct Report {
    pub(crate) scenario: String,
    pub(crate) label: String,
    /// What was driven: `ours`, `nchan`, `limit-*`, or `external` (given URLs).
    #[serde(default)]
    pub(crate) target: String,
    /// Unix seconds at the end of the run.
    pub(crate) finished_at: u64,
    /// The scenario's parameters as given.
    pub(crate) params: serde_json::Value,
    /// Named figures (rates, counts, memory).
    pub(crate) figures: BTreeMap<String, f64>,
    /// Named latency distributions.
    pub(crate) latencies: BTreeMap<String, LatencySummary>,
    /// `(s, per second)` samples and what they count.
    pub(crate) timeline: Vec<(f64, f64)>,
    pub(crate) timeline_label: String,
    /// Things worth knowing about this run (errors seen, targets missed).
    pub(crate) notes: Vec<String>,
}

impl Report {
    pub(crate) fn new(
        scenario: &str,
        label: &str,
        target: &str,
        params: serde_json::Value,
    ) -> Report {
        Report {
            scenario: scenario.to_owned(),
            label: label.to_owned(),
            target: target.to_owned(),
            finished_at: 0,
            params,
            figures: BTreeMap::new(),
            latencies: BTreeMap::new(),
            timeline: Vec::new(),
            timeline_label: String::new(),
            notes: Vec::new(),
        }
    }

    pub(crate) fn figure(&mut self, name: &str, value: f64) {
        self.figures.insert(name.to_owned(), value);
    }

    pub(crate) fn latency(&mut self, name: &str, h: &Histogram<u64>) {
        self.latencies
            .insert(name.to_owned(), LatencySummary::from_histogram(h));
    }

    /// Print the summary and write the JSON and SVG files under `out`.
    pub(crate) fn finish(mut self, out: &Path) -> Result<()> {
        self.finished_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if let Some(l) = LOADAVG_AT_START.get() {
            self.figure("loadavg_1m_at_start", *l);
        }
        if let Some(l) = crate::spawn::loadavg_1m() {
            self.figure("loadavg_1m_at_end", l);
        }
        println!("== {} [{}] {}", self.scenario, self.label, self.target);
        for (k, v) in &self.figures {
            if v.fract() == 0.0 && v.abs() < 1e15 {
                println!("  {k:<28} {}", *v as i64);
            } else {
                println!("  {k:<28} {v:.2}");
            }
        }
        for (k, l) in &self.latencies {
            println!("  {k:<28} {}", l.line());
        }
        for n in &self.notes {
            println!("  note: {n}");
        }
        std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
        let stem = format!(
            "{}-{}-{}",
            self.scenario,
            sanitize(&self.label),
            sanitize(&self.target)
        );
        let json_path: PathBuf = out.join(format!("{stem}.json"));
        std::fs::write(&json_path, serde_json::to_vec_pretty(&self)?)
            .with_context(|| format!("write {}", json_path.display()))?;
        let svg_path = out.join(format!("{stem}.svg"));
        std::fs::write(&svg_path, self.svg())
            .with_context(|| format!("write {}", svg_path.display()))?;
        println!("  wrote {} and {}", json_path.display(), svg_path.display());
        Ok(())
    }

    /// Latency by percentile (log "nines" axis) and throughput over time, side by side.
    pub(crate) fn svg(&self) -> String {
        let curves: Vec<(String, &[(f64, u64)])> = self
            .latencies
            .iter()
            .map(|(k, l)| (k.clone(), l.curve.as_slice()))
            .collect();
        plot(
            &format!("{} [{}] {}", self.scenario, self.label, self.target),
            &curves,
            &[(self.timeline_label.clone(), self.timeline.as_slice())],
            &format!("{} per second", self.timeline_label),
        )
    }
}

/// Series colours, in order.
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// An SVG of latency curves (`(percentile, µs)` per series, log "nines" axis) on the left and
/// throughput timelines (`(s, per second)` per series) on the right, with a legend each.
pub(crate) fn plot(
    title: &str,
    curves: &[(String, &[(f64, u64)])],
    timelines: &[(String, &[(f64, f64)])],
    rate_label: &str,
) -> String {
    let (w, h) = (960.0, 400.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="{}" y="18" text-anchor="middle" font-size="14">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    // Left panel: latency by percentile.
    let panel = Panel {
        x: 60.0,
        y: 40.0,
        w: 380.0,
        h: 300.0,
    };
    let series: Vec<(&String, Vec<(f64, f64)>)> = curves
        .iter()
        .map(|(k, curve)| {
            (
                k,
                curve
                    .iter()
                    .map(|&(p, v)| (nines(p), v as f64 / 1e3))
                    .collect(),
            )
        })
        .collect();
    let ymax = nice_max(
        series
            .iter()
            .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let xmax = nines(99.999);
    panel.axes(&mut s, "percentile", "latency (ms)", ymax);
    for (label, p) in [
        ("50", 50.0),
        ("90", 90.0),
        ("99", 99.0),
        ("99.9", 99.9),
        ("99.99", 99.99),
        ("99.999", 99.999),
    ] {
        let x = panel.x + nines(p) / xmax * panel.w;
        let _ = write!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            panel.y + panel.h + 14.0
        );
    }
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        panel.polyline(&mut s, pts, xmax, ymax, color);
        panel.legend(&mut s, i, label, color);
    }
    // Right panel: throughput over time.
    let panel = Panel {
        x: 540.0,
        y: 40.0,
        w: 380.0,
        h: 300.0,
    };
    let all = || timelines.iter().flat_map(|(_, pts)| pts.iter());
    let tmax = all().map(|p| p.0).fold(1.0, f64::max);
    let rmax = nice_max(all().map(|p| p.1).fold(0.0, f64::max));
    panel.axes(&mut s, "seconds", rate_label, rmax);
    for i in 0..=4 {
        let t = tmax * i as f64 / 4.0;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.0}</text>"#,
            panel.x + panel.w * i as f64 / 4.0,
            panel.y + panel.h + 14.0
        );
    }
    for (i, (label, pts)) in timelines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        panel.polyline(&mut s, pts, tmax, rmax, color);
        if timelines.len() > 1 {
            panel.legend(&mut s, i, label, color);
        }
    }
    s.push_str("</svg>\n");
    s
}

/// The x position of percentile `p` on a "nines" axis: -log10(1 - p/100).
fn nines(p: f64) -> f64 {
    -(1.0 - p / 100.0).max(1e-6).log10()
}

/// A round number at or above `v` for an axis maximum.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

struct Panel {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

impl Panel {
    fn axes(&self, s: &mut String, xlabel: &str, ylabel: &str, ymax: f64) {
        let _ = write!(
            s,
            r##"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
            self.x, self.y, self.w, self.h
        );
        for i in 0..=4 {
            let y = self.y + self.h - self.h * i as f64 / 4.0;
            let v = ymax * i as f64 / 4.0;
            let _ = write!(
                s,
                r##"<line x1="{}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                self.x,
                self.x + self.w,
                self.x - 4.0,
                y + 4.0,
                short(v)
            );
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            self.x + self.w / 2.0,
            self.y + self.h + 30.0,
            esc(xlabel)
        );
        let _ = write!(
            s,
            r#"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            self.x - 45.0,
            self.y + self.h / 2.0,
            esc(ylabel)
        );
    }

    fn legend(&self, s: &mut String, i: usize, label: &str, color: &str) {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" fill="{color}">{}</text>"#,
            self.x + 8.0,
            self.y + 14.0 + 14.0 * i as f64,
            esc(label)
        );
    }

    fn polyline(&self, s: &mut String, pts: &[(f64, f64)], xmax: f64, ymax: f64, color: &str) {
        let mut d = String::new();
        for &(x, y) in pts {
            let px = self.x + (x / xmax).clamp(0.0, 1.0) * self.w;
            let py = self.y + self.h - (y / ymax).clamp(0.0, 1.0) * self.h;
            let _ = write!(d, "{px:.1},{py:.1} ");
        }
        let _ = write!(
            s,
            r#"<polyline points="{d}" fill="none" stroke="{color}" stroke-width="1.5"/>"#
        );
    }
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Report {
    /// Record the cores each process used between two [`crate::spawn::cpu_snapshot`]s.
    pub(crate) fn cpu(&mut self, before: &[(String, f64)], after: &[(String, f64)], secs: f64) {
        for ((name, b), (_, a)) in before.iter().zip(after) {
            self.figure(
                &format!("cpu_cores_{name}"),
                ((a - b) / secs.max(1e-9) * 100.0).round() / 100.0,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_histograms_give_percentiles_and_an_svg() {
        let mut a = histogram();
        let mut b = histogram();
        for v in 1..=500 {
            record(&mut a, v);
            record(&mut b, v + 500);
        }
        let m = merge([&a, &b]);
        let l = LatencySummary::from_histogram(&m);
        assert_eq!(l.count, 1000);
        assert!((495..=505).contains(&l.p50_us));
        assert!(l.max_us >= 1000);
        let mut r = Report::new("intake", "x<y", "ours", serde_json::json!({}));
        r.latency("202", &m);
        r.timeline = vec![(0.5, 10.0), (1.0, 20.0)];
        let svg = r.svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("x&lt;y"));
    }
}
