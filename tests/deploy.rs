//! The deployment files stay correct: every bpfsnap command line in the
//! cron file, the example unit and the package's units (with ARGS from the
//! package's /etc/default files) parses with the current command line, the
//! units pass `systemd-analyze verify` (the alert rules, in monitoring/, are
//! checked by tests/monitoring.rs); the web config example is one exporter-toolkit and bpfsnap
//! read. The one-shot service runs for real, installed from the package, in
//! tests/package.rs.

// No test here loads programs: the kernel gate's macros go unused.
#[allow(unused_macros, unused_imports)]
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

/// The package's unit `name` and the variables of the /etc/default file it reads.
fn packaged_unit(name: &str) -> (String, std::collections::BTreeMap<String, String>) {
    let unit = fs::read_to_string(Path::new(common::PACKAGING).join("systemd").join(name)).unwrap();
    let file = common::unit_value(&unit, "EnvironmentFile");
    let default = file
        .strip_prefix("/etc/default/")
        .unwrap_or_else(|| panic!("{name} reads {file}, not a file of /etc/default"));
    let text =
        fs::read_to_string(Path::new(common::PACKAGING).join("default").join(default)).unwrap();
    (unit, common::environment_file(&text))
}

#[test]
fn every_command_line_in_the_examples_parses() {
    let mut checked = 0;
    for file in ["bpfsnap.cron", "bpfsnap-interval.service"] {
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
    for name in ["bpfsnap.service", "bpfsnap-serve.service"] {
        let (unit, environment) = packaged_unit(name);
        let words = common::exec_start(&unit, &environment);
        assert_eq!(words[0], "/usr/bin/bpfsnap", "{name}");
        if let Err(err) = Cli::try_parse_from(&words) {
            panic!("{name}: {}: {err}", words.join(" "));
        }
        checked += 1;
    }
    assert!(checked >= 5);
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
    let (service, environment) = packaged_unit("bpfsnap.service");
    let timer =
        fs::read_to_string(Path::new(common::PACKAGING).join("systemd/bpfsnap.timer")).unwrap();
    assert!(service.contains("Type=oneshot"));
    assert!(timer.contains("OnUnitActiveSec=1min") && timer.contains("WantedBy=timers.target"));
    // Into node_exporter's directory, which the unit may write.
    let words = common::exec_start(&service, &environment);
    let output = words
        .iter()
        .skip_while(|w| *w != "--output")
        .nth(1)
        .unwrap();
    let directory = Path::new(output).parent().unwrap().to_str().unwrap();
    assert_eq!(directory, "/var/lib/prometheus/node-exporter");
    let writable = common::unit_value(&service, "ReadWritePaths");
    assert!(writable.split_whitespace().any(|path| path == directory));
    // Pinned: the probes count between runs, in bpffs the unit may write.
    let pin = words.iter().skip_while(|w| *w != "--pin").nth(1).unwrap();
    assert!(pin.starts_with("/sys/fs/bpf/"), "{pin}");
    assert!(writable
        .split_whitespace()
        .any(|path| path == "/sys/fs/bpf"));
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    let packaged = Path::new(common::PACKAGING).join("systemd");
    for path in [
        packaged.join("bpfsnap.service"),
        packaged.join("bpfsnap.timer"),
        packaged.join("bpfsnap-serve.service"),
        Path::new(DEPLOY).join("bpfsnap-interval.service"),
    ] {
        let text = fs::read_to_string(&path).unwrap();
        // verify checks that ExecStart= names an executable.
        let text = text
            .replace("/usr/local/bin/bpfsnap", env!("CARGO_BIN_EXE_bpfsnap"))
            .replace("/usr/bin/bpfsnap", env!("CARGO_BIN_EXE_bpfsnap"));
        let name = path.file_name().unwrap();
        fs::write(dir.path().join(name), text).unwrap();
        units.push(dir.path().join(name));
    }
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .expect("run systemd-analyze (make test-deps installs systemd)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // It warns (and exits 0) about what it ignores: no warning either.
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "{stderr}"
    );
}

/// Both services rate 3.0 or better by `systemd-analyze security`, offline
/// (from the unit files; tests/package.rs asks the running systemd of a
/// booted Debian 12 root too).
#[test]
fn the_services_are_hardened() {
    let packaged = Path::new(common::PACKAGING).join("systemd");
    for name in ["bpfsnap.service", "bpfsnap-serve.service"] {
        let output = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(packaged.join(name))
            .output()
            .expect("run systemd-analyze (make test-deps installs systemd)");
        let said = String::from_utf8_lossy(&output.stdout);
        let figure: f64 = said
            .lines()
            .find_map(|line| line.split_once("Overall exposure level for "))
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|figure| figure.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no overall exposure level: {said}"));
        assert!(figure <= 3.0, "{name}: exposure {figure} > 3.0\n{said}");
    }
}
