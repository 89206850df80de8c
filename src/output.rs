//! Writes files whole or not at all: into a temporary file beside the target, then a rename,
//! so a reader (or a killed run) never sees half a report.
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::interrupt::TempFile;

/// Writes `content` to `path` whole or not at all.
///
/// A process killed mid-write leaves the target as it was (or absent) and, at worst, a
/// `.gpt2-parity-*` temporary file beside it, never a partial target.
pub fn write_atomically(path: &Path, content: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut file =
        TempFile::new_in(dir, "").with_context(|| format!("cannot write {}: no temporary file in {}", path.display(), dir.display()))?;
    file.write_all(content).and_then(|()| file.as_file().sync_all()).with_context(|| format!("cannot write {}", path.display()))?;
    file.persist(path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Prints to stdout; a closed pipe (`| head`) is not an error.
pub fn print_stdout(content: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(content.as_bytes()).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

/// Writes a rendered report to `file` (whole or not at all), or to stdout when `None`.
pub fn emit(content: &str, file: Option<&Path>) -> Result<()> {
    match file {
        Some(path) => write_atomically(path, content.as_bytes()),
        None => print_stdout(content),
    }
}
