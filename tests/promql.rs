//! What PromQL reads from bpfsnap over time, in each mode. The outputs of
//! successive runs or scrapes, with load the test makes between or during
//! them, become promtool's input series, one sample per output a minute
//! apart (as the package's timer writes them), and README.md's queries for
//! the mode ("Which mode, and the PromQL for it") are evaluated on them:
//! rates, increases and percentiles must be those of the load.
//!
//! - The package's own ARGS (packaging/default/bpfsnap), run as its timer
//!   runs them: `increase()` is the calls made, exactly, whenever they were
//!   made; the 99th percentile of a histogram the test fills (biosize, with
//!   64 KiB O_DIRECT requests on a loop device) lands in its bucket; the
//!   self metrics' series are the same in every run.
//! - Each mode of README's table with its queries: counting all the time
//!   (serve), sampling (`run --for` into a file), one window (`serve
//!   --counts window`); and a one-shot run to standard output.
//! - In every sequence, a family typed counter or histogram never goes
//!   down, and a count the test made load for grows by at least that load:
//!   a count that starts again is not typed counter, whatever the load.
//!
//! The load: calls of a system call nothing else makes
//! ([`common::RARE_SYSCALL`]) for counts, and semtimedop waits of 20 ms for
//! latency (the `syscall_latency` built-in puts them in (16.8 ms, 33.6 ms]).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::Duration;

use common::{path_str, PinDir, Running};

/// Outputs per sequence: one a minute in promtool's time.
const OUTPUTS: usize = 7;
/// [`common::RARE_SYSCALL`] calls made for each output.
const CALLS: u64 = 120;
/// Waits of [`WAIT`] made for each output.
const WAITS: u64 = 4;
const WAIT: Duration = Duration::from_millis(20);
/// The bucket of syscall_latency_seconds 20 ms waits land in: (2^24 ns, 2^25 ns].
const WAIT_BUCKET: (f64, f64) = (0.016777216, 0.033554432);

/// The load made for one output: counts and waits.
fn load() {
    common::rare_syscalls(CALLS);
    common::timed_waits(WAITS, WAIT);
}

/// What a query must give.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This value (to a billionth of it).
    Equal(f64),
    /// This value to within this share of it.
    Near(f64, f64),
    /// A value in (low, high].
    Within(f64, f64),
}

/// A query and what it must give at the last output's time.
struct Check {
    expr: String,
    expect: Expect,
}

impl Check {
    fn new(expr: &str, expect: Expect) -> Check {
        Check {
            expr: expr.to_string(),
            expect,
        }
    }

    /// An expression that gives `{} 1` exactly when the check holds.
    fn holds(&self) -> String {
        let expr = &self.expr;
        match self.expect {
            Expect::Equal(value) => {
                let tolerance = (value.abs() * 1e-9).max(1e-9);
                format!("count(abs(({expr}) - ({value})) <= {tolerance})")
            }
            Expect::Near(value, share) => {
                let tolerance = value.abs() * share;
                format!("count(abs(({expr}) - ({value})) <= {tolerance})")
            }
            Expect::Within(low, high) => {
                format!("count(({expr}) > {low} and ({expr}) <= {high})")
            }
        }
    }
}

/// The queries README.md gives under the heading that starts with
/// `heading`, in order (its first `promql` block, comments left out).
fn readme_queries(heading: &str) -> Vec<String> {
    let readme = fs::read_to_string(common::source_file("README.md")).unwrap();
    let section = readme
        .split(&format!("\n#### {heading}"))
        .nth(1)
        .unwrap_or_else(|| panic!("README.md has no heading #### {heading}"));
    let block = section
        .split("```promql\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap_or_else(|| panic!("README.md: no promql block under {heading}"));
    block
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// README's three queries for a mode (a rate, an increase over a day, a
/// 99th percentile of read() latency), with the test's own system calls in
/// place of read(): the rare one for the counts, semtimedop for latency.
fn mode_queries(heading: &str) -> [String; 3] {
    let queries = readme_queries(heading);
    assert_eq!(queries.len(), 3, "{heading}: {queries:?}");
    let with = |query: &str, syscall: &str| {
        assert!(query.contains(r#"syscall="read""#), "{query}");
        query.replace(r#"syscall="read""#, &format!("syscall=\"{syscall}\""))
    };
    [
        with(&queries[0], common::RARE_SYSCALL),
        with(&queries[1], common::RARE_SYSCALL),
        with(&queries[2], "semtimedop"),
    ]
}

/// The sample lines of an output: (series as written, value).
fn samples_of(text: &str) -> Vec<(&str, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series, value.parse().ok()?))
        })
        .collect()
}

/// A string as YAML's single-quoted scalar.
fn yaml_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A promtool unit test: `outputs` as input series (one a minute, the first
/// at 0), each expression evaluated at the last output's time; `expect`
/// what each must give (None: anything, to see what it gives).
fn promtool_test(outputs: &[String], exprs: &[(String, Option<f64>)]) -> String {
    let mut series: BTreeMap<&str, Vec<Option<f64>>> = BTreeMap::new();
    for (i, text) in outputs.iter().enumerate() {
        for (name, value) in samples_of(text) {
            series
                .entry(name)
                .or_insert_with(|| vec![None; outputs.len()])[i] = Some(value);
        }
    }
    let mut yaml = String::from(
        "rule_files: []\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n",
    );
    for (name, values) in &series {
        let values: Vec<String> = values
            .iter()
            .map(|value| value.map_or("_".to_string(), |v| format!("{v}")))
            .collect();
        yaml.push_str(&format!(
            "      - series: {}\n        values: {}\n",
            yaml_quoted(name),
            yaml_quoted(&values.join(" "))
        ));
    }
    yaml.push_str("    promql_expr_test:\n");
    for (expr, value) in exprs {
        yaml.push_str(&format!(
            "      - expr: {}\n        eval_time: {}m\n        exp_samples:\n",
            yaml_quoted(expr),
            outputs.len() - 1
        ));
        if let Some(value) = value {
            yaml.push_str(&format!(
                "          - labels: '{{}}'\n            value: {value}\n"
            ));
        }
    }
    yaml
}

/// Runs `checks` with promtool over `outputs` (see [`promtool_test`]);
/// panics with what each query gave when one fails.
fn assert_promql(what: &str, outputs: &[String], checks: &[Check]) {
    let exprs: Vec<(String, Option<f64>)> = checks
        .iter()
        .map(|check| (check.holds(), Some(1.0)))
        .collect();
    let Err(failed) = common::promtool_test_rules(&promtool_test(outputs, &exprs)) else {
        return;
    };
    // Again, each query as it is, expecting nothing: promtool shows what
    // each gave.
    let raw: Vec<(String, Option<f64>)> = checks
        .iter()
        .map(|check| (check.expr.clone(), None))
        .collect();
    let gave = common::promtool_test_rules(&promtool_test(outputs, &raw))
        .err()
        .unwrap_or_default();
    let expected: Vec<String> = checks
        .iter()
        .map(|check| format!("{} → {:?}", check.expr, check.expect))
        .collect();
    panic!(
        "{what}: PromQL gives other numbers than the load made\nexpected:\n  {}\n{failed}\nwhat the queries gave:\n{gave}\nlast output:\n{}",
        expected.join("\n  "),
        outputs.last().map(String::as_str).unwrap_or_default()
    );
}

/// The type of every family of an output, by name.
fn types_of(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .collect()
}

/// The family a sample of `text` belongs to (its name, or for a
/// histogram's samples the histogram's).
fn family_of<'t>(series: &str, types: &BTreeMap<&'t str, &'t str>) -> Option<&'t str> {
    let name = series.split('{').next().unwrap_or(series);
    types
        .get_key_value(name)
        .map(|(name, _)| *name)
        .or_else(|| {
            ["_bucket", "_sum", "_count"].iter().find_map(|postfix| {
                let base = name.strip_suffix(postfix)?;
                types.get_key_value(base).map(|(name, _)| *name)
            })
        })
}

/// Across each pair of successive outputs: no series of a family typed
/// counter or histogram goes down, and the rare system call's count, if it
/// is a counter, grows by at least the calls made in between (a count that
/// started again would not, with the load the same each time).
fn assert_counters_carry_on(what: &str, outputs: &[String]) {
    let rare = format!("syscall=\"{}\"", common::RARE_SYSCALL);
    for pair in outputs.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        let earlier: BTreeMap<&str, f64> = samples_of(before).into_iter().collect();
        let types = types_of(after);
        for (series, value) in samples_of(after) {
            let Some(family) = family_of(series, &types) else {
                continue;
            };
            if !matches!(types[family], "counter" | "histogram") {
                continue;
            }
            let Some(&was) = earlier.get(series) else {
                continue;
            };
            assert!(
                value >= was,
                "{what}: {series} went down from {was} to {value}, typed {}",
                types[family]
            );
            if series.starts_with("bpfsnap_syscalls_total{") && series.contains(&rare) {
                assert!(
                    value - was >= CALLS as f64,
                    "{what}: {series} grew by {} for {CALLS} calls: it started again",
                    value - was
                );
            }
        }
    }
}

/// The self metrics' series of an output (their names and labels).
fn self_series(text: &str) -> BTreeSet<String> {
    let names: BTreeSet<String> = bpfsnap::exposition::self_metrics::SelfMetric::ALL
        .iter()
        .map(|metric| metric.name_in("bpfsnap"))
        .collect();
    samples_of(text)
        .into_iter()
        .map(|(series, _)| series.to_string())
        .filter(|series| names.contains(series.split('{').next().unwrap_or(series)))
        .collect()
}

/// A value of `text`, which must be there.
fn value(text: &str, series: &str) -> f64 {
    common::sample(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// The rare system call's counter series.
fn rare_counter() -> String {
    format!(
        "bpfsnap_syscalls_total{{syscall=\"{}\"}}",
        common::RARE_SYSCALL
    )
}

// ---------------------------------------------------------------- the package

/// The package's ARGS (packaging/default/bpfsnap), with the test's own pin
/// directory and output in place of the machine's.
fn packaged_args(pin: &Path, output: &Path) -> Vec<String> {
    let default = fs::read_to_string(common::source_file("packaging/default/bpfsnap")).unwrap();
    let environment = common::environment_file(&default);
    let args: Vec<String> = environment["ARGS"]
        .split_whitespace()
        .map(str::to_string)
        .collect();
    // bpfsnap.service's ExecStart: `bpfsnap run $ARGS`.
    let mut replaced = vec!["run".to_string()];
    let mut words = args.iter();
    while let Some(word) = words.next() {
        replaced.push(word.clone());
        match word.as_str() {
            "--pin" => replaced.push(path_str(pin).to_string()),
            "--output" => replaced.push(path_str(output).to_string()),
            _ => continue,
        }
        words.next();
    }
    assert!(
        replaced.iter().any(|word| word == "--pin"),
        "the package's ARGS count all the time (--pin): {args:?}"
    );
    replaced
}

/// The package's timer, a run a minute: `increase()` over the runs is the
/// calls made between them, exactly; the 99th percentile of the block I/O
/// sizes the test made lands in their bucket; the self metrics' series are
/// the same in every run.
#[test]
fn the_packaged_timer_counts_everything_made_between_its_runs() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let device = match common::LoopDevice::attach(2 << 20) {
        Ok(device) => device,
        Err(why) => panic!("a loop device for the block I/O load: {why}"),
    };
    let pin = PinDir::new(common::test_name!());
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let args = packaged_args(&pin.0, &output);
    let run = || {
        let ran = common::bpfsnap().args(&args).output().unwrap();
        assert!(
            ran.status.success(),
            "{}",
            String::from_utf8_lossy(&ran.stderr)
        );
        fs::read_to_string(&output).unwrap()
    };
    let mut outputs = vec![run()];
    for i in 1..OUTPUTS {
        // A little before the second run, the same after each later one.
        match i {
            1 => common::rare_syscalls(1),
            _ => common::rare_syscalls(CALLS),
        }
        common::direct_io(&device.path, 64 * 1024, 8);
        outputs.push(run());
    }
    let last = outputs.last().unwrap();
    for config in ["syscalls", "biosize"] {
        let links = format!("bpfsnap_pinned_links{{config=\"{config}\"}}");
        assert!(value(last, &links) >= 1.0, "{links}\n{last}");
    }
    let made = 1.0 + (CALLS * (OUTPUTS as u64 - 2)) as f64;
    assert_eq!(value(last, &rare_counter()), made, "{last}");

    let [rate, increase, _] = mode_queries("Counting all the time");
    let sizes = format!(
        "histogram_quantile(0.99, sum by (le) (rate(bpfsnap_block_io_size_bytes_bucket{{device=\"{}\"}}[5m])))",
        device.name
    );
    assert_promql(
        "the package's timer",
        &outputs,
        &[
            Check::new(&rate, Expect::Equal(CALLS as f64 / 60.0)),
            Check::new(&increase, Expect::Equal(made)),
            Check::new(&sizes, Expect::Within(32768.0, 65536.0)),
        ],
    );
    assert_counters_carry_on("the package's timer", &outputs);
    let first = self_series(&outputs[0]);
    for (i, text) in outputs.iter().enumerate().skip(1) {
        assert_eq!(
            self_series(text),
            first,
            "the self metrics' series of run {i} are those of the first"
        );
    }
}

// ---------------------------------------------------------------- the modes

/// `serve -b syscalls,syscall_latency ARGS` on a port of its own: a scrape
/// after the attach, then one after each load: `first_calls` of the rare
/// system call for the first, [`CALLS`] for the others, and the waits.
fn scrapes(args: &[&str], first_calls: u64) -> Vec<String> {
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut argv = vec![
        "serve",
        "-v",
        "-b",
        "syscalls,syscall_latency",
        "--listen",
        &listen,
    ];
    argv.extend_from_slice(args);
    let mut server = Running::spawn(&argv);
    server.wait_for("serving http://");
    let scrape = || {
        let url = format!("http://{listen}/metrics");
        let (status, _, body) = common::curl_url(&url, &[]).expect("scrape");
        assert_eq!(status, 200);
        String::from_utf8(body).unwrap()
    };
    let mut outputs = vec![scrape()];
    for i in 1..OUTPUTS {
        common::rare_syscalls(if i == 1 { first_calls } else { CALLS });
        common::timed_waits(WAITS, WAIT);
        outputs.push(scrape());
    }
    server.signal(libc::SIGTERM);
    let (status, _, stderr) = server.finish();
    assert!(status.success(), "{stderr}");
    outputs
}

/// Counting all the time (`serve`, as `--pin` and `--interval`): README's
/// rate is the calls per second, its increase the calls made, its
/// percentile in the waits' bucket.
#[test]
fn readme_queries_counting_all_the_time_give_the_load() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    // A little before the first scrape that has the rare call's series, so
    // that increase() counts from zero (as it does for a series whose first
    // sample is small): all the calls made; then CALLS a minute.
    let outputs = scrapes(&[], 1);
    let made = 1.0 + (CALLS * (OUTPUTS as u64 - 2)) as f64;
    assert_eq!(value(outputs.last().unwrap(), &rare_counter()), made);
    let [rate, increase, p99] = mode_queries("Counting all the time");
    assert_promql(
        "serve",
        &outputs,
        &[
            Check::new(&rate, Expect::Equal(CALLS as f64 / 60.0)),
            Check::new(&increase, Expect::Equal(made)),
            Check::new(&p99, Expect::Within(WAIT_BUCKET.0, WAIT_BUCKET.1)),
        ],
    );
    assert_counters_carry_on("serve", &outputs);
}

/// `run -b syscalls,syscall_latency --for 1h --output FILE`, ended by SIGINT
/// after `load`: the file's text.
fn sampled_run(output: &Path, load: impl FnOnce()) -> String {
    let mut running = Running::spawn(&[
        "run",
        "-v",
        "-b",
        "syscalls,syscall_latency",
        "--for",
        "1h",
        "--output",
        path_str(output),
    ]);
    running.wait_for("sampling");
    load();
    running.signal(libc::SIGINT);
    let (status, _, stderr) = running.finish();
    assert!(status.success(), "{stderr}");
    fs::read_to_string(output).unwrap()
}

/// Sampling into a file without --pin: each run's counts are added to the
/// file it replaces, so the counter grows by exactly each window's calls;
/// README's rate is the calls per second sampled, its day the same scaled
/// to a day, its percentile in the waits' bucket.
#[test]
fn readme_queries_sampling_give_the_load_while_sampled() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::output_dir();
    let output = dir.path().join("sampled.prom");
    let outputs: Vec<String> = (0..OUTPUTS).map(|_| sampled_run(&output, load)).collect();
    let sampled = "bpfsnap_sampled_seconds_total{config=\"syscalls\"}";
    for (i, text) in outputs.iter().enumerate() {
        let calls = value(text, &rare_counter());
        assert_eq!(
            calls,
            (CALLS * (i as u64 + 1)) as f64,
            "run {i}: carried on\n{text}"
        );
    }
    assert_counters_carry_on("sampling", &outputs);
    let (first, last) = (&outputs[0], outputs.last().unwrap());
    // Calls per second sampled: all the calls over all the time sampled.
    // rate() and increase() extrapolate each series at its start by its own
    // first sample, so over seven windows the queries estimate it: to within
    // a few percent.
    let per_second = value(last, &rare_counter()) / value(last, sampled);
    let [rate, day, p99] = mode_queries("Sampling");
    assert_promql(
        "sampling",
        &outputs,
        &[
            Check::new(&rate, Expect::Near(per_second, 0.05)),
            Check::new(&day, Expect::Near(per_second * 86400.0, 0.05)),
            Check::new(&p99, Expect::Within(WAIT_BUCKET.0, WAIT_BUCKET.1)),
        ],
    );
    let series = self_series(first);
    for text in &outputs[1..] {
        assert_eq!(
            self_series(text),
            series,
            "the same self metrics in every run"
        );
    }
}

/// One window per scrape (`serve --counts window`): gauges, README's rate
/// is the window's calls per second, its day the windows' calls, its
/// percentile the last window's.
#[test]
fn readme_queries_one_window_give_each_windows_load() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let outputs = scrapes(&["--counts", "window"], CALLS);
    let last = outputs.last().unwrap();
    let gauge = format!("bpfsnap_syscalls{{syscall=\"{}\"}}", common::RARE_SYSCALL);
    for text in &outputs[1..] {
        assert_eq!(
            value(text, &gauge),
            CALLS as f64,
            "each window's own calls\n{text}"
        );
    }
    assert_per_window("serve --counts window", &outputs);
    let window = value(last, "bpfsnap_window_seconds");
    let [rate, day, p99] = mode_queries("One window");
    assert_promql(
        "serve --counts window",
        &outputs,
        &[
            Check::new(&rate, Expect::Equal(CALLS as f64 / window)),
            Check::new(&day, Expect::Equal((CALLS * (OUTPUTS as u64 - 1)) as f64)),
            Check::new(&p99, Expect::Within(WAIT_BUCKET.0, WAIT_BUCKET.1)),
        ],
    );
}

/// Outputs of one window each: no family typed counter or histogram but
/// the process's own counters, which do not start again.
fn assert_per_window(what: &str, outputs: &[String]) {
    let process_counters = [
        "bpfsnap_scrape_errors_total",
        "bpfsnap_write_failures_total",
        "process_cpu_seconds_total",
    ];
    for text in outputs {
        for (family, kind) in types_of(text) {
            assert!(
                !matches!(kind, "counter" | "histogram") || process_counters.contains(&family),
                "{what}: {family} is typed {kind}, but its counts are one window's\n{text}"
            );
        }
        common::promtool_check(text);
    }
    assert_counters_carry_on(what, outputs);
}

/// One-shot runs to standard output, with more load each time: gauges
/// holding each window's calls exactly (typed counter, they would be
/// misread as an increase of the difference).
#[test]
fn one_window_on_standard_output_is_gauges() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let gauge = format!("bpfsnap_syscalls{{syscall=\"{}\"}}", common::RARE_SYSCALL);
    let mut outputs = Vec::new();
    for calls in [CALLS, 2 * CALLS, 3 * CALLS] {
        let mut running = Running::spawn(&[
            "run", "-v", "-b", "syscalls", "--for", "1h", "--output", "-",
        ]);
        running.wait_for("sampling");
        common::rare_syscalls(calls);
        running.signal(libc::SIGINT);
        let (status, text, stderr) = running.finish();
        assert!(status.success(), "{stderr}");
        assert_eq!(value(&text, &gauge), calls as f64, "{text}");
        outputs.push(text);
    }
    assert_per_window("standard output", &outputs);
}
