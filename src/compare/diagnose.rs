//! What a difference most likely means, in plain words: the expected per-position shift of
//! center_unembed (not a bug), or for a failing comparison the most likely cause this tool can
//! detect (a shift, a shift plus a scale, one position far off, a permuted vocabulary,
//! non-finite values), else where in the residual stream it starts.
use serde::Serialize;

use super::attribution::describe_shift;
use super::stats::{finite_mean, DiffLocation};
use super::{Comparison, Criterion, Tolerance};

/// The most likely cause of a failing comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cause {
    /// NaN or infinite values.
    NonFinite { count: usize, first_at: Option<DiffLocation> },
    /// Every position shifted by its own constant; softmax unchanged.
    PerPositionShift,
    /// A per-position shift and one common scale factor (candidate ≈ scale × reference + shift).
    ShiftAndScale { scale: f64 },
    /// Only one position is outside tolerance.
    SinglePosition { position: usize },
    /// Each position holds the reference's values in another vocabulary order.
    PermutedVocabulary,
}

impl Cause {
    fn sentence(&self) -> String {
        match self {
            Cause::NonFinite { count, first_at } => {
                let at =
                    first_at.as_ref().map(|at| format!(", the first at position {} token {} {:?}", at.position, at.token_id, at.token));
                format!("{count} values are NaN or infinite{}; non-finite logits always fail.", at.unwrap_or_default())
            }
            Cause::PerPositionShift => "the logits differ only by a per-position shift; softmax is unchanged. Was one side made with \
                TransformerLens's center_unembed (e.g. HookedTransformer.from_pretrained instead of from_pretrained_no_processing)?"
                .to_owned(),
            Cause::ShiftAndScale { scale } => format!(
                "the logits match up to a per-position shift and a common scale of {scale:.6}: a temperature, a LayerNorm gain or an \
                 unembedding scaled on one side?"
            ),
            Cause::SinglePosition { position } => format!(
                "only position {position} is outside tolerance; all others agree. A position-specific input (the first token, BOS, \
                 a position embedding row) differs."
            ),
            Cause::PermutedVocabulary => "each position holds the same values in another vocabulary order, and the argmax disagrees: a \
                transposed or permuted vocabulary (another tokenizer, or the unembedding read the wrong way)."
                .to_owned(),
        }
    }
}

/// Detects the most likely cause of a failing comparison, checking the specific causes first.
pub fn likely_cause(comparison: &Comparison, candidate: &[f32], reference: &[f32], vocab: usize, tolerance: Tolerance) -> Option<Cause> {
    if comparison.non_finite > 0 {
        return Some(Cause::NonFinite { count: comparison.non_finite, first_at: comparison.first_non_finite_at.clone() });
    }
    if comparison.criterion == Criterion::Raw && comparison.centered_violations == 0 {
        return Some(Cause::PerPositionShift);
    }
    if let Some(scale) = common_scale(candidate, reference, vocab, tolerance) {
        return Some(Cause::ShiftAndScale { scale });
    }
    let positions = candidate.len() / vocab;
    if let [position] = comparison.positions_outside[..] {
        if positions > 1 {
            return Some(Cause::SinglePosition { position });
        }
    }
    if comparison.top1_agreement == 0.0 && same_values_per_position(candidate, reference, vocab, tolerance) {
        return Some(Cause::PermutedVocabulary);
    }
    None
}

/// The least-squares scale s with candidate - shift ≈ s × (reference - shift), when it explains
/// every element within tolerance and is not 1.
fn common_scale(candidate: &[f32], reference: &[f32], vocab: usize, tolerance: Tolerance) -> Option<f64> {
    let centered_rows =
        || candidate.chunks_exact(vocab).zip(reference.chunks_exact(vocab)).map(|(c, r)| (c, finite_mean(c), r, finite_mean(r)));
    let (mut cross, mut square) = (0.0, 0.0);
    for (c_row, c_mean, r_row, r_mean) in centered_rows() {
        for (&c, &r) in c_row.iter().zip(r_row) {
            let (c, r) = (f64::from(c) - c_mean, f64::from(r) - r_mean);
            cross += c * r;
            square += r * r;
        }
    }
    let scale = cross / square;
    if !scale.is_finite() || (scale - 1.0).abs() < 1e-6 {
        return None;
    }
    let explained = centered_rows().all(|(c_row, c_mean, r_row, r_mean)| {
        c_row.iter().zip(r_row).all(|(&c, &r)| {
            let (c, r) = (f64::from(c), f64::from(r));
            tolerance.allows_diff((c - c_mean) - scale * (r - r_mean), r)
        })
    });
    explained.then_some(scale)
}

/// True when every position's sorted values agree within tolerance.
fn same_values_per_position(candidate: &[f32], reference: &[f32], vocab: usize, tolerance: Tolerance) -> bool {
    candidate.chunks_exact(vocab).zip(reference.chunks_exact(vocab)).all(|(c_row, r_row)| {
        let sorted = |row: &[f32]| {
            let mut row = row.to_vec();
            row.sort_by(f32::total_cmp);
            row
        };
        sorted(c_row).iter().zip(sorted(r_row)).all(|(&c, r)| tolerance.allows(f64::from(c), f64::from(r)))
    })
}

/// One sentence per finding, in table order.
pub fn explain(comparisons: &[Comparison]) -> Vec<String> {
    let mut shift_explained = false;
    comparisons
        .iter()
        .filter_map(|comparison| {
            let is_expected_shift = expected_shift(comparison);
            // One sentence about center_unembed's shift per prompt is enough.
            let repeat = is_expected_shift && std::mem::replace(&mut shift_explained, true);
            if repeat {
                None
            } else {
                explain_one(comparison)
            }
        })
        .collect()
}

/// A shift-invariant comparison that passes only because the shift is removed.
fn expected_shift(comparison: &Comparison) -> bool {
    comparison.criterion == Criterion::ShiftInvariant && comparison.passed && comparison.violations > 0
}

fn explain_one(comparison: &Comparison) -> Option<String> {
    let name = &comparison.name;
    if expected_shift(comparison) {
        return Some(format!(
            "{name}: the raw max |diff| {} is center_unembed's shift of every position by minus its mean over the vocabulary ({}); \
             with that removed the logits agree to {}, and softmax, log-probabilities and argmax are unchanged. Not a bug.",
            sci(comparison.max_abs_diff),
            describe_shift(&comparison.position_shift),
            sci(comparison.centered_max_abs_diff),
        ));
    }
    if comparison.passed {
        return None;
    }
    if let Some(cause) = &comparison.likely_cause {
        return Some(format!("{name}: {}", cause.sentence()));
    }
    Some(match comparison.resid.as_ref().and_then(|resid| resid.iter().find(|snapshot| !snapshot.passed)) {
        Some(first) if first.index == 0 => format!(
            "{name}: the residual stream already differs at the embeddings (max |diff| {}): check wte, wpe and the token ids.",
            sci(first.max_abs_diff)
        ),
        Some(first) => format!(
            "{name}: the residual stream first diverges at the output of block h.{} (max |diff| {}); earlier blocks agree.",
            first.index - 1,
            sci(first.max_abs_diff)
        ),
        None if comparison.resid.is_some() => format!(
            "{name}: the residual stream agrees at every block, so the difference arises in ln_f or the unembedding (max |diff| {}).",
            sci(comparison.max_abs_diff)
        ),
        None => format!(
            "{name}: max |diff| {} exceeds the tolerance at {} elements ({:.3}%); log-softmax differs by up to {}, top-1 agreement {:.0}%.",
            sci(comparison.max_abs_diff),
            comparison.outside_allclose,
            comparison.outside_allclose_percent,
            sci(comparison.log_softmax_max_abs_diff),
            100.0 * comparison.top1_agreement
        ),
    })
}

/// Compact scientific notation for differences.
pub fn sci(value: f64) -> String {
    format!("{value:.2e}")
}
