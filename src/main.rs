//! The binary: parse the command line, run the command, map the outcome to the exit status
//! the README documents (0 parity, 1 breach, 2 error).
use std::process::ExitCode;

use clap::Parser;
use gpt2_parity::cli::{Cli, Command};
use gpt2_parity::run;

fn main() -> ExitCode {
    gpt2_parity::timings::record_process_start();
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
