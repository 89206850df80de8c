//! Compares a candidate's logits with a reference's: the figures a parity table shows, the
//! metrics that say whether a difference matters for what the model predicts (log-probabilities,
//! KL, top-k), and the allclose verdict, raw or after removing each position's mean over the
//! vocabulary (a per-position shift that softmax ignores). Pure arithmetic on row-major f32
//! slices, accumulated in f64.
use serde::Serialize;

use super::diagnose::{likely_cause, Cause};

/// numpy's allclose: |candidate - reference| <= atol + rtol * |reference|.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
}

impl Tolerance {
    pub fn allows(&self, candidate: f64, reference: f64) -> bool {
        (candidate - reference).abs() <= self.atol + self.rtol * reference.abs()
    }

    /// The atol this pair needs at this rtol.
    fn needed_atol(&self, candidate: f64, reference: f64) -> f64 {
        ((candidate - reference).abs() - self.rtol * reference.abs()).max(0.0)
    }
}

/// How a comparison passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// Allclose on the logits as they are.
    Raw,
    /// Allclose after subtracting each position's mean over the vocabulary from both sides.
    ShiftInvariant,
}

/// A place in a [positions, vocab] matrix: which position, which vocabulary entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffLocation {
    pub position: usize,
    pub token_id: i64,
    pub token: String,
}

/// One row of a prompt's table (and one object in the JSON report).
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub name: String,
    pub criterion: Criterion,
    pub candidate_mean: f64,
    pub reference_mean: f64,
    /// Sample standard deviation (n - 1), as torch.std computes it.
    pub candidate_std: f64,
    pub reference_std: f64,
    pub max_abs_diff: f64,
    pub max_abs_diff_at: Option<DiffLocation>,
    pub mean_abs_diff: f64,
    /// Root of the mean squared difference.
    pub rmse: f64,
    /// Cosine similarity of the two matrices as flat vectors.
    pub cosine_similarity: f64,
    /// Max |diff| / |reference| over elements whose reference is not zero.
    pub max_rel_diff: f64,
    /// Max |diff| after removing each position's mean over the vocabulary from both sides.
    pub centered_max_abs_diff: f64,
    /// Per position: mean of candidate minus mean of reference (the shift that centering removes).
    pub position_shift: Vec<f64>,
    /// Elements outside allclose, raw.
    pub violations: usize,
    /// Elements outside allclose after centering.
    pub centered_violations: usize,
    /// Elements outside allclose under this comparison's criterion, and their share in percent.
    pub outside_allclose: usize,
    pub outside_allclose_percent: f64,
    /// Positions holding at least one element outside allclose under the criterion.
    pub positions_outside: Vec<usize>,
    /// The smallest atol that would pass at the given rtol, under the criterion.
    pub min_passing_atol: f64,
    /// Max |diff| of log-softmax over the vocabulary: what the model predicts, free of shifts.
    pub log_softmax_max_abs_diff: f64,
    /// KL(reference || candidate) of the next-token distributions, per position: mean and max.
    pub kl_mean: f64,
    pub kl_max: f64,
    /// Share of positions whose argmax agrees.
    pub top1_agreement: f64,
    /// Mean share of the reference's top 5 tokens that are in the candidate's top 5.
    pub top5_overlap: f64,
    /// NaN or infinite values, on either side; any fails the comparison.
    pub non_finite: usize,
    pub first_non_finite_at: Option<DiffLocation>,
    /// Per residual-stream index, when both sides have it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resid: Option<Vec<ResidDiff>>,
    /// For a failing comparison, the most likely cause this tool can detect.
    pub likely_cause: Option<Cause>,
    pub passed: bool,
}

/// One residual-stream snapshot's agreement: index 0 is the embeddings, index l the output of block h.{l-1}.
#[derive(Debug, Clone, Serialize)]
pub struct ResidDiff {
    pub index: usize,
    pub max_abs_diff: f64,
    pub passed: bool,
}

/// Running sums over the elements of one comparison.
#[derive(Default)]
struct Totals {
    finite: usize,
    abs_diff_sum: f64,
    squared_diff_sum: f64,
    dot: f64,
    candidate_norm2: f64,
    reference_norm2: f64,
    max_abs_diff: f64,
    max_at: Option<usize>,
    max_rel_diff: f64,
    centered_max_abs_diff: f64,
    violations: usize,
    centered_violations: usize,
    min_passing_atol: f64,
    non_finite: usize,
    first_non_finite: Option<usize>,
    log_softmax_max_abs_diff: f64,
    kl_sum: f64,
    kl_max: f64,
    kl_rows: usize,
    top1_agreements: usize,
    top5_overlap_sum: f64,
    positions_outside: Vec<usize>,
}

/// Compares two [positions, vocab] logit matrices. `token_text` names vocabulary entries.
pub fn compare_logits(
    name: &str,
    criterion: Criterion,
    candidate: &[f32],
    reference: &[f32],
    vocab: usize,
    tolerance: Tolerance,
    token_text: &dyn Fn(i64) -> String,
) -> Comparison {
    debug_assert_eq!(candidate.len(), reference.len());
    let mut totals = Totals::default();
    let mut position_shift = Vec::new();
    for (position, (candidate_row, reference_row)) in candidate.chunks_exact(vocab).zip(reference.chunks_exact(vocab)).enumerate() {
        let (candidate_mean, reference_mean) = (finite_mean(candidate_row), finite_mean(reference_row));
        position_shift.push(candidate_mean - reference_mean);
        let outside_before = totals.violations_under(criterion);
        for (column, (&c, &r)) in candidate_row.iter().zip(reference_row).enumerate() {
            totals.add_element(
                position * vocab + column,
                f64::from(c),
                f64::from(r),
                (candidate_mean, reference_mean),
                criterion,
                tolerance,
            );
        }
        if totals.violations_under(criterion) > outside_before {
            totals.positions_outside.push(position);
        }
        totals.add_distributions(candidate_row, reference_row);
    }
    let positions = position_shift.len().max(1) as f64;
    let location = |index: usize| {
        let token_id = (index % vocab) as i64;
        DiffLocation { position: index / vocab, token_id, token: token_text(token_id) }
    };
    let (candidate_mean, candidate_std) = mean_and_std(candidate);
    let (reference_mean, reference_std) = mean_and_std(reference);
    let outside_allclose = totals.violations_under(criterion);
    let finite = totals.finite.max(1) as f64;
    let mut comparison = Comparison {
        name: name.to_owned(),
        criterion,
        candidate_mean,
        reference_mean,
        candidate_std,
        reference_std,
        max_abs_diff: totals.max_abs_diff,
        max_abs_diff_at: totals.max_at.map(location),
        mean_abs_diff: totals.abs_diff_sum / finite,
        rmse: (totals.squared_diff_sum / finite).sqrt(),
        cosine_similarity: totals.dot / (totals.candidate_norm2.sqrt() * totals.reference_norm2.sqrt()),
        max_rel_diff: totals.max_rel_diff,
        centered_max_abs_diff: totals.centered_max_abs_diff,
        position_shift,
        violations: totals.violations,
        centered_violations: totals.centered_violations,
        outside_allclose,
        outside_allclose_percent: 100.0 * outside_allclose as f64 / candidate.len().max(1) as f64,
        positions_outside: totals.positions_outside,
        min_passing_atol: totals.min_passing_atol,
        log_softmax_max_abs_diff: totals.log_softmax_max_abs_diff,
        kl_mean: totals.kl_sum / totals.kl_rows.max(1) as f64,
        kl_max: totals.kl_max,
        top1_agreement: totals.top1_agreements as f64 / positions,
        top5_overlap: totals.top5_overlap_sum / positions,
        non_finite: totals.non_finite,
        first_non_finite_at: totals.first_non_finite.map(location),
        resid: None,
        likely_cause: None,
        passed: totals.non_finite == 0 && outside_allclose == 0,
    };
    if !comparison.passed {
        comparison.likely_cause = likely_cause(&comparison, candidate, reference, vocab, tolerance);
    }
    comparison
}

impl Totals {
    fn violations_under(&self, criterion: Criterion) -> usize {
        match criterion {
            Criterion::Raw => self.violations,
            Criterion::ShiftInvariant => self.centered_violations,
        }
    }

    fn add_element(&mut self, index: usize, c: f64, r: f64, (c_mean, r_mean): (f64, f64), criterion: Criterion, tolerance: Tolerance) {
        if !(c.is_finite() && r.is_finite()) {
            self.non_finite += 1;
            self.first_non_finite.get_or_insert(index);
            return;
        }
        let diff = (c - r).abs();
        self.finite += 1;
        self.abs_diff_sum += diff;
        self.squared_diff_sum += diff * diff;
        self.dot += c * r;
        self.candidate_norm2 += c * c;
        self.reference_norm2 += r * r;
        if diff > self.max_abs_diff || self.max_at.is_none() {
            self.max_abs_diff = diff;
            self.max_at = Some(index);
        }
        if r != 0.0 {
            self.max_rel_diff = self.max_rel_diff.max(diff / r.abs());
        }
        let (c_centered, r_centered) = (c - c_mean, r - r_mean);
        self.centered_max_abs_diff = self.centered_max_abs_diff.max((c_centered - r_centered).abs());
        self.violations += usize::from(!tolerance.allows(c, r));
        self.centered_violations += usize::from(!tolerance.allows(c_centered, r_centered));
        let needed = match criterion {
            Criterion::Raw => tolerance.needed_atol(c, r),
            Criterion::ShiftInvariant => tolerance.needed_atol(c_centered, r_centered),
        };
        self.min_passing_atol = self.min_passing_atol.max(needed);
    }

    /// Next-token distributions of one position: log-softmax, KL and top-k agreement.
    fn add_distributions(&mut self, candidate: &[f32], reference: &[f32]) {
        let (Some(candidate_lse), Some(reference_lse)) = (log_sum_exp(candidate), log_sum_exp(reference)) else {
            return;
        };
        let mut kl = 0.0;
        for (&c, &r) in candidate.iter().zip(reference) {
            let (log_q, log_p) = (f64::from(c) - candidate_lse, f64::from(r) - reference_lse);
            self.log_softmax_max_abs_diff = self.log_softmax_max_abs_diff.max((log_q - log_p).abs());
            kl += log_p.exp() * (log_p - log_q);
        }
        // Rounding can push a KL of identical distributions a hair below zero.
        let kl = kl.max(0.0);
        self.kl_sum += kl;
        self.kl_max = self.kl_max.max(kl);
        self.kl_rows += 1;
        let (candidate_top, reference_top) = (top_k(candidate, 5), top_k(reference, 5));
        self.top1_agreements += usize::from(candidate_top[0] == reference_top[0]);
        self.top5_overlap_sum += reference_top.iter().filter(|id| candidate_top.contains(id)).count() as f64 / reference_top.len() as f64;
    }
}

/// log(sum(exp(row))), or None when the row holds a non-finite value.
fn log_sum_exp(row: &[f32]) -> Option<f64> {
    if row.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let max = row.iter().map(|&v| f64::from(v)).fold(f64::NEG_INFINITY, f64::max);
    Some(max + row.iter().map(|&v| (f64::from(v) - max).exp()).sum::<f64>().ln())
}

/// Indices of the k largest values of a non-empty row, largest first (ties: lower index first).
fn top_k(row: &[f32], k: usize) -> Vec<usize> {
    let mut best: Vec<usize> = Vec::with_capacity(k + 1);
    for (index, &value) in row.iter().enumerate() {
        if best.len() == k && value <= row[best[k - 1]] {
            continue;
        }
        let at = best.iter().position(|&other| value > row[other]).unwrap_or(best.len());
        best.insert(at, index);
        best.truncate(k);
    }
    best
}

/// Compares residual streams [L+1, T, D] snapshot by snapshot. With `center_reference`, the
/// reference is first centered over d_model, as the processed model's residual stream is.
pub fn compare_resid(
    candidate: &[f32],
    reference: &[f32],
    d_model: usize,
    snapshots: usize,
    center_reference: bool,
    tolerance: Tolerance,
) -> Vec<ResidDiff> {
    let per_snapshot = candidate.len() / snapshots.max(1);
    (0..snapshots)
        .map(|index| {
            let range = index * per_snapshot..(index + 1) * per_snapshot;
            let (candidate, reference) = (&candidate[range.clone()], &reference[range]);
            let mut max_abs_diff = 0.0f64;
            let mut passed = true;
            for (c_row, r_row) in candidate.chunks_exact(d_model).zip(reference.chunks_exact(d_model)) {
                let shift = if center_reference { finite_mean(r_row) } else { 0.0 };
                for (&c, &r) in c_row.iter().zip(r_row) {
                    let (c, r) = (f64::from(c), f64::from(r) - shift);
                    let diff = (c - r).abs();
                    if diff.is_nan() {
                        passed = false;
                        max_abs_diff = f64::NAN;
                        continue;
                    }
                    max_abs_diff = max_abs_diff.max(diff);
                    passed &= tolerance.allows(c, r);
                }
            }
            ResidDiff { index, max_abs_diff, passed }
        })
        .collect()
}

/// Mean over the finite values (NaN when there are none).
pub fn finite_mean(values: &[f32]) -> f64 {
    let (sum, count) =
        values.iter().map(|&v| f64::from(v)).filter(|v| v.is_finite()).fold((0.0, 0usize), |(sum, count), v| (sum + v, count + 1));
    if count == 0 {
        f64::NAN
    } else {
        sum / count as f64
    }
}

/// Mean and sample standard deviation over the finite values.
pub fn mean_and_std(values: &[f32]) -> (f64, f64) {
    let finite = || values.iter().map(|&v| f64::from(v)).filter(|v| v.is_finite());
    let count = finite().count();
    let mean = finite_mean(values);
    if count == 0 {
        return (mean, f64::NAN);
    }
    let squares: f64 = finite().map(|v| (v - mean) * (v - mean)).sum();
    let std = if count > 1 { (squares / (count - 1) as f64).sqrt() } else { 0.0 };
    (mean, std)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOLERANCE: Tolerance = Tolerance { atol: 0.1, rtol: 0.01 };

    /// Two positions over a six-entry vocabulary, figures worked out by hand below.
    const CANDIDATE: [f32; 12] = [1.0, 2.0, 3.0, 0.0, -1.0, 0.5, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0];
    const REFERENCE: [f32; 12] = [1.0, 2.0, 4.0, 0.0, -1.0, 0.5, 0.0, 2.5, 1.0, 2.0, 0.0, 0.0];

    fn hand_made() -> Comparison {
        compare_logits("hand-made", Criterion::Raw, &CANDIDATE, &REFERENCE, 6, TOLERANCE, &|id| format!("t{id}"))
    }

    fn log_softmax(row: &[f32]) -> Vec<f64> {
        let total: f64 = row.iter().map(|&v| f64::from(v).exp()).sum();
        row.iter().map(|&v| f64::from(v) - total.ln()).collect()
    }

    #[test]
    fn elementwise_figures_match_a_hand_computation() {
        let c = hand_made();
        // Differences: -1 at (0, 2) and -2.5 at (1, 1); every other element agrees.
        assert_eq!(c.max_abs_diff, 2.5);
        assert_eq!(c.max_abs_diff_at, Some(DiffLocation { position: 1, token_id: 1, token: "t1".into() }));
        assert!((c.mean_abs_diff - 3.5 / 12.0).abs() < 1e-12);
        assert!((c.rmse - (7.25f64 / 12.0).sqrt()).abs() < 1e-12);
        let dot = 1.0 + 4.0 + 12.0 + 1.0 + 0.25 + 1.0 + 4.0;
        let (norm_c, norm_r) = (20.25f64.sqrt(), 33.5f64.sqrt());
        assert!((c.cosine_similarity - dot / (norm_c * norm_r)).abs() < 1e-12);
        assert_eq!(c.max_rel_diff, 1.0, "2.5 / 2.5 at (1, 1) beats 1 / 4 at (0, 2)");
        // Outside atol 0.1 + rtol 0.01 * |ref|: both differing elements.
        assert_eq!((c.violations, c.outside_allclose), (2, 2));
        assert!((c.outside_allclose_percent - 100.0 * 2.0 / 12.0).abs() < 1e-12);
        assert_eq!(c.positions_outside, vec![0, 1]);
        assert!((c.min_passing_atol - (2.5 - 0.01 * 2.5)).abs() < 1e-12);
        assert!((c.position_shift[1] - (3.0 - 5.5) / 6.0).abs() < 1e-12);
        assert_eq!(c.position_shift.len(), 2);
        assert!((c.position_shift[0] - (-1.0 / 6.0)).abs() < 1e-12);
        assert!(!c.passed);
    }

    #[test]
    fn distribution_figures_match_a_hand_computation() {
        let c = hand_made();
        let (mut max_log_diff, mut kls) = (0.0f64, Vec::new());
        for position in 0..2 {
            let (q, p) = (log_softmax(&CANDIDATE[position * 6..][..6]), log_softmax(&REFERENCE[position * 6..][..6]));
            max_log_diff = q.iter().zip(&p).map(|(a, b)| (a - b).abs()).fold(max_log_diff, f64::max);
            kls.push(p.iter().zip(&q).map(|(lp, lq)| lp.exp() * (lp - lq)).sum::<f64>());
        }
        assert!((c.log_softmax_max_abs_diff - max_log_diff).abs() < 1e-12);
        assert!((c.kl_mean - (kls[0] + kls[1]) / 2.0).abs() < 1e-12);
        assert!((c.kl_max - kls[0].max(kls[1])).abs() < 1e-12);
        // Argmax: position 0 agrees (index 2), position 1 does not (candidate 3, reference 1).
        assert_eq!(c.top1_agreement, 0.5);
        // Top 5 of 6: position 0 {2,1,0,5,3} both; position 1 candidate {3,2,0,1,4} (ties by
        // index), reference {1,3,2,0,4}: the same sets in another order.
        assert_eq!(c.top5_overlap, 1.0);
    }

    #[test]
    fn non_finite_values_fail_and_are_located() {
        let mut candidate = CANDIDATE;
        candidate[9] = f32::NAN;
        let c = compare_logits("nan", Criterion::Raw, &candidate, &CANDIDATE, 6, TOLERANCE, &|id| format!("t{id}"));
        assert_eq!(c.non_finite, 1);
        assert_eq!(c.first_non_finite_at.as_ref().map(|at| (at.position, at.token_id)), Some((1, 3)));
        assert!(!c.passed);
    }

    #[test]
    fn a_per_position_shift_passes_only_shift_invariantly() {
        let shifted: Vec<f32> = REFERENCE.iter().enumerate().map(|(i, &v)| v + if i < 6 { 3.0 } else { -2.0 }).collect();
        let expected_shift = [3.0, -2.0];
        let raw = compare_logits("raw", Criterion::Raw, &shifted, &REFERENCE, 6, TOLERANCE, &|id| id.to_string());
        let shift_free = compare_logits("free", Criterion::ShiftInvariant, &shifted, &REFERENCE, 6, TOLERANCE, &|id| id.to_string());
        assert!(!raw.passed && shift_free.passed);
        assert!(shift_free.centered_max_abs_diff < 1e-6);
        assert!(shift_free.log_softmax_max_abs_diff < 1e-6);
        for (found, expected) in shift_free.position_shift.iter().zip(expected_shift) {
            assert!((found - expected).abs() < 1e-6);
        }
    }
}
