//! Turns `--model` into local files: a directory as given, or a Hub id looked up in the
//! Hugging Face cache that Python's huggingface_hub shares (HF_HUB_CACHE, HF_HOME), and only
//! downloaded through hf-hub when it is not cached and HF_HUB_OFFLINE is not set. The weights
//! come as one `model.safetensors`, as shards named by `model.safetensors.index.json`, or, for
//! models that ship nothing else, as `pytorch_model.bin` (converted by model::convert).
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use hf_hub::{api::sync::ApiBuilder, Cache, Repo};

use crate::sys::cache::env_path;

/// The files one model is made of.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// What the user named: a directory or a Hub id.
    pub source: String,
    /// The directory holding the files (for a Hub id, its snapshot in the cache).
    pub dir: PathBuf,
    pub config: PathBuf,
    pub weights: WeightFiles,
    pub tokenizer: PathBuf,
}

/// Where a model's tensors are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightFiles {
    /// `model.safetensors`.
    Safetensors(PathBuf),
    /// `model.safetensors.index.json` and the shards its `weight_map` names, in name order.
    Sharded { index: PathBuf, shards: Vec<PathBuf> },
    /// Only `pytorch_model.bin`, a pickle: converted to safetensors by the bundled Python before
    /// loading, since unpickling can run arbitrary code and this tool never does it.
    Pickle(PathBuf),
}

impl WeightFiles {
    /// The file that stands for the weights in messages: the single file, the index, the pickle.
    pub fn origin(&self) -> &Path {
        match self {
            WeightFiles::Safetensors(path) | WeightFiles::Pickle(path) => path,
            WeightFiles::Sharded { index, .. } => index,
        }
    }
}

pub const DEFAULT_MODEL: &str = "openai-community/gpt2";
const WEIGHTS_FILE: &str = "model.safetensors";
const SHARD_INDEX_FILE: &str = "model.safetensors.index.json";
const PICKLE_FILE: &str = "pytorch_model.bin";
/// In the order they are looked for: the first a model has is used.
const WEIGHTS_LAYOUTS: [&str; 3] = [WEIGHTS_FILE, SHARD_INDEX_FILE, PICKLE_FILE];
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
    let (config, tokenizer) = (dir.join(CONFIG_FILE), dir.join(TOKENIZER_FILE));
    for (file, what) in [(&config, "config.json"), (&tokenizer, "tokenizer.json")] {
        if !file.is_file() {
            bail!("model directory {source} has no {what}; a GPT-2 directory needs config.json, model.safetensors and tokenizer.json");
        }
    }
    let Some(found) = WEIGHTS_LAYOUTS.iter().map(|name| dir.join(name)).find(|path| path.is_file()) else {
        bail!(
            "model directory {source} has no model.safetensors (nor {SHARD_INDEX_FILE} or {PICKLE_FILE}); \
             a GPT-2 directory needs config.json, model.safetensors and tokenizer.json"
        );
    };
    let weights = weight_files(found, |shard| Ok(dir.join(shard)))?;
    Ok(ModelFiles { source: source.to_owned(), dir: dir.to_path_buf(), config, weights, tokenizer })
}

/// The layout `found` (one of [`WEIGHTS_LAYOUTS`]) stands for; `shard_path` locates a shard
/// named by the index.
fn weight_files(found: PathBuf, mut shard_path: impl FnMut(&str) -> Result<PathBuf>) -> Result<WeightFiles> {
    let name = found.file_name().and_then(|name| name.to_str()).unwrap_or_default();
    Ok(match name {
        SHARD_INDEX_FILE => {
            let shards = shard_names(&found)?.iter().map(|shard| shard_path(shard)).collect::<Result<Vec<_>>>()?;
            WeightFiles::Sharded { index: found, shards }
        }
        PICKLE_FILE => WeightFiles::Pickle(found),
        _ => WeightFiles::Safetensors(found),
    })
}

/// The distinct shard file names of a `model.safetensors.index.json`, sorted.
fn shard_names(index: &Path) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let shown = index.display();
    let text = std::fs::read(index).map_err(|error| anyhow!("cannot read {shown}: {error}; check the model directory"))?;
    let index: Index = serde_json::from_slice(&text).map_err(|error| {
        anyhow!(
            "{shown} is not a usable shard index ({error}); it needs a \"weight_map\" from tensor names to files: re-download the model"
        )
    })?;
    let mut shards: Vec<String> = index.weight_map.into_values().collect();
    shards.sort();
    shards.dedup();
    if let Some(bad) = shards.iter().find(|shard| shard.contains('/') || shard.starts_with('.') || !shard.ends_with(".safetensors")) {
        bail!("{shown} names shard {bad:?}, which is not a .safetensors file beside the index; re-download the model");
    }
    if shards.is_empty() {
        bail!("{shown} names no shards; re-download the model");
    }
    Ok(shards)
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
    let tokenizer = fetch(TOKENIZER_FILE)?;
    // A cached layout first; else the first layout the Hub serves, errors from the first.
    let found = match WEIGHTS_LAYOUTS.iter().find_map(|name| cached.get(name)) {
        Some(path) => path,
        None => {
            let mut tries = WEIGHTS_LAYOUTS.iter().map(|name| fetch(name));
            let first = tries.next().expect("at least one layout");
            match first {
                Ok(path) => path,
                Err(error) => tries.find_map(Result::ok).ok_or(error)?,
            }
        }
    };
    let weights = weight_files(found, |shard| fetch(shard))?;
    let dir = config.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(ModelFiles { source: model_id.to_owned(), dir, config, weights, tokenizer })
}
