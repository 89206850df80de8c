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

    /// The text of one vocabulary entry, for naming where a difference sits. A byte-level entry
    /// that is not whole UTF-8 (a fragment of a multi-byte character) shows its bytes as `\xNN`
    /// escapes rather than as "�".
    pub fn token_text(&self, id: i64) -> String {
        let Ok(id) = u32::try_from(id) else { return format!("<{id}>") };
        let bytes = self.inner.id_to_token(id).and_then(|entry| entry.chars().map(byte_of_char).collect::<Option<Vec<u8>>>());
        match bytes {
            Some(bytes) => bytes.utf8_chunks().fold(String::new(), |mut text, chunk| {
                text.push_str(chunk.valid());
                text.extend(chunk.invalid().iter().map(|byte| format!("\\x{byte:02x}")));
                text
            }),
            None => self.inner.decode(&[id], false).unwrap_or_else(|_| format!("<{id}>")),
        }
    }
}

/// GPT-2's byte-level alphabet read backwards: the byte a vocabulary character stands for.
/// Printable Latin-1 bytes stand for themselves; the other 68 bytes, in order, for U+0100 on.
fn byte_of_char(c: char) -> Option<u8> {
    let printable = |byte: u32| matches!(byte, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff);
    let code = u32::from(c);
    if printable(code) {
        return u8::try_from(code).ok();
    }
    let offset = code.checked_sub(0x100)?;
    (0u32..=0xff).filter(|&byte| !printable(byte)).nth(offset as usize).and_then(|byte| u8::try_from(byte).ok())
}

/// Shortens long prompts in messages to their first 40 characters.
pub fn abbreviate(prompt: &str) -> String {
    match prompt.char_indices().nth(40) {
        Some((end, _)) => format!("{}…", &prompt[..end]),
        None => prompt.to_owned(),
    }
}
