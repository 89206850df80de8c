//! The binary: parse the command line, run the command, map the outcome to the exit status
//! the README documents (0 parity, 1 breach, 2 error).
use std::process::ExitCode;

use clap::Parser;
use gpt2_parity::cli::{Cli, Command};
use gpt2_parity::run;

fn main() -> ExitCode {
    let cli = Cli::parse();
    gpt2_parity::interrupt::install_handler();
    let outcome = match &cli.command {
        Command::Compare(args) => run::compare::run(args),
        Command::Explain(args) => run::explain::run(args),
        Command::Reference(args) => run::reference::run(args).map(|()| true),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {}", format!("{error:#}").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}
