use std::process::ExitCode;

fn main() -> ExitCode {
    bpfsnap::cli::main(std::env::args_os())
}
