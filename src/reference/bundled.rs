//! Produces references with the Python script that ships inside the binary
//! (scripts/dump_reference.py): Hugging Face transformers, eager attention, float32. `compare`
//! without `--reference` caches what it produces, keyed by everything that determines it.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use super::ReferenceFile;
use crate::cache::cache_dir;
use crate::interrupt::{self, TempFile};
use crate::model::dtype::Dtype;
use crate::model::hub::ModelFiles;
use crate::model::process::ProcessingOptions;
use crate::output::write_atomically;

const SCRIPT: &str = include_str!("../../scripts/dump_reference.py");
const SETUP_HINT: &str = "run `make setup` in the gpt2-parity checkout, set GPT2_PARITY_PYTHON to a Python with torch and transformers, or pass --reference FILE";

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

/// The Python that runs the script: `--python`, else GPT2_PARITY_PYTHON, else the venv whose
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

/// A reference for `request`, from the cache when a valid entry exists, else made now.
/// An entry that does not open, does not match the request, or whose bytes differ from the
/// checksum recorded when it was made (a truncated, bit-flipped or half-copied file) is
/// rebuilt, never trusted.
pub fn cached_reference(python: &Path, request: &ReferenceRequest) -> Result<PathBuf> {
    let path = cache_dir().join("references").join(format!("{}.safetensors", cache_key(request)));
    let checksum = checksum_path(&path);
    if let Some(problem) = cache_entry_problem(&path, &checksum, request) {
        if path.exists() {
            eprintln!("cached reference {} is unusable ({problem}); rebuilding it", path.display());
        }
        produce(python, request, &path)?;
        let digest = content_checksum(&path)?;
        write_atomically(&checksum, format!("{digest}\n").as_bytes())
            .with_context(|| format!("cannot record the checksum of cached reference {}", path.display()))?;
    }
    Ok(path)
}

/// Why the cache entry at `path` cannot be used, or `None` when it can.
fn cache_entry_problem(path: &Path, checksum: &Path, request: &ReferenceRequest) -> Option<String> {
    if !path.exists() {
        return Some("absent".to_owned());
    }
    let recorded = match std::fs::read_to_string(checksum) {
        Ok(text) => text.trim().to_owned(),
        Err(_) => return Some("no checksum recorded".to_owned()),
    };
    match content_checksum(path) {
        Ok(digest) if digest == recorded => {}
        Ok(_) => return Some("its bytes differ from the checksum recorded when it was made".to_owned()),
        Err(error) => return Some(format!("{error:#}")),
    }
    match ReferenceFile::open(path) {
        Ok(cached) if cached.meta.prompts == request.prompts && cached.meta.weights == request.weights_digest => None,
        Ok(_) => Some("it was made for other prompts or weights".to_owned()),
        Err(error) => Some(format!("{error:#}")),
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

fn cache_key(request: &ReferenceRequest) -> String {
    let mut hasher = Sha256::new();
    let transformer_lens = request.transformer_lens.map(|options| format!("{options:?}")).unwrap_or_default();
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
    for prompt in request.prompts {
        hasher.update(prompt.as_bytes());
        hasher.update([0]);
    }
    format!("{:x}", hasher.finalize())[..32].to_owned()
}

/// Runs the bundled script; it writes `output` atomically itself.
pub fn produce(python: &Path, request: &ReferenceRequest, output: &Path) -> Result<()> {
    let work_dir = output.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(work_dir).map_err(|error| {
        anyhow!("cannot create directory {}: {error}; choose a writable location (GPT2_PARITY_CACHE moves the cache)", work_dir.display())
    })?;
    let script = temp_file_with(work_dir, ".py", SCRIPT.as_bytes())?;
    let prompt_lines: String =
        request.prompts.iter().map(|prompt| serde_json::to_string(prompt).map(|line| line + "\n")).collect::<Result<_, _>>()?;
    let prompts = temp_file_with(work_dir, ".jsonl", prompt_lines.as_bytes())?;
    let mut command = Command::new(python);
    command
        .arg(script.path())
        .arg("--model")
        .arg(&request.model.dir)
        .args(["--model-name", &request.model.source])
        .arg("--output")
        .arg(output)
        .arg("--prompts-file")
        .arg(prompts.path())
        .args(["--dtype", request.dtype.name()])
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .env("PYTHONIOENCODING", "utf-8")
        .stdin(Stdio::null())
        // `--output -`: the script writes the file to its stdout, which is ours.
        .stdout(if output == Path::new("-") { Stdio::inherit() } else { Stdio::null() })
        .stderr(Stdio::piped());
    if request.prepend_bos {
        command.arg("--prepend-bos");
    }
    if let Some(options) = request.transformer_lens {
        command.arg("--transformer-lens");
        let skipped = [
            (options.fold_ln, "--no-fold-ln"),
            (options.center_writing_weights, "--no-center-writing-weights"),
            (options.center_unembed, "--no-center-unembed"),
            (options.fold_value_biases, "--no-fold-value-biases"),
        ];
        command.args(skipped.iter().filter(|(enabled, _)| !enabled).map(|(_, flag)| flag));
    }
    eprintln!("making the reference with {} (Hugging Face transformers, eager, {})", python.display(), request.dtype.name());
    let result = interrupt::run_child(&mut command).map_err(|error| anyhow!("cannot run {}: {error}; {SETUP_HINT}", python.display()))?;
    if !result.status.success() {
        let stderr = String::from_utf8_lossy(&result.stderr);
        let last_line = stderr.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("no message").trim();
        if stderr.contains("ModuleNotFoundError") {
            bail!("{} cannot run the reference script ({last_line}); {SETUP_HINT}", python.display());
        }
        bail!("the reference script failed for model {}: {last_line}", request.model.source);
    }
    Ok(())
}

fn temp_file_with(dir: &Path, suffix: &str, content: &[u8]) -> Result<TempFile> {
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
