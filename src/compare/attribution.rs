//! Attributes the processed-vs-unprocessed difference to TransformerLens's processing steps:
//! what each step changes in the weights, what it does to the logits, and which share of the
//! whole raw difference it accounts for, ending in plain sentences.
use serde::{Deserialize, Serialize};

use tch::kind::Element;
use tch::{Device, Kind, Tensor};

use super::diagnose::sci;
use super::kernel::LANES;
use super::{Comparison, Tolerance};
use crate::model::process::Step;

/// How a row's weights were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// No step: only the untied unembedding every processed model has.
    Baseline,
    /// One step on its own.
    Alone,
    /// The steps so far, in TransformerLens's order.
    Accumulated,
}

/// What a row does to the logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogitEffect {
    /// Every logit within atol of the unprocessed one.
    Unchanged,
    /// Logits move, but each position by one constant (spread within atol): softmax unchanged.
    PureShift,
    /// The spread exceeds atol: the next-token distribution changes.
    ChangesDistribution,
}

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

/// One tensor a row's processing changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TensorChange {
    pub tensor: String,
    /// ||after - before|| / max(||before||, ||after||), Frobenius norms: 0 unchanged, up to 2.
    #[serde(deserialize_with = "crate::report::nullable::number")]
    pub relative_change: f64,
}

/// A row's effect on one prompt, against the unprocessed model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PromptEffect {
    #[serde(deserialize_with = "crate::report::nullable::number")]
    pub max_abs_diff: f64,
    /// Max over positions of the difference's spread across the vocabulary once its per-position
    /// mean is removed: 0 for a pure per-position shift.
    #[serde(deserialize_with = "crate::report::nullable::number")]
    pub shift_spread: f64,
    #[serde(deserialize_with = "crate::report::nullable::number")]
    pub log_softmax_max_abs_diff: f64,
    #[serde(deserialize_with = "crate::report::nullable::number")]
    pub top1_agreement: f64,
    /// <Δ_row, Δ_all> / ||Δ_all||², Δ = logits minus unprocessed logits, Δ_all for all steps:
    /// the share of the whole raw difference this row accounts for.
    #[serde(deserialize_with = "crate::report::nullable::number")]
    pub share_of_raw_difference: f64,
    /// Per position, the mean of the difference over the vocabulary.
    #[serde(deserialize_with = "crate::report::nullable::numbers")]
    pub position_shift: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRow {
    pub name: String,
    pub kind: RowKind,
    pub steps: Vec<Step>,
    pub changed_tensors: Vec<TensorChange>,
    /// Over all prompts: the largest |diff|, spread and log-softmax |diff|; the smallest top-1
    /// agreement and share.
    #[serde(deserialize_with = "crate::report::nullable::number")]
    pub max_abs_diff: f64,
    #[serde(deserialize_with = "crate::report::nullable::number")]
    pub shift_spread: f64,
    /// What the row does to the logits, judged with atol.
    pub logit_effect: LogitEffect,
    #[serde(deserialize_with = "crate::report::nullable::number")]
    pub log_softmax_max_abs_diff: f64,
    #[serde(deserialize_with = "crate::report::nullable::number")]
    pub top1_agreement: f64,
    #[serde(deserialize_with = "crate::report::nullable::number")]
    pub min_share_of_raw_difference: f64,
    pub per_prompt: Vec<PromptEffect>,
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

impl StepRow {
    /// "fold_ln + center_unembed", or "no processing".
    pub fn step_names(&self) -> String {
        if self.steps.is_empty() {
            return "no processing".to_owned();
        }
        self.steps.iter().map(|step| step.name()).collect::<Vec<_>>().join(" + ")
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
/// when both are zero. Computed in one float64 pass over the two tensors' values, making no
/// difference tensor: explain asks this of every changed tensor of every row, 124M values a row
/// for GPT-2 small.
pub fn relative_change(before: &Tensor, after: &Tensor) -> f64 {
    let (change, before_norm2, after_norm2) = match before.kind() {
        Kind::Double => squared_sums::<f64>(before, after),
        _ => squared_sums::<f32>(before, after),
    };
    let scale = before_norm2.sqrt().max(after_norm2.sqrt());
    if scale > 0.0 {
        change.sqrt() / scale
    } else {
        0.0
    }
}

/// Σ(after - before)², Σbefore², Σafter² over the two tensors (same shape) read as `T` (float32
/// holds float16 and bfloat16 exactly), each in eight lanes added in a fixed order.
fn squared_sums<T: Element + Copy + Into<f64>>(before: &Tensor, after: &Tensor) -> (f64, f64, f64) {
    let host = |tensor: &Tensor| tensor.to_device(Device::Cpu).to_kind(T::KIND).contiguous();
    let (before, after) = (host(before), host(after));
    // SAFETY: both tensors are contiguous CPU tensors of T's kind, alive for these borrows, with
    // numel() values each; nothing writes to them meanwhile.
    let values = |tensor: &Tensor| unsafe { std::slice::from_raw_parts(tensor.data_ptr() as *const T, tensor.numel()) };
    let (before_values, after_values) = (values(&before), values(&after));
    let (mut change, mut before_norm2, mut after_norm2) = ([0.0f64; LANES], [0.0f64; LANES], [0.0f64; LANES]);
    let mut add = |lane: usize, b: T, a: T| {
        let (b, a): (f64, f64) = (b.into(), a.into());
        change[lane] += (a - b) * (a - b);
        before_norm2[lane] += b * b;
        after_norm2[lane] += a * a;
    };
    let (before_chunks, after_chunks) = (before_values.chunks_exact(LANES), after_values.chunks_exact(LANES));
    for (lane, (&b, &a)) in before_chunks.remainder().iter().zip(after_chunks.remainder()).enumerate() {
        add(lane, b, a);
    }
    for (b, a) in before_chunks.zip(after_chunks) {
        for lane in 0..LANES {
            add(lane, b[lane], a[lane]);
        }
    }
    let sum = |lanes: [f64; LANES]| lanes.iter().fold(0.0, |total, lane| total + lane);
    (sum(change), sum(before_norm2), sum(after_norm2))
}

/// Plain sentences: which step accounts for the raw difference, and what the rest do to
/// log-probabilities.
pub fn conclusions(rows: &[StepRow], tolerance: Tolerance) -> Vec<String> {
    let alone: Vec<&StepRow> = rows.iter().filter(|row| row.kind == RowKind::Alone).collect();
    let mut sentences = Vec::new();
    let dominant = alone.iter().copied().max_by(|a, b| a.min_share_of_raw_difference.total_cmp(&b.min_share_of_raw_difference));
    if let Some(dominant) = dominant.filter(|row| row.min_share_of_raw_difference >= 0.9999) {
        let shift = dominant.per_prompt.first().map(|effect| describe_shift(&effect.position_shift)).unwrap_or_default();
        let kind = match dominant.logit_effect {
            LogitEffect::PureShift => "every position shifted by minus its mean over the vocabulary",
            _ => "and it is not a pure per-position shift",
        };
        let others = alone.iter().filter(|row| row.name != dominant.name).map(|row| row.log_softmax_max_abs_diff).fold(0.0, f64::max);
        sentences.push(format!(
            "{} accounts for the whole raw difference (at least {:.2}% on every prompt): {kind} ({shift}); all other steps change \
             log-probabilities by at most {}.",
            dominant.step_names(),
            100.0 * dominant.min_share_of_raw_difference,
            sci(others)
        ));
    } else if let Some(dominant) = dominant {
        sentences.push(format!(
            "No single step accounts for the whole raw difference; {} accounts for the most (at least {:.2}% on every prompt).",
            dominant.step_names(),
            100.0 * dominant.min_share_of_raw_difference
        ));
    }
    for row in &alone {
        if row.log_softmax_max_abs_diff > tolerance.atol {
            sentences.push(format!(
                "{} changes log-probabilities by up to {} (top-1 agreement {:.0}%): it should leave them unchanged, so this is a bug \
                 in the processing or a loss of precision.",
                row.step_names(),
                sci(row.log_softmax_max_abs_diff),
                100.0 * row.top1_agreement
            ));
        }
    }
    if let Some(all) = rows.iter().rev().find(|row| row.kind == RowKind::Accumulated) {
        sentences.push(format!(
            "All steps together: raw max |diff| {}, log-probabilities within {}, top-1 agreement {:.0}%.",
            sci(all.max_abs_diff),
            sci(all.log_softmax_max_abs_diff),
            100.0 * all.top1_agreement
        ));
    }
    sentences
}

/// "-59.52 at position 0, -60.01 at position 1, ..." (the first three positions).
pub fn describe_shift(shift: &[f64]) -> String {
    let shown: Vec<String> =
        shift.iter().take(3).enumerate().map(|(position, value)| format!("{value:.4} at position {position}")).collect();
    let more = if shift.len() > 3 { ", ..." } else { "" };
    format!("{}{more}", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass float64 sums agree with the definition computed by libtorch, for float32,
    /// float64 and a transposed (non-contiguous) view.
    #[test]
    fn relative_change_is_the_relative_frobenius_distance() {
        let before = Tensor::randn([37, 53], (Kind::Double, Device::Cpu));
        let after = &before + Tensor::randn([37, 53], (Kind::Double, Device::Cpu)) * 0.01;
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
}
