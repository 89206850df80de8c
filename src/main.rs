//! The binary: parse the command line, run the command, map the outcome to the exit status
//! the README documents (0 parity, 1 breach, 2 error).
use std::process::ExitCode;

use clap::Parser;
use gpt2_parity::cli::{Cli, Command};
use gpt2_parity::run;

fn main() -> ExitCode {
    gpt2_parity::timings::record_process_start();
    reuse_freed_memory();
    let cli = Cli::parse();
    gpt2_parity::interrupt::install_handler();
    let (outcome, timings) = match &cli.command {
        Command::Compare(args) => (run::compare::run(args), args.report.timings),
        Command::Explain(args) => (run::explain::run(args), args.report.timings),
        Command::Reference(args) => (run::reference::run(args).map(|()| true), false),
        Command::Merge(args) => (run::merge::run(args), false),
    };
    if timings {
        eprint!("{}", gpt2_parity::timings::render());
    }
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {}", format!("{error:#}").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

/// Processing allocates and frees model-sized float64 buffers part after part. glibc hands
/// every large block back to the kernel on free, and the next one is fresh memory that the
/// kernel clears page by page: 0.9 s of system time on a GPT-2-small check. Served from the
/// heap and kept there when freed, a block is reused instead; the peak resident set stays the
/// same, since it is counted at the largest moment either way.
fn reuse_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator, under the allocator's own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
