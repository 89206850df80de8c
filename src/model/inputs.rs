//! What every command needs before touching weights: the model's files, config and tokenizer,
//! and the prompts tokenized and checked against the model's context.
use anyhow::{bail, Result};

use super::hub::{self, ModelFiles};
use super::load::Checkpoint;
use super::Gpt2Config;
use crate::sys::timings::{timed, Phase};
use crate::tokenize::Gpt2Tokenizer;

/// A model's files, config and tokenizer: what every command needs before touching weights.
pub struct ModelInputs {
    pub files: ModelFiles,
    pub config: Gpt2Config,
    pub tokenizer: Gpt2Tokenizer,
}

impl ModelInputs {
    pub fn resolve(model: &str) -> Result<Self> {
        let files = hub::resolve(model)?;
        let config = Gpt2Config::read(&files.config)?;
        let tokenizer = timed(Phase::Tokenizer, || Gpt2Tokenizer::load(&files.tokenizer))?;
        Ok(Self { files, config, tokenizer })
    }

    /// Opens the weights and checks every tensor's name, shape and dtype against config.json,
    /// before anything (a digest comparison, the reference script) relies on them.
    pub fn open_checkpoint(&self) -> Result<Checkpoint> {
        let checkpoint = Checkpoint::open_files(&self.files.weights)?;
        checkpoint.audit(&self.config)?;
        Ok(checkpoint)
    }

    /// Tokenizes every prompt, refusing empty or over-long ones.
    pub fn tokenize_all(&self, prompts: &[String], prepend_bos: bool) -> Result<Vec<Vec<i64>>> {
        if prompts.is_empty() {
            bail!("no prompts: give them as arguments (e.g. \"Hello World\") or with --prompts-file");
        }
        timed(Phase::Tokenizer, || {
            prompts.iter().map(|prompt| self.tokenizer.encode(prompt, prepend_bos, self.config.n_positions)).collect()
        })
    }
}
