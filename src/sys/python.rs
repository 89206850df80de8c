//! The one way this tool runs Python: the bundled scripts (reference making, checkpoint
//! conversion) are written to a temporary file and run with the one Python the user chose, with
//! Ctrl-C forwarded and the script's last stderr line kept for the error.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Result};

use super::interrupt::{self, TempFile};

/// How to get a Python that runs the bundled scripts.
pub const SETUP_HINT: &str = "run `make setup` in the gpt2-parity checkout, set GPT2_PARITY_PYTHON to a Python with torch and transformers, or pass --reference FILE";

/// The Python that runs the scripts: `--python`, else GPT2_PARITY_PYTHON, else the venv whose
/// libtorch this binary was built against.
pub fn find_python(explicit: Option<&Path>) -> Result<PathBuf> {
    let configured = explicit.map(Path::to_path_buf).or_else(|| std::env::var_os("GPT2_PARITY_PYTHON").map(PathBuf::from));
    if let Some(python) = configured {
        if !python.exists() {
            bail!("Python {} does not exist; {SETUP_HINT}", python.display());
        }
        return Ok(python);
    }
    match option_env!("GPT2_PARITY_BUILD_PYTHON").map(PathBuf::from) {
        Some(python) if python.exists() => Ok(python),
        _ => bail!("no Python to run the reference script; {SETUP_HINT}"),
    }
}

/// Why a script exited unsuccessfully, from its stderr.
pub struct ScriptFailure {
    /// The last non-empty line ("no message" when there is none).
    pub last_line: String,
    /// The script could not import a module: the Python lacks the project's requirements.
    pub missing_module: bool,
}

/// Runs the script `source`, written to a temporary file in `work_dir`, with `python`; `setup`
/// adds the arguments, environment and stdout. stdin is closed and stderr kept: the outer error
/// is that the child could not run at all, the inner one that the script failed.
pub fn run_script(
    python: &Path,
    source: &str,
    work_dir: &Path,
    setup: impl FnOnce(&mut Command),
) -> Result<std::result::Result<(), ScriptFailure>> {
    let script = temp_file_with(work_dir, ".py", source.as_bytes())?;
    let mut command = Command::new(python);
    command.arg(script.path()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    setup(&mut command);
    let result = interrupt::run_child(&mut command).map_err(|error| anyhow!("cannot run {}: {error}; {SETUP_HINT}", python.display()))?;
    if result.status.success() {
        return Ok(Ok(()));
    }
    let stderr = String::from_utf8_lossy(&result.stderr);
    let last_line = stderr.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("no message").trim().to_owned();
    Ok(Err(ScriptFailure { last_line, missing_module: stderr.contains("ModuleNotFoundError") }))
}

/// A temporary file in `dir` (removed on drop and on Ctrl-C) holding `content`.
pub fn temp_file_with(dir: &Path, suffix: &str, content: &[u8]) -> Result<TempFile> {
    let mut file = TempFile::new_in(dir, suffix).map_err(|error| {
        anyhow!(
            "cannot write a temporary file in {}: {error}; choose a writable location (GPT2_PARITY_CACHE moves the cache)",
            dir.display()
        )
    })?;
    file.write_all(content)?;
    file.flush()?;
    Ok(file)
}
