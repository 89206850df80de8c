//! Turns `--model` into local files: a directory as given, or a Hub id looked up in the
//! Hugging Face cache that Python's huggingface_hub shares (HF_HUB_CACHE, HF_HOME), and only
//! downloaded through hf-hub when it is not cached and HF_HUB_OFFLINE is not set.
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use hf_hub::{api::sync::ApiBuilder, Cache, Repo};

use crate::cache::env_path;

/// The files one model is made of.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// What the user named: a directory or a Hub id.
    pub source: String,
    /// The directory holding the files (for a Hub id, its snapshot in the cache).
    pub dir: PathBuf,
    pub config: PathBuf,
    pub weights: PathBuf,
    pub tokenizer: PathBuf,
}

pub const DEFAULT_MODEL: &str = "openai-community/gpt2";
const WEIGHTS_FILE: &str = "model.safetensors";
const CONFIG_FILE: &str = "config.json";
const TOKENIZER_FILE: &str = "tokenizer.json";

/// Resolves `--model`: an existing directory, else a Hub id (`name` or `org/name`).
pub fn resolve(model: &str) -> Result<ModelFiles> {
    let path = Path::new(model);
    if path.is_dir() {
        return local_files(model, path);
    }
    if path.exists() && !looks_like_hub_id(model) {
        bail!(
            "--model {model} is a file, not a directory; pass the directory that holds config.json, model.safetensors and tokenizer.json"
        );
    }
    if !looks_like_hub_id(model) {
        bail!("model directory {model} does not exist; pass a directory with config.json and model.safetensors, or a Hub id such as {DEFAULT_MODEL}");
    }
    hub_files(model)
}

fn looks_like_hub_id(model: &str) -> bool {
    let valid_part =
        |part: &str| !part.is_empty() && !part.starts_with('.') && part.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    let parts: Vec<&str> = model.split('/').collect();
    parts.len() <= 2 && parts.iter().all(|part| valid_part(part))
}

fn local_files(source: &str, dir: &Path) -> Result<ModelFiles> {
    let files = ModelFiles {
        source: source.to_owned(),
        dir: dir.to_path_buf(),
        config: dir.join(CONFIG_FILE),
        weights: dir.join(WEIGHTS_FILE),
        tokenizer: dir.join(TOKENIZER_FILE),
    };
    for (file, what) in [(&files.config, "config.json"), (&files.weights, "model.safetensors"), (&files.tokenizer, "tokenizer.json")] {
        if !file.is_file() {
            bail!("model directory {source} has no {what}; a GPT-2 directory needs config.json, model.safetensors and tokenizer.json");
        }
    }
    Ok(files)
}

/// The hub cache directory, by huggingface_hub's rules.
pub fn hub_cache_dir() -> PathBuf {
    if let Some(cache) = env_path("HF_HUB_CACHE") {
        return cache;
    }
    let home = env_path("HF_HOME").unwrap_or_else(|| {
        env_path("XDG_CACHE_HOME")
            .or_else(|| env_path("HOME").map(|home| home.join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"))
            .join("huggingface")
    });
    home.join("hub")
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|value| matches!(value.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

fn hub_files(model_id: &str) -> Result<ModelFiles> {
    let cache_dir = hub_cache_dir();
    let cached = Cache::new(cache_dir.clone()).repo(Repo::model(model_id.to_owned()));
    let fetch = |file: &str| -> Result<PathBuf> {
        if let Some(path) = cached.get(file) {
            return Ok(path);
        }
        if offline() {
            bail!(
                "model {model_id} is no directory and not in the Hugging Face cache {} ({file} missing), and HF_HUB_OFFLINE is set; \
                 download it once with network (e.g. `huggingface-cli download {model_id}`) or pass a local directory",
                cache_dir.display()
            );
        }
        let api = ApiBuilder::from_cache(Cache::new(cache_dir.clone()))
            .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .build()
            .map_err(|error| {
                anyhow::anyhow!("cannot set up the Hugging Face download client for {model_id} ({error}); pass a local directory")
            })?;
        api.model(model_id.to_owned()).get(file).map_err(|error| {
            anyhow::anyhow!(
                "model {model_id} is no directory and not in the Hugging Face cache {}, and fetching {file} failed ({error}): \
                 check the id and the network, or pass a local directory",
                cache_dir.display()
            )
        })
    };
    let config = fetch(CONFIG_FILE)?;
    let weights = fetch(WEIGHTS_FILE)?;
    let tokenizer = fetch(TOKENIZER_FILE)?;
    let dir = config.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(ModelFiles { source: model_id.to_owned(), dir, config, weights, tokenizer })
}
