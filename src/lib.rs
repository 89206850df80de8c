//! gpt2-parity: loads GPT-2 twice through libtorch, as Hugging Face runs it and as
//! TransformerLens processes it, and checks both against reference logits.
//!
//! Data flow: cli -> model::hub (files) -> model::load (weights) -> model::gpt2 (unprocessed)
//! -> model::process -> model::gpt2 (processed); reference (read or bundled) -> numeric
//! (figures) -> diagnose (findings) -> schema (the report) -> render -> exit code.
pub mod cli;
pub mod diagnose;
pub mod model;
pub mod numeric;
pub mod prompts;
pub mod reference;
pub mod render;
pub mod run;
pub mod schema;
pub mod shard;
pub mod sys;
pub mod tokenize;
