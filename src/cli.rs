//! Command line: the clap definition (also the source of the man page and the
//! shell completions) and the dispatch to the commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::run::{self, RunOptions};
use crate::sink::Sink;

const EXAMPLES: &str = "\
Examples:
  bpfsnap run --for 30s                       print a 30 s snapshot of the default programs
  bpfsnap run --for 30s --output /var/lib/prometheus/node-exporter/bpfsnap.prom
  bpfsnap run --builtin syscalls --for 5s --output -

From cron (node_exporter reads the file at every scrape):
  */5 * * * * root bpfsnap run --for 30s --output /var/lib/prometheus/node-exporter/bpfsnap.prom";

/// Turn eBPF measurements into Prometheus metrics.
///
/// bpfsnap loads BPF programs, lets them count for a sampling window, reads
/// their maps and writes the Prometheus text format, atomically, into
/// node_exporter's textfile directory or to standard output.
#[derive(Debug, Parser)]
#[command(name = "bpfsnap", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Say what is happening on stderr, including libbpf's messages.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach programs, sample for a window, write the metrics, detach.
    #[command(after_help = EXAMPLES)]
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Length of the sampling window, e.g. 500ms, 30s, 2m. SIGINT or SIGTERM
    /// ends it early; what was gathered is still written.
    #[arg(long = "for", value_name = "DURATION", default_value = "10s", value_parser = parse_window)]
    pub window: Duration,

    /// Where to write the metrics: a file, replaced atomically (for node_exporter's
    /// textfile collector use a name ending in .prom), or - for standard output.
    #[arg(short, long, value_name = "PATH", default_value = "-")]
    pub output: PathBuf,

    /// Built-in programs to run, comma-separated [default: the default set].
    #[arg(short, long, value_name = "NAMES", value_delimiter = ',')]
    pub builtin: Vec<String>,
}

fn parse_window(text: &str) -> Result<Duration, String> {
    let window =
        humantime::parse_duration(text).map_err(|err| format!("{err} (try 500ms, 30s or 2m)"))?;
    if window.is_zero() {
        return Err("the window must be longer than zero".into());
    }
    Ok(window)
}

/// Runs the command line `args` (args[0] is the program name); errors are
/// printed as `bpfsnap: error: ...` and give exit status 1.
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Run(args) => run::run(&RunOptions {
            window: args.window,
            sink: Sink::from_arg(&args.output),
            builtins: args.builtin,
            verbose: cli.verbose,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bpfsnap: error: {err:#}");
            ExitCode::FAILURE
        }
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
    fn parses_windows() {
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
    }

    #[test]
    fn run_defaults() {
        let cli = Cli::try_parse_from(["bpfsnap", "run"]).unwrap();
        let Command::Run(args) = cli.command;
        assert_eq!(args.window, Duration::from_secs(10));
        assert_eq!(args.output, PathBuf::from("-"));
        assert!(args.builtin.is_empty());
        let cli = Cli::try_parse_from(["bpfsnap", "run", "-b", "a,b", "--for", "1s"]).unwrap();
        let Command::Run(args) = cli.command;
        assert_eq!(args.builtin, ["a", "b"]);
    }
}
