//! The deployment examples in examples/deploy stay correct: every bpfsnap
//! command line in the cron file and the systemd units parses with the
//! current command line, and the alert rules pass `promtool check rules`.

use std::fs;
use std::path::Path;
use std::process::Command;

use bpfsnap::cli::Cli;
use clap::Parser;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/deploy");

/// Every bpfsnap command line in `text` (cron lines, ExecStart=, comments too).
fn command_lines(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter_map(|line| line.find("/usr/local/bin/bpfsnap ").map(|at| &line[at..]))
        .map(|command| command.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn every_command_line_in_the_examples_parses() {
    let mut checked = 0;
    for file in [
        "bpfsnap.cron",
        "bpfsnap.service",
        "bpfsnap-interval.service",
    ] {
        let text = fs::read_to_string(Path::new(DEPLOY).join(file)).unwrap();
        let lines = command_lines(&text);
        assert!(!lines.is_empty(), "{file} runs bpfsnap");
        for words in lines {
            if let Err(err) = Cli::try_parse_from(&words) {
                panic!("{file}: {}: {err}", words.join(" "));
            }
            checked += 1;
        }
    }
    assert!(checked >= 4);
}

#[test]
fn alert_rules_pass_promtool() {
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(Path::new(DEPLOY).join("bpfsnap.rules.yml"))
        .output()
        .expect("run promtool (make deps installs the prometheus package)");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_timer_triggers_the_oneshot_service() {
    let service = fs::read_to_string(Path::new(DEPLOY).join("bpfsnap.service")).unwrap();
    let timer = fs::read_to_string(Path::new(DEPLOY).join("bpfsnap.timer")).unwrap();
    assert!(service.contains("Type=oneshot"));
    assert!(timer.contains("OnUnitActiveSec=5min") && timer.contains("WantedBy=timers.target"));
}
