//! Command line: the clap definition (also the source of the man pages and the
//! shell completions) and the dispatch to the commands.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::check;
use crate::exposition::OutputFormat;
use crate::log::{Format, Level, Log};
use crate::privilege::KeepCaps;
use crate::program::Selection;
use crate::run::{self, RunOptions};
use crate::serve::address::Listen;
use crate::serve::scrape::Scraping;
use crate::session::SessionOptions;
use crate::sink::Sink;
use crate::snapshot::Counts;
use crate::spec::DEFAULT_NAMESPACE;

// The text after --help; tests/docs.rs turns each "Heading:" paragraph into
// a man page section (EXAMPLES, EXIT STATUS).
const RUN_HELP: &str = "\
Examples:
  bpfsnap run --for 30s                       print a 30 s snapshot of the default programs
  bpfsnap run --for 30s --output /var/lib/prometheus/node-exporter/bpfsnap.prom
  bpfsnap run --builtin syscalls --for 5s --output -
  bpfsnap run ./myprobe.toml --for 10s        a user program (myprobe.bpf.o beside it)
  bpfsnap run --config-dir /etc/bpfsnap --configs biolatency,syscalls --for 30s
  bpfsnap check --config-dir /etc/bpfsnap --configs biolatency

From cron (cron's PATH lacks /usr/local/bin), the programs staying attached between runs:
  * * * * * root /usr/local/bin/bpfsnap run -q --pin /sys/fs/bpf/bpfsnap -o /var/lib/prometheus/node-exporter/bpfsnap.prom
As a service, rewriting the file every 30 s:
  bpfsnap run --interval 30s --output /var/lib/prometheus/node-exporter/bpfsnap.prom

Counts over time: with --pin, --interval or serve, counters count since the programs were
attached; a run into a file without --pin adds its window's counts to the file it replaces
(bpfsnap_sampled_seconds_total says how long they counted); one window on standard output,
or --counts window, is written as gauges (counters without _total, gauge histograms).

Exit status:
  0  success (also when a signal ended the window early)
  1  failure at run time: the kernel refused a program, the output could not be written, ...
  2  bad usage or bad input: unknown flag, invalid config, object not matching its config";

const SERVE_HELP: &str = "\
Examples:
  bpfsnap serve                               the default programs on 127.0.0.1:9435
  bpfsnap serve --listen 127.0.0.1:9435 --builtin syscalls,runqlat
  bpfsnap serve --web.listen-address :9435    every address, IPv4 and IPv6
  bpfsnap serve --listen 127.0.0.1:9435 --listen [::1]:9435
  bpfsnap serve --web.listen-address :9435 --web.config.file /etc/bpfsnap/web-config.yml
                                              TLS and passwords (examples/deploy/web-config.yml)

Exit status:
  0  stopped by SIGINT or SIGTERM (in-flight scrapes finished, probes detached)
  1  failure at run time: the address is taken, the kernel refused a program, ...
  2  bad usage or bad input: unknown flag, invalid config, object not matching its config,
     invalid web config, listen address that does not resolve";

const CHECK_HELP: &str = "\
Exit status:
  0  every config and object is valid
  2  problems were found (each listed on stderr, one per line), as `run` and
     `serve` exit 2 for an invalid config; or bad usage: an unknown flag";

const LIST_HELP: &str = "\
Exit status:
  0  the list was printed
  2  bad usage";

const BUILD_HELP: &str = "\
Examples:
  bpfsnap build comm_getpid.bpf.c          # writes comm_getpid.bpf.o beside it
  bpfsnap run comm_getpid.toml --for 10s   # the config finds the object by its name
  bpfsnap build -I ~/ebpf_exporter/include examples/biolatency.bpf.c

clang compiles with -target bpf -g -O2 -D__TARGET_ARCH_<arch> and the
embedded headers; BPFSNAP_CLANG names another clang.

Exit status:
  0  the object was written
  1  clang failed (what it said follows the error) or could not be run
  2  bad usage, or the source cannot be read or is not named NAME.bpf.c";

const STOP_HELP: &str = "\
Exit status:
  0  nothing of bpfsnap is left under DIR (also when nothing was there)
  1  something could not be detached or unpinned (the message says what)
  2  bad usage";

/// Turn eBPF measurements into Prometheus metrics.
///
/// bpfsnap loads BPF programs, lets them count for a sampling window, reads
/// their maps and writes the Prometheus text format, atomically, into
/// node_exporter's textfile directory or to standard output. Programs are
/// built-ins embedded in bpfsnap, or configs of your own (TOML, or
/// ebpf_exporter's YAML unchanged) with their compiled BPF objects.
#[derive(Debug, Parser)]
#[command(name = "bpfsnap", version, after_help = RUN_HELP)]
pub struct Cli {
    /// Say what is happening on stderr; twice (-vv) also libbpf's own
    /// messages (CO-RE relocations, the verifier's logs: long).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Print only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Show messages of this level and above, as exporter-toolkit's flag:
    /// debug (libbpf's own messages too), info, warn or error. In place of
    /// -v and -q.
    #[arg(
        long = "log.level",
        global = true,
        value_name = "LEVEL",
        value_parser = Level::parse,
        conflicts_with_all = ["verbose", "quiet"]
    )]
    pub log_level: Option<Level>,

    /// Write each message as a record, as exporter-toolkit's loggers do:
    /// logfmt (time=… level=… msg=…) or json, with a timestamp unless
    /// stderr is the journal. Without it, plain lines.
    #[arg(long = "log.format", global = true, value_name = "FORMAT", value_parser = Format::parse)]
    pub log_format: Option<Format>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach programs, sample for a window, write the metrics, detach.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Keep the probes attached and answer Prometheus scrapes over HTTP: each
    /// scrape of /metrics takes a fresh snapshot.
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
    /// Validate configs and their BPF objects without loading anything into
    /// the kernel (no root needed); lists every problem, one per line.
    #[command(after_help = CHECK_HELP)]
    Check(ProgramArgs),
    /// List the built-in programs: for each, whether it is in the default set,
    /// whether it can attach on this kernel, its metrics with their labels, and
    /// what it measures (the description names its attach points); within 100
    /// columns.
    #[command(after_help = LIST_HELP)]
    List {
        /// Also show the exact attach points, why a program is unavailable, the
        /// cardinality bound of its labels and its cost.
        #[arg(short, long)]
        long: bool,
    },
    /// Compile your BPF program NAME.bpf.c into NAME.bpf.o beside it, with the
    /// headers bpfsnap embeds (vmlinux.h, libbpf's bpf/*.h, bpfsnap.h): only
    /// clang is needed.
    #[command(after_help = BUILD_HELP)]
    Build(BuildArgs),
    /// Detach and unpin everything an earlier `run --pin DIR` left in bpffs.
    #[command(after_help = STOP_HELP)]
    Stop {
        /// The directory given to `run --pin`.
        #[arg(long, value_name = "DIR")]
        pin: PathBuf,
    },
}

/// `bpfsnap build`'s arguments.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The program's source, NAME.bpf.c.
    #[arg(value_name = "NAME.bpf.c")]
    pub source: PathBuf,
    /// Where to write the object (default: NAME.bpf.o beside the source,
    /// where a config NAME.toml or NAME.yaml finds it).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Another directory to search for #include "..." files, after the
    /// source's own (repeatable; e.g. ebpf_exporter's include/).
    #[arg(short = 'I', long = "include", value_name = "DIR")]
    pub include: Vec<PathBuf>,
}

/// Which programs to use; nothing named: the default built-in set.
#[derive(Debug, Args)]
pub struct ProgramArgs {
    /// Config files (NAME.toml or ebpf_exporter's NAME.yaml; the compiled
    /// NAME.bpf.o beside it).
    #[arg(value_name = "CONFIG")]
    pub files: Vec<PathBuf>,

    /// Directory holding NAME.toml or NAME.yaml and NAME.bpf.o for --configs.
    #[arg(long, value_name = "DIR", alias = "config.dir")]
    pub config_dir: Option<PathBuf>,

    /// Configs to use from --config-dir, comma-separated; a name not found
    /// there may be a built-in.
    #[arg(
        long,
        value_name = "NAMES",
        value_delimiter = ',',
        alias = "config.names"
    )]
    pub configs: Vec<String>,

    /// Built-in programs to use, comma-separated.
    #[arg(short, long, value_name = "NAMES", value_delimiter = ',')]
    pub builtin: Vec<String>,

    /// `container`: use each selected (or default) built-in's
    /// NAME_by_container twin where it has one, labelled namespace, pod and
    /// container (see --container-root).
    #[arg(long, value_name = "KEY")]
    pub by: Option<By>,
}

/// How programs are loaded and attached (run and serve).
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The kernel's types in BTF, for a kernel without
    /// /sys/kernel/btf/vmlinux (BTFHub's archives have them for older
    /// distribution kernels): libbpf relocates CO-RE programs against it.
    /// Programs that attach through the kernel's own BTF (tp_btf, fentry, so
    /// the built-ins) still need the kernel's.
    #[arg(long, value_name = "PATH", alias = "btf.path")]
    pub btf: Option<PathBuf>,

    /// A program that cannot attach fails its config. Without it the
    /// config's other programs run, a warning names the one that did not
    /// attach and bpfsnap_program_attached says 0 for it (ebpf_exporter's
    /// default; this is its --config.strict).
    #[arg(long, alias = "config.strict")]
    pub strict: bool,

    /// ebpf_exporter's flag, accepted so its command lines work, and
    /// ignored: bpfsnap decodes each distinct label value once per window,
    /// with no cache to size.
    #[arg(long = "config.skip-cache-size", value_name = "N", hide = true)]
    pub skip_cache_size: Option<u64>,
}

/// What `run` and `serve` take alike: the programs, how they are loaded
/// and with which privileges, and the metric names' prefix.
#[derive(Debug, Args)]
pub struct SessionArgs {
    #[command(flatten)]
    pub programs: ProgramArgs,

    /// Prefix of every metric name; `ebpf_exporter` gives ebpf_exporter's names,
    /// so existing dashboards keep working.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_NAMESPACE, value_parser = parse_namespace)]
    pub namespace: String,

    #[command(flatten)]
    pub attaching: AttachArgs,

    /// Capabilities to keep once the probes are attached: none, all, or a
    /// list such as syslog,dac_override. CAP_SYSLOG is kept automatically for
    /// the ksym and kstack decoders, and CAP_BPF where the kernel checks it
    /// for every map read. (ebpf_exporter's --capabilities.keep, whose
    /// default is all.)
    #[arg(long, value_name = "CAPS", default_value = "none", value_parser = KeepCaps::parse, alias = "capabilities.keep")]
    pub keep_caps: KeepCaps,

    /// Load config and object files even if they are writable by others or
    /// owned by another user.
    #[arg(long)]
    pub allow_untrusted_files: bool,

    #[command(flatten)]
    pub containers: ContainerArgs,
}

/// Where the container decoders (container_name, kube_pod, ...) read the
/// container runtimes' files.
#[derive(Debug, Args)]
pub struct ContainerArgs {
    /// Where the host's / is mounted, for the container decoders: its
    /// sys/fs/cgroup, run/containerd, run/containers, var/lib/containers and
    /// var/lib/docker are read below it (e.g. /host in a DaemonSet).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub container_root: PathBuf,

    /// What the container decoders give for a cgroup that is not a
    /// container's, e.g. host [default: the cgroup's path].
    #[arg(long, value_name = "VALUE")]
    pub container_host: Option<String>,

    /// Keep only keys of containers whose FIELD (namespace, pod or
    /// container: its name) matches REGEX (unanchored, as the regexp
    /// decoder's; repeatable: one match per field named), in every label
    /// decoded by a container decoder; dropped before series are made.
    #[arg(long, value_name = "FIELD=REGEX")]
    pub container_include: Vec<String>,

    /// Drop keys of containers whose FIELD matches REGEX (repeatable), as
    /// --container-include keeps them.
    #[arg(long, value_name = "FIELD=REGEX")]
    pub container_exclude: Vec<String>,
}

impl ContainerArgs {
    /// Configures the container decoders before any config is compiled; a
    /// root that is no readable directory, or a bad rule, is bad input.
    fn configure(&self) -> anyhow::Result<()> {
        crate::decode::container::configure(crate::decode::container::Settings {
            root: self.container_root.clone(),
            host: self.container_host.clone(),
            include: self.container_include.clone(),
            exclude: self.container_exclude.clone(),
        })
        .map_err(|err| crate::BadInput::new(format!("{err:#}")).into())
    }
}

impl SessionArgs {
    /// The session's options (ebpf_exporter's flags bpfsnap ignores are
    /// said to be ignored).
    fn options(&self, log: Log) -> SessionOptions {
        note_ignored_flags(self.attaching.skip_cache_size, log);
        SessionOptions {
            selection: self.programs.selection(),
            btf: self.attaching.btf.clone(),
            strict: self.attaching.strict,
            keep_caps: self.keep_caps.clone(),
            allow_untrusted_files: self.allow_untrusted_files,
            log,
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub session: SessionArgs,

    /// Length of the sampling window, e.g. 500ms, 30s, 2m [default: 10s; with
    /// --pin: none, the window is the time since the last run]. SIGINT or
    /// SIGTERM ends it early; what was gathered is still written.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_window, allow_hyphen_values = true)]
    pub window: Option<Duration>,

    /// Keep the probes attached and rewrite the output every DURATION until
    /// SIGINT/SIGTERM (which writes the last, partial window). Counters are
    /// cumulative since the start; the window gauges cover the last interval.
    #[arg(long, value_name = "DURATION", value_parser = parse_window, allow_hyphen_values = true, conflicts_with = "window")]
    pub interval: Option<Duration>,

    /// With --interval: what each window's counts cover. `cumulative`
    /// (Prometheus counters: everything since the start, for rate() and
    /// increase()) or `window` (that window only, each snapshot minus the one
    /// before, as BCC tools print; written as gauges) [default: window for
    /// the pretty format on a terminal, else cumulative].
    #[arg(
        long,
        value_name = "MODE",
        requires = "interval",
        conflicts_with = "pin"
    )]
    pub counts: Option<Counts>,

    /// With --interval: stop after N windows.
    // `requires` alone is not enough: clap skips it when `--for` is given,
    // because `--interval` conflicts with `--for`; say it is a usage error.
    #[arg(long, value_name = "N", requires = "interval", conflicts_with = "window", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Where to write the metrics: a file, replaced atomically (for node_exporter's
    /// textfile collector use a name ending in .prom), - for standard output, or
    /// an existing character device or FIFO, written in place.
    #[arg(short, long, value_name = "PATH", default_value = "-")]
    pub output: PathBuf,

    /// Leave the programs attached and their maps pinned under DIR (on bpffs,
    /// e.g. /sys/fs/bpf/bpfsnap): the first run attaches them, later runs read
    /// the maps at once, and the counters count all the time, between runs
    /// too; `bpfsnap stop --pin DIR` removes them.
    #[arg(long, value_name = "DIR")]
    pub pin: Option<PathBuf>,

    /// How long to wait for another bpfsnap writing the same output.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub lock_timeout: Duration,

    /// Output format [default: pretty when writing to a terminal, else text].
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<OutputFormat>,

    /// Rows per table in the terminal view (pretty format; 0: all).
    #[arg(long, value_name = "N", default_value = "10")]
    pub top: usize,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub session: SessionArgs,

    /// Address to listen on (exporter-toolkit's --web.listen-address):
    /// HOST:PORT (an IPv4 address or a host name, resolved at start),
    /// [IPV6]:PORT, :PORT for every address, or fd://N for a listening
    /// socket left open as descriptor N (ebpf_exporter's form). Repeat it
    /// to listen on several. The default answers this machine only; 9435
    /// is ebpf_exporter's port, which bpfsnap serve replaces.
    #[arg(
        long,
        visible_alias = "web.listen-address",
        value_name = "ADDRESS",
        default_value = "127.0.0.1:9435",
        value_parser = Listen::parse,
        action = clap::ArgAction::Append
    )]
    pub listen: Vec<Listen>,

    /// Listen on the sockets systemd passes (socket activation, as
    /// exporter-toolkit's flag: LISTEN_FDS from descriptor 3) instead of
    /// --web.listen-address.
    #[arg(long = "web.systemd-socket", conflicts_with = "listen")]
    pub systemd_socket: bool,

    /// exporter-toolkit's web configuration file (YAML), as node_exporter
    /// and ebpf_exporter take it: TLS (tls_server_config) and basic
    /// authentication (basic_auth_users, bcrypt hashes). It is read again
    /// when it or a file it names changes. See
    /// https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config: Option<PathBuf>,

    /// Path under which the metrics are served.
    #[arg(
        long = "web.telemetry-path",
        value_name = "PATH",
        default_value = "/metrics",
        value_parser = parse_telemetry_path
    )]
    pub telemetry_path: String,

    /// Scrapes answered at once; more get HTTP 503 (exporter-toolkit's
    /// flag; --max-requests is its old name). Idle and half-open
    /// connections do not count.
    #[arg(
        long = "web.max-requests",
        alias = "max-requests",
        value_name = "N",
        default_value = "4",
        value_parser = clap::value_parser!(u64).range(1..=256)
    )]
    pub max_requests: u64,

    /// A scrape that takes longer gets HTTP 503.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_window, allow_hyphen_values = true)]
    pub scrape_timeout: Duration,

    /// When gathering fails: `fail` answers HTTP 500 with the error, `partial`
    /// serves what was gathered. Both count in bpfsnap_scrape_errors_total.
    #[arg(long, value_name = "MODE", default_value = "fail", value_parser = ["fail", "partial"])]
    pub on_error: String,

    /// What each scrape's counts cover: `cumulative` (since the start) or
    /// `window` (since the previous scrape, whoever made it: give each
    /// scraper its own bpfsnap; written as gauges).
    #[arg(long, value_name = "MODE", default_value = "cumulative")]
    pub counts: Counts,

    /// Testing aid: make every scrape take at least this long, to exercise
    /// the in-flight limit and the scrape timeout.
    #[arg(long, value_name = "DURATION", hide = true, value_parser = humantime::parse_duration)]
    pub scrape_delay: Option<Duration>,

    /// Testing aid: make gathering fail as if reading the maps had failed, to
    /// exercise --on-error.
    #[arg(long, hide = true)]
    pub scrape_error: bool,

    /// Testing aid: --scrape-delay and --scrape-error apply to the first N
    /// scrapes only, so later scrapes show what they counted.
    #[arg(long, value_name = "N", hide = true)]
    pub faulty_scrapes: Option<usize>,

    /// A connection that has not sent a whole request head (or ended its
    /// TLS handshake) this long after connecting or after its previous
    /// response is closed. Longer than Prometheus' default scrape interval
    /// (1m), so that a scraper's kept-alive connection stays open; hidden,
    /// for tests to use a short one.
    #[arg(
        long = "web.header-timeout",
        value_name = "DURATION",
        default_value = "90s",
        hide = true,
        value_parser = parse_window
    )]
    pub header_timeout: Duration,
}

impl ProgramArgs {
    fn selection(&self) -> Selection {
        Selection {
            files: self.files.clone(),
            config_dir: self.config_dir.clone(),
            configs: self.configs.clone(),
            builtins: self.builtin.clone(),
            by_container: self.by == Some(By::Container),
        }
    }
}

/// What `--by` keys the built-ins by instead of their own labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    /// The cgroup of the event's owner, named as its container.
    Container,
}

/// Says that ebpf_exporter's flags bpfsnap takes without acting on were
/// given: its command lines work, and nothing is silently different.
fn note_ignored_flags(skip_cache_size: Option<u64>, log: Log) {
    if skip_cache_size.is_some() {
        log.warn(
            "--config.skip-cache-size ignored: bpfsnap decodes each distinct label value once \
             per window, with no cache to size",
        );
    }
}

/// What to say instead of clap's tip for an unknown flag: that it belongs to
/// another command (`run --web.listen-address` is `serve`'s), or the flag of
/// this command it is closest to by edits (`--fro` → `--for`: clap's own
/// similarity suggests `--format`). None: clap's message stands.
fn unknown_flag_hint(err: &clap::Error, args: &[std::ffi::OsString]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    if err.kind() != clap::error::ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(given)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    let flag = given.split('=').next()?.strip_prefix("--")?;
    let command = Cli::command();
    let subcommands: Vec<&clap::Command> = command.get_subcommands().collect();
    let used = args.iter().skip(1).find_map(|arg| {
        let arg = arg.to_str()?;
        subcommands.iter().find(|sub| sub.get_name() == arg)
    })?;
    let longs = |sub: &clap::Command| -> Vec<String> {
        sub.get_arguments()
            .flat_map(|arg| arg.get_long_and_visible_aliases().unwrap_or_default())
            .map(str::to_string)
            .collect()
    };
    let name = used.get_name();
    if let Some(other) = subcommands
        .iter()
        .find(|sub| sub.get_name() != name && longs(sub).iter().any(|long| long == flag))
    {
        return Some(format!(
            "--{flag} is a flag of `bpfsnap {}`, not of `bpfsnap {name}` (see bpfsnap {name} --help)",
            other.get_name()
        ));
    }
    let (distance, closest) = longs(used)
        .into_iter()
        .chain(
            command
                .get_arguments()
                .filter_map(|arg| arg.get_long().map(str::to_string)),
        )
        .map(|long| (strsim::osa_distance(flag, &long), long))
        .min()?;
    (distance <= 2 && distance < flag.len()).then(|| {
        format!("bpfsnap {name} has no flag --{flag}: did you mean --{closest}? (see bpfsnap {name} --help)")
    })
}

/// Columns of the terminal on standard output, else `$COLUMNS`, else 100.
fn terminal_width() -> usize {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize it is given, which outlives it.
    let asked = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    if asked == 0 && size.ws_col > 0 {
        return usize::from(size.ws_col);
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|columns| columns.parse().ok())
        .unwrap_or(100)
}

fn parse_window(text: &str) -> Result<Duration, String> {
    if let Some(positive) = text.strip_prefix('-') {
        if positive.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!(
                "a duration cannot be negative: give a positive one, e.g. {positive}"
            ));
        }
        return Err("it needs a duration, e.g. 30s".into());
    }
    let window =
        humantime::parse_duration(text).map_err(|err| format!("{err} (try 500ms, 30s or 2m)"))?;
    if window.is_zero() {
        return Err("the window must be longer than zero".into());
    }
    Ok(window)
}

/// A URL path: `/`, then the characters a path may hold unescaped (RFC
/// 3986 pchar) and percent escapes.
fn parse_telemetry_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err("the path starts with / (try /metrics)".into());
    }
    let valid = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/-._~!$&'()*+,;=:@%".contains(c));
    if !valid {
        return Err("use letters, digits and -._~!$&'()*+,;=:@%/ (no spaces, no query)".into());
    }
    Ok(text.to_string())
}

fn parse_namespace(text: &str) -> Result<String, String> {
    let valid = text.chars().enumerate().all(|(i, c)| {
        c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
    });
    if !valid {
        return Err("use letters, digits, '_' and ':', not starting with a digit".into());
    }
    Ok(text.to_string())
}

/// Runs the command line `args` (args[0] is the program name); errors are
/// printed as `bpfsnap: error: ...` and give exit status 1, or 2 for bad
/// usage and bad input.
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match parse(args) {
        Ok(cli) => cli,
        Err(status) => return status,
    };
    if let Some(format) = cli.log_format {
        crate::log::set_format(format);
    }
    let log = match cli.log_level {
        Some(level) => Log::at_level(level),
        None => Log::new(cli.verbose, cli.quiet),
    };
    let result = match cli.command {
        Command::Run(args) => args
            .session
            .containers
            .configure()
            .and_then(|()| run::run(&run_options(args, log))),
        Command::Serve(args) => args
            .session
            .containers
            .configure()
            .and_then(|()| crate::serve::serve(&serve_options(args, log))),
        Command::Check(args) => return check::check(&args.selection(), log.libbpf),
        Command::List { long } => crate::list::list(long).map(|text| print!("{text}")),
        Command::Build(args) => crate::build_program::build(&crate::build_program::BuildOptions {
            source: args.source,
            output: args.output,
            include: args.include,
        })
        .map(|object| {
            if !cli.quiet {
                let wrote = format!("bpfsnap: wrote {}", object.display());
                crate::log::print(Level::Info, &wrote);
            }
        }),
        Command::Stop { pin } => crate::probe::pin::stop(&pin).map(|names| {
            if !log.quiet {
                for name in names {
                    crate::log::print(Level::Info, &format!("bpfsnap: unpinned {name}"));
                }
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            Log::default().error(&format!("{err:#}"));
            if crate::BadInput::is(&err) {
                ExitCode::from(crate::BAD_INPUT_STATUS)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The command line, or the exit status after clap has said what is wrong
/// (or printed the help or version asked for).
fn parse<I, T>(args: I) -> Result<Cli, ExitCode>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => Ok(cli),
        Err(err) if unknown_flag_hint(&err, &args).is_some() => {
            let hint = unknown_flag_hint(&err, &args).unwrap_or_default();
            Log::default().error(&hint);
            Err(ExitCode::from(crate::BAD_INPUT_STATUS))
        }
        Err(err) if err.use_stderr() && crate::log::stderr_is_journal() => {
            crate::log::print(Level::Error, &err.render().to_string());
            Err(ExitCode::from(crate::BAD_INPUT_STATUS))
        }
        Err(err) => {
            let _ = err.print();
            Err(match err.use_stderr() {
                true => ExitCode::from(crate::BAD_INPUT_STATUS),
                false => ExitCode::SUCCESS,
            })
        }
    }
}

/// `bpfsnap run`'s options from its arguments: on a terminal's stdout the
/// pretty view of each window, else the text format of cumulative counters.
fn run_options(args: RunArgs, log: Log) -> RunOptions {
    let sink = Sink::from_arg(&args.output);
    let terminal = sink == Sink::Stdout && std::io::stdout().is_terminal();
    let format = args.format.unwrap_or(if terminal {
        OutputFormat::Pretty
    } else {
        OutputFormat::Text
    });
    RunOptions {
        session: args.session.options(log),
        window: args.window,
        interval: args.interval,
        count: args.count,
        counts: args.counts.unwrap_or(match format {
            OutputFormat::Pretty => Counts::Window,
            OutputFormat::Text => Counts::Cumulative,
        }),
        format,
        view: crate::exposition::pretty::View {
            width: terminal_width(),
            top: args.top,
            all: log.verbose,
        },
        sink,
        namespace: args.session.namespace,
        pin: args.pin,
        lock_timeout: args.lock_timeout,
    }
}

/// `bpfsnap serve`'s options from its arguments.
fn serve_options(args: ServeArgs, log: Log) -> crate::serve::ServeOptions {
    crate::serve::ServeOptions {
        session: args.session.options(log),
        listen: args.listen,
        systemd_socket: args.systemd_socket,
        web_config: args.web_config,
        scraping: Scraping {
            namespace: args.session.namespace,
            telemetry_path: args.telemetry_path,
            serve_partial: args.on_error == "partial",
            counts: args.counts,
            max_requests: args.max_requests as usize,
            scrape_timeout: args.scrape_timeout,
            scrape_delay: args.scrape_delay.unwrap_or_default(),
            scrape_error: args.scrape_error,
            faulty_scrapes: args.faulty_scrapes,
        },
        header_timeout: args.header_timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_windows_and_namespaces() {
        for (text, expected) in [
            ("500ms", Some(500)),
            ("30s", Some(30_000)),
            ("2m", Some(120_000)),
            ("0s", None),
            ("soon", None),
        ] {
            assert_eq!(
                parse_window(text).ok().map(|d| d.as_millis() as u64),
                expected,
                "{text}"
            );
        }
        assert!(parse_namespace("ebpf_exporter").is_ok());
        assert!(parse_namespace("").is_ok());
        assert!(parse_namespace("9x").is_err());
        assert!(parse_namespace("a-b").is_err());
    }

    #[test]
    fn run_defaults_and_program_selection() {
        let cli = Cli::try_parse_from(["bpfsnap", "run"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run")
        };
        assert_eq!(args.window, None);
        assert_eq!(args.session.keep_caps, KeepCaps::Only(vec![]));
        assert_eq!(args.output, PathBuf::from("-"));
        assert_eq!(args.session.namespace, "bpfsnap");
        assert!(args.session.programs.builtin.is_empty());
        let cli = Cli::try_parse_from([
            "bpfsnap",
            "run",
            "-b",
            "a,b",
            "--for",
            "1s",
            "x.toml",
            "--config.dir",
            "/d",
            "--config.names",
            "c",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run")
        };
        let selection = args.session.programs.selection();
        assert_eq!(selection.builtins, ["a", "b"]);
        assert_eq!(selection.files, [PathBuf::from("x.toml")]);
        assert_eq!(selection.config_dir, Some(PathBuf::from("/d")));
        assert_eq!(selection.configs, ["c"]);
    }
}
