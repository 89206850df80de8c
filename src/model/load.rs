//! Reads a GPT-2 checkpoint from `model.safetensors` into [`Weights`], memory-mapping the file
//! and copying each tensor once into libtorch. `VarStore::load` would silently skip unknown
//! names and adopt the file's dtype, so every name, shape and dtype is audited here instead.
use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use memmap2::Mmap;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

use super::{Affine, Block, Gpt2Config, Unembed, Weights};
use crate::cache::file_digest;
use crate::timings::{timed, Phase};

/// A checkpoint file opened for reading, with its content digest.
pub struct Checkpoint {
    map: Mmap,
    /// `sha256:<hex>` of the file's bytes, as recorded in references.
    pub digest: String,
}

impl Checkpoint {
    /// Opens `path`, hashes it and checks that it is a readable safetensors file (header and
    /// tensor offsets; no tensor is copied), so that a truncated or corrupt download is named
    /// as such before anything else looks at it.
    pub fn open(path: &Path) -> Result<Self> {
        let map = timed(Phase::ModelLoad, || map_file(path))?;
        let digest = timed(Phase::Digest, || file_digest(path, &map[..]));
        let checkpoint = Self { map, digest };
        timed(Phase::ModelLoad, || checkpoint.tensors(path))?;
        Ok(checkpoint)
    }

    fn tensors(&self, origin: &Path) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.map)
            .map_err(|error| anyhow!("{} is not a readable safetensors file ({error}); re-download or re-save the model", origin.display()))
    }

    /// Checks every tensor's presence, shape and dtype against `config`, and that no unknown
    /// tensor is left over, without copying anything into libtorch: cheap enough to run before
    /// any other work, so that a checkpoint that does not fit its config.json fails first.
    pub fn audit(&self, config: &Gpt2Config, origin: &Path) -> Result<()> {
        timed(Phase::ModelLoad, || self.check(config, origin))
    }

    fn check(&self, config: &Gpt2Config, origin: &Path) -> Result<()> {
        let tensors = self.tensors(origin)?;
        let mut reader = TensorReader::new(&tensors, origin, Device::Cpu);
        for (name, shape) in expected_tensors(config) {
            reader.view(&name, &shape)?;
        }
        reader.finish(config)
    }

    /// Builds the weights on `device`, naming any missing, unexpected or misshapen tensor. Takes
    /// the checkpoint so that its map (as large as the model) is released once the tensors hold
    /// their copies.
    pub fn into_weights(self, config: &Gpt2Config, origin: &Path, device: Device) -> Result<Weights> {
        timed(Phase::ModelLoad, || self.build(config, origin, device))
    }

    fn build(self, config: &Gpt2Config, origin: &Path, device: Device) -> Result<Weights> {
        self.check(config, origin)?;
        let tensors = self.tensors(origin)?;
        let mut reader = TensorReader::new(&tensors, origin, device);
        let (v, p, d, m) = (config.vocab_size, config.n_positions, config.n_embd, config.mlp_width());
        let blocks = (0..config.n_layer)
            .map(|l| {
                let mut get = |name: &str, shape: &[i64]| reader.take(&format!("h.{l}.{name}"), shape);
                Ok(Block {
                    ln_1: Some(Affine { weight: get("ln_1.weight", &[d])?, bias: get("ln_1.bias", &[d])? }),
                    qkv_weight: get("attn.c_attn.weight", &[d, 3 * d])?,
                    qkv_bias: get("attn.c_attn.bias", &[3 * d])?,
                    attn_out_weight: get("attn.c_proj.weight", &[d, d])?,
                    attn_out_bias: get("attn.c_proj.bias", &[d])?,
                    ln_2: Some(Affine { weight: get("ln_2.weight", &[d])?, bias: get("ln_2.bias", &[d])? }),
                    mlp_in_weight: get("mlp.c_fc.weight", &[d, m])?,
                    mlp_in_bias: get("mlp.c_fc.bias", &[m])?,
                    mlp_out_weight: get("mlp.c_proj.weight", &[m, d])?,
                    mlp_out_bias: get("mlp.c_proj.bias", &[d])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let weights = Weights {
            config: config.clone(),
            token_embedding: reader.take("wte.weight", &[v, d])?,
            position_embedding: reader.take("wpe.weight", &[p, d])?,
            blocks,
            ln_f: Some(Affine { weight: reader.take("ln_f.weight", &[d])?, bias: reader.take("ln_f.bias", &[d])? }),
            unembed: Unembed::Tied,
        };
        reader.finish(config)?;
        Ok(weights)
    }
}

/// Every tensor GPT-2 needs, by its layout-independent name, with the shape `config` implies.
fn expected_tensors(config: &Gpt2Config) -> Vec<(String, Vec<i64>)> {
    let (v, p, d, m) = (config.vocab_size, config.n_positions, config.n_embd, config.mlp_width());
    let mut expected = vec![("wte.weight".to_owned(), vec![v, d]), ("wpe.weight".to_owned(), vec![p, d])];
    for l in 0..config.n_layer {
        for (name, shape) in [
            ("ln_1.weight", vec![d]),
            ("ln_1.bias", vec![d]),
            ("attn.c_attn.weight", vec![d, 3 * d]),
            ("attn.c_attn.bias", vec![3 * d]),
            ("attn.c_proj.weight", vec![d, d]),
            ("attn.c_proj.bias", vec![d]),
            ("ln_2.weight", vec![d]),
            ("ln_2.bias", vec![d]),
            ("mlp.c_fc.weight", vec![d, m]),
            ("mlp.c_fc.bias", vec![m]),
            ("mlp.c_proj.weight", vec![m, d]),
            ("mlp.c_proj.bias", vec![d]),
        ] {
            expected.push((format!("h.{l}.{name}"), shape));
        }
    }
    expected.push(("ln_f.weight".to_owned(), vec![d]));
    expected.push(("ln_f.bias".to_owned(), vec![d]));
    expected
}

/// Hands out tensors by their layout-independent name and remembers which names were used.
struct TensorReader<'a> {
    tensors: &'a SafeTensors<'a>,
    origin: &'a Path,
    device: Device,
    /// "" for the Hub's own GPT-2 files, "transformer." for `save_pretrained` output.
    prefix: &'static str,
    unused: BTreeSet<String>,
}

impl<'a> TensorReader<'a> {
    fn new(tensors: &'a SafeTensors<'a>, origin: &'a Path, device: Device) -> Self {
        let unused: BTreeSet<String> = tensors.names().into_iter().map(str::to_owned).collect();
        let prefix = if unused.contains("transformer.wte.weight") { "transformer." } else { "" };
        Self { tensors, origin, device, prefix, unused }
    }

    /// The view of tensor `name`, its shape and dtype checked; marks the name as used.
    fn view(&mut self, name: &str, shape: &[i64]) -> Result<(String, TensorView<'a>)> {
        let full_name = format!("{}{name}", self.prefix);
        let view = self.tensors.tensor(&full_name).map_err(|_| {
            anyhow!(
                "{}: tensor {full_name} is missing; is this a GPT-2 checkpoint matching its config.json? re-download or re-save the model",
                self.origin.display()
            )
        })?;
        self.unused.remove(&full_name);
        self.check_shape(&full_name, &view, shape)?;
        kind_of(&full_name, &view, self.origin)?;
        Ok((full_name, view))
    }

    fn take(&mut self, name: &str, shape: &[i64]) -> Result<Tensor> {
        let (full_name, view) = self.view(name, shape)?;
        self.to_tensor(&full_name, &view, shape)
    }

    fn check_shape(&self, name: &str, view: &TensorView, shape: &[i64]) -> Result<()> {
        let found: Vec<i64> = view.shape().iter().map(|&n| n as i64).collect();
        if found != shape {
            bail!(
                "{}: tensor {name} has shape {found:?}, config.json implies {shape:?}; the weights and config.json disagree",
                self.origin.display()
            );
        }
        Ok(())
    }

    fn to_tensor(&self, name: &str, view: &TensorView, shape: &[i64]) -> Result<Tensor> {
        let kind = kind_of(name, view, self.origin)?;
        let tensor = Tensor::f_from_data_size(view.data(), shape, kind)
            .with_context(|| format!("{}: cannot read tensor {name}", self.origin.display()))?;
        Ok(tensor.to_kind(Kind::Float).to_device(self.device))
    }

    /// Refuses leftover tensors, except the causal-mask buffers and a tied LM head.
    fn finish(self, config: &Gpt2Config) -> Result<()> {
        let prefix = self.prefix;
        let ignorable = |name: &str| {
            let name = name.strip_prefix(prefix).unwrap_or(name);
            name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") || name == "lm_head.weight"
        };
        if let Some(name) = self.unused.iter().find(|name| !ignorable(name)) {
            bail!(
                "{}: unexpected tensor {name} ({} tensors not used); is this a GPT-2 checkpoint matching its config.json?",
                self.origin.display(),
                self.unused.len()
            );
        }
        if let Ok(lm_head) = self.tensors.tensor("lm_head.weight") {
            self.check_shape("lm_head.weight", &lm_head, &[config.vocab_size, config.n_embd])?;
        }
        Ok(())
    }
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

/// Maps the weights file read-only.
fn map_file(path: &Path) -> Result<Mmap> {
    let shown = path.display();
    let file = File::open(path).map_err(|error| anyhow!("cannot open weights {shown}: {error}; check the model directory"))?;
    if file.metadata().is_ok_and(|metadata| metadata.is_dir()) {
        bail!("weights {shown} is a directory, not a safetensors file; re-download or re-save the model");
    }
    // SAFETY: the map is read-only; a checkpoint rewritten under a running check is a misuse
    // that at worst yields wrong numbers, which the digest recorded in the report exposes.
    let map = unsafe { Mmap::map(&file) }.with_context(|| format!("cannot map {shown}"))?;
    Ok(map)
}
