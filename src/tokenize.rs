//! Prompt text to GPT-2 token ids with the model's own `tokenizer.json`, and vocabulary ids back
//! to text for the reports. The same ids must reach both our model and the reference.
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use tokenizers::models::bpe::BPE;
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PaddingParams, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer,
    TokenizerBuilder, TruncationParams,
};

/// GPT-2's `<|endoftext|>`, which doubles as its beginning-of-sequence token.
pub const END_OF_TEXT: i64 = 50256;

pub struct Gpt2Tokenizer {
    inner: Tokenizer,
}

impl Gpt2Tokenizer {
    pub fn load(path: &Path) -> Result<Self> {
        let json = std::fs::read(path).with_context(|| format!("cannot read {}; re-download the tokenizer", path.display()))?;
        let inner = match bpe_tokenizer(&json) {
            Some(tokenizer) => tokenizer,
            None => Tokenizer::from_bytes(&json).map_err(|error| {
                anyhow!("{} is not a usable tokenizer.json ({error}); re-download or re-save the tokenizer", path.display())
            })?,
        };
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

/// tokenizer.json's sections, each read by its own type as tokenizers reads them
/// (tokenizer/serialization.rs), but with a BPE model read by BPE's own deserializer: tokenizers
/// reads any model through an untagged enum, which buffers GPT-2's 50,257 entries and 50,000
/// merges and reads them twice more (82 ms against 42 ms on the 2-core VM, a tenth of a
/// one-prompt check).
#[derive(Deserialize)]
struct TokenizerSections {
    version: Option<String>,
    truncation: Option<TruncationParams>,
    padding: Option<PaddingParams>,
    #[serde(default)]
    added_tokens: Vec<AddedTokenWithId>,
    normalizer: Option<NormalizerWrapper>,
    pre_tokenizer: Option<PreTokenizerWrapper>,
    post_processor: Option<PostProcessorWrapper>,
    decoder: Option<DecoderWrapper>,
    model: BPE,
}

/// An `added_tokens` entry. Its id is the one the token had when saved; tokenizers takes the id
/// the model gives it, as here.
#[derive(Deserialize)]
struct AddedTokenWithId {
    #[serde(flatten)]
    token: AddedToken,
}

/// The tokenizer a BPE tokenizer.json describes, built as tokenizers builds it: the sections,
/// then the added tokens. `None` for anything else (another model, another version, a file
/// tokenizers would refuse), which tokenizers then reads, or explains, itself.
fn bpe_tokenizer(json: &[u8]) -> Option<Tokenizer> {
    let sections: TokenizerSections = serde_json::from_slice(json).ok()?;
    if sections.version.as_deref().is_some_and(|version| version != "1.0") {
        return None;
    }
    let mut tokenizer =
        TokenizerBuilder::<ModelWrapper, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>::new()
            .with_model(ModelWrapper::BPE(sections.model))
            .with_normalizer(sections.normalizer)
            .with_pre_tokenizer(sections.pre_tokenizer)
            .with_post_processor(sections.post_processor)
            .with_decoder(sections.decoder)
            .with_truncation(sections.truncation)
            .with_padding(sections.padding)
            .build()
            .ok()?;
    let added: Vec<AddedToken> = sections.added_tokens.into_iter().map(|added| added.token).collect();
    tokenizer.add_tokens(&added);
    Some(Tokenizer::from(tokenizer))
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

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn gpt2_tokenizer_json() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tiny-gpt2/tokenizer.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// Built by the direct path, the tokenizer saves and tokenizes as tokenizers' own reading does.
    fn read_as_tokenizers_reads(json: &Value) {
        let json = serde_json::to_vec(json).unwrap();
        let ours = bpe_tokenizer(&json).expect("a BPE tokenizer.json takes the direct path");
        let theirs = Tokenizer::from_bytes(&json).unwrap();
        assert_eq!(ours.to_string(false).unwrap(), theirs.to_string(false).unwrap());
        for text in ["Hello World", " the<|endoftext|>end", "naïve café 東京 🙂", "  two spaces\n\ta tab", "it's we've they're"] {
            assert_eq!(ours.encode(text, false).unwrap().get_ids(), theirs.encode(text, false).unwrap().get_ids(), "{text:?}");
        }
    }

    #[test]
    fn gpt2s_tokenizer_with_merges_as_pairs_is_read_as_tokenizers_reads_it() {
        let json = gpt2_tokenizer_json();
        assert!(json["model"]["merges"][0].is_array());
        read_as_tokenizers_reads(&json);
    }

    #[test]
    fn gpt2s_tokenizer_with_merges_as_lines_is_read_as_tokenizers_reads_it() {
        // The Hub's gpt2 tokenizer.json, saved by older tokenizers, writes each merge as "a b".
        let mut json = gpt2_tokenizer_json();
        let merges = json["model"]["merges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| json!(format!("{} {}", pair[0].as_str().unwrap(), pair[1].as_str().unwrap())));
        json["model"]["merges"] = Value::Array(merges.collect());
        read_as_tokenizers_reads(&json);
    }

    #[test]
    fn another_model_or_version_is_left_to_tokenizers() {
        let word_level = json!({"version": "1.0", "added_tokens": [], "pre_tokenizer": {"type": "Whitespace"},
            "model": {"type": "WordLevel", "vocab": {"a": 0, "[UNK]": 1}, "unk_token": "[UNK]"}});
        assert!(bpe_tokenizer(&serde_json::to_vec(&word_level).unwrap()).is_none());
        let mut future = gpt2_tokenizer_json();
        future["version"] = json!("2.0");
        assert!(bpe_tokenizer(&serde_json::to_vec(&future).unwrap()).is_none());
    }
}
