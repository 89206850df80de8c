//! Prompt text to GPT-2 token ids with the model's own `tokenizer.json`, and vocabulary ids back
//! to text for the reports. The same ids must reach both our model and the reference.
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use tokenizers::Tokenizer;

/// GPT-2's `<|endoftext|>`, which doubles as its beginning-of-sequence token.
pub const END_OF_TEXT: i64 = 50256;

pub struct Gpt2Tokenizer {
    inner: Tokenizer,
}

impl Gpt2Tokenizer {
    pub fn load(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path).map_err(|error| {
            anyhow!("{} is not a usable tokenizer.json ({error}); re-download or re-save the tokenizer", path.display())
        })?;
        Ok(Self { inner })
    }

    /// Token ids as the reference script computes them: no special tokens added by the
    /// tokenizer, `<|endoftext|>` in front when asked.
    pub fn encode(&self, prompt: &str, prepend_bos: bool, n_positions: i64) -> Result<Vec<i64>> {
        let encoding = self.inner.encode(prompt, false).map_err(|error| anyhow!("cannot tokenize prompt {prompt:?}: {error}"))?;
        let mut ids: Vec<i64> = Vec::with_capacity(encoding.len() + 1);
        if prepend_bos {
            ids.push(END_OF_TEXT);
        }
        ids.extend(encoding.get_ids().iter().map(|&id| i64::from(id)));
        if ids.is_empty() {
            bail!("prompt {prompt:?} is empty: give it some text, or pass --prepend-bos to start it with <|endoftext|>");
        }
        if ids.len() as i64 > n_positions {
            bail!(
                "prompt {:?} is {} tokens long, but the model takes at most n_positions = {n_positions}; shorten it",
                abbreviate(prompt),
                ids.len()
            );
        }
        Ok(ids)
    }

    /// The text of one vocabulary entry, for naming where a difference sits.
    pub fn token_text(&self, id: i64) -> String {
        u32::try_from(id).ok().and_then(|id| self.inner.decode(&[id], false).ok()).unwrap_or_else(|| format!("<{id}>"))
    }
}

/// Shortens long prompts in messages to their first 40 characters.
pub fn abbreviate(prompt: &str) -> String {
    match prompt.char_indices().nth(40) {
        Some((end, _)) => format!("{}…", &prompt[..end]),
        None => prompt.to_owned(),
    }
}
