//! The monitoring mixin (monitoring/): the Grafana dashboard and the
//! recording and alerting rules.
//!
//! - The dashboard is what monitoring/dashboard.py writes, in the current
//!   schema, with a panel for every metric of every built-in (bpf/*.toml).
//! - The rules pass `promtool check rules`, and `promtool test rules` with
//!   input series taken from real outputs: the package's timer's runs
//!   (`run --pin`) with load the test makes between them.
//! - Every query of the dashboard and the rules parses (Prometheus' query
//!   API), and returns data from a real Prometheus that scraped `bpfsnap
//!   serve` and node_exporter's textfile collector over pinned runs, with
//!   load the test makes. An alert's expression is checked without its
//!   threshold (what it compares): a healthy host does not fire it.
//!   Queries for what this host cannot produce are named in
//!   [`CANNOT_PRODUCE`] with the reason.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{path_str, PinDir};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// What `$__rate_interval` stands for in the test: 30 scrapes.
const RATE_INTERVAL: &str = "30s";

/// Queries no load this test makes can give data for, and why. Empty:
/// everything the mixin queries is made here (OOM kills in a memory cgroup,
/// block I/O on a loop device, retransmissions in a network namespace),
/// and what bpfsnap writes only once something went wrong (dropped series,
/// failed scrapes) is queried with `or` a zero. A machine that lacks a
/// memory cgroup or a loop device says so through
/// [`common::not_exercised`], which fails where kernel tests are required.
const CANNOT_PRODUCE: &[(&str, &str)] = &[];

fn rules_file() -> PathBuf {
    Path::new(ROOT).join("monitoring/rules/bpfsnap.yml")
}

fn dashboard() -> serde_json::Value {
    let path = Path::new(ROOT).join("monitoring/dashboards/bpfsnap.json");
    serde_json::from_str(&fs::read_to_string(&path).unwrap()).expect("the dashboard is JSON")
}

/// A query of the mixin: where it is and its expression.
#[derive(Debug, Clone)]
struct Query {
    place: String,
    expr: String,
}

/// Every target of every panel, and the metric of every `label_values()`
/// variable.
fn dashboard_queries() -> Vec<Query> {
    let dashboard = dashboard();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(Query {
                place: format!("panel {:?}", panel["title"].as_str().unwrap()),
                expr: target["expr"].as_str().unwrap().to_string(),
            });
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(definition) = variable["definition"].as_str() {
            let inner = definition
                .strip_prefix("label_values(")
                .and_then(|rest| rest.split_once(','))
                .map(|(metric, _)| metric.to_string())
                .unwrap_or_else(|| panic!("variable query {definition:?}"));
            queries.push(Query {
                place: format!("variable {}", variable["name"]),
                expr: inner,
            });
        }
    }
    queries
}

/// Every rule: (name, expression, whether it is an alert).
fn rules() -> Vec<(String, String, bool)> {
    let text = fs::read_to_string(rules_file()).unwrap();
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut rules = Vec::new();
    for group in yaml["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let expr = rule["expr"].as_str().unwrap().trim().to_string();
            match (rule["alert"].as_str(), rule["record"].as_str()) {
                (Some(alert), _) => rules.push((alert.to_string(), expr, true)),
                (_, Some(record)) => rules.push((record.to_string(), expr, false)),
                _ => panic!("a rule neither alert nor record: {rule:?}"),
            }
        }
    }
    rules
}

/// The rules' queries: each expression, the series each recording rule
/// records, and what each alert compares ([`compared`]).
fn rule_queries() -> Vec<Query> {
    let mut queries = Vec::new();
    for (name, expr, alert) in rules() {
        let compared = alert.then(|| compared(&expr).to_string());
        queries.push(Query {
            place: format!("rule {name}"),
            expr: compared.unwrap_or_else(|| name.clone()),
        });
    }
    queries
}

/// The left side of an alert's first comparison outside brackets, braces
/// and strings: what it compares to its threshold.
fn compared(expr: &str) -> &str {
    let bytes = expr.as_bytes();
    let (mut depth, mut quoted) = (0i32, false);
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' if i == 0 || bytes[i - 1] != b'\\' => quoted = !quoted,
            _ if quoted => {}
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth -= 1,
            b'>' | b'<' if depth == 0 => return expr[..i].trim(),
            b'=' | b'!' if depth == 0 && bytes.get(i + 1) == Some(&b'=') => {
                return expr[..i].trim()
            }
            _ => {}
        }
    }
    panic!("an alert without a comparison: {expr}")
}

/// A dashboard expression as Grafana sends it: its variables filled in.
fn concrete(expr: &str) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$instance", ".+")
}

/// The metric names of every built-in's spec (bpf/*.toml): the `name` of
/// each `[[metrics.counters]]` and `[[metrics.histograms]]`, by config.
fn builtin_metrics() -> BTreeMap<String, Vec<String>> {
    let mut metrics = BTreeMap::new();
    for entry in fs::read_dir(Path::new(ROOT).join("bpf")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "toml") {
            continue;
        }
        let config = path.file_stem().unwrap().to_str().unwrap().to_string();
        let text = fs::read_to_string(&path).unwrap();
        let mut names = Vec::new();
        let mut in_metric = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_metric = line == "[[metrics.counters]]" || line == "[[metrics.histograms]]";
            } else if let Some(name) = line.strip_prefix("name = ").filter(|_| in_metric) {
                names.push(format!("bpfsnap_{}", name.trim_matches('"')));
                in_metric = false;
            }
        }
        assert!(!names.is_empty(), "{config}: no metrics found");
        metrics.insert(config, names);
    }
    metrics
}

/// The names of the built-ins, comma-separated (every one of bpf/).
fn all_builtins() -> String {
    let names: Vec<String> = builtin_metrics().into_keys().collect();
    names.join(",")
}

// ---------------------------------------------------------------- no kernel

#[test]
fn the_dashboard_is_what_its_script_writes() {
    let output = Command::new("python3")
        .arg(Path::new(ROOT).join("monitoring/dashboard.py"))
        .arg("--check")
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_dashboard_has_the_current_schema_and_its_variables() {
    let dashboard = dashboard();
    assert_eq!(dashboard["schemaVersion"], 39);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let named = |name: &str| variables.iter().find(|v| v["name"] == name).cloned();
    let datasource = named("datasource").expect("a datasource variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    assert_eq!(
        named("instance").expect("an instance variable")["type"],
        "query"
    );
    let mut ids = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "{panel}");
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{target}");
            let expr = target["expr"].as_str().unwrap();
            // Histograms: heatmaps of bucket rates, summed by le.
            if panel["type"] == "heatmap" {
                assert!(expr.starts_with("sum by (le) (rate("), "{expr}");
                assert_eq!(target["format"], "heatmap");
            }
        }
    }
}

/// A panel for every metric of every built-in; a heatmap for every
/// histogram.
#[test]
fn the_dashboard_shows_every_builtin() {
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().unwrap();
    let exprs_of = |kind: Option<&str>| -> Vec<String> {
        panels
            .iter()
            .filter(|panel| kind.is_none_or(|kind| panel["type"] == kind))
            .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
            .map(|target| target["expr"].as_str().unwrap().to_string())
            .collect()
    };
    let all = exprs_of(None);
    let heatmaps = exprs_of(Some("heatmap"));
    for (config, metrics) in builtin_metrics() {
        for metric in metrics {
            assert!(
                all.iter().any(|expr| expr.contains(&metric)),
                "no panel shows {metric} ({config})"
            );
            if !metric.ends_with("_total") {
                let bucket = format!("{metric}_bucket");
                assert!(
                    heatmaps.iter().any(|expr| expr.contains(&bucket)),
                    "no heatmap of {metric} ({config})"
                );
            }
        }
    }
}

#[test]
fn the_rules_pass_promtool_check() {
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(rules_file())
        .output()
        .expect("run promtool (make test-deps installs the prometheus package)");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Every alert says what to do.
    let text = fs::read_to_string(rules_file()).unwrap();
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    for group in yaml["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            if let Some(alert) = rule["alert"].as_str() {
                let runbook = rule["annotations"]["runbook"].as_str().unwrap_or_default();
                assert!(runbook.len() > 100, "{alert}: no runbook annotation");
            }
        }
    }
}

/// Every expression of the dashboard and the rules, as it is, parses in a
/// real Prometheus (no data needed).
#[test]
fn every_expression_parses() {
    let prometheus = common::Prometheus::start_config(
        tempfile::tempdir().unwrap(),
        "global:\n  scrape_interval: 1s\nscrape_configs: []\n",
    );
    prometheus.wait_ready();
    let mut exprs: Vec<Query> = dashboard_queries();
    for (name, expr, _) in rules() {
        exprs.push(Query {
            place: format!("rule {name}"),
            expr,
        });
    }
    let failed: Vec<String> = exprs
        .iter()
        .filter_map(|query| {
            let error = prometheus.instant(&concrete(&query.expr)).err()?;
            Some(format!("{}: {}: {error}", query.place, query.expr))
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

// ---------------------------------------------------------------- the load

/// Rare system calls ([`common::RARE_SYSCALL`]) made between two outputs.
const CALLS: u64 = 200;
/// semtimedop waits of [`WAIT`] made between two outputs: the syscall
/// latency histogram puts them in (2^24 ns, 2^25 ns].
const WAITS: u64 = 3;
const WAIT: Duration = Duration::from_millis(20);
/// Datagrams sent between two outputs to a socket that drops them.
const DATAGRAMS: u64 = 400;
/// O_DIRECT writes and reads of [`IO_SIZE`] between two outputs.
const IOS: usize = 8;
const IO_SIZE: usize = 64 * 1024;

/// What the load needs, set up once: a loop device for block I/O, a memory
/// cgroup for an OOM kill, a TCP connection that loses packets.
struct Load {
    device: Option<common::LoopDevice>,
    oom: Option<common::OomCgroup>,
    lossy: common::LossyConnection,
    /// What this machine lacks: (metric, why).
    lacking: Vec<(&'static str, String)>,
}

impl Load {
    fn new(test: &str) -> Load {
        let mut lacking = Vec::new();
        let device = common::LoopDevice::attach(2 * IO_SIZE * IOS)
            .map_err(|why| {
                common::not_exercised(test, &format!("no loop device for block I/O: {why}"));
                lacking.push(("bpfsnap_block_io_", format!("no loop device: {why}")));
            })
            .ok();
        let oom = common::OomCgroup::create()
            .map_err(|why| {
                common::not_exercised(test, &format!("no memory cgroup for an OOM kill: {why}"));
                lacking.push(("bpfsnap_oom_kills", format!("no memory cgroup: {why}")));
                lacking.push((
                    "bpfsnap_container_oom_kills",
                    format!("no memory cgroup: {why}"),
                ));
            })
            .ok();
        Load {
            device,
            oom,
            lossy: common::LossyConnection::new("mixin"),
            lacking,
        }
    }

    /// System calls (rare ones, waits, failing ones), sleeps, packets
    /// dropped, a TCP connection, a retransmission, processes started and
    /// ended (signals: SIGCHLD), block I/O; an OOM kill if `oom_kill`.
    fn make(&mut self, oom_kill: bool) {
        common::rare_syscalls(CALLS);
        common::timed_waits(WAITS, WAIT);
        assert!(fs::metadata("/nonexistent/bpfsnap-mixin").is_err());
        // Load, not synchronisation: a nanosleep's hrtimer.
        std::thread::sleep(Duration::from_millis(10));
        common::udp_receive_buffer_drops(DATAGRAMS);
        common::tcp_loopback_exchange();
        self.lossy.retransmit();
        common::short_processes(2);
        if let Some(device) = &self.device {
            common::direct_io(&device.path, IO_SIZE, IOS);
        }
        if let (true, Some(cgroup)) = (oom_kill, &mut self.oom) {
            let status = cgroup.run_hog();
            assert!(
                libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
                "the memory hog was not OOM-killed (wait status {status:#x})"
            );
        }
    }

    /// The disk the block I/O goes to (loopN).
    fn disk(&self) -> Option<&str> {
        self.device.as_ref().map(|device| device.name.as_str())
    }
}

/// Built-ins `run --pin` refuses: their event-stream counters are counted
/// by the bpfsnap process itself (`serve` runs them in the live test).
const NOT_PINNABLE: &[&str] = &["exits", "exits_by_container"];

/// One run as the package's timer runs it, of every built-in but
/// [`NOT_PINNABLE`], pinned in `pin`, into `output`; returns the output.
fn pinned_run(pin: &Path, output: &Path) -> String {
    let builtins: Vec<String> = builtin_metrics()
        .into_keys()
        .filter(|name| !NOT_PINNABLE.contains(&name.as_str()))
        .collect();
    let result = common::bpfsnap()
        .args(["run", "--quiet", "--pin", path_str(pin), "--builtin"])
        .arg(builtins.join(","))
        .args(["--output", path_str(output)])
        .output()
        .expect("run bpfsnap");
    assert!(
        result.status.success(),
        "bpfsnap run --pin: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    fs::read_to_string(output).expect("the run wrote its output")
}

// ---------------------------------------------------------------- promtool test rules

/// Outputs of the timer's runs, one a minute in promtool's time: enough for
/// the alerts' `for: 10m`.
const OUTPUTS: usize = 16;
/// The instance label the input series get, as node_exporter's target.
const INSTANCE: &str = "node:9100";

/// The value of `metric` (a series without labels but `output`) in `text`.
fn self_value(text: &str, metric: &str) -> f64 {
    common::samples(text, metric)
        .first()
        .unwrap_or_else(|| panic!("no {metric}\n{text}"))
        .1
}

/// Whether a line of an output goes into promtool's input: every sample
/// but the latency histograms of system calls other than the test's
/// semtimedop (a rule evaluation of promtool's unit tests may load at most
/// 50,000 samples; ~100 system calls × 30 buckets × 6 samples exceed it).
fn keep_input(line: &str) -> bool {
    !line.starts_with('#')
        && !line.is_empty()
        && (!line.starts_with("bpfsnap_syscall_latency_seconds")
            || line.contains(r#"syscall="semtimedop""#))
}

/// `outputs` as promtool's input series, one a minute from 0, each with
/// [`INSTANCE`]. Unix times (`*_timestamp_seconds`) are moved to promtool's
/// clock: output `i`'s window end is minute `i`.
fn input_series(outputs: &[String]) -> String {
    let mut series: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, text) in outputs.iter().enumerate() {
        let end = self_value(text, "bpfsnap_window_end_timestamp_seconds");
        for line in text.lines().filter(|l| keep_input(l)) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            let mut value: f64 = value.parse().unwrap();
            let metric = name.split('{').next().unwrap();
            if metric.ends_with("_timestamp_seconds") {
                value = value - end + 60.0 * i as f64;
            }
            let name = match name.split_once('{') {
                Some((metric, labels)) => format!("{metric}{{instance=\"{INSTANCE}\",{labels}"),
                None => format!("{name}{{instance=\"{INSTANCE}\"}}"),
            };
            series
                .entry(name)
                .or_insert_with(|| vec!["_".into(); outputs.len()])[i] = value.to_string();
        }
    }
    series
        .iter()
        .map(|(name, values)| {
            format!(
                "      - series: '{}'\n        values: '{}'\n",
                name.replace('\'', "''"),
                values.join(" ")
            )
        })
        .collect()
}

/// Checks at the last output's time: each expression must give one
/// sample, `{}` = `value` (a `count()` of what must hold, or a number).
fn promtool_rules_test(outputs: &[String], checks: &[(String, f64)]) -> Result<(), String> {
    let mut yaml = format!(
        "rule_files: ['{}']\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{}    promql_expr_test:\n",
        rules_file().display(),
        input_series(outputs)
    );
    for (expr, value) in checks {
        yaml.push_str(&format!(
            "      - expr: '{}'\n        eval_time: {}m\n        exp_samples:\n          - labels: '{{}}'\n            value: {value}\n",
            expr.replace('\'', "''"),
            outputs.len() - 1
        ));
    }
    common::promtool_test_rules(&yaml)
}

/// The rare system call's calls per second while counted, as the outputs
/// say, over the last 4 and the last 5 of them (the range of a `[5m]` rate
/// holds one or the other): (lowest, highest).
fn rare_call_rate(outputs: &[String]) -> (f64, f64) {
    let calls = format!(
        r#"bpfsnap_syscalls_total{{syscall="{}"}}"#,
        common::RARE_SYSCALL
    );
    let sampled = r#"bpfsnap_sampled_seconds_total{config="syscalls"}"#;
    let value = |i: usize, series: &str| {
        common::sample(&outputs[i], series).unwrap_or_else(|| panic!("no {series} in output {i}"))
    };
    let last = outputs.len() - 1;
    let rate = |steps: usize| {
        (value(last, &calls) - value(last - steps, &calls))
            / (value(last, sampled) - value(last - steps, sampled))
    };
    (rate(4).min(rate(5)), rate(4).max(rate(5)))
}

/// What the rules must give at the last output: `count()`s of what must
/// hold (1), or of alerts that must not fire (0). Not the CPU profile's,
/// which samples rather than counts (tests/builtins_cpu.rs checks that
/// pinned, it samples between runs: it once did not, found by this file).
fn rule_checks(outputs: &[String], load: &Load) -> Vec<(String, f64)> {
    let (low, high) = rare_call_rate(outputs);
    let mut checks = vec![
        format!(
            r#"count(instance_syscall:bpfsnap_syscalls:rate5m{{syscall="{}"}} >= {} <= {})"#,
            common::RARE_SYSCALL,
            low * 0.98,
            high * 1.02
        ),
        // The waits' bucket, (2^24 ns, 2^25 ns], or the next for a wait a
        // loaded machine made longer.
        r#"count(instance_syscall:bpfsnap_syscall_latency_seconds:p99_rate5m{syscall="semtimedop"} > 0.016777216 <= 0.067108864)"#.into(),
        "count(instance:bpfsnap_runqueue_latency_seconds:p99_rate5m > 0)".into(),
        "count(instance:bpfsnap_tcp_retransmits:rate5m > 0)".into(),
        r#"count(instance_syscall_errno:bpfsnap_syscall_errors:rate5m{errno="ENOENT"} > 0) > bool 0"#.into(),
        r#"count(instance_reason:bpfsnap_skb_drops:rate5m{reason="socket_rcvbuff"} > 1)"#.into(),
        r#"count(ALERTS{alertname="BpfsnapPacketDrops",alertstate="firing",reason="socket_rcvbuff"})"#.into(),
    ];
    if let Some(disk) = load.disk() {
        checks.push(format!(
            r#"count(instance_device_operation:bpfsnap_block_io_latency_seconds:p99_rate5m{{device="{disk}",operation="write"}} > 0)"#
        ));
    }
    if load.oom.is_some() {
        let comm = common::OOM_COMM;
        checks.push(format!(
            r#"count(instance_comm:bpfsnap_oom_kills:increase10m{{comm="{comm}"}} >= 1)"#
        ));
        checks.push(format!(
            r#"count(ALERTS{{alertname="BpfsnapOOMKill",alertstate="firing",comm="{comm}"}})"#
        ));
    }
    let mut checks: Vec<(String, f64)> = checks.into_iter().map(|c| (c, 1.0)).collect();
    // A healthy timer: none of bpfsnap's own alerts, pending or firing.
    checks.push((
        r#"count(ALERTS{alertname=~"BpfsnapDown|BpfsnapStale|BpfsnapConfigDown|BpfsnapNotPinned"}) or vector(0)"#.into(),
        0.0,
    ));
    checks
}

/// `promtool test rules` on outputs of the package's timer's runs (every
/// built-in, pinned), with load between them: the recorded rates and
/// percentiles are the load's, the alerts for what the load did fire (OOM
/// kill, packet drops), bpfsnap's own do not.
#[test]
fn the_rules_unit_tests_pass_on_the_timers_outputs() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let mut load = Load::new(common::test_name!());
    let pin = PinDir::new("mixin-rules");
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let mut outputs = vec![pinned_run(&pin.0, &output)];
    for i in 1..OUTPUTS {
        // The OOM kill late: within the last 10 minutes at the end.
        load.make(i == OUTPUTS - 2);
        outputs.push(pinned_run(&pin.0, &output));
    }
    let checks = rule_checks(&outputs, &load);
    if let Err(failed) = promtool_rules_test(&outputs, &checks) {
        panic!(
            "promtool test rules on the timer's outputs:\n{failed}\nlast output:\n{}",
            outputs.last().unwrap()
        );
    }
}

// ---------------------------------------------------------------- a real Prometheus

/// How long the live test may take to see data for every query (a hang
/// guard).
const LIVE_PATIENCE: Duration = Duration::from_secs(180);

/// How long Prometheus scrapes, with load and runs going on, before the
/// queries must all give data: a minute, so that rates and the recording
/// rules span many scrapes and runs, not the first few.
const SCRAPED_FOR: Duration = Duration::from_secs(60);

/// A Prometheus scraping `bpfsnap serve` (job bpfsnap) and node_exporter's
/// textfile collector (job node) every second, and evaluating the rules
/// every second.
fn prometheus_for(serve_port: u16, node_port: u16) -> common::Prometheus {
    let yaml = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{}']\n\
         scrape_configs:\n  - job_name: bpfsnap\n    static_configs: [{{targets: ['127.0.0.1:{serve_port}']}}]\n\
         \x20 - job_name: node\n    static_configs: [{{targets: ['127.0.0.1:{node_port}']}}]\n",
        rules_file().display()
    );
    let prometheus = common::Prometheus::start_config(tempfile::tempdir().unwrap(), &yaml);
    prometheus.wait_ready();
    prometheus
}

/// The queries that give no data (or an error): what and why.
fn without_data(prometheus: &common::Prometheus, queries: &[Query]) -> Vec<String> {
    queries
        .iter()
        .filter_map(|query| {
            let expr = concrete(&query.expr);
            match prometheus.instant(&expr) {
                Ok(result) if !result.is_empty() => None,
                Ok(_) => Some(format!("{}: {expr}: no data", query.place)),
                Err(error) => Some(format!("{}: {expr}: {error}", query.place)),
            }
        })
        .collect()
}

/// The queries of the dashboard and the rules that must give data, and
/// those that cannot here (with why): [`CANNOT_PRODUCE`] and what this
/// machine lacks for the load.
fn expected_queries(load: &Load) -> (Vec<Query>, Vec<String>) {
    let lacking: Vec<(&str, String)> = CANNOT_PRODUCE
        .iter()
        .map(|(metric, why)| (*metric, why.to_string()))
        .chain(load.lacking.iter().cloned())
        .collect();
    let mut expected = Vec::new();
    let mut skipped = Vec::new();
    for query in dashboard_queries().into_iter().chain(rule_queries()) {
        let rules_expr = rules()
            .into_iter()
            .find(|(name, _, _)| query.place == format!("rule {name}"))
            .map(|(_, expr, _)| expr);
        let text = rules_expr.unwrap_or_else(|| query.expr.clone());
        match lacking.iter().find(|(metric, _)| text.contains(metric)) {
            Some((_, why)) => skipped.push(format!("{}: {} ({why})", query.place, query.expr)),
            None => expected.push(query),
        }
    }
    (expected, skipped)
}

/// Every query of the dashboard and the rules gives data from a real
/// Prometheus that scrapes `bpfsnap serve` (every built-in) and
/// node_exporter's textfile collector over the timer's pinned runs for a
/// minute, while the test makes load between runs (an OOM kill in the
/// first round).
#[test]
fn every_query_returns_data_from_prometheus() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let test = common::test_name!();
    let mut load = Load::new(test);
    let (queries, skipped) = expected_queries(&load);
    let textfiles = common::output_dir();
    let node = common::NodeExporter::start(textfiles.path());
    let serve_port = common::free_port();
    let listen = format!("127.0.0.1:{serve_port}");
    let builtins = all_builtins();
    let mut serve = common::Running::spawn(&["serve", "-v", "-b", &builtins, "--listen", &listen]);
    serve.wait_for("serving http://");
    let prometheus = prometheus_for(serve_port, node.port);
    let pin = PinDir::new("mixin-live");
    let output = textfiles.path().join("bpfsnap.prom");
    let started = Instant::now();
    let mut round = 0;
    let missing = loop {
        load.make(round == 0);
        pinned_run(&pin.0, &output);
        round += 1;
        let missing = without_data(&prometheus, &queries);
        let scraped_long_enough = started.elapsed() >= SCRAPED_FOR;
        if (missing.is_empty() && scraped_long_enough) || started.elapsed() >= LIVE_PATIENCE {
            break missing;
        }
    };
    serve.signal(libc::SIGTERM);
    let (status, _, stderr) = serve.finish();
    assert!(status.success(), "bpfsnap serve: {stderr}");
    assert!(
        missing.is_empty(),
        "after {round} runs in {:?}, {} of {} queries give no data:\n{}",
        started.elapsed(),
        missing.len(),
        queries.len(),
        missing.join("\n")
    );
    let _ = writeln!(
        std::io::stderr(),
        "{test}: {} queries gave data after {round} runs in {:?}",
        queries.len(),
        started.elapsed()
    );
    for line in skipped {
        let _ = writeln!(std::io::stderr(), "{test}: not checked for data: {line}");
    }
}
