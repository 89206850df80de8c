//! Turns a checkpoint that ships only `pytorch_model.bin` into safetensors with the bundled
//! Python (scripts/convert_checkpoint.py, torch.load with weights_only): a pickle is never
//! unpickled in Rust. The result is cached under the pickle's content digest, so each
//! checkpoint is converted once.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Result};

use crate::reference::bundled::find_python;
use crate::sys::cache::cache_dir;
use crate::sys::interrupt::{self, TempFile};

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
    let script = temp_file(&dir, ".py")?;
    std::fs::write(script.path(), SCRIPT)?;
    let output = temp_file(&dir, ".safetensors")?;
    eprintln!("converting {shown} to safetensors once (cached in {})", dir.display());
    let mut command = Command::new(&python);
    command.arg(script.path()).arg(pickle).arg(output.path()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let result = interrupt::run_child(&mut command).map_err(|error| anyhow!("cannot run {}: {error}", python.display()))?;
    if !result.status.success() {
        let stderr = String::from_utf8_lossy(&result.stderr);
        let last_line = stderr.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("no message").trim();
        bail!("cannot convert {shown} to safetensors with {}: {last_line}", python.display());
    }
    output.persist(&target).map_err(|error| anyhow!("cannot write {}: {error}", target.display()))?;
    Ok(target)
}

fn temp_file(dir: &Path, suffix: &str) -> Result<TempFile> {
    TempFile::new_in(dir, suffix).map_err(|error| anyhow!("cannot write a temporary file in {}: {error}", dir.display()))
}
