//! Produces references with the Python script that ships inside the binary
//! (scripts/dump_reference.py): Hugging Face transformers, eager attention, float32. `compare`
//! without `--reference` caches what it produces, keyed by everything that determines it; an
//! entry holding a superset of the requested prompts serves, and the cache is size-bounded.
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use super::ReferenceFile;
use crate::model::dtype::Dtype;
use crate::model::hub::ModelFiles;
use crate::model::switches::ProcessingOptions;
use crate::sys::cache::{cache_dir, remember_file_digest};
use crate::sys::output::{parent_dir, write_atomically};
use crate::sys::python::{run_script, temp_file_with, SETUP_HINT};

const SCRIPT: &str = include_str!("../../scripts/dump_reference.py");

/// What a reference is made from.
pub struct ReferenceRequest<'a> {
    pub model: &'a ModelFiles,
    pub weights_digest: &'a str,
    pub prompts: &'a [String],
    pub prepend_bos: bool,
    /// Also TransformerLens's logits, processed with these switches (needs transformer_lens
    /// in the script's Python: scripts/requirements-tl.txt).
    pub transformer_lens: Option<ProcessingOptions>,
    /// What Hugging Face computes in (torch_dtype); the file stores float32 logits either way.
    pub dtype: Dtype,
}

/// The cache's size bound in bytes when GPT2_PARITY_CACHE_MAX is not set.
const DEFAULT_CACHE_MAX: u64 = 2 << 30;

/// A reference for `request`, from the cache when a valid entry holds every requested prompt
/// (in any order, others besides), else made now. An entry that does not open, does not match
/// the request, or whose bytes differ from the checksum recorded when it was made (a truncated,
/// bit-flipped or half-copied file) is rebuilt, never trusted. After making an entry, the
/// oldest entries (least recently used) go until the cache fits GPT2_PARITY_CACHE_MAX.
pub fn cached_reference(python: &Path, request: &ReferenceRequest) -> Result<PathBuf> {
    let max_bytes = cache_max_bytes()?;
    let dir = cache_dir().join("references");
    let family = family_key(request);
    let path = dir.join(format!("{family}-{}.safetensors", prompts_key(request.prompts)));
    for candidate in family_entries(&dir, &family) {
        match cache_entry_problem(&candidate, request) {
            None => {
                // Reused: now the most recently used, the last to be pruned.
                let _ =
                    std::fs::File::options().append(true).open(&candidate).and_then(|file| file.set_modified(std::time::SystemTime::now()));
                // The checksum just verified is the file's digest; remembered under its new
                // times, the report's digest costs no second pass over the file.
                if let Ok(recorded) = std::fs::read_to_string(checksum_path(&candidate)) {
                    remember_file_digest(&candidate, recorded.trim());
                }
                return Ok(candidate);
            }
            Some(EntryProblem::Unusable(problem)) if candidate == path => {
                eprintln!("cached reference {} is unusable ({problem}); rebuilding it", candidate.display());
            }
            Some(EntryProblem::Unusable(problem)) => {
                eprintln!("cached reference {} is unusable ({problem}); removing it", candidate.display());
                let _ = std::fs::remove_file(checksum_path(&candidate));
                let _ = std::fs::remove_file(&candidate);
            }
            Some(EntryProblem::OtherPrompts) => {}
        }
    }
    produce(python, request, Some(&path))?;
    let digest = content_checksum(&path)?;
    write_atomically(&checksum_path(&path), format!("{digest}\n").as_bytes())
        .with_context(|| format!("cannot record the checksum of cached reference {}", path.display()))?;
    remember_file_digest(&path, &digest);
    prune(&dir, &path, max_bytes);
    Ok(path)
}

/// GPT2_PARITY_CACHE_MAX: bytes, or a number with K, M or G (powers of 1024).
fn cache_max_bytes() -> Result<u64> {
    let Some(text) = std::env::var_os("GPT2_PARITY_CACHE_MAX").filter(|value| !value.is_empty()) else { return Ok(DEFAULT_CACHE_MAX) };
    let text = text.to_string_lossy();
    let trimmed = text.trim();
    let (digits, unit) = match trimmed.char_indices().last() {
        Some((at, 'K' | 'k')) => (&trimmed[..at], 1u64 << 10),
        Some((at, 'M' | 'm')) => (&trimmed[..at], 1 << 20),
        Some((at, 'G' | 'g')) => (&trimmed[..at], 1 << 30),
        _ => (trimmed, 1),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|count| count.checked_mul(unit))
        .ok_or_else(|| anyhow!("GPT2_PARITY_CACHE_MAX={text:?} is not a size; use bytes or a number with K, M or G, e.g. 2G"))
}

/// The cache's entries for this model, script and switches, newest first.
fn family_entries(dir: &Path, family: &str) -> Vec<PathBuf> {
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
            name.starts_with(&format!("{family}-")) && name.ends_with(".safetensors")
        })
        .map(|path| (std::fs::metadata(&path).and_then(|meta| meta.modified()).unwrap_or(std::time::UNIX_EPOCH), path))
        .collect();
    entries.sort_by(|a, b| b.0.cmp(&a.0));
    entries.into_iter().map(|(_, path)| path).collect()
}

/// Removes the least recently used entries (and their checksums) until the references fit
/// `max_bytes`; `keep`, just made, always stays. A file that cannot be removed is left.
fn prune(dir: &Path, keep: &Path, max_bytes: u64) {
    let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "safetensors"))
        .filter_map(|path| {
            let meta = std::fs::metadata(&path).ok()?;
            let size = meta.len() + std::fs::metadata(checksum_path(&path)).map_or(0, |meta| meta.len());
            Some((meta.modified().unwrap_or(std::time::UNIX_EPOCH), size, path))
        })
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut total: u64 = entries.iter().map(|(_, size, _)| size).sum();
    for (_, size, path) in entries {
        if total <= max_bytes {
            break;
        }
        if path != keep && std::fs::remove_file(&path).is_ok() {
            let _ = std::fs::remove_file(checksum_path(&path));
            total -= size;
        }
    }
}

enum EntryProblem {
    /// A valid entry made for prompts that do not include all of the requested ones.
    OtherPrompts,
    /// Absent checksum, changed bytes, unreadable or mismatched: to be rebuilt.
    Unusable(String),
}

/// Why the cache entry at `path` cannot serve `request`, or `None` when it can.
fn cache_entry_problem(path: &Path, request: &ReferenceRequest) -> Option<EntryProblem> {
    let recorded = match std::fs::read_to_string(checksum_path(path)) {
        Ok(text) => text.trim().to_owned(),
        Err(_) => return Some(EntryProblem::Unusable("no checksum recorded".to_owned())),
    };
    match content_checksum(path) {
        Ok(digest) if digest == recorded => {}
        Ok(_) => return Some(EntryProblem::Unusable("its bytes differ from the checksum recorded when it was made".to_owned())),
        Err(error) => return Some(EntryProblem::Unusable(format!("{error:#}"))),
    }
    match ReferenceFile::open(path) {
        Ok(cached) if cached.meta.weights != request.weights_digest => {
            Some(EntryProblem::Unusable("it was made for other weights".to_owned()))
        }
        Ok(cached) if request.prompts.iter().all(|prompt| cached.meta.prompts.contains(prompt)) => None,
        Ok(_) => Some(EntryProblem::OtherPrompts),
        Err(error) => Some(EntryProblem::Unusable(format!("{error:#}"))),
    }
}

/// The sidecar that records a cache entry's checksum: `<key>.safetensors.sha256`.
fn checksum_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// SHA-256 of the file as it is on disk now. Unlike `cache::file_digest` it never trusts a
/// remembered value: its job is to notice a cache entry whose bytes changed.
fn content_checksum(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(format!("sha256:{:x}", hasher.finalize()))
}

/// Names what a reference depends on besides its prompts: entries of one family differ only in
/// their prompts, so one that holds a superset of the requested prompts can serve.
fn family_key(request: &ReferenceRequest) -> String {
    let mut hasher = Sha256::new();
    let transformer_lens = request.transformer_lens.map(|options| options.cache_key()).unwrap_or_default();
    for part in [
        SCRIPT,
        request.weights_digest,
        &request.model.source,
        if request.prepend_bos { "bos" } else { "no-bos" },
        &transformer_lens,
        request.dtype.name(),
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    format!("{:x}", hasher.finalize())[..32].to_owned()
}

fn prompts_key(prompts: &[String]) -> String {
    let mut hasher = Sha256::new();
    for prompt in prompts {
        hasher.update(prompt.as_bytes());
        hasher.update([0]);
    }
    format!("{:x}", hasher.finalize())[..16].to_owned()
}

/// Runs the bundled script; it writes `output` atomically itself, or to our stdout when `None`.
pub fn produce(python: &Path, request: &ReferenceRequest, output: Option<&Path>) -> Result<()> {
    let work_dir = output.map_or(Path::new("."), parent_dir);
    std::fs::create_dir_all(work_dir).map_err(|error| {
        anyhow!("cannot create directory {}: {error}; choose a writable location (GPT2_PARITY_CACHE moves the cache)", work_dir.display())
    })?;
    let prompt_lines: String =
        request.prompts.iter().map(|prompt| serde_json::to_string(prompt).map(|line| line + "\n")).collect::<Result<_, _>>()?;
    let prompts = temp_file_with(work_dir, ".jsonl", prompt_lines.as_bytes())?;
    eprintln!("making the reference with {} (Hugging Face transformers, eager, {})", python.display(), request.dtype.name());
    let run = run_script(python, SCRIPT, work_dir, |command| {
        command
            .arg("--model")
            .arg(&request.model.dir)
            .args(["--model-name", &request.model.source])
            .arg("--output")
            // The script's own spelling of stdout.
            .arg(output.unwrap_or(Path::new("-")))
            .arg("--prompts-file")
            .arg(prompts.path())
            .args(["--dtype", request.dtype.name()])
            .env("HF_HUB_OFFLINE", "1")
            .env("TRANSFORMERS_VERBOSITY", "error")
            .env("PYTHONIOENCODING", "utf-8");
        if output.is_none() {
            command.stdout(Stdio::inherit());
        }
        if request.prepend_bos {
            command.arg("--prepend-bos");
        }
        if let Some(options) = request.transformer_lens {
            command.arg("--transformer-lens");
            command.args(options.script_args());
        }
    })?;
    match run {
        Ok(()) => Ok(()),
        Err(failure) if failure.missing_module => {
            bail!("{} cannot run the reference script ({}); {SETUP_HINT}", python.display(), failure.last_line)
        }
        Err(failure) => bail!("the reference script failed for model {}: {}", request.model.source, failure.last_line),
    }
}
