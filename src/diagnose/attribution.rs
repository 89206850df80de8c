//! Attributes the processed-vs-unprocessed difference to TransformerLens's processing steps:
//! what each step changes in the weights, what it does to the logits, and which share of the
//! whole raw difference it accounts for (diagnose::prose puts it in sentences).
use rayon::prelude::*;
use tch::kind::Element;
use tch::{Device, Kind, Tensor};

use crate::model::switches::Step;
use crate::numeric::kernel::LANES;
use crate::schema::attribution::{LogitEffect, PromptEffect, RowKind, StepRow, TensorChange};
use crate::schema::{Comparison, Tolerance};

impl LogitEffect {
    fn judge(max_abs_diff: f64, shift_spread: f64, tolerance: Tolerance) -> Self {
        if max_abs_diff <= tolerance.atol {
            LogitEffect::Unchanged
        } else if shift_spread <= tolerance.atol {
            LogitEffect::PureShift
        } else {
            LogitEffect::ChangesDistribution
        }
    }
}

impl PromptEffect {
    /// `comparison` compares the row's logits with the unprocessed ones; the slices give the share.
    pub fn new(comparison: &Comparison, row_logits: &[f32], unprocessed: &[f32], fully_processed: &[f32]) -> Self {
        Self {
            max_abs_diff: comparison.max_abs_diff,
            shift_spread: comparison.centered_max_abs_diff,
            log_softmax_max_abs_diff: comparison.log_softmax_max_abs_diff,
            top1_agreement: comparison.top1_agreement,
            share_of_raw_difference: share_of_difference(row_logits, unprocessed, fully_processed),
            position_shift: comparison.position_shift.clone(),
        }
    }
}

impl StepRow {
    pub fn new(
        name: String,
        kind: RowKind,
        steps: Vec<Step>,
        changed_tensors: Vec<TensorChange>,
        per_prompt: Vec<PromptEffect>,
        tolerance: Tolerance,
    ) -> Self {
        let max = |field: fn(&PromptEffect) -> f64| per_prompt.iter().map(field).fold(0.0, f64::max);
        let min = |field: fn(&PromptEffect) -> f64| per_prompt.iter().map(field).fold(f64::INFINITY, f64::min);
        let shift_spread = max(|effect| effect.shift_spread);
        Self {
            name,
            kind,
            steps,
            changed_tensors,
            max_abs_diff: max(|effect| effect.max_abs_diff),
            shift_spread,
            logit_effect: LogitEffect::judge(max(|effect| effect.max_abs_diff), shift_spread, tolerance),
            log_softmax_max_abs_diff: max(|effect| effect.log_softmax_max_abs_diff),
            top1_agreement: min(|effect| effect.top1_agreement),
            min_share_of_raw_difference: min(|effect| effect.share_of_raw_difference),
            per_prompt,
        }
    }
}

/// <row - base, total - base> / ||total - base||²; 0 when processing changes nothing.
fn share_of_difference(row: &[f32], base: &[f32], total: &[f32]) -> f64 {
    let (mut dot, mut norm2) = (0.0f64, 0.0f64);
    for ((&r, &b), &t) in row.iter().zip(base).zip(total) {
        let (row_delta, total_delta) = (f64::from(r) - f64::from(b), f64::from(t) - f64::from(b));
        dot += row_delta * total_delta;
        norm2 += total_delta * total_delta;
    }
    if norm2 > 0.0 {
        dot / norm2
    } else {
        0.0
    }
}

/// Relative Frobenius change of one tensor, ||after - before|| / max(||before||, ||after||); 0
/// when both are zero, with ||before||² given as [`squared_norm`] sums it (explain compares each
/// unprocessed tensor with several processed ones, and sums its squares once). Computed in
/// float64 passes over the tensors' values, making no difference tensor: explain asks this of
/// every changed tensor of every row, 124M values a row for GPT-2 small.
pub fn relative_change_from(before: &Tensor, before_norm2: f64, after: &Tensor) -> f64 {
    let [change, after_norm2] = match before.kind() {
        Kind::Double => in_blocks::<f64, 2>(before, after, change_lanes),
        _ => in_blocks::<f32, 2>(before, after, change_lanes),
    };
    let scale = before_norm2.sqrt().max(after_norm2.sqrt());
    if scale > 0.0 {
        change.sqrt() / scale
    } else {
        0.0
    }
}

/// Σ value² over a tensor, in float64.
pub fn squared_norm(tensor: &Tensor) -> f64 {
    let [norm2] = match tensor.kind() {
        Kind::Double => in_blocks::<f64, 1>(tensor, tensor, norm_lanes),
        _ => in_blocks::<f32, 1>(tensor, tensor, norm_lanes),
    };
    norm2
}

/// Values per task of [`in_blocks`]: a multiple of [`LANES`], so that every block but the last
/// fills its lanes evenly.
const BLOCK: usize = 1 << 16;

/// `N` sums over two tensors (same shape) read as `T` (float32 holds float16 and bfloat16
/// exactly), `lanes` summing one block's values in eight lanes. Blocks of [`BLOCK`] values run
/// on every core, and the blocks' lanes combine in block order: the figures depend on the
/// values alone, not on the thread count.
fn in_blocks<T: Element + Copy + Sync, const N: usize>(
    before: &Tensor,
    after: &Tensor,
    lanes: fn(&[T], &[T]) -> [[f64; LANES]; N],
) -> [f64; N] {
    let host = |tensor: &Tensor| tensor.to_device(Device::Cpu).to_kind(T::KIND).contiguous();
    let (before, after) = (host(before), host(after));
    // SAFETY: both tensors are contiguous CPU tensors of T's kind, alive for these borrows, with
    // numel() values each; nothing writes to them meanwhile.
    let values = |tensor: &Tensor| unsafe { std::slice::from_raw_parts(tensor.data_ptr() as *const T, tensor.numel()) };
    let blocks: Vec<[[f64; LANES]; N]> =
        values(&before).par_chunks(BLOCK).zip(values(&after).par_chunks(BLOCK)).map(|(b, a)| lanes(b, a)).collect();
    let mut totals = [[0.0f64; LANES]; N];
    for block in &blocks {
        for (total, lanes) in totals.iter_mut().zip(block) {
            for (total, lane) in total.iter_mut().zip(lanes) {
                *total += lane;
            }
        }
    }
    totals.map(|lanes| lanes.iter().fold(0.0, |total, lane| total + lane))
}

/// One block's [Σ(after - before)², Σafter²], each in eight lanes.
fn change_lanes<T: Copy + Into<f64>>(before: &[T], after: &[T]) -> [[f64; LANES]; 2] {
    let mut sums = [[0.0f64; LANES]; 2];
    let (before_chunks, after_chunks) = (before.chunks_exact(LANES), after.chunks_exact(LANES));
    for (lane, (&b, &a)) in before_chunks.remainder().iter().zip(after_chunks.remainder()).enumerate() {
        add_change(&mut sums, lane, b.into(), a.into());
    }
    // Plain loops and inlined functions, not closures: a closure here was called per value
    // rather than vectorised (a quarter of explain's CPU time on "Hello World").
    for (b, a) in before_chunks.zip(after_chunks) {
        for lane in 0..LANES {
            add_change(&mut sums, lane, b[lane].into(), a[lane].into());
        }
    }
    sums
}

#[inline(always)]
fn add_change([change, after_norm2]: &mut [[f64; LANES]; 2], lane: usize, b: f64, a: f64) {
    change[lane] += (a - b) * (a - b);
    after_norm2[lane] += a * a;
}

/// One block's Σvalue² in eight lanes (the second slice is the same values, unread).
fn norm_lanes<T: Copy + Into<f64>>(values: &[T], _: &[T]) -> [[f64; LANES]; 1] {
    let mut sums = [[0.0f64; LANES]; 1];
    let chunks = values.chunks_exact(LANES);
    for (lane, &value) in chunks.remainder().iter().enumerate() {
        add_square(&mut sums, lane, value.into());
    }
    for values in chunks {
        for (lane, &value) in values.iter().enumerate() {
            add_square(&mut sums, lane, value.into());
        }
    }
    sums
}

#[inline(always)]
fn add_square([norm2]: &mut [[f64; LANES]; 1], lane: usize, value: f64) {
    norm2[lane] += value * value;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relative_change(before: &Tensor, after: &Tensor) -> f64 {
        relative_change_from(before, squared_norm(before), after)
    }

    /// The one-pass float64 sums agree with the definition computed by libtorch, for float32,
    /// float64 and a transposed (non-contiguous) view.
    #[test]
    fn relative_change_is_the_relative_frobenius_distance() {
        // Irregular values without libtorch's global generator, which concurrent tests reseed.
        let wave = |frequency: f64| (Tensor::arange(37 * 53, (Kind::Double, Device::Cpu)) * frequency).sin().reshape([37, 53]);
        let before = wave(0.7);
        let after = &before + wave(1.3) * 0.01;
        let definition = |before: &Tensor, after: &Tensor| {
            let norm = |tensor: &Tensor| tensor.to_kind(Kind::Double).norm().double_value(&[]);
            norm(&(after.to_kind(Kind::Double) - before.to_kind(Kind::Double))) / norm(before).max(norm(after))
        };
        for kind in [Kind::Double, Kind::Float] {
            let (before, after) = (before.to_kind(kind), after.to_kind(kind));
            let expected = definition(&before, &after);
            assert!((relative_change(&before, &after) - expected).abs() <= 1e-12 * expected, "{kind:?}");
            let transposed = relative_change(&before.tr(), &after.tr().contiguous());
            assert!((transposed - expected).abs() <= 1e-12 * expected, "{kind:?} transposed");
        }
        assert_eq!(relative_change(&before, &before), 0.0);
        let zeros = before.zeros_like();
        assert_eq!(relative_change(&zeros, &zeros), 0.0);
    }

    /// Blocks run on every core, yet the figure is the same bits on any number of threads (a
    /// tensor of several blocks and a partial one).
    #[test]
    fn relative_change_does_not_depend_on_the_thread_count() {
        let values = 3 * BLOCK + 1001;
        let wave = |frequency: f64| (Tensor::arange(values as i64, (Kind::Double, Device::Cpu)) * frequency).sin();
        let (before, after) = (wave(0.3).to_kind(Kind::Float), (wave(0.3) + wave(2.9) * 1e-3).to_kind(Kind::Float));
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let (before, after) = (before.shallow_clone(), after.shallow_clone());
            pool.install(move || relative_change(&before, &after)).to_bits()
        };
        let one = on(1);
        for threads in [2, 3, 8] {
            assert_eq!(on(threads), one, "{threads} threads");
        }
    }
}
