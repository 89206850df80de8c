//! Reads a reference file whoever made it, checking everything that would otherwise make a
//! comparison meaningless: the format tag, every tensor's presence, dtype and shape, and that
//! the shapes fit the model being checked.
use std::collections::HashMap;
use std::fs::File;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorView};
use safetensors::{Dtype, SafeTensors};

use crate::model::switches::RecordedSwitches;
use crate::model::Gpt2Config;
use crate::sys::cache::{file_digest, FileBytes};
use crate::sys::timings::{timed, Phase};

pub const FORMAT: &str = "gpt2-parity-reference/1";

/// The dtypes a producer may have computed in (metadata `dtype`).
const REFERENCE_DTYPES: [&str; 4] = ["float32", "float64", "float16", "bfloat16"];

/// The file's `__metadata__`, decoded.
#[derive(Debug, Clone)]
pub struct ReferenceMeta {
    pub prompts: Vec<String>,
    pub model: String,
    pub weights: String,
    pub prepend_bos: bool,
    /// What the producer computed in; the logits are stored as float32 whatever it is.
    pub dtype: String,
    pub attn_implementation: String,
    pub producer: serde_json::Value,
    /// The switches TransformerLens's processed logits were made with (`transformer_lens_processing`).
    pub transformer_lens_processing: Option<RecordedSwitches>,
}

/// One prompt's reference tensors, row-major.
pub struct PromptReference {
    pub tokens: Vec<i64>,
    /// [T, V]
    pub logits: Vec<f32>,
    /// [L + 1, T, D], when the producer recorded it.
    pub resid: Option<Vec<f32>>,
    pub tl_processed_logits: Option<Vec<f32>>,
    pub tl_unprocessed_logits: Option<Vec<f32>>,
}

pub struct ReferenceFile {
    path: PathBuf,
    bytes: Bytes,
    /// The safetensors header, parsed once: it grows with the prompt count, and every prompt is
    /// looked up in it.
    header: Header,
    pub meta: ReferenceMeta,
}

struct Header {
    size: usize,
    tensors: Metadata,
}

/// The file's tensors, as views into its bytes.
struct Tensors<'a> {
    header: &'a Metadata,
    data: &'a [u8],
}

impl<'a> Tensors<'a> {
    fn tensor(&self, name: &str) -> Option<TensorView<'a>> {
        let info = self.header.info(name)?;
        let (start, end) = info.data_offsets;
        // The offsets and shapes were validated against each other and the file size at open.
        TensorView::new(info.dtype, info.shape.clone(), &self.data[start..end]).ok()
    }
}

/// The file's bytes: memory-mapped from disk, or handed over in memory.
enum Bytes {
    /// The file too: tensor data is read from it rather than through the map (see `floats`).
    Mapped(Mmap, File),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(map, _) => map,
            Bytes::Owned(bytes) => bytes,
        }
    }
}

impl ReferenceFile {
    /// Opens a reference and checks its structure; model-dependent checks come in [`Self::check_model`].
    pub fn open(path: &Path) -> Result<Self> {
        let shown = path.display();
        let file = File::open(path).map_err(|error| {
            anyhow!("cannot open reference {shown}: {error}; check the path, or leave --reference out to make one with the bundled script")
        })?;
        if file.metadata().is_ok_and(|metadata| metadata.is_dir()) {
            bail!("reference {shown} is a directory; pass the reference's .safetensors file");
        }
        // SAFETY: read-only map of a file the tool only reads; see model::load for the same choice.
        let map = unsafe { Mmap::map(&file) }.with_context(|| format!("cannot map reference {shown}"))?;
        Self::from_parts(Bytes::Mapped(map, file), path)
    }

    /// Reads a reference held in memory; `origin` names it in errors. Checks as [`Self::open`] does.
    pub fn from_bytes(bytes: Vec<u8>, origin: &Path) -> Result<Self> {
        Self::from_parts(Bytes::Owned(bytes), origin)
    }

    fn from_parts(bytes: Bytes, path: &Path) -> Result<Self> {
        timed(Phase::Reference, || {
            let (size, tensors) = SafeTensors::read_metadata(&bytes)
                .map_err(|error| anyhow!("reference {} is not a readable safetensors file ({error}); regenerate it", path.display()))?;
            let meta = parse_meta(&tensors, path)?;
            let reference = Self { path: path.to_path_buf(), bytes, header: Header { size, tensors }, meta };
            reference.check_structure()?;
            Ok(reference)
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `sha256:<hex>` of the whole file, remembered per file identity as weight digests are:
    /// what tells two references apart whose metadata agree.
    pub fn content_digest(&self) -> String {
        let bytes = match &self.bytes {
            Bytes::Mapped(map, _) => FileBytes::Mapped(map),
            Bytes::Owned(bytes) => FileBytes::InMemory(bytes),
        };
        timed(Phase::Digest, || file_digest(&self.path, bytes))
    }

    fn tensors(&self) -> Tensors<'_> {
        Tensors { header: &self.header.tensors, data: &self.bytes[8 + self.header.size..] }
    }

    fn check_structure(&self) -> Result<()> {
        let tensors = self.tensors();
        for index in 0..self.meta.prompts.len() {
            let tokens = self.view(&tensors, index, "tokens", Dtype::I64)?;
            let positions = tokens.shape().first().copied().unwrap_or(0);
            if tokens.shape().len() != 1 || positions == 0 {
                bail!(
                    "reference {}: prompt.{index}.tokens has shape {:?}, expected [T] with T >= 1; regenerate it",
                    self.path.display(),
                    tokens.shape()
                );
            }
            for name in ["logits", "tl_processed_logits", "tl_unprocessed_logits"] {
                if let Some(view) = self.optional_view(&tensors, index, name, Dtype::F32)? {
                    let shape = view.shape();
                    if shape.len() != 2 || shape[0] != positions {
                        bail!(
                            "reference {}: prompt.{index}.{name} has shape {shape:?}, expected [{positions}, V] to match its tokens; regenerate it",
                            self.path.display()
                        );
                    }
                }
            }
            self.view(&tensors, index, "logits", Dtype::F32)?;
            if let Some(view) = self.optional_view(&tensors, index, "resid", Dtype::F32)? {
                let shape = view.shape();
                if shape.len() != 3 || shape[1] != positions {
                    bail!(
                        "reference {}: prompt.{index}.resid has shape {shape:?}, expected [L+1, {positions}, D]; regenerate it",
                        self.path.display()
                    );
                }
            }
        }
        Ok(())
    }

    /// Checks that the reference's shapes fit `config` and that it was made from `weights_digest`
    /// (unless `allow_other_weights`).
    pub fn check_model(&self, config: &Gpt2Config, weights_digest: &str, allow_other_weights: bool) -> Result<()> {
        let path = self.path.display();
        if !allow_other_weights && self.meta.weights != weights_digest {
            bail!(
                "reference {path} was made from weights {} but the model's are {weights_digest}; \
                 make a new reference, or pass --allow-other-weights if the weights are meant to differ",
                self.meta.weights
            );
        }
        let tensors = self.tensors();
        let expect = |index: usize, name: &str, axis: usize, expected: i64, what: &str| -> Result<()> {
            if let Some(view) = self.optional_view(&tensors, index, name, Dtype::F32)? {
                let found = view.shape()[axis] as i64;
                if found != expected {
                    bail!(
                        "reference {path}: prompt.{index}.{name} has {what} {found}, the model has {expected}; is the reference for another model? make one for this model"
                    );
                }
            }
            Ok(())
        };
        for index in 0..self.meta.prompts.len() {
            for name in ["logits", "tl_processed_logits", "tl_unprocessed_logits"] {
                expect(index, name, 1, config.vocab_size, "vocabulary size")?;
            }
            expect(index, "resid", 0, config.n_layer + 1, "L+1 =")?;
            expect(index, "resid", 2, config.n_embd, "d_model")?;
        }
        Ok(())
    }

    /// Loads prompt `index`'s tensors.
    pub fn prompt(&self, index: usize) -> Result<PromptReference> {
        timed(Phase::Reference, || self.read_prompt(index, true))
    }

    /// Prompt `index`'s tensors without TransformerLens's logits: what a comparison with our
    /// unprocessed model or a candidate reads, and no more.
    pub fn prompt_without_transformer_lens(&self, index: usize) -> Result<PromptReference> {
        timed(Phase::Reference, || self.read_prompt(index, false))
    }

    /// [`Self::prompt_without_transformer_lens`] untimed, for reading ahead on a thread of its
    /// own: the caller times its wait for the result, since phases on two threads at once would
    /// count the same seconds twice.
    pub fn prompt_read_ahead(&self, index: usize) -> Result<PromptReference> {
        self.read_prompt(index, false)
    }

    fn read_prompt(&self, index: usize, transformer_lens: bool) -> Result<PromptReference> {
        let tensors = self.tensors();
        let floats = |name: &str| -> Result<Option<Vec<f32>>> {
            self.optional_view(&tensors, index, name, Dtype::F32)?.map(|view| self.floats(&view)).transpose()
        };
        let transformer_lens_floats = |name: &str| if transformer_lens { floats(name) } else { Ok(None) };
        Ok(PromptReference {
            tokens: self.tokens(index)?,
            logits: self.floats(&self.view(&tensors, index, "logits", Dtype::F32)?)?,
            resid: floats("resid")?,
            tl_processed_logits: transformer_lens_floats("tl_processed_logits")?,
            tl_unprocessed_logits: transformer_lens_floats("tl_unprocessed_logits")?,
        })
    }

    /// A float32 tensor's values. From a file they are read with one positioned read: going
    /// through the map would fault every page into this process and keep it there, so that
    /// checking every prompt of a large reference would hold the whole file in memory. The read
    /// fills new memory unzeroed: zeroing a prompt's logits first (11 MB for 55 tokens of
    /// GPT-2's vocabulary) cost a fifth of the read again.
    fn floats(&self, view: &TensorView) -> Result<Vec<f32>> {
        let Bytes::Mapped(map, file) = &self.bytes else { return Ok(decode_f32(view.data())) };
        let offset = view.data().as_ptr() as usize - map.as_ptr() as usize;
        let len = view.data().len() / 4;
        let mut values: Vec<f32> = Vec::with_capacity(len);
        read_exact_at_uninit(file, values.spare_capacity_mut(), offset as u64)
            .with_context(|| format!("cannot read reference {}; is it being rewritten?", self.path.display()))?;
        // SAFETY: the read filled all `len` values (4 bytes each; any bits are a valid f32).
        unsafe { values.set_len(len) };
        values.iter_mut().for_each(|value| *value = f32::from_bits(u32::from_le(value.to_bits())));
        Ok(values)
    }

    pub fn tokens(&self, index: usize) -> Result<Vec<i64>> {
        let tensors = self.tensors();
        let view = self.view(&tensors, index, "tokens", Dtype::I64)?;
        Ok(view.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8-byte chunk"))).collect())
    }

    fn view<'a>(&self, tensors: &Tensors<'a>, index: usize, name: &str, dtype: Dtype) -> Result<TensorView<'a>> {
        self.optional_view(tensors, index, name, dtype)?.ok_or_else(|| {
            anyhow!("reference {} lacks tensor prompt.{index}.{name}; regenerate it (docs/reference-format.md)", self.path.display())
        })
    }

    fn optional_view<'a>(&self, tensors: &Tensors<'a>, index: usize, name: &str, dtype: Dtype) -> Result<Option<TensorView<'a>>> {
        let full_name = format!("prompt.{index}.{name}");
        let Some(view) = tensors.tensor(&full_name) else { return Ok(None) };
        if view.dtype() != dtype {
            bail!(
                "reference {}: tensor {full_name} has dtype {:?}, the format requires {dtype:?}; regenerate it (docs/reference-format.md)",
                self.path.display(),
                view.dtype()
            );
        }
        Ok(Some(view))
    }
}

/// Fills `values` from `file` at byte `offset`, as `read_exact_at` fills initialized memory.
fn read_exact_at_uninit(file: &File, values: &mut [MaybeUninit<f32>], offset: u64) -> std::io::Result<()> {
    let len = std::mem::size_of_val(values);
    let start = values.as_mut_ptr().cast::<u8>();
    let mut done = 0;
    while done < len {
        let position = libc::off_t::try_from(offset + done as u64).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: pread writes at most `len - done` bytes from `start + done`, memory that
        // `values` owns; MaybeUninit takes any bytes.
        let read = unsafe { libc::pread(file.as_raw_fd(), start.add(done).cast(), len - done, position) };
        match read {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            read if read > 0 => done += read as usize,
            _ => {
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
    Ok(())
}

fn decode_f32(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4-byte chunk"))).collect()
}

fn parse_meta(header: &Metadata, path: &Path) -> Result<ReferenceMeta> {
    let shown = path.display();
    let empty = HashMap::new();
    let metadata = header.metadata().as_ref().unwrap_or(&empty);
    let field = |key: &str| -> Result<&str> {
        metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("reference {shown} has no metadata key \"{key}\"; see docs/reference-format.md"))
    };
    let format = field("format")?;
    if format != FORMAT {
        bail!("reference {shown} has format \"{format}\", this tool reads \"{FORMAT}\"; regenerate it with `gpt2-parity reference`");
    }
    let prompts: Vec<String> = serde_json::from_str(field("prompts")?)
        .map_err(|error| anyhow!("reference {shown}: metadata \"prompts\" is not a JSON array of strings ({error}); regenerate it"))?;
    if prompts.is_empty() {
        bail!("reference {shown} holds no prompts; regenerate it with at least one prompt");
    }
    let prepend_bos = match field("prepend_bos")? {
        "true" => true,
        "false" => false,
        other => bail!("reference {shown}: metadata \"prepend_bos\" is \"{other}\", expected \"true\" or \"false\"; regenerate it"),
    };
    let dtype = field("dtype")?.to_owned();
    if !REFERENCE_DTYPES.contains(&dtype.as_str()) {
        bail!("reference {shown} was computed in {dtype}; references are computed in float32, float64, float16 or bfloat16: regenerate it");
    }
    let producer = metadata.get("producer").map_or(Ok(serde_json::Value::Null), |text| {
        serde_json::from_str(text).map_err(|error| anyhow!("reference {shown}: metadata \"producer\" is not JSON ({error}); regenerate it"))
    })?;
    let transformer_lens_processing = metadata
        .get("transformer_lens_processing")
        .map(|text| {
            serde_json::from_str(text).map(|object| RecordedSwitches::from_json(&object)).map_err(|error| {
                anyhow!("reference {shown}: metadata \"transformer_lens_processing\" is not a JSON object ({error}); regenerate it")
            })
        })
        .transpose()?;
    Ok(ReferenceMeta {
        transformer_lens_processing,
        prompts,
        model: field("model")?.to_owned(),
        weights: field("weights")?.to_owned(),
        prepend_bos,
        dtype,
        attn_implementation: metadata.get("attn_implementation").cloned().unwrap_or_else(|| "unknown".to_owned()),
        producer,
    })
}
