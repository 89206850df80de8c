//! Turns a prompt's comparisons into plain sentences: why a difference is expected (a
//! per-position shift from center_unembed is not a bug) or where a real one starts.
use super::{Comparison, Criterion};

/// One sentence per finding, in table order.
pub fn explain(comparisons: &[Comparison]) -> Vec<String> {
    let mut shift_explained = false;
    comparisons
        .iter()
        .filter_map(|comparison| {
            let is_expected_shift = expected_shift(comparison);
            // One sentence about center_unembed's shift per prompt is enough.
            let repeat = is_expected_shift && std::mem::replace(&mut shift_explained, true);
            if repeat { None } else { explain_one(comparison) }
        })
        .collect()
}

/// A shift-invariant comparison that passes only because the shift is removed.
fn expected_shift(comparison: &Comparison) -> bool {
    comparison.criterion == Criterion::ShiftInvariant && comparison.passed && comparison.violations > 0
}

fn explain_one(comparison: &Comparison) -> Option<String> {
    let name = &comparison.name;
    if comparison.non_finite > 0 {
        return Some(format!("{name}: {} values are NaN or infinite; non-finite logits always fail.", comparison.non_finite));
    }
    let shift_only = comparison.violations > 0 && comparison.centered_violations == 0;
    match (comparison.criterion, comparison.passed) {
        _ if expected_shift(comparison) => Some(format!(
            "{name}: the raw max |diff| {} is center_unembed's shift of every position by minus its mean over the vocabulary ({}); \
             with that removed the logits agree to {}, and softmax, log-probabilities and argmax are unchanged. Not a bug.",
            sci(comparison.max_abs_diff),
            describe_shift(&comparison.position_shift),
            sci(comparison.centered_max_abs_diff),
        )),
        (Criterion::Raw, false) if shift_only => Some(format!(
            "{name}: the logits differ only by a per-position shift ({}); softmax is unchanged. Was one side made with \
             TransformerLens's center_unembed (e.g. HookedTransformer.from_pretrained instead of from_pretrained_no_processing)?",
            describe_shift(&comparison.position_shift),
        )),
        (_, false) => Some(match comparison.resid.as_ref().and_then(|resid| resid.iter().find(|snapshot| !snapshot.passed)) {
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
            None => {
                format!("{name}: max |diff| {} exceeds the tolerance at {} elements.", sci(comparison.max_abs_diff), comparison.violations)
            }
        }),
        _ => None,
    }
}

/// "-1.23 at position 0, -0.98 at position 1, ..." (the first three positions).
fn describe_shift(shift: &[f64]) -> String {
    let shown: Vec<String> =
        shift.iter().take(3).enumerate().map(|(position, value)| format!("{value:.4} at position {position}")).collect();
    let more = if shift.len() > 3 { ", ..." } else { "" };
    format!("{}{more}", shown.join(", "))
}

/// Compact scientific notation for differences.
pub fn sci(value: f64) -> String {
    format!("{value:.2e}")
}
