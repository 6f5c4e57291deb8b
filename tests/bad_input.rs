//! Bad user programs and configs: each mistake ends in a non-zero exit
//! status and an error on stderr that says what is wrong and where (the
//! file, the key, the line, the program), never a panic. Mistakes in a
//! config or its object are found by `bpfsnap check` (no root needed), `run`
//! and `serve` alike, exit status 2; those only the kernel can find (the
//! verifier, attach types this kernel lacks) by `run`, as root, with exit
//! status 1. A bad web config stops `serve` at start, exit status 2. Errors
//! are one line, except a verifier failure, which appends the end of the
//! verifier's log.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::path_str;

/// A config for examples/comm_getpid.bpf.c's map (16-byte keys), in TOML;
/// the cases below change one thing in it. Line 4 is the blank one.
const COMM_TOML: &str = r#"[[metrics.counters]]
name = "getpid_calls_total"
help = "getpid() calls."

[[metrics.counters.labels]]
name = "comm"
size = 16
decoders = [{ name = "string" }]
"#;

/// The same in ebpf_exporter's YAML.
const COMM_YAML: &str = r#"metrics:
  counters:
    - name: getpid_calls_total
      help: getpid() calls.
      labels:
        - name: comm
          size: 16
          decoders:
            - name: string
"#;

/// A directory holding one case's configs and objects.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            dir: common::config_dir(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn file(self, name: &str, text: &str) -> Setup {
        fs::write(self.path(name), text).unwrap();
        self
    }

    fn copy(self, name: &str, from: &Path) -> Setup {
        fs::copy(from, self.path(name)).unwrap_or_else(|err| panic!("{}: {err}", from.display()));
        self
    }

    /// `NAME.toml` with `text` and examples/comm_getpid.bpf.c's object as NAME.bpf.o.
    fn comm_config(self, name: &str, text: &str) -> Setup {
        self.file(&format!("{name}.toml"), text).copy(
            &format!("{name}.bpf.o"),
            &common::example_object("comm_getpid"),
        )
    }

    fn arg(&self, name: &str) -> String {
        path_str(&self.path(name)).to_string()
    }
}

/// Runs `command`, expecting it to fail as [`assert_failure`] says.
fn fails_with(mut command: Command, code: i32, expected: &[&str], one_line: bool) -> String {
    let output = command.output().expect("run bpfsnap");
    assert_failure(&format!("{command:?}"), &output, code, expected, one_line)
}

/// Checks that `output` (of `what`) is a failure: exit status `code` (2 for
/// bad input, from `check`, `run` and `serve` alike; 1 for a failure at run
/// time such as the kernel refusing a program), no metrics,
/// and on stderr a `bpfsnap: error:` that contains every `expected` text and
/// is one line if `one_line`; returns stderr.
fn assert_failure(
    what: &str,
    output: &Output,
    code: i32,
    expected: &[&str],
    one_line: bool,
) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit status of {what}\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert!(
        stderr.starts_with("bpfsnap: error: "),
        "{what}: an error, not a warning first: {stderr:?}"
    );
    if one_line {
        assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr:?}");
    }
    for text in expected {
        assert!(
            stderr.contains(text),
            "{what}: the error should say {text:?}: {stderr}"
        );
    }
    assert!(
        !stdout.contains("# TYPE"),
        "{what}: no metrics written: {stdout}"
    );
    stderr
}

fn bpfsnap(args: &[&str]) -> Command {
    let mut command = common::bpfsnap();
    command.args(args);
    command
}

/// `bpfsnap check PROGRAMS` fails saying `expected`, in one line.
fn check_fails(programs: &[&str], expected: &[&str]) -> String {
    let mut args = vec!["check"];
    args.extend_from_slice(programs);
    fails_with(bpfsnap(&args), 2, expected, true)
}

/// `bpfsnap run PROGRAMS --for 1s --output -` fails saying `expected`, in one line.
fn run_fails(programs: &[&str], expected: &[&str]) -> String {
    let mut args = vec!["run"];
    args.extend_from_slice(programs);
    args.extend_from_slice(&["--for", "1s", "--output", "-"]);
    fails_with(bpfsnap(&args), 2, expected, true)
}

/// Both `check` and `run` fail saying `expected`: for mistakes found while
/// reading configs, which `run` does before it needs any privilege.
fn both_fail(programs: &[&str], expected: &[&str]) {
    check_fails(programs, expected);
    run_fails(programs, expected);
}

/// `check` fails saying `expected`, and so does `run` as root (it checks the
/// object after the privileges; without root, `run` stops at those).
fn both_fail_run_as_root(test: &str, programs: &[&str], expected: &[&str]) {
    check_fails(programs, expected);
    if let Some(_kernel) = common::kernel_test_named(test) {
        run_fails(programs, expected);
    }
}

// --- the config text --------------------------------------------------------

#[test]
fn unknown_key_is_named_with_its_line() {
    let toml = COMM_TOML.replace("\n\n", "\ncolour = \"red\"\n\n");
    let yaml = COMM_YAML.replace(
        "          size: 16\n",
        "          size: 16\n          paddin: 4\n",
    );
    let setup = Setup::new()
        .comm_config("a", &toml)
        .file("b.yaml", &yaml)
        .copy("b.bpf.o", &common::example_object("comm_getpid"));
    both_fail(
        &[&setup.arg("a.toml")],
        &["a.toml: line 4: metrics.counters[0].colour: unknown field `colour`"],
    );
    // ebpf_exporter's YAML reader ignores keys it does not know: a warning
    // with the key's path and line, and the config goes on (here to its
    // labels taking 16 bytes without the misspelt padding: still valid).
    let output = common::bpfsnap()
        .args(["check", &setup.arg("b.yaml")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("b.yaml: line 8: metrics.counters[0].labels[0]: unknown key `paddin` ignored (as ebpf_exporter does)"),
        "{stderr}"
    );
}

#[test]
fn wrong_type_is_named_with_its_path() {
    let setup = Setup::new()
        .comm_config("a", &COMM_TOML.replace("size = 16", "size = \"sixteen\""))
        .file("b.yaml", &COMM_YAML.replace("size: 16", "size: [16]"));
    both_fail(
        &[&setup.arg("a.toml")],
        &["line 7: metrics.counters[0].labels[0].size: invalid type: string \"sixteen\""],
    );
    both_fail(
        &[&setup.arg("b.yaml")],
        &["metrics.counters[0].labels[0].size: invalid type: sequence"],
    );
}

#[test]
fn invalid_yaml_syntax_gives_the_line() {
    let setup = Setup::new().file(
        "a.yaml",
        &COMM_YAML.replace("help: getpid", "help: 'getpid"),
    );
    both_fail(&[&setup.arg("a.yaml")], &["a.yaml: line ", "help"]);
}

#[test]
fn empty_config_defines_no_metrics() {
    let setup = Setup::new()
        .comm_config("a", "")
        .file("b.yaml", "# nothing yet\n")
        .file("c.toml", "description = \"only words\"\n");
    for config in ["a.toml", "b.yaml", "c.toml"] {
        both_fail(&[&setup.arg(config)], &[config, "defines no metrics"]);
    }
}

#[test]
fn unknown_decoder_lists_the_known_ones() {
    let setup = Setup::new().comm_config("a", &COMM_TOML.replace("\"string\"", "\"strnig\""));
    both_fail(
        &[&setup.arg("a.toml")],
        &[
            "label \"comm\"",
            "unknown decoder \"strnig\": known decoders are",
            "static_map",
        ],
    );
}

#[test]
fn static_map_values_must_be_strings() {
    let toml = COMM_TOML.replace(
        "decoders = [{ name = \"string\" }]",
        "decoders = [{ name = \"string\" }, { name = \"static_map\", static_map = { bash = 2 } }]",
    );
    let yaml = fs::read_to_string(common::source_file("examples/struct_key.yaml"))
        .unwrap()
        .replace("2: dup", "2: [dup]");
    let setup = Setup::new()
        .comm_config("a", &toml)
        .file("struct_key.yaml", &yaml);
    both_fail(
        &[&setup.arg("a.toml")],
        &[
            "line 8: metrics.counters[0].labels[0].decoders[1].static_map",
            "expected a string",
        ],
    );
    both_fail(
        &[&setup.arg("struct_key.yaml")],
        &[
            "decoders[1].static_map",
            "invalid type: sequence, expected a string",
        ],
    );
}

#[test]
fn invalid_regexp_shows_the_pattern() {
    let with = |pattern: &str| {
        COMM_TOML.replace(
            "decoders = [{ name = \"string\" }]",
            &format!("decoders = [{{ name = \"string\" }}, {{ name = \"regexp\", regexps = ['^ok$', '{pattern}'] }}]"),
        )
    };
    let setup = Setup::new()
        .comm_config("a", &with("^(bpfsnap-.*$"))
        .comm_config("b", &with("^(a)(b)$"));
    both_fail(
        &[&setup.arg("a.toml")],
        &[
            "label \"comm\"",
            "invalid pattern \"^(bpfsnap-.*$\"",
            "unclosed group",
        ],
    );
    both_fail(&[&setup.arg("b.toml")], &["has 2 capture groups"]);
}

#[test]
fn label_without_size_or_decoders_is_refused() {
    let setup = Setup::new()
        .comm_config("a", &COMM_TOML.replace("size = 16\n", ""))
        .comm_config(
            "b",
            &COMM_TOML.replace("decoders = [{ name = \"string\" }]\n", ""),
        );
    both_fail(
        &[&setup.arg("a.toml")],
        &["getpid_calls_total", "label \"comm\" has no size"],
    );
    both_fail(&[&setup.arg("b.toml")], &["label \"comm\" has no decoders"]);
}

// --- config against its object -----------------------------------------------

#[test]
fn label_sizes_must_add_up_to_the_key_size() {
    let yaml = fs::read_to_string(common::source_file("examples/struct_key.yaml")).unwrap();
    let cpu_label = "\n[[metrics.counters.labels]]\nname = \"cpu\"\nsize = 2\ndecoders = [{ name = \"uint\" }]\n";
    let setup = Setup::new()
        .comm_config("a", &COMM_TOML.replace("size = 16", "size = 8"))
        // The padding after the 1-byte op forgotten.
        .file("struct_key.yaml", &yaml.replace("padding: 3", "padding: 0"))
        .copy("struct_key.bpf.o", &common::example_object("struct_key"))
        // A `cpu` label is only left out of the key on per-CPU maps.
        .comm_config("c", &format!("{COMM_TOML}{cpu_label}"));
    let cases: [(String, &[&str]); 3] = [
        (
            setup.arg("a.toml"),
            &["a: counter \"getpid_calls_total\": the labels take 8 bytes but the map's keys are 16 bytes"],
        ),
        (
            setup.arg("struct_key.yaml"),
            &["the labels take 9 bytes but the map's keys are 12 bytes", "paddings"],
        ),
        (
            setup.arg("c.toml"),
            &["the labels take 18 bytes but the map's keys are 16 bytes"],
        ),
    ];
    for (config, expected) in &cases {
        check_fails(&[config], expected);
    }
    // `run` checks the object after the privileges.
    if let Some(_kernel) = common::kernel_test!() {
        for (config, expected) in &cases {
            run_fails(&[config], expected);
        }
    }
}

#[test]
fn metric_without_a_map_lists_the_maps() {
    let setup = Setup::new().comm_config(
        "a",
        &COMM_TOML.replace("getpid_calls_total", "getpid_total"),
    );
    both_fail_run_as_root(
        common::test_name!(),
        &[&setup.arg("a.toml")],
        &[
            "a: counter \"getpid_total\": reads the map of the same name, but the object has none",
            "(its maps: getpid_calls_total)",
        ],
    );
}

#[test]
fn missing_object_is_named() {
    let setup = Setup::new()
        .file("a.toml", COMM_TOML)
        .file("b.toml", &format!("object = \"build/b.o\"\n{COMM_TOML}"));
    both_fail(
        &[&setup.arg("a.toml")],
        &["BPF object", "a.bpf.o not found"],
    );
    both_fail(
        &[&setup.arg("b.toml")],
        &["BPF object", "build/b.o not found", "`object`"],
    );
}

#[test]
fn object_that_is_not_bpf_is_refused() {
    let setup = Setup::new()
        .file("a.toml", COMM_TOML)
        .file("a.bpf.o", "#!/bin/sh\necho not an ELF file\n");
    both_fail_run_as_root(
        common::test_name!(),
        &[&setup.arg("a.toml")],
        &["a: cannot open the BPF object", "a.bpf.o"],
    );
}

// --- selecting configs --------------------------------------------------------

#[test]
fn duplicate_config_names_are_refused() {
    let setup = Setup::new()
        .comm_config("a", COMM_TOML)
        .comm_config("syscalls", COMM_TOML);
    let dir = setup.arg("");
    // The same name twice, as a file and from the directory.
    both_fail(
        &[&setup.arg("a.toml"), "--config-dir", &dir, "--configs", "a"],
        &["two configs are named \"a\"", "each name may appear once"],
    );
    // A user config named like a built-in, and that built-in.
    both_fail(
        &[
            "--config-dir",
            &dir,
            "--configs",
            "syscalls",
            "--builtin",
            "syscalls",
        ],
        &["two configs are named \"syscalls\"", "built-in syscalls"],
    );
}

#[test]
fn yaml_and_toml_of_the_same_name_are_refused() {
    let setup = Setup::new()
        .comm_config("a", COMM_TOML)
        .file("a.yaml", COMM_YAML);
    both_fail(
        &["--config-dir", &setup.arg(""), "--configs", "a"],
        &[
            "config \"a\" is defined twice",
            "a.toml",
            "a.yaml",
            "keep one",
        ],
    );
}

#[test]
fn unknown_config_name_says_where_it_looked() {
    let setup = Setup::new().comm_config("a", COMM_TOML);
    both_fail(
        &["--config-dir", &setup.arg(""), "--configs", "a,nosuch"],
        &[
            "config \"nosuch\" not found: no nosuch.toml or nosuch.yaml in",
            "no built-in",
        ],
    );
    both_fail(
        &[&setup.arg("a.bpf.o")],
        &["a.bpf.o: a config file must end in .toml or .yaml"],
    );
}

#[test]
fn a_directory_is_not_a_config() {
    let setup = Setup::new().comm_config("a", COMM_TOML);
    fs::create_dir(setup.path("dir.toml")).unwrap();
    both_fail(
        &[&setup.arg("dir.toml")],
        &["cannot read config", "dir.toml", "Is a directory"],
    );
    both_fail(
        &["--config-dir", &setup.arg("a.toml"), "--configs", "a"],
        &["--config-dir", "a.toml is not a directory"],
    );
}

#[test]
fn check_reports_every_bad_config_one_per_line() {
    let setup = Setup::new()
        .comm_config("good", COMM_TOML)
        .comm_config("a", "")
        .comm_config("b", &COMM_TOML.replace("\"string\"", "\"nosuch\""));
    let output = bpfsnap(&[
        "check",
        &setup.arg("a.toml"),
        &setup.arg("good.toml"),
        &setup.arg("b.toml"),
    ])
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stdout.starts_with("ok good ("), "{stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("bpfsnap: error: ") && lines[0].contains("a.toml: defines no metrics"),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("bpfsnap: error: ") && lines[1].contains("unknown decoder \"nosuch\""),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

/// `check` lists every independent problem of one config, each on its own
/// line: those in the config text, and (for a config whose text is valid)
/// those between the config and its object.
#[test]
fn check_lists_every_problem_of_a_config_one_per_line() {
    let second_counter = "\n[[metrics.counters]]\nname = \"other_total\"\nhelp = \"Other.\"\n\n[[metrics.counters.labels]]\nname = \"comm\"\nsize = 16\n";
    let text_faults = format!(
        "{}{second_counter}decoders = [{{ name = \"regexp\", regexps = [\"(\"] }}]\n",
        COMM_TOML
            .replace("\"string\"", "\"nosuch\"")
            .replace("help = \"getpid() calls.\"", "help = \"\"")
    );
    let object_faults = format!(
        "{}{second_counter}decoders = [{{ name = \"string\" }}]\n",
        COMM_TOML.replace("size = 16", "size = 8")
    );
    let setup = Setup::new()
        .comm_config("text", &text_faults)
        .comm_config("object", &object_faults);
    let cases: [(&str, &[&str]); 2] = [
        (
            "text.toml",
            &[
                "text.toml: metric \"getpid_calls_total\": label \"comm\": unknown decoder \"nosuch\"",
                "text.toml: metric \"other_total\": label \"comm\": decoder regexp: invalid pattern",
                "text.toml: counter \"getpid_calls_total\" has no help text",
            ],
        ),
        (
            "object.toml",
            &[
                "object: counter \"getpid_calls_total\": the labels take 8 bytes but the map's keys are 16 bytes",
                "object: counter \"other_total\": reads the map of the same name, but the object has none",
            ],
        ),
    ];
    for (config, expected) in cases {
        let output = bpfsnap(&["check", &setup.arg(config)]).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{config}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), expected.len(), "{config}: {stderr}");
        for (line, expected) in lines.iter().zip(expected) {
            assert!(
                line.starts_with("bpfsnap: error: ") && line.contains(expected),
                "{config}: {line:?} should say {expected:?}\n{stderr}"
            );
        }
    }
    // `run` reports the same problems in one line.
    let mut run = bpfsnap(&[
        "run",
        &setup.arg("text.toml"),
        "--for",
        "1s",
        "--output",
        "-",
    ]);
    let output = run.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("nosuch") && stderr.contains("no help text"),
        "{stderr}"
    );
}

/// An invalid config is the same exit status, 2, whichever command finds it:
/// `check`, `run` and `serve` (both before they need any privilege).
#[test]
fn an_invalid_config_is_exit_status_2_in_check_run_and_serve() {
    let setup = Setup::new().comm_config("a", &COMM_TOML.replace("\"string\"", "\"nosuch\""));
    let config = setup.arg("a.toml");
    let expected = ["a.toml", "unknown decoder \"nosuch\""];
    check_fails(&[&config], &expected);
    run_fails(&[&config], &expected);
    let serve = bpfsnap(&["serve", "--listen", "127.0.0.1:0", &config]);
    fails_with(serve, 2, &expected, true);
}

/// A bad web config (`serve --web.config.file`, exporter-toolkit's format)
/// is refused at start, before anything is loaded: one line naming the file,
/// the key and what is wrong, exit status 2, as exporter-toolkit refuses it.
#[test]
fn bad_web_configs_are_refused_at_start_in_one_line() {
    let setup = Setup::new()
        .file(
            "unknown.yml",
            "tls_server_config:\n  cert_file: a.pem\n  keyfile: a.key\n",
        )
        .file(
            "missing.yml",
            "tls_server_config:\n  cert_file: nosuch.pem\n  key_file: nosuch.key\n",
        )
        .file("hash.yml", "basic_auth_users:\n  alice: secret\n")
        .file("syntax.yml", "basic_auth_users:\n  alice: 'secret\n")
        .file(
            "auth.yml",
            "tls_server_config:\n  client_auth_type: RequireAnyClientCert\n",
        )
        .file("limit.yml", "rate_limit:\n  interval: 1s\n  burst: 5\n");
    let cases: [(&str, &[&str]); 7] = [
        (
            "unknown.yml",
            &["unknown.yml: line 3: tls_server_config: unknown field `keyfile`"],
        ),
        (
            "missing.yml",
            &[
                "tls_server_config.cert_file: cannot read",
                "nosuch.pem",
                "No such file",
            ],
        ),
        (
            "hash.yml",
            &["hash.yml: basic_auth_users: the password of \"alice\" is not a bcrypt hash"],
        ),
        (
            "syntax.yml",
            &["syntax.yml: line 3: basic_auth_users.alice: found unexpected end"],
        ),
        ("auth.yml", &["missing one of cert or cert_file"]),
        ("limit.yml", &["rate_limit: not supported"]),
        (
            "absent.yml",
            &["cannot read web config", "absent.yml", "No such file"],
        ),
    ];
    for (file, expected) in cases {
        let serve = bpfsnap(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--web.config.file",
            &setup.arg(file),
        ]);
        fails_with(serve, 2, expected, true);
    }
}

// --- privileges and unreadable files (as root, dropping to nobody) -----------

#[test]
fn unreadable_config_says_permission_denied() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let setup = Setup::new().comm_config("a", COMM_TOML);
    fs::set_permissions(setup.path("a.toml"), fs::Permissions::from_mode(0o000)).unwrap();
    for subcommand in [vec!["check"], vec!["run", "--for", "1s", "--output", "-"]] {
        let mut command = common::bpfsnap_as_nobody();
        command.args(&subcommand).arg(setup.path("a.toml"));
        fails_with(
            command,
            2,
            &["cannot read config", "a.toml", "Permission denied"],
            true,
        );
    }
}

#[test]
fn unprivileged_run_of_a_user_config_asks_for_capabilities() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let setup = Setup::new().comm_config("a", COMM_TOML);
    let mut command = common::bpfsnap_as_nobody();
    command.args(["run", "--for", "1s", "--output", "-", &setup.arg("a.toml")]);
    fails_with(command, 1, &["CAP_BPF", "CAP_PERFMON"], true);

    // `check` needs no privileges.
    let output = common::bpfsnap_as_nobody()
        .args(["check", &setup.arg("a.toml")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "check as nobody: {stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ok a ("));
}

// --- what only the kernel can refuse (as root) --------------------------------

/// DIR with tests/fixtures/NAME.bpf.o and a config for it (NAME.toml).
fn fixture(name: &str) -> Setup {
    Setup::new()
        .copy(
            &format!("{name}.toml"),
            &common::source_file("tests/fixtures/events.toml"),
        )
        .copy(&format!("{name}.bpf.o"), &common::fixture_object(name))
}

/// `bpfsnap run --for 1s --output - NAME.toml` of a fixture set up by [`fixture`].
fn run_fixture(setup: &Setup, name: &str) -> Command {
    bpfsnap(&[
        "run",
        "--for",
        "1s",
        "--output",
        "-",
        &setup.arg(&format!("{name}.toml")),
    ])
}

#[test]
fn verifier_failure_names_the_program_and_shows_the_log() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let setup = fixture("bad_verifier");
    let stderr = fails_with(
        run_fixture(&setup, "bad_verifier"),
        1,
        &[
            "bad_verifier: the verifier rejected program count_unchecked (section tp_btf/sys_enter)",
            "verifier log",
            "R0 invalid mem access 'map_value_or_null'",
        ],
        false,
    );
    let first = stderr.lines().next().unwrap();
    assert!(
        first.contains("count_unchecked"),
        "the first line names the program: {stderr}"
    );
    assert!(
        stderr.lines().count() <= 12,
        "only the log's tail: {stderr}"
    );
}

/// Staleness is visible: a run where a config fails still writes what it
/// can, with `up` 0 and the last full success carried over.
#[test]
fn a_failing_config_marks_the_file_down_and_keeps_the_last_success() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let setup = fixture("bad_verifier");
    let out_dir = common::output_dir();
    let output = out_dir.path().join("bpfsnap.prom");
    let run = |configs: &[&str]| {
        let mut args = vec!["run", "--for", "200ms", "--output", path_str(&output)];
        args.extend_from_slice(configs);
        let result = bpfsnap(&args).output().expect("run bpfsnap");
        let text = fs::read_to_string(&output).expect("the output is written");
        common::promtool_check(&text);
        (result, text)
    };
    let bad = setup.arg("bad_verifier.toml");

    let (first, text) = run(&["--builtin", "syscalls"]);
    assert!(first.status.success(), "{first:?}");
    assert_eq!(common::sample(&text, "bpfsnap_up"), Some(1.0));
    let success = common::sample(&text, "bpfsnap_last_success_timestamp_seconds")
        .expect("a successful run records its time");

    // One config fails: the others' metrics are there, `up` says 0.
    let (partial, text) = run(&["--builtin", "syscalls", &bad]);
    assert_eq!(partial.status.code(), Some(1), "{partial:?}");
    assert_eq!(common::sample(&text, "bpfsnap_up"), Some(0.0));
    assert_eq!(
        common::sample(&text, r#"bpfsnap_config_up{config="bad_verifier"}"#),
        Some(0.0)
    );
    assert_eq!(
        common::sample(&text, r#"bpfsnap_config_up{config="syscalls"}"#),
        Some(1.0)
    );
    assert!(text.contains("\nbpfsnap_syscalls_total{"), "{text}");
    assert_eq!(
        common::sample(&text, "bpfsnap_last_success_timestamp_seconds"),
        Some(success)
    );

    // Nothing attaches: the file (healthy again first) still turns `up` to 0.
    let (again, text) = run(&["--builtin", "syscalls"]);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(common::sample(&text, "bpfsnap_up"), Some(1.0));
    let success = common::sample(&text, "bpfsnap_last_success_timestamp_seconds").unwrap();
    let (total, text) = run(&[&bad]);
    assert_eq!(total.status.code(), Some(1), "{total:?}");
    let stderr = String::from_utf8_lossy(&total.stderr);
    // One error (the verifier's log tail follows it), nothing else.
    assert!(
        stderr.starts_with("bpfsnap: error: bad_verifier: ")
            && stderr.matches("bpfsnap:").count() == 1,
        "{stderr}"
    );
    assert_eq!(common::sample(&text, "bpfsnap_up"), Some(0.0));
    assert_eq!(
        common::sample(&text, r#"bpfsnap_config_up{config="bad_verifier"}"#),
        Some(0.0)
    );
    assert_eq!(
        common::sample(&text, "bpfsnap_last_success_timestamp_seconds"),
        Some(success)
    );
}

#[test]
fn kprobe_on_a_kernel_without_kprobes_says_so() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    if Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        eprintln!("SKIPPED {}: this kernel has kprobes", common::test_name!());
        return;
    }
    let setup = fixture("kprobe");
    fails_with(
        run_fixture(&setup, "kprobe"),
        1,
        &[
            "kprobe: cannot attach program count_openat2 (section kprobe/do_sys_openat2)",
            "no kprobe support",
            "tracepoint",
        ],
        true,
    );
}

#[test]
fn a_tracepoint_the_kernel_lacks_is_named_with_where_to_look() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let setup = fixture("missing_tracepoint");
    fails_with(
        run_fixture(&setup, "missing_tracepoint"),
        1,
        &[
            "missing_tracepoint: program count_nothing (section tp_btf/bpfsnap_no_such_tracepoint): \
             this kernel has no bpfsnap_no_such_tracepoint to attach to",
            "/sys/kernel/tracing/available_events",
        ],
        true,
    );
}

#[test]
fn fentry_refused_by_the_kernel_says_trampolines() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let setup = fixture("fentry");
    let command = run_fixture(&setup, "fentry");
    let what = format!("{command:?}");
    let output = { command }.output().expect("run bpfsnap");
    if output.status.success() {
        eprintln!(
            "SKIPPED {}: this kernel allows fentry",
            common::test_name!()
        );
        return;
    }
    assert_failure(
        &what,
        &output,
        1,
        &[
            "fentry: the kernel refused to load program count_openat2 (section fentry/do_sys_openat2)",
            "trampolines",
            "use tp_btf, raw_tp or a tracepoint instead",
        ],
        true,
    );
}

/// Mistyped and misplaced flags, and durations that cannot be windows, are
/// each refused in one line that says what to type instead.
#[test]
fn flags_get_the_suggestion_that_fits() {
    for (args, expected) in [
        (
            &["run", "--fro", "10s"][..],
            &["--fro", "did you mean --for?"][..],
        ),
        (&["run", "--outptu=-"], &["did you mean --output?"]),
        (
            &["run", "--web.listen-address", ":9435"],
            &["--web.listen-address is a flag of `bpfsnap serve`, not of `bpfsnap run`"],
        ),
        (
            &["serve", "--for", "10s"],
            &["--for is a flag of `bpfsnap run`"],
        ),
    ] {
        fails_with(bpfsnap(args), 2, expected, true);
    }
    for (args, expected) in [
        (
            &["run", "--for", "-5s"][..],
            "a duration cannot be negative",
        ),
        (&["run", "--for=-5s"], "a duration cannot be negative"),
        (
            &["run", "--interval", "-1m"],
            "a duration cannot be negative",
        ),
        (&["run", "--for", "0s"], "longer than zero"),
    ] {
        let output = bpfsnap(args).output().expect("run bpfsnap");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("tip: to pass"), "{args:?}: {stderr}");
    }
}

/// The container decoders' flags are checked before anything is loaded:
/// `run` and `serve` stop with one line naming the flag and the cause.
#[test]
fn bad_container_flags_are_one_line() {
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["--container-root", "/nonexistent/host"],
            &["--container-root /nonexistent/host", "os error 2"],
        ),
        (
            &["--container-include", "shop"],
            &["--container-include \"shop\": write FIELD=REGEX"],
        ),
        (
            &["--container-exclude", "node=x"],
            &["unknown field \"node\""],
        ),
        (
            &["--container-include", "pod=("],
            &["--container-include: ", "unclosed group"],
        ),
    ];
    for (flags, expected) in cases {
        run_fails(flags, expected);
        let mut serve = vec!["serve", "--web.listen-address", "127.0.0.1:0"];
        serve.extend_from_slice(flags);
        fails_with(bpfsnap(&serve), 2, expected, true);
    }
}

/// A label reading another's bytes must name an earlier one.
#[test]
fn same_bytes_as_must_name_an_earlier_label() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("comm.toml");
    let text = format!(
        "{COMM_TOML}\n[[metrics.counters.labels]]\nname = \"again\"\nsame_bytes_as = \"nope\"\n\
         decoders = [{{ name = \"string\" }}]\n"
    );
    fs::write(&config, text).unwrap();
    check_fails(
        &[path_str(&config)],
        &["label \"again\": same_bytes_as \"nope\" names no earlier label"],
    );
}
