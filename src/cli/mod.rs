//! The command line: [`args`] defines every flag once (clap), and [`options`] resolves them all
//! before any model work starts, so that a typo costs milliseconds, not a model load.
pub mod args;
pub mod options;

pub use args::{Cli, Command};
