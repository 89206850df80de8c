//! What the summary table shows, over every prompt: per comparison name, the failing prompts,
//! the worst element and the extremes of its figures. Derived by [`super::Report::finish`].
use serde::{Deserialize, Serialize};

use super::prompt::PromptReport;
use super::{Comparison, Criterion, DiffLocation};

/// Per comparison name, the element worst under that comparison's criterion over all prompts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorstElement {
    pub comparison: String,
    pub criterion: Criterion,
    pub prompt: String,
    /// Index into `prompts`.
    pub prompt_index: usize,
    pub position: usize,
    pub token_id: i64,
    pub token: String,
    /// |diff| as the criterion judges it (centered for shift-invariant comparisons); NaN
    /// (null) when the element is non-finite.
    #[serde(deserialize_with = "super::nullable::number")]
    pub abs_diff: f64,
    /// True when the whole position is shifted (the token is then arbitrary).
    #[serde(default)]
    pub is_position_shift: bool,
    /// The raw max |diff| of this comparison over all prompts, wherever it sits.
    #[serde(deserialize_with = "super::nullable::number")]
    pub raw_max_abs_diff: f64,
}

/// A figure taken over all prompts, and the prompt (index into `prompts`) it comes from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Extreme {
    #[serde(deserialize_with = "super::nullable::number")]
    pub value: f64,
    pub prompt_index: usize,
}

/// One comparison over every prompt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComparisonSummary {
    pub comparison: String,
    pub criterion: Criterion,
    pub prompts: usize,
    pub failing_prompts: usize,
    /// The element worst under the criterion, over all prompts.
    pub worst: WorstElement,
    /// Largest raw max |diff|, largest shift-free max |diff|, largest per-position KL, lowest
    /// top-1 agreement; NaN (null) when a prompt's figure cannot be computed.
    pub max_abs_diff: Extreme,
    pub centered_max_abs_diff: Extreme,
    pub kl_max: Extreme,
    pub min_top1_agreement: Extreme,
    /// Prompts on which the comparison passes only once each position's mean is removed
    /// (center_unembed's expected shift).
    pub expected_shift_prompts: usize,
    /// The worst element's ranking, to compare later prompts against.
    #[serde(skip)]
    worst_severity: Severity,
}

impl ComparisonSummary {
    /// Per comparison name, in first-seen order. The worst element ranks prompts by non-finite
    /// values first, then the atol needed, then the criterion's worst |diff|.
    pub fn collect(prompts: &[PromptReport]) -> Vec<ComparisonSummary> {
        let mut summaries: Vec<ComparisonSummary> = Vec::new();
        for (prompt_index, prompt) in prompts.iter().enumerate() {
            for comparison in &prompt.comparisons {
                let here = |value: f64| Extreme { value, prompt_index };
                let worst = comparison.max_abs_diff_at.as_ref().map(|at| WorstElement {
                    comparison: comparison.name.clone(),
                    criterion: comparison.criterion,
                    prompt: prompt.prompt.clone(),
                    prompt_index,
                    position: at.position,
                    token_id: at.token_id,
                    token: at.token.clone(),
                    abs_diff: comparison.worst_abs_diff,
                    is_position_shift: comparison.worst_is_position_shift,
                    raw_max_abs_diff: comparison.max_abs_diff,
                });
                let Some(summary) = summaries.iter_mut().find(|known| known.comparison == comparison.name) else {
                    let Some(worst) = worst else { continue };
                    summaries.push(ComparisonSummary {
                        comparison: comparison.name.clone(),
                        criterion: comparison.criterion,
                        prompts: 1,
                        failing_prompts: usize::from(!comparison.passed),
                        worst,
                        max_abs_diff: here(comparison.max_abs_diff),
                        centered_max_abs_diff: here(comparison.centered_max_abs_diff),
                        kl_max: here(comparison.kl_max),
                        min_top1_agreement: here(comparison.top1_agreement),
                        expected_shift_prompts: usize::from(comparison.is_expected_shift()),
                        worst_severity: severity(comparison),
                    });
                    continue;
                };
                summary.prompts += 1;
                summary.failing_prompts += usize::from(!comparison.passed);
                summary.expected_shift_prompts += usize::from(comparison.is_expected_shift());
                summary.max_abs_diff = larger(summary.max_abs_diff, here(comparison.max_abs_diff));
                summary.centered_max_abs_diff = larger(summary.centered_max_abs_diff, here(comparison.centered_max_abs_diff));
                summary.kl_max = larger(summary.kl_max, here(comparison.kl_max));
                summary.min_top1_agreement = smaller(summary.min_top1_agreement, here(comparison.top1_agreement));
                let raw_max_abs_diff = summary.max_abs_diff.value;
                summary.worst.raw_max_abs_diff = raw_max_abs_diff;
                if let Some(worst) = worst.filter(|_| severity(comparison) > summary.worst_severity) {
                    summary.worst = WorstElement { raw_max_abs_diff, ..worst };
                    summary.worst_severity = severity(comparison);
                }
            }
        }
        summaries
    }
}
/// How badly a comparison fails, for ranking prompts: non-finite values, then the atol needed,
/// then the criterion's worst |diff| (the figures are NaN only with non-finite values, so two
/// such prompts compare as unordered and the first is kept).
type Severity = (bool, f64, f64);

fn severity(comparison: &Comparison) -> Severity {
    (comparison.non_finite > 0, comparison.min_passing_atol, comparison.worst_abs_diff)
}

/// The larger figure, NaN when either is: a statistic that cannot be computed on one prompt
/// cannot be computed over all of them; ties keep the earlier prompt.
fn larger(known: Extreme, new: Extreme) -> Extreme {
    if known.value.is_nan() || (!new.value.is_nan() && new.value <= known.value) {
        known
    } else {
        new
    }
}

/// The smaller figure, NaN when either is.
fn smaller(known: Extreme, new: Extreme) -> Extreme {
    if known.value.is_nan() || (!new.value.is_nan() && new.value >= known.value) {
        known
    } else {
        new
    }
}

impl WorstElement {
    /// Where the element sits in its prompt's logits.
    pub fn at(&self) -> DiffLocation {
        DiffLocation { position: self.position, token_id: self.token_id, token: self.token.clone() }
    }
}
