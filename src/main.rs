//! The binary: parse the command line, run the command, map the outcome to the exit status
//! the README documents (0 parity, 1 breach, 2 error).
use clap::Parser;
use gpt2_parity::cli::options::{CompareOptions, ExplainOptions, MergeOptions, ReferenceOptions};
use gpt2_parity::cli::{Cli, Command};
use gpt2_parity::run;

fn main() -> ! {
    gpt2_parity::sys::timings::record_process_start();
    let cli = Cli::parse();
    gpt2_parity::sys::interrupt::install_handler();
    let (outcome, timings) = match &cli.command {
        Command::Compare(args) => (CompareOptions::resolve(args).and_then(|options| run::compare::run(&options)), args.report.timings),
        Command::Explain(args) => (ExplainOptions::resolve(args).and_then(|options| run::explain::run(&options)), args.report.timings),
        Command::Reference(args) => {
            (ReferenceOptions::resolve(args).and_then(|options| run::reference::run(&options)).map(|()| true), false)
        }
        Command::Merge(args) => (MergeOptions::resolve(args).and_then(|options| run::merge::run(&options)), false),
    };
    if timings {
        eprint!("{}", gpt2_parity::sys::timings::render());
    }
    let status = match outcome {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(error) => {
            eprintln!("error: {}", format!("{error:#}").replace('\n', " "));
            2
        }
    };
    gpt2_parity::sys::exit::without_teardown(status)
}
