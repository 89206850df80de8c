//! Writes files whole or not at all: into a temporary file beside the target, then a rename,
//! so a reader (or a killed run) never sees half a report.
use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use crate::sys::interrupt::TempFile;

/// Writes `content` to `path` whole or not at all.
///
/// A process killed mid-write leaves the target as it was (or absent) and, at worst, a
/// `.gpt2-parity-*` temporary file beside it, never a partial target.
pub fn write_atomically(path: &Path, content: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
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

/// The directory a file at `path` lands in: its parent, or `.` for a bare file name.
pub fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// The file an output option names, `None` where it names stdout (`-`).
pub fn file_or_stdout(path: &Path) -> Option<&Path> {
    (path != Path::new("-")).then_some(path)
}

/// Fails unless a file can be created in `path`'s directory: checked before any model work.
/// `option` names the flag that gave the path.
pub fn check_writable(path: &Path, option: &str) -> Result<()> {
    if path.is_dir() {
        bail!("cannot write {}: it is a directory; choose a file path for {option}", path.display());
    }
    let dir = parent_dir(path);
    if !dir.is_dir() {
        bail!("cannot write {}: directory {} does not exist; create it or choose another {option}", path.display(), dir.display());
    }
    tempfile::Builder::new().prefix(".gpt2-parity-probe-").tempfile_in(dir).map_err(|error| {
        anyhow!("cannot write {}: directory {} is not writable ({error}); choose another {option}", path.display(), dir.display())
    })?;
    Ok(())
}
