use std::process::ExitCode;

fn main() -> ExitCode {
    bpfsnap::give_back_large_allocations();
    bpfsnap::cli::main(std::env::args_os())
}
