//! Built-in programs under the load they measure, on the real kernel: each
//! test starts bpfsnap on one built-in, makes the events happen, ends the
//! window with SIGINT, and checks the metric moved at least as much as the
//! load it made. promtool must accept every output.

mod common;

use common::run_builtin;

use std::sync::mpsc;

#[test]
fn runqlat_sees_every_wakeup_of_a_ping_pong() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    const ROUNDS: u32 = 2000;
    let text = run_builtin("runqlat", || {
        // Two threads hand a token back and forth: every hand-over wakes a
        // sleeping thread, which then waits on a run queue until it runs.
        let (to_peer, peer_inbox) = mpsc::sync_channel::<u32>(0);
        let (to_main, main_inbox) = mpsc::sync_channel::<u32>(0);
        let peer = std::thread::spawn(move || {
            for token in peer_inbox {
                if to_main.send(token).is_err() {
                    break;
                }
            }
        });
        for round in 0..ROUNDS {
            to_peer.send(round).unwrap();
            assert_eq!(main_inbox.recv().unwrap(), round);
        }
        drop(to_peer);
        peer.join().unwrap();
    });
    let count =
        common::sample(&text, "bpfsnap_runqueue_latency_seconds_count").expect("runqlat histogram");
    assert!(
        count >= f64::from(ROUNDS),
        "{count} run-queue waits for {ROUNDS} ping-pong rounds\n{text}"
    );
    let inf = common::sample(
        &text,
        r#"bpfsnap_runqueue_latency_seconds_bucket{le="+Inf"}"#,
    )
    .unwrap();
    assert_eq!(inf, count);
    assert!(common::sample(&text, "bpfsnap_runqueue_latency_seconds_sum").unwrap() > 0.0);
}

/// Every built-in is also in examples/ as a user config (NAME.toml +
/// NAME.bpf.c, links to bpf/), for users to copy and change; `make examples`
/// builds them. Each must check out as a user program too.
#[test]
fn every_builtin_has_a_working_example_copy() {
    let examples = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"));
    let dir = common::config_dir();
    let mut args = vec!["check".to_string()];
    for builtin in bpfsnap::builtin::BUILTINS {
        let name = builtin.name;
        for file in [format!("{name}.toml"), format!("{name}.bpf.c")] {
            assert!(
                examples.join(&file).exists(),
                "examples/{file} is missing: link it to ../bpf/{file}"
            );
        }
        std::fs::copy(
            examples.join(format!("{name}.toml")),
            dir.path().join(format!("{name}.toml")),
        )
        .unwrap();
        let object = format!("{}/{name}.bpf.o", env!("BPFSNAP_EXAMPLE_OBJECTS"));
        std::fs::copy(object, dir.path().join(format!("{name}.bpf.o"))).unwrap();
        args.push(
            dir.path()
                .join(format!("{name}.toml"))
                .display()
                .to_string(),
        );
    }
    let output = common::bpfsnap().args(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        bpfsnap::builtin::BUILTINS.len()
    );
}

/// `bpfsnap list` (needs no privileges): every built-in, at least 12, with
/// the default set marked, HERE "yes" for each on this machine, its metrics
/// and (in the description) its attach points; `--long` adds for each its
/// exact attach points, labels, cardinality bound and cost.
#[test]
fn list_shows_every_builtin_with_its_metrics_attach_points_and_cost() {
    let run = |args: &[&str]| {
        let output = common::bpfsnap().args(args).output().unwrap();
        assert!(
            output.status.success(),
            "bpfsnap {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let short = run(&["list"]);
    let long = run(&["list", "--long"]);
    let header = short.lines().next().unwrap();
    let column = |title: &str| {
        header
            .find(title)
            .unwrap_or_else(|| panic!("no {title} column: {header}"))
    };
    let (default_at, here_at, metrics_at) = (column("DEFAULT"), column("HERE"), column("METRICS"));
    // Entries: a row at column 0, then its indented lines; a blank line ends
    // the table.
    let mut entries: Vec<Vec<&str>> = Vec::new();
    for line in short.lines().skip(1).take_while(|l| !l.is_empty()) {
        assert!(line.len() <= 100, "wider than 100 columns: {line}");
        if line.starts_with(' ') {
            entries.last_mut().expect("a row first").push(line);
        } else {
            entries.push(vec![line]);
        }
    }
    assert!(
        entries.len() >= 12 && entries.len() == bpfsnap::builtin::BUILTINS.len(),
        "{} entries for {} built-ins\n{short}",
        entries.len(),
        bpfsnap::builtin::BUILTINS.len()
    );
    let mut defaults = 0;
    for (builtin, entry) in bpfsnap::builtin::BUILTINS.iter().zip(&entries) {
        let config = builtin.config().unwrap();
        let row = entry[0];
        // A row whose metrics have a line of their own ends after HERE.
        let field = |from: usize, to: usize| {
            row.get(from.min(row.len())..to.min(row.len()))
                .unwrap_or("")
                .trim()
        };
        assert_eq!(field(0, default_at), builtin.name, "{short}");
        let marked = field(default_at, here_at);
        assert_eq!(
            marked,
            if config.builtin.default { "yes" } else { "" },
            "DEFAULT of {}\n{short}",
            builtin.name
        );
        defaults += usize::from(config.builtin.default);
        let here = field(here_at, metrics_at);
        assert!(
            here == "yes" || here == "no",
            "HERE of {}: {row}",
            builtin.name
        );
        // pagefaults' tracepoint exists on x86 only.
        let expected_here = builtin.name != "pagefaults" || cfg!(target_arch = "x86_64");
        if expected_here && here != "yes" {
            common::not_exercised(
                common::test_name!(),
                &format!(
                    "{} is not available here, so HERE is not checked",
                    builtin.name
                ),
            );
        }
        let text = entry.join("\n");
        assert!(
            entry[1..]
                .iter()
                .any(|l| l.trim_start().starts_with(&config.description[..20])),
            "no description under {}\n{text}",
            builtin.name
        );
        let long_entry = long
            .split("\n\n")
            .find(|e| e.starts_with(&format!("{} — ", builtin.name)))
            .unwrap_or_else(|| panic!("{} missing from list --long\n{long}", builtin.name));
        // Every line of it ends in a newline, the last one too.
        let long_entry = format!("{}\n", long_entry.trim_end());
        for metric in config.metrics() {
            let name = format!("bpfsnap_{}", metric.name);
            let mut labels: Vec<&str> = metric.labels.iter().map(|l| l.name.as_str()).collect();
            if metric.kind == bpfsnap::spec::MetricKind::Histogram {
                labels.pop();
            }
            let series = if labels.is_empty() {
                name
            } else {
                format!("{name}{{{}}}", labels.join(","))
            };
            assert!(text.contains(&series), "{series} not listed\n{text}");
            assert!(
                long_entry.contains(&format!("  {} {series}\n", metric.kind)),
                "{} {series} not in list --long\n{long_entry}",
                metric.kind
            );
        }
        let attach: Vec<&str> = long_entry
            .lines()
            .filter_map(|l| l.strip_prefix("  attaches to: "))
            .collect();
        assert!(!attach.is_empty(), "no attach point\n{long_entry}");
        for section in attach {
            // The description names the attach points, by kind at least.
            let kind = section.split('/').next().unwrap();
            assert!(
                config.description.contains(kind),
                "{}'s description does not say it attaches to {section}\n{text}",
                builtin.name
            );
        }
        for (what, value) in [
            ("cardinality", &config.builtin.cardinality),
            ("overhead", &config.builtin.overhead),
        ] {
            assert!(!value.is_empty(), "{} has no {what}", builtin.name);
            assert!(
                long_entry.contains(&format!("  {what}: {value}\n")),
                "no {what} in list --long\n{long_entry}"
            );
        }
        let default_line = if config.builtin.default {
            "  default set: yes"
        } else {
            "  default set: no"
        };
        assert!(long_entry.contains(default_line), "{long_entry}");
        assert!(
            long_entry.contains(&format!("  available here: {here}")),
            "{long_entry}"
        );
    }
    assert!(
        defaults > 0 && defaults < entries.len(),
        "the default set is a proper, non-empty subset: {defaults} of {}",
        entries.len()
    );
}

/// `bpfsnap build`, as examples/README.md shows it, compiles a copy of every
/// built-in source taken out of the tree (no -I into it): the headers it
/// includes ("bpfsnap.h", "block.h", vmlinux.h, libbpf's) are the embedded
/// ones. `check` then accepts each object with its spec.
#[test]
fn bpfsnap_build_compiles_copied_builtin_sources_with_embedded_headers() {
    let readme = std::fs::read_to_string(common::source_file("examples/README.md")).unwrap();
    assert!(
        readme.contains("bpfsnap build examples/comm_getpid.bpf.c"),
        "examples/README.md shows bpfsnap build"
    );
    let copies = tempfile::tempdir().unwrap();
    for builtin in bpfsnap::builtin::BUILTINS {
        let name = builtin.name;
        let copy = copies.path().join(format!("{name}.bpf.c"));
        std::fs::copy(common::source_file(&format!("bpf/{name}.bpf.c")), &copy).unwrap();
        std::fs::copy(
            common::source_file(&format!("bpf/{name}.toml")),
            copies.path().join(format!("{name}.toml")),
        )
        .unwrap();
        let output = common::bpfsnap()
            .args(["build", common::path_str(&copy)])
            .output()
            .unwrap();
        let object = copies.path().join(format!("{name}.bpf.o"));
        assert!(
            output.status.success() && object.exists(),
            "bpfsnap build {name}.bpf.c: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let checked = common::bpfsnap()
            .args([
                "check",
                common::path_str(&copies.path().join(format!("{name}.toml"))),
            ])
            .output()
            .unwrap();
        assert!(
            checked.status.success(),
            "bpfsnap check {name}.toml: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
    }
}
