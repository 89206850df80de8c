//! The commands: each wires the stages (resolve, load, reference, forward, compare, report)
//! in one straight line and returns whether parity holds.
pub mod candidate;
mod cases;
pub mod compare;
mod comparer;
pub mod explain;
pub mod merge;
mod passes;
pub mod reference;
pub mod rounding;
pub mod spill;

use anyhow::Result;
use tch::Tensor;

use crate::model::dtype::Dtype;
use crate::model::inputs::ModelInputs;
use crate::model::load::Checkpoint;
use crate::model::Weights;

/// The model's weights on `device`, in `dtype`.
fn load_weights(inputs: &ModelInputs, checkpoint: Checkpoint, device: tch::Device, dtype: Dtype) -> Result<Weights> {
    let weights = checkpoint.into_weights(&inputs.config, device)?;
    Ok(weights.map(|tensor| tensor.to_kind(dtype.kind())))
}

/// A progress bar on stderr counting `len` forward passes, with their rate and the time left;
/// drawn only when stderr is a terminal, so logs and pipes never see it.
fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} forward passes, {per_sec}, ETA {eta}") {
        bar.set_style(style);
    }
    bar
}

/// A tensor's values, row-major, on the CPU, as float32 (the statistics' input whatever the
/// model's dtype; a float64 run's values are rounded once here).
fn to_vec(tensor: &Tensor) -> Vec<f32> {
    values(tensor)
}

/// A tensor's values, row-major, on the CPU, as `T`, copied into memory that is not cleared
/// first: tch's conversion fills a zeroed vector, and jemalloc gets a large zeroed block by
/// handing its pages back to the kernel, so every prompt's logits faulted in fresh pages (100
/// prompts of 64 tokens, GPT-2 small's shape: 1.2 million page faults, 0.43 million now).
fn values<T: tch::kind::Element + Copy>(tensor: &Tensor) -> Vec<T> {
    let flat = tensor.to_device(tch::Device::Cpu).to_kind(T::KIND).contiguous();
    let len = flat.numel();
    if len == 0 {
        return Vec::new();
    }
    // SAFETY: a contiguous CPU tensor of T's kind holds `len` values of T from its data pointer;
    // `flat` lives until the copy is made.
    unsafe { std::slice::from_raw_parts(flat.data_ptr() as *const T, len) }.to_vec()
}
