//! Reads a GPT-2 checkpoint (one safetensors file, or shards) into [`Weights`]. The files are
//! memory-mapped and every float32 tensor is a view of the mapping, not a copy: loading costs
//! page-cache reads instead of a second model-sized allocation. Tensors stored in float16 or
//! bfloat16 are converted to float32. `VarStore::load` would silently skip unknown names and
//! adopt the file's dtype, so every name, shape and dtype is audited here instead.
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use memmap2::Mmap;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use super::convert::converted;
use super::hub::WeightFiles;
use super::tensor_names::{self, Whole, LM_HEAD, SAVE_PRETRAINED_PREFIX};
use super::{Affine, Block, Gpt2Config, TokenEmbedding, Unembed, Weights};
use crate::sys::cache::{file_digest, FileBytes};
use crate::sys::memory::release_map_range;
use crate::sys::timings::{timed, Phase};

/// A checkpoint's files, mapped, with the digest references record for them.
pub struct Checkpoint {
    shards: Vec<Shard>,
    /// What messages about the whole checkpoint name: the file, the shard index, the pickle.
    origin: PathBuf,
    /// `sha256:<hex>` of the file's bytes, or `sha256-shards:<hex>` for a sharded checkpoint
    /// (docs/reference-format.md), as recorded in references.
    pub digest: String,
}

struct Shard {
    path: PathBuf,
    map: Mmap,
}

/// The mapped files a [`Weights`]' tensors may view. Dropped after the tensors (it is the
/// struct's last field), and never written: the maps are read-only.
pub struct MappedFiles {
    maps: Vec<Mmap>,
}

impl MappedFiles {
    /// Drops the mapped pages from this process's memory ([`release_map_range`]). Processing
    /// calls it part by part, so that the checkpoint's pages leave memory as their processed
    /// copies arrive; weights that still view them read them back from the page cache (explain's
    /// unprocessed parts, compare's unprocessed model).
    pub fn release(mapped: &Option<Arc<Self>>) {
        for map in mapped.iter().flat_map(|mapped| &mapped.maps) {
            release_map_range(map, 0..map.len());
        }
    }

    /// Drops the pages under those of `tensors` that view a map, as [`Self::release`] does for
    /// the whole files: a forward that is done with a block lets its weights leave memory.
    pub fn release_tensors(&self, tensors: &[&Tensor]) {
        for tensor in tensors {
            if let Some((map, range)) = self.place(tensor) {
                release_map_range(map, range);
            }
        }
    }

    /// Whether `tensor`'s data lies in one of the maps.
    pub fn holds(&self, tensor: &Tensor) -> bool {
        self.place(tensor).is_some()
    }

    /// The map holding `tensor`'s data, and the data's byte range in it.
    fn place(&self, tensor: &Tensor) -> Option<(&Mmap, std::ops::Range<usize>)> {
        let start = tensor.data_ptr() as usize;
        let len = tensor.numel() * tensor.kind().elt_size_in_bytes();
        self.maps.iter().find_map(|map| {
            let offset = start.checked_sub(map.as_ptr() as usize)?;
            (offset + len <= map.len()).then_some((map, offset..offset + len))
        })
    }
}

impl Checkpoint {
    /// Opens one safetensors file.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_files(&WeightFiles::Safetensors(path.to_path_buf()))
    }

    /// Opens a model's weights, hashes them and checks that each file is a readable safetensors
    /// file (header and tensor offsets; nothing is copied), so that a truncated or corrupt
    /// download is named as such before anything else looks at it. A pickle is converted first.
    pub fn open_files(files: &WeightFiles) -> Result<Self> {
        let origin = files.origin().to_path_buf();
        let (paths, digest) = match files {
            WeightFiles::Safetensors(path) => {
                let map = timed(Phase::ModelLoad, || map_file(path))?;
                let digest = timed(Phase::Digest, || file_digest(path, FileBytes::Mapped(&map)));
                return Self::from_shards(vec![Shard { path: path.clone(), map }], origin, digest);
            }
            WeightFiles::Pickle(pickle) => {
                let digest = timed(Phase::Digest, || digest_of_file(pickle))?;
                (vec![timed(Phase::ModelLoad, || converted(pickle, &digest))?], digest)
            }
            WeightFiles::Sharded { shards, .. } => (shards.clone(), String::new()),
        };
        let shards = paths
            .into_iter()
            .map(|path| Ok(Shard { map: timed(Phase::ModelLoad, || map_file(&path))?, path }))
            .collect::<Result<Vec<_>>>()?;
        let digest = if digest.is_empty() { timed(Phase::Digest, || sharded_digest(&shards)) } else { digest };
        Self::from_shards(shards, origin, digest)
    }

    fn from_shards(shards: Vec<Shard>, origin: PathBuf, digest: String) -> Result<Self> {
        let checkpoint = Self { shards, origin, digest };
        timed(Phase::ModelLoad, || checkpoint.tensors())?;
        Ok(checkpoint)
    }

    /// Each shard's parsed header, beside its path.
    fn tensors(&self) -> Result<Vec<(&Path, SafeTensors<'_>)>> {
        self.shards
            .iter()
            .map(|shard| {
                SafeTensors::deserialize(&shard.map).map(|tensors| (shard.path.as_path(), tensors)).map_err(|error| {
                    anyhow!("{} is not a readable safetensors file ({error}); re-download or re-save the model", shard.path.display())
                })
            })
            .collect()
    }

    /// Checks every tensor's presence, shape and dtype against `config`, and that no unknown
    /// tensor is left over, without copying anything into libtorch: cheap enough to run before
    /// any other work, so that a checkpoint that does not fit its config.json fails first.
    pub fn audit(&self, config: &Gpt2Config) -> Result<()> {
        timed(Phase::ModelLoad, || self.check(config))
    }

    fn check(&self, config: &Gpt2Config) -> Result<()> {
        let tensors = self.tensors()?;
        let mut reader = TensorReader::new(&tensors, &self.origin, Device::Cpu)?;
        for (name, shape) in tensor_names::expected(config) {
            reader.view(&name, &shape)?;
        }
        reader.finish(config)
    }

    /// Builds the weights on `device`, naming any missing, unexpected or misshapen tensor. On the
    /// CPU, float32 tensors view the mapped files, which the weights keep alive.
    pub fn into_weights(self, config: &Gpt2Config, device: Device) -> Result<Weights> {
        timed(Phase::ModelLoad, || self.build(config, device))
    }

    fn build(self, config: &Gpt2Config, device: Device) -> Result<Weights> {
        self.check(config)?;
        let tensors = self.tensors()?;
        let mut reader = TensorReader::new(&tensors, &self.origin, device)?;
        let blocks = (0..config.n_layer)
            .map(|layer| Block::from_checkpoint(|tensor| reader.take(&tensor.name(layer), &tensor.shape(config))))
            .collect::<Result<Vec<_>>>()?;
        let mut take = |tensor: Whole| reader.take(tensor.name(), &tensor.shape(config));
        let token_embedding = take(Whole::TokenEmbedding)?;
        let position_embedding = take(Whole::PositionEmbedding)?;
        let ln_f = Some(Affine { weight: take(Whole::FinalNormWeight)?, bias: take(Whole::FinalNormBias)? });
        let viewed = reader.viewed;
        reader.finish(config)?;
        drop(tensors);
        // Maps no tensor views are released now; the others live as long as the weights.
        let mapped = viewed.then(|| Arc::new(MappedFiles { maps: self.shards.into_iter().map(|shard| shard.map).collect() }));
        Ok(Weights {
            config: config.clone(),
            token_embedding: TokenEmbedding::Table(token_embedding),
            position_embedding,
            blocks,
            ln_f,
            unembed: Unembed::Tied,
            release_after_use: false,
            mapped,
        })
    }
}

/// Hands out tensors by their layout-independent name, from whichever shard holds them, and
/// remembers which names were used.
struct TensorReader<'a> {
    shards: &'a [(&'a Path, SafeTensors<'a>)],
    /// Full tensor name -> index of the shard holding it.
    located: BTreeMap<String, usize>,
    origin: &'a Path,
    device: Device,
    /// "" for the Hub's own GPT-2 files, "transformer." for `save_pretrained` output.
    prefix: &'static str,
    unused: BTreeSet<String>,
    /// Whether some tensor handed out views a mapped file.
    viewed: bool,
}

impl<'a> TensorReader<'a> {
    fn new(shards: &'a [(&'a Path, SafeTensors<'a>)], origin: &'a Path, device: Device) -> Result<Self> {
        let mut located = BTreeMap::new();
        for (index, (path, tensors)) in shards.iter().enumerate() {
            for name in tensors.names() {
                if let Some(other) = located.insert(name.to_owned(), index) {
                    bail!(
                        "tensor {name} is in both {} and {}; a checkpoint holds each tensor once: re-download the model",
                        shards[other].0.display(),
                        path.display()
                    );
                }
            }
        }
        let unused: BTreeSet<String> = located.keys().cloned().collect();
        let prefix = if unused.contains(&tensor_names::layout_probe()) { SAVE_PRETRAINED_PREFIX } else { "" };
        Ok(Self { shards, located, origin, device, prefix, unused, viewed: false })
    }

    /// The view of tensor `name`, its shape and dtype checked, with the file holding it; marks
    /// the name as used.
    fn view(&mut self, name: &str, shape: &[i64]) -> Result<(String, &'a Path, TensorView<'a>)> {
        let full_name = format!("{}{name}", self.prefix);
        let missing = || {
            anyhow!(
                "{}: tensor {full_name} is missing; is this a GPT-2 checkpoint matching its config.json? re-download or re-save the model",
                self.origin.display()
            )
        };
        let (path, tensors) = self.located.get(&full_name).map(|&index| &self.shards[index]).ok_or_else(missing)?;
        let view = tensors.tensor(&full_name).map_err(|_| missing())?;
        self.unused.remove(&full_name);
        check_shape(path, &full_name, &view, shape)?;
        kind_of(&full_name, &view, path)?;
        Ok((full_name, path, view))
    }

    fn take(&mut self, name: &str, shape: &[i64]) -> Result<Tensor> {
        let (full_name, path, view) = self.view(name, shape)?;
        let kind = kind_of(&full_name, &view, path)?;
        let data = view.data();
        if kind == Kind::Float && self.device == Device::Cpu && data.as_ptr().align_offset(std::mem::align_of::<f32>()) == 0 {
            self.viewed = true;
            // SAFETY: `data` lies in a read-only map that the weights built from this reader keep
            // alive (MappedFiles) for as long as their tensors; it holds `shape`'s element count
            // of float32 (checked above), row-major, 4-aligned. Nothing writes into weight
            // tensors in place (model::process builds new ones), which the read-only map enforces.
            let strides = contiguous_strides(shape);
            return Ok(unsafe { Tensor::from_blob(data.as_ptr(), shape, &strides, Kind::Float, Device::Cpu) });
        }
        let tensor =
            Tensor::f_from_data_size(data, shape, kind).with_context(|| format!("{}: cannot read tensor {full_name}", path.display()))?;
        Ok(tensor.to_kind(Kind::Float).to_device(self.device))
    }

    /// Refuses leftover tensors, except the causal-mask buffers and a tied LM head.
    fn finish(self, config: &Gpt2Config) -> Result<()> {
        let prefix = self.prefix;
        let ignorable = |name: &str| tensor_names::ignorable(name.strip_prefix(prefix).unwrap_or(name));
        if let Some(name) = self.unused.iter().find(|name| !ignorable(name)) {
            bail!(
                "{}: unexpected tensor {name} ({} tensors not used); is this a GPT-2 checkpoint matching its config.json?",
                self.origin.display(),
                self.unused.len()
            );
        }
        if let Some(&index) = self.located.get(LM_HEAD) {
            let (path, tensors) = &self.shards[index];
            let lm_head = tensors.tensor(LM_HEAD).map_err(|error| anyhow!("{}: {error}", path.display()))?;
            check_shape(path, LM_HEAD, &lm_head, &[config.vocab_size, config.n_embd])?;
        }
        Ok(())
    }
}

fn check_shape(path: &Path, name: &str, view: &TensorView, shape: &[i64]) -> Result<()> {
    let found: Vec<i64> = view.shape().iter().map(|&n| n as i64).collect();
    if found != shape {
        bail!("{}: tensor {name} has shape {found:?}, config.json implies {shape:?}; the weights and config.json disagree", path.display());
    }
    Ok(())
}

/// Row-major strides, in elements, of `shape`.
fn contiguous_strides(shape: &[i64]) -> Vec<i64> {
    let mut strides = vec![1; shape.len()];
    for axis in (0..shape.len().saturating_sub(1)).rev() {
        strides[axis] = strides[axis + 1] * shape[axis + 1];
    }
    strides
}

/// The libtorch kind for a checkpoint dtype; GPT-2 weights are floating point.
fn kind_of(name: &str, view: &TensorView, origin: &Path) -> Result<Kind> {
    Ok(match view.dtype() {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        other => bail!(
            "{}: tensor {name} has dtype {other:?}; GPT-2 weights must be F32, F16 or BF16: re-save the model in float32",
            origin.display()
        ),
    })
}

/// Maps a weights file read-only.
fn map_file(path: &Path) -> Result<Mmap> {
    let shown = path.display();
    let file = File::open(path).map_err(|error| anyhow!("cannot open weights {shown}: {error}; check the model directory"))?;
    if file.metadata().is_ok_and(|metadata| metadata.is_dir()) {
        bail!("weights {shown} is a directory, not a safetensors file; re-download or re-save the model");
    }
    // SAFETY: the map is read-only; a checkpoint rewritten under a running check is a misuse
    // that at worst yields wrong numbers, which the digest recorded in the report exposes.
    unsafe { Mmap::map(&file) }.with_context(|| format!("cannot map {shown}"))
}

/// The remembered digest of a file that is not otherwise mapped (a pickle before conversion).
fn digest_of_file(path: &Path) -> Result<String> {
    let map = map_file(path)?;
    Ok(file_digest(path, FileBytes::Mapped(&map)))
}

/// A sharded checkpoint's digest: `sha256-shards:` and the sha256 of one line per shard, in
/// shard file name order, `<file name> sha256:<hex of the shard's bytes>\n`. Each shard's own
/// digest is remembered like a single file's, so only new shards are hashed.
fn sharded_digest(shards: &[Shard]) -> String {
    let mut lines = Sha256::new();
    for shard in shards {
        let name = shard.path.file_name().map(|name| name.to_string_lossy()).unwrap_or_default();
        lines.update(format!("{name} {}\n", file_digest(&shard.path, FileBytes::Mapped(&shard.map))).as_bytes());
    }
    format!("sha256-shards:{:x}", lines.finalize())
}
