//! The shipped Grafana dashboard and Prometheus alert rules (`deploy/`), checked for real:
//! `promtool` checks and unit-tests the rules, and a real Prometheus server on loopback scrapes
//! a running stack under traffic and evaluates every dashboard and alert expression.
//!
//! Needs Debian's `prometheus` package (`prometheus` and `promtool` on `PATH`, or
//! `PROMETHEUS_BIN` / `PROMTOOL_BIN`); `scripts/test` installs it when it is missing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use tests::{SseClient, Stack, WsClient, wait_for};

use crate::util::{DEADLINE, message};

/// Grafana's variables, replaced the way Grafana would for a Prometheus query.
const GRAFANA_VARS: [(&str, &str); 4] = [
    ("$__rate_interval", "1m"),
    ("$__interval", "1m"),
    ("$reflektor_job", ".*"),
    ("$ekg_job", ".*"),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// `name` from `$NAME_BIN` or `PATH`.
fn tool(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_ascii_uppercase());
    if let Some(p) = std::env::var_os(&var) {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found on PATH: install Debian's prometheus package \
                 (apt-get install prometheus; scripts/test does) or set {var}"
            )
        })
}

/// The alert names defined in `alerts.yml` (its `- alert: Name` lines).
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_owned())
        .collect()
}

#[test]
fn the_alert_rules_pass_promtool_and_every_alert_has_a_unit_test() {
    let dir = repo().join("deploy/prometheus");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["check", "config", "prometheus.example.yml"],
        vec!["test", "rules", "alerts.test.yml"],
    ] {
        let out = std::process::Command::new(tool("promtool"))
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("alerts.test.yml")).unwrap();
    let names = alert_names(&rules);
    assert!(names.len() >= 10, "alerts found: {names:?}");
    for name in names {
        // A test that expects it to fire: its name followed by a non-empty exp_alerts.
        let fires = tests
            .split("- eval_time:")
            .any(|t| t.contains(&format!("alertname: {name}\n")) && t.contains("exp_labels:"));
        assert!(fires, "alerts.test.yml has no case where {name} fires");
    }
}

/// A Prometheus server on loopback with its own config and data directory, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Prometheus {
    async fn start(dir: &Path, reflektor: &str, ekg: &str) -> Prometheus {
        let rules = repo().join("deploy/prometheus/alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: reflektor\n    static_configs:\n      - targets: ['{reflektor}']\n  \
             - job_name: ekg\n    static_configs:\n      - targets: ['{ekg}']\n",
            rules = rules.display(),
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(String::new()));
        // The bound port is only in the log line `msg="Listening on" address=127.0.0.1:PORT`.
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                log.lock().unwrap().push_str(&line);
                log.lock().unwrap().push('\n');
                if line.contains("msg=\"Listening on\"")
                    && let Some(a) = line.split("address=").nth(1)
                {
                    return a.split_whitespace().next().map(str::to_owned);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("prometheus did not start:\n{}", log.lock().unwrap()));
        let keep = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut l = keep.lock().unwrap();
                if l.len() < 1 << 20 {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        Prometheus {
            child,
            url: format!("http://{addr}"),
            log,
        }
    }

    /// Evaluate `expr` now; the result vector, or the error Prometheus gave.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/query", self.url)).unwrap();
        url.query_pairs_mut().append_pair("query", expr);
        let v: Value = reqwest::get(url)
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    async fn get(&self, path: &str) -> Value {
        reqwest::get(format!("{}{path}", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Every `expr` of every panel, rows' nested panels included.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let mut expr = t["expr"].as_str().unwrap_or_default().to_owned();
                for (var, value) in GRAFANA_VARS {
                    expr = expr.replace(var, value);
                }
                out.push((p["title"].as_str().unwrap_or_default().to_owned(), expr));
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Split an alert expression `<signal> <op> <number>` into the signal.
fn alert_signal(expr: &str) -> Option<&str> {
    let expr = expr.trim();
    let (signal, threshold) = [" >= ", " <= ", " == ", " != ", " > ", " < "]
        .iter()
        .filter_map(|op| expr.rsplit_once(op))
        .max_by_key(|(signal, _)| signal.len())?;
    threshold.trim().parse::<f64>().ok().map(|_| signal.trim())
}

#[tokio::test]
async fn a_real_prometheus_scraping_the_stack_evaluates_every_dashboard_and_alert_expression() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path(), 1, &[], &[]).await.unwrap();
    let ekg = &stack.ekgs[0];
    let ws = WsClient::connect(&format!("{}/rooms/ops/ws", ekg.svc.ws_url()))
        .await
        .unwrap();
    let sse = SseClient::connect(&format!("{}/rooms/ops/sse", ekg.svc.url()), None)
        .await
        .unwrap();
    for c in [&ws.rec, &sse.rec] {
        wait_for("hello", DEADLINE, || async {
            !c.of_type("hello").is_empty()
        })
        .await
        .unwrap();
    }
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom = Prometheus::start(
        &prom_dir,
        &stack.reflektor.svc.addr.to_string(),
        &ekg.svc.addr.to_string(),
    )
    .await;

    // Steady traffic while Prometheus scrapes: a post every 50 ms, at most 2,000.
    let traffic = {
        let url = stack.reflektor.svc.url();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for n in 1..=2_000u64 {
                let _answer = client
                    .post(format!("{url}/rooms/ops/messages"))
                    .bearer_auth(tests::stack::TOKEN)
                    .header("content-type", "application/json")
                    .body(message(n).to_string())
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let deadline = Duration::from_secs(60);
    wait_for("both targets up", deadline, || async {
        prom.query("up == 1").await.is_ok_and(|r| r.len() == 2)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; prometheus log:\n{}", prom.log.lock().unwrap()));
    // A record ekg refuses on its merits (rejected there, dead-lettered in reflektor), sent
    // once Prometheus scrapes, so the counters' increase is seen.
    stack
        .reflektor
        .post("/rooms/ops/messages", &json!("not an object"))
        .await
        .unwrap()
        .expect("202");
    wait_for("rates over two scrapes", deadline, || async {
        prom.query("sum(rate(ekg_frames_sent_total[1m])) > 0")
            .await
            .is_ok_and(|r| !r.is_empty())
    })
    .await
    .unwrap();

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/reflektor-ekg.json")).unwrap(),
    )
    .unwrap();
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 20, "dashboard targets: {exprs:?}");
    for (title, expr) in &exprs {
        assert!(!expr.contains('$'), "{title}: unknown variable in {expr}");
        prom.query(expr)
            .await
            .unwrap_or_else(|e| panic!("panel {title:?}: {expr} does not evaluate: {e}"));
        wait_for(
            &format!("data for panel {title:?}: {expr}"),
            deadline,
            || async { prom.query(expr).await.ok().filter(|r| !r.is_empty()) },
        )
        .await
        .unwrap();
    }

    // Every rule loaded, evaluated without error, and its signal has data under traffic.
    let rules = wait_for("every rule evaluated", deadline, || async {
        let v = prom.get("/api/v1/rules").await;
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules.iter().all(|r| {
            r["health"] == "ok"
                && !r["lastEvaluation"]
                    .as_str()
                    .unwrap_or("0001")
                    .starts_with("0001")
        });
        (evaluated && !rules.is_empty()).then_some(rules)
    })
    .await;
    let rules = match rules {
        Ok(r) => r,
        Err(e) => panic!("{e}: {}", prom.get("/api/v1/rules").await),
    };
    let defined =
        alert_names(&std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml")).unwrap());
    assert_eq!(
        rules.len(),
        defined.len(),
        "rules Prometheus loaded: {rules:?}"
    );
    for rule in &rules {
        let name = rule["name"].as_str().unwrap();
        let expr = rule["query"].as_str().unwrap();
        let signal = alert_signal(expr)
            .unwrap_or_else(|| panic!("{name}: {expr} is not `<signal> <op> <number>`"));
        wait_for(
            &format!("data for {name}'s signal {signal}"),
            deadline,
            || async { prom.query(signal).await.ok().filter(|r| !r.is_empty()) },
        )
        .await
        .unwrap();
    }

    // The refused record is visible as it should be: the rejection alert fires, the dead-letter
    // alert is active (pending for its first minute, then firing).
    let fired = wait_for("alerts for the refused record", deadline, || async {
        let v = prom.get("/api/v1/alerts").await;
        let active: Vec<String> = v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                format!(
                    "{} {}",
                    a["labels"]["alertname"].as_str().unwrap_or(""),
                    a["state"].as_str().unwrap_or("")
                )
            })
            .collect();
        active.contains(&"EkgRejectedRecords firing".to_owned())
            && active
                .iter()
                .any(|a| a.starts_with("ReflektorDeadLetters "))
    })
    .await;
    if let Err(e) = fired {
        panic!("{e}: {}", prom.get("/api/v1/alerts").await);
    }
    traffic.abort();
    drop(prom.child);
}
