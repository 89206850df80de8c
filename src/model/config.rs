//! Reads the few fields of a Hugging Face `config.json` that fix GPT-2's shapes, and refuses
//! configurations whose forward this tool does not implement, instead of computing nonsense.
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

/// GPT-2's hyper-parameters, with Hugging Face's names and defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: i64,
    pub n_positions: i64,
    pub n_embd: i64,
    pub n_layer: i64,
    pub n_head: i64,
    /// MLP width; `null` or absent means 4 * n_embd.
    #[serde(default)]
    pub n_inner: Option<i64>,
    #[serde(default = "default_epsilon")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_activation")]
    pub activation_function: String,
    #[serde(default)]
    pub scale_attn_weights: Option<bool>,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: Option<bool>,
    #[serde(default)]
    pub reorder_and_upcast_attn: Option<bool>,
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
}

fn default_epsilon() -> f64 {
    1e-5
}

fn default_activation() -> String {
    "gelu_new".to_owned()
}

impl Gpt2Config {
    pub fn mlp_width(&self) -> i64 {
        // Saturating: validation reports an absurd n_embd instead of overflowing on it.
        self.n_inner.unwrap_or_else(|| self.n_embd.saturating_mul(4))
    }

    pub fn head_dim(&self) -> i64 {
        self.n_embd / self.n_head
    }

    /// Parses and validates `config.json` text; `origin` names the file in errors.
    pub fn parse(text: &[u8], origin: &Path) -> Result<Self> {
        let config: Gpt2Config = serde_json::from_slice(text).map_err(|error| {
            anyhow!(
                "{} is not a usable GPT-2 config.json ({error}); it needs integer fields vocab_size, n_positions, n_embd, n_layer and n_head: re-download or re-save the model",
                origin.display()
            )
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read(path).map_err(|error| anyhow!("cannot read {}: {error}; check the model directory", path.display()))?;
        Self::parse(&text, path)
    }

    fn validate(&self, origin: &Path) -> Result<()> {
        let origin = origin.display();
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_inner", self.mlp_width()),
        ] {
            if !(1..=1 << 24).contains(&value) {
                bail!("{origin}: {name} = {value} is out of range (expected 1..=16777216); fix config.json");
            }
        }
        if self.n_embd % self.n_head != 0 {
            bail!("{origin}: n_embd = {} is not divisible by n_head = {}; fix config.json", self.n_embd, self.n_head);
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon > 0.0) {
            bail!("{origin}: layer_norm_epsilon = {} must be a positive number; fix config.json", self.layer_norm_epsilon);
        }
        if self.activation_function != "gelu_new" {
            bail!(
                "{origin}: activation_function \"{}\" is not supported (GPT-2 uses \"gelu_new\"); this tool checks GPT-2 only",
                self.activation_function
            );
        }
        let unsupported = [
            ("scale_attn_weights", self.scale_attn_weights == Some(false)),
            ("scale_attn_by_inverse_layer_idx", self.scale_attn_by_inverse_layer_idx == Some(true)),
            ("reorder_and_upcast_attn", self.reorder_and_upcast_attn == Some(true)),
            ("tie_word_embeddings", self.tie_word_embeddings == Some(false)),
        ];
        if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
            bail!("{origin}: {name} differs from GPT-2's default; this variant is not supported (this tool checks GPT-2 only)");
        }
        Ok(())
    }
}
