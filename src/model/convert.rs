//! Turns a checkpoint that ships only `pytorch_model.bin` into safetensors with the bundled
//! Python (scripts/convert_checkpoint.py, torch.load with weights_only): a pickle is never
//! unpickled in Rust. The result is cached under the pickle's content digest, so each
//! checkpoint is converted once.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

use crate::sys::cache::cache_dir;
use crate::sys::interrupt::TempFile;
use crate::sys::python::{find_python, run_script};

const SCRIPT: &str = include_str!("../../scripts/convert_checkpoint.py");

/// The safetensors copy of `pickle`, whose digest is `digest` (`sha256:<hex>`): from the cache
/// when converted before, else converted now with the Python that makes references.
pub fn converted(pickle: &Path, digest: &str) -> Result<PathBuf> {
    let key = digest.replace(':', "-");
    let dir = cache_dir().join("converted");
    let target = dir.join(format!("{key}.safetensors"));
    if target.is_file() {
        return Ok(target);
    }
    let shown = pickle.display();
    std::fs::create_dir_all(&dir).map_err(|error| {
        anyhow!("cannot create {}: {error}; choose a writable cache (GPT2_PARITY_CACHE) to convert {shown}", dir.display())
    })?;
    let python = find_python(None).map_err(|error| anyhow!("{shown} must be converted to safetensors first: {error:#}"))?;
    let output =
        TempFile::new_in(&dir, ".safetensors").map_err(|error| anyhow!("cannot write a temporary file in {}: {error}", dir.display()))?;
    eprintln!("converting {shown} to safetensors once (cached in {})", dir.display());
    let run = run_script(&python, SCRIPT, &dir, |command| {
        command.arg(pickle).arg(output.path());
    })?;
    if let Err(failure) = run {
        bail!("cannot convert {shown} to safetensors with {}: {}", python.display(), failure.last_line);
    }
    output.persist(&target).map_err(|error| anyhow!("cannot write {}: {error}", target.display()))?;
    Ok(target)
}
