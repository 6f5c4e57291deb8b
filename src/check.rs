//! `bpfsnap check`: validate configs and their BPF objects without loading
//! anything into the kernel, so it needs no privileges and is safe in CI or a
//! config-management pre-commit hook. Every problem is reported, one per line.

use std::process::ExitCode;

use crate::log::{self, Level};
use crate::probe::{self, availability::KernelTypes};
use crate::program::{self, Selection};
use crate::spec;

/// Checks every selected program; prints `ok NAME (ORIGIN)` for each good one
/// on stdout and `bpfsnap: error: ...` for each problem on stderr. Any
/// problem is bad input: exit status 2, as `run` and `serve` give for the
/// same config.
pub fn check(selection: &Selection, verbose: bool) -> ExitCode {
    probe::capture_libbpf_log(verbose);
    let kernel = KernelTypes::load();
    let mut problems = 0;
    for result in program::select_each(selection) {
        let checked = result.and_then(|program| probe::check(&program).map(|()| program));
        match checked {
            Ok(program) => {
                for warning in &program.config.warnings {
                    log::print(
                        Level::Warning,
                        &format!("bpfsnap: warning: {}: {warning}", program.config.origin),
                    );
                }
                // Valid, but this kernel cannot run it: worth knowing before deploying.
                if let Ok(Some(reason)) = probe::unavailable(&program, &kernel) {
                    log::print(
                        Level::Warning,
                        &format!(
                            "bpfsnap: warning: {}: cannot attach on this kernel: {reason}",
                            program.config.name
                        ),
                    );
                }
                println!("ok {} ({})", program.config.name, program.config.origin);
            }
            Err(err) => {
                problems += 1;
                for line in spec::problem_lines(&err) {
                    log::print(Level::Error, &format!("bpfsnap: error: {line}"));
                }
            }
        }
    }
    if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::BAD_INPUT_STATUS)
    }
}
