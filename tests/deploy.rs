//! The deployment examples in examples/deploy stay correct: every bpfsnap
//! command line in the cron file and the systemd units parses with the
//! current command line, the units pass `systemd-analyze verify`, the one-shot
//! service's command runs as its user with only its capabilities, the alert
//! rules pass `promtool check rules`, and the web config is one
//! exporter-toolkit and bpfsnap read.

mod common;

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
        "bpfsnap-serve.service",
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
    assert!(checked >= 5);
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

/// The web config example has exporter-toolkit's keys only, and hashes
/// bcrypt reads (its files are the reader's to make).
#[test]
fn the_web_config_example_is_a_web_config() {
    use bpfsnap::serve::web_config::WebConfigFile;
    let text = fs::read_to_string(Path::new(DEPLOY).join("web-config.yml")).unwrap();
    let config: Option<WebConfigFile> =
        bpfsnap::spec::deserialize_yaml_strictly(&text).unwrap_or_else(|err| panic!("{err}"));
    let config = config.expect("not empty");
    assert!(config.tls_server_config.enabled());
    assert_eq!(
        config.tls_server_config.client_auth_type,
        "RequireAndVerifyClientCert"
    );
    for (user, hash) in &config.basic_auth_users {
        assert!(bcrypt::verify("change me", hash).unwrap_or(false), "{user}");
    }
}

#[test]
fn the_timer_triggers_the_oneshot_service() {
    let service = fs::read_to_string(Path::new(DEPLOY).join("bpfsnap.service")).unwrap();
    let timer = fs::read_to_string(Path::new(DEPLOY).join("bpfsnap.timer")).unwrap();
    assert!(service.contains("Type=oneshot"));
    assert!(timer.contains("OnUnitActiveSec=5min") && timer.contains("WantedBy=timers.target"));
}

/// A unit file's `KEY=` value.
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for name in [
        "bpfsnap.service",
        "bpfsnap.timer",
        "bpfsnap-interval.service",
        "bpfsnap-serve.service",
    ] {
        let text = fs::read_to_string(Path::new(DEPLOY).join(name)).unwrap();
        // verify checks that ExecStart= names an executable.
        let text = text.replace("/usr/local/bin/bpfsnap", env!("CARGO_BIN_EXE_bpfsnap"));
        fs::write(dir.path().join(name), text).unwrap();
        units.push(dir.path().join(name));
    }
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .expect("run systemd-analyze (make deps installs systemd)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // It warns (and exits 0) about what it ignores: no warning either.
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "{stderr}"
    );
}

/// What systemd would do with bpfsnap.service, minus systemd: its command,
/// as its user, with its ambient capabilities and bounding set only.
#[test]
fn the_oneshot_service_runs_as_its_user_with_its_capabilities() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let unit = fs::read_to_string(Path::new(DEPLOY).join("bpfsnap.service")).unwrap();
    let user = unit_value(&unit, "User");
    let caps: String = unit_value(&unit, "AmbientCapabilities")
        .split_whitespace()
        .map(|cap| format!(",+{}", cap.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert_eq!(
        unit_value(&unit, "CapabilityBoundingSet"),
        unit_value(&unit, "AmbientCapabilities")
    );
    let exec = unit_value(&unit, "ExecStart");
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let status = Command::new("chown")
        .args([&format!("{user}:"), common::path_str(dir.path())])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "chown to {user} (make deps installs prometheus, which adds it)"
    );
    let args: Vec<String> = exec
        .split_whitespace()
        .skip(1)
        .map(|arg| match arg {
            "/var/lib/prometheus/node-exporter/bpfsnap.prom" => {
                common::path_str(&output).to_string()
            }
            "30s" => "200ms".to_string(),
            other => other.to_string(),
        })
        .collect();
    let result = Command::new("setpriv")
        .args([
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--init-groups",
            &format!("--inh-caps=-all{caps}"),
            &format!("--ambient-caps=-all{caps}"),
            &format!("--bounding-set=-all{caps}"),
            "--no-new-privs",
        ])
        .arg(env!("CARGO_BIN_EXE_bpfsnap"))
        .args(&args)
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{args:?}: {stderr}");
    assert!(stderr.is_empty(), "--quiet: {stderr}");
    let text = fs::read_to_string(&output).expect("the service wrote its file");
    assert_eq!(common::sample(&text, "bpfsnap_up"), Some(1.0), "{text}");
    common::promtool_check(&text);
}
