//! The reference side of a comparison: reading and validating files in the
//! `gpt2-parity-reference/1` format (docs/reference-format.md), and producing them with the
//! bundled Python script.
pub mod bundled;
mod read;

pub use read::{PromptReference, ReferenceFile, ReferenceMeta, FORMAT};
