//! Compares a candidate's logits with a reference's: the figures a parity table shows, the
//! metrics that say whether a difference matters for what the model predicts (log-probabilities,
//! KL, top-k), and the allclose verdict, raw or after removing each position's mean over the
//! vocabulary (a per-position shift that softmax ignores). Pure arithmetic on row-major f32
//! slices, accumulated in f64.
use super::kernel::{self, top_k, TOP_K};
use super::tolerance::Judgement;
use crate::schema::{Comparison, Criterion, DiffLocation, NonFinitePosition, ResidDiff, Tolerance};

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
    worst_excess: f64,
    worst_abs_diff: f64,
    worst_at: Option<usize>,
    max_rel_diff: f64,
    centered_max_abs_diff: f64,
    violations: usize,
    centered_violations: usize,
    min_passing_atol: f64,
    non_finite: usize,
    candidate_non_finite: usize,
    reference_non_finite: usize,
    first_non_finite: Option<usize>,
    log_softmax_max_abs_diff: f64,
    kl_sum: f64,
    kl_max: f64,
    kl_rows: usize,
    top1_agreements: usize,
    top5_overlap_sum: f64,
    positions_outside: Vec<usize>,
    centered_positions_outside: Vec<usize>,
    position_shift: Vec<f64>,
    position_max_abs_diff: Vec<f64>,
    position_centered_max_abs_diff: Vec<f64>,
    non_finite_positions: Vec<NonFinitePosition>,
    /// (mean, sample std) of each side over the whole matrix.
    candidate_moments: (f64, f64),
    reference_moments: (f64, f64),
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
    let totals = match kernel::summarize_rows(candidate, reference, vocab, criterion, tolerance) {
        Some(rows) => Totals::from_rows(&rows, vocab, criterion),
        None => Totals::element_by_element(candidate, reference, vocab, criterion, tolerance),
    };
    totals.into_comparison(name, criterion, candidate.len(), vocab, tolerance, token_text)
}

impl Totals {
    fn into_comparison(
        self,
        name: &str,
        criterion: Criterion,
        elements: usize,
        vocab: usize,
        tolerance: Tolerance,
        token_text: &dyn Fn(i64) -> String,
    ) -> Comparison {
        let totals = self;
        let positions = totals.position_shift.len().max(1) as f64;
        let location = |index: usize| {
            let token_id = (index % vocab) as i64;
            DiffLocation { position: index / vocab, token_id, token: token_text(token_id) }
        };
        let (candidate_mean, candidate_std) = totals.candidate_moments;
        let (reference_mean, reference_std) = totals.reference_moments;
        let outside_allclose = totals.violations_under(criterion);
        let finite = totals.finite.max(1) as f64;
        let worst_at = totals.first_non_finite.or(totals.worst_at);
        let worst_is_position_shift = criterion == Criterion::Raw
            && totals.first_non_finite.is_none()
            && totals.worst_excess > tolerance.atol
            && worst_at.is_some_and(|index| !totals.centered_positions_outside.contains(&(index / vocab)));
        let mut comparison = Comparison {
            name: name.to_owned(),
            criterion,
            candidate_mean,
            reference_mean,
            candidate_std,
            reference_std,
            max_abs_diff: totals.max_abs_diff,
            raw_max_abs_diff_at: totals.max_at.map(location),
            max_abs_diff_at: worst_at.map(location),
            worst_abs_diff: totals.worst_abs_diff,
            worst_is_position_shift,
            mean_abs_diff: totals.abs_diff_sum / finite,
            rmse: (totals.squared_diff_sum / finite).sqrt(),
            cosine_similarity: totals.dot / (totals.candidate_norm2.sqrt() * totals.reference_norm2.sqrt()),
            max_rel_diff: totals.max_rel_diff,
            centered_max_abs_diff: totals.centered_max_abs_diff,
            position_shift: totals.position_shift,
            position_max_abs_diff: totals.position_max_abs_diff,
            position_centered_max_abs_diff: totals.position_centered_max_abs_diff,
            violations: totals.violations,
            centered_violations: totals.centered_violations,
            outside_allclose,
            outside_allclose_percent: 100.0 * outside_allclose as f64 / elements.max(1) as f64,
            positions_outside: totals.positions_outside,
            min_passing_atol: totals.min_passing_atol,
            log_softmax_max_abs_diff: totals.log_softmax_max_abs_diff,
            kl_mean: totals.kl_sum / totals.kl_rows.max(1) as f64,
            kl_max: totals.kl_max,
            top1_agreement: totals.top1_agreements as f64 / positions,
            top5_overlap: totals.top5_overlap_sum / positions,
            non_finite: totals.non_finite,
            candidate_non_finite: totals.candidate_non_finite,
            reference_non_finite: totals.reference_non_finite,
            first_non_finite_at: totals.first_non_finite.map(location),
            non_finite_positions: totals.non_finite_positions,
            resid: None,
            noise_floor: None,
            rounding: None,
            likely_cause: None,
            findings: Vec::new(),
            passed: false,
        };
        if totals.non_finite > 0 {
            comparison.cannot_compute_differences();
        }
        comparison.passed = comparison.verdict();
        comparison
    }
}

impl Comparison {
    /// With a non-finite value on either side no difference statistic is defined: each is NaN
    /// (`null` in JSON, "NaN" in tables) rather than a figure over the finite rest, which would
    /// look like agreement. Counts and locations stay.
    fn cannot_compute_differences(&mut self) {
        for statistic in [
            &mut self.max_abs_diff,
            &mut self.worst_abs_diff,
            &mut self.mean_abs_diff,
            &mut self.rmse,
            &mut self.cosine_similarity,
            &mut self.max_rel_diff,
            &mut self.centered_max_abs_diff,
            &mut self.min_passing_atol,
            &mut self.log_softmax_max_abs_diff,
            &mut self.kl_mean,
            &mut self.kl_max,
            &mut self.top1_agreement,
            &mut self.top5_overlap,
        ] {
            *statistic = f64::NAN;
        }
        self.raw_max_abs_diff_at = None;
    }
}

impl Totals {
    /// The definitions, element by element in one pass per row: what non-finite values do is
    /// decided here, and the tests hold the fast path ([`kernel`]) to it.
    fn element_by_element(candidate: &[f32], reference: &[f32], vocab: usize, criterion: Criterion, tolerance: Tolerance) -> Self {
        let mut totals = Totals::default();
        for (position, (candidate_row, reference_row)) in candidate.chunks_exact(vocab).zip(reference.chunks_exact(vocab)).enumerate() {
            let (candidate_mean, reference_mean) = (finite_mean(candidate_row), finite_mean(reference_row));
            totals.position_shift.push(candidate_mean - reference_mean);
            totals.position_max_abs_diff.push(row_max_abs_diff(candidate_row, reference_row, (0.0, 0.0)));
            totals.position_centered_max_abs_diff.push(row_max_abs_diff(candidate_row, reference_row, (candidate_mean, reference_mean)));
            let outside_before = totals.violations_under(criterion);
            let centered_before = totals.centered_violations;
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
            let non_finite = NonFinitePosition::of(position, candidate_row, reference_row);
            if totals.violations_under(criterion) > outside_before || non_finite.is_some() {
                totals.positions_outside.push(position);
            }
            totals.non_finite_positions.extend(non_finite);
            if totals.centered_violations > centered_before {
                totals.centered_positions_outside.push(position);
            }
            totals.add_distributions(candidate_row, reference_row);
        }
        totals.candidate_moments = mean_and_std(candidate);
        totals.reference_moments = mean_and_std(reference);
        totals
    }

    /// The same totals from the fast path's per-row summaries, combined in position order.
    fn from_rows(rows: &[kernel::RowSummary], vocab: usize, criterion: Criterion) -> Self {
        let mut totals = Totals::default();
        for (position, row) in rows.iter().enumerate() {
            let differences = &row.differences;
            let start = position * vocab;
            totals.finite += vocab;
            totals.abs_diff_sum += differences.abs_diff_sum;
            totals.squared_diff_sum += differences.squared_diff_sum;
            totals.dot += differences.dot;
            totals.candidate_norm2 += differences.candidate_norm2;
            totals.reference_norm2 += differences.reference_norm2;
            if totals.max_at.is_none() || differences.max_abs_diff > totals.max_abs_diff {
                totals.max_abs_diff = differences.max_abs_diff;
                totals.max_at = Some(start + differences.max_column);
            }
            if totals.worst_at.is_none() || differences.worst_excess > totals.worst_excess {
                totals.worst_excess = differences.worst_excess;
                totals.worst_abs_diff = differences.worst_abs_diff;
                totals.worst_at = Some(start + differences.worst_column);
            }
            totals.min_passing_atol = totals.min_passing_atol.max(differences.worst_excess);
            totals.max_rel_diff = totals.max_rel_diff.max(differences.max_rel_diff);
            totals.centered_max_abs_diff = totals.centered_max_abs_diff.max(differences.centered_max_abs_diff);
            totals.violations += differences.violations;
            totals.centered_violations += differences.centered_violations;
            let outside = match criterion {
                Criterion::Raw => differences.violations,
                Criterion::ShiftInvariant => differences.centered_violations,
            };
            if outside > 0 {
                totals.positions_outside.push(position);
            }
            if differences.centered_violations > 0 {
                totals.centered_positions_outside.push(position);
            }
            totals.position_shift.push(row.candidate_mean - row.reference_mean);
            totals.position_max_abs_diff.push(differences.max_abs_diff);
            totals.position_centered_max_abs_diff.push(differences.centered_max_abs_diff);
            totals.log_softmax_max_abs_diff = totals.log_softmax_max_abs_diff.max(row.log_softmax_max_abs_diff);
            totals.add_kl_and_top_k(row.kl, &row.candidate_top, &row.reference_top);
        }
        totals.candidate_moments = kernel::mean_and_std(rows, vocab, |row| (row.candidate_mean, row.candidate_m2));
        totals.reference_moments = kernel::mean_and_std(rows, vocab, |row| (row.reference_mean, row.reference_m2));
        totals
    }

    fn violations_under(&self, criterion: Criterion) -> usize {
        match criterion {
            Criterion::Raw => self.violations,
            Criterion::ShiftInvariant => self.centered_violations,
        }
    }

    fn add_element(&mut self, index: usize, c: f64, r: f64, means: (f64, f64), criterion: Criterion, tolerance: Tolerance) {
        if !(c.is_finite() && r.is_finite()) {
            self.non_finite += 1;
            self.candidate_non_finite += usize::from(!c.is_finite());
            self.reference_non_finite += usize::from(!r.is_finite());
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
        let raw = Judgement::of(Criterion::Raw, c, r, means);
        let centered = Judgement::of(Criterion::ShiftInvariant, c, r, means);
        self.centered_max_abs_diff = self.centered_max_abs_diff.max(centered.abs_diff);
        self.violations += usize::from(raw.fails(tolerance));
        self.centered_violations += usize::from(centered.fails(tolerance));
        let judged = match criterion {
            Criterion::Raw => raw,
            Criterion::ShiftInvariant => centered,
        };
        self.min_passing_atol = self.min_passing_atol.max(judged.excess(tolerance));
        if self.worst_at.is_none() || judged.excess(tolerance) > self.worst_excess {
            self.worst_excess = judged.excess(tolerance);
            self.worst_abs_diff = judged.abs_diff;
            self.worst_at = Some(index);
        }
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
        self.add_kl_and_top_k(kl.max(0.0), &top_k(candidate, TOP_K), &top_k(reference, TOP_K));
    }

    fn add_kl_and_top_k(&mut self, kl: f64, candidate_top: &[usize], reference_top: &[usize]) {
        self.kl_sum += kl;
        self.kl_max = self.kl_max.max(kl);
        self.kl_rows += 1;
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

/// Compares residual streams [L+1, T, D] snapshot by snapshot. With `center_reference`, the
/// reference is first centered over d_model, as the processed model's residual stream is; rtol
/// applies to the reference before centering either way.
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
            let (mut max_abs_diff, mut max_tolerance_ratio) = (0.0f64, 0.0f64);
            let mut reference_max_abs = 0.0f64;
            let mut any_nan = false;
            for (c_row, r_row) in candidate.chunks_exact(d_model).zip(reference.chunks_exact(d_model)) {
                let shift = if center_reference { finite_mean(r_row) } else { 0.0 };
                for (&c, &r) in c_row.iter().zip(r_row) {
                    let (c, r) = (f64::from(c), f64::from(r));
                    reference_max_abs = reference_max_abs.max(r.abs());
                    let diff = c - (r - shift);
                    if diff.is_nan() {
                        any_nan = true;
                        continue;
                    }
                    max_abs_diff = max_abs_diff.max(diff.abs());
                    // Centered or not, the error was made at the reference's own magnitude.
                    if diff != 0.0 {
                        max_tolerance_ratio = max_tolerance_ratio.max(diff.abs() / tolerance.bound(r));
                    }
                }
            }
            // f64::max skips NaN: a NaN anywhere is set last, so that no later value hides it.
            if any_nan {
                (max_abs_diff, max_tolerance_ratio) = (f64::NAN, f64::NAN);
            }
            ResidDiff { index, max_abs_diff, reference_max_abs, max_tolerance_ratio, passed: None }
        })
        .collect()
}

/// Max |(c - candidate_shift) - (r - reference_shift)| over a row pair: raw with zero shifts,
/// centered with the rows' means. NaN when a value is non-finite: over the rest it would look
/// like agreement.
fn row_max_abs_diff(candidate: &[f32], reference: &[f32], (candidate_shift, reference_shift): (f64, f64)) -> f64 {
    if candidate.iter().chain(reference).any(|value| !value.is_finite()) {
        return f64::NAN;
    }
    candidate
        .iter()
        .zip(reference)
        .map(|(&c, &r)| ((f64::from(c) - candidate_shift) - (f64::from(r) - reference_shift)).abs())
        .fold(0.0, f64::max)
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

/// Mean and sample standard deviation, NaN when a value is non-finite: the table's mean and
/// std columns then show which side holds it.
pub fn mean_and_std(values: &[f32]) -> (f64, f64) {
    if values.iter().any(|v| !v.is_finite()) {
        return (f64::NAN, f64::NAN);
    }
    let mean = finite_mean(values);
    let squares: f64 = values.iter().map(|&v| (f64::from(v) - mean) * (f64::from(v) - mean)).sum();
    let std = if values.len() > 1 { (squares / (values.len() - 1) as f64).sqrt() } else { 0.0 };
    (mean, std)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::NonFinite;

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
        assert_eq!(c.position_max_abs_diff, [1.0, 2.5]);
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
    fn each_non_finite_position_is_outside_named_and_has_no_maximum() {
        for criterion in [Criterion::Raw, Criterion::ShiftInvariant] {
            // Equal sides but for the planted values: nothing else is outside.
            let (mut candidate, mut reference) = (REFERENCE, REFERENCE);
            candidate[9] = f32::NAN;
            let c = compare_logits("nan", criterion, &candidate, &reference, 6, TOLERANCE, &|id| format!("t{id}"));
            assert_eq!(c.positions_outside, [1], "{criterion:?}");
            assert_eq!(c.position_max_abs_diff[0], 0.0);
            assert!(c.position_max_abs_diff[1].is_nan() && c.position_centered_max_abs_diff[1].is_nan(), "{c:?}");
            let nan = NonFinitePosition { position: 1, elements: 1, candidate: vec![NonFinite::Nan], reference: vec![] };
            assert_eq!(c.non_finite_positions, [nan]);

            candidate[9] = REFERENCE[9];
            candidate[2] = f32::INFINITY;
            candidate[4] = f32::NAN;
            reference[4] = f32::NEG_INFINITY;
            reference[5] = f32::NEG_INFINITY;
            let c = compare_logits("inf", criterion, &candidate, &reference, 6, TOLERANCE, &|id| format!("t{id}"));
            assert_eq!(c.positions_outside, [0], "{criterion:?}");
            let mixed = NonFinitePosition {
                position: 0,
                elements: 3,
                candidate: vec![NonFinite::Nan, NonFinite::PositiveInfinity],
                reference: vec![NonFinite::NegativeInfinity],
            };
            assert_eq!(c.non_finite_positions, [mixed]);
            assert_eq!(c.position_max_abs_diff[1], 0.0);
            let json = serde_json::to_value(&c).unwrap();
            assert_eq!(json["non_finite_positions"][0]["candidate"], serde_json::json!(["nan", "+inf"]));
            assert_eq!(json["non_finite_positions"][0]["reference"], serde_json::json!(["-inf"]));
            let read_back: Comparison = serde_json::from_value(json).unwrap();
            assert_eq!(read_back.non_finite_positions, c.non_finite_positions);
        }
        let c = hand_made();
        assert!(c.non_finite_positions.is_empty());
    }

    #[test]
    fn the_centered_maximum_per_position_removes_each_position_s_shift() {
        // Position 0 shifted by 3 with one element off by a further 0.6, position 1 by -2 only.
        let mut shifted: Vec<f32> = REFERENCE.iter().enumerate().map(|(i, &v)| v + if i < 6 { 3.0 } else { -2.0 }).collect();
        shifted[2] += 0.6;
        for criterion in [Criterion::Raw, Criterion::ShiftInvariant] {
            let c = compare_logits("shift", criterion, &shifted, &REFERENCE, 6, TOLERANCE, &|id| id.to_string());
            assert!((c.position_max_abs_diff[0] - 3.6).abs() < 1e-6 && (c.position_max_abs_diff[1] - 2.0).abs() < 1e-6);
            // The 0.6 less its share of the row's mean: 0.6 * 5 / 6.
            assert!((c.position_centered_max_abs_diff[0] - 0.5).abs() < 1e-6, "{:?}", c.position_centered_max_abs_diff);
            assert!(c.position_centered_max_abs_diff[1] < 1e-6, "{:?}", c.position_centered_max_abs_diff);
            assert_eq!(c.centered_max_abs_diff, c.position_centered_max_abs_diff.iter().copied().fold(0.0, f64::max));
        }
    }

    #[test]
    fn a_residual_snapshot_is_scaled_to_its_bound() {
        let tolerance = Tolerance { atol: 1e-3, rtol: 1e-2 };
        // One snapshot of two rows of d_model 2; the bound at |r| = 100 is 1.001, at |r| = 0 it is atol.
        let reference = [100.0f32, 0.0, -100.0, 0.0];
        let resid = |candidate: [f32; 4]| compare_resid(&candidate, &reference, 2, 1, false, tolerance).remove(0);
        let within = resid([100.5, 0.0, -100.0, 0.0004]);
        // Judged by the envelope (not here): `passed` is unset; the ratio says where tolerance stands.
        assert!(within.passed.is_none() && within.max_tolerance_ratio <= 1.0);
        assert!((within.max_tolerance_ratio - 0.5 / 1.001).abs() < 1e-6, "{within:?}");
        let outside = resid([100.5, 0.002, -100.0, 0.0]);
        assert!((outside.max_tolerance_ratio - 2.0).abs() < 1e-3, "{outside:?}");
        assert!((outside.max_abs_diff - 0.5).abs() < 1e-9, "the largest |diff| is not the largest ratio: {outside:?}");
        let identical = resid(reference);
        assert!(identical.max_tolerance_ratio == 0.0);
        // A NaN before a larger finite difference is not hidden by it.
        let nan = resid([f32::NAN, 0.0, -90.0, 0.0]);
        assert!(nan.max_abs_diff.is_nan() && nan.max_tolerance_ratio.is_nan(), "{nan:?}");
        let inf = resid([100.0, f32::INFINITY, -100.0, 0.0]);
        assert!(inf.max_tolerance_ratio == f64::INFINITY, "{inf:?}");
        let exact = compare_resid(&[1.0, 0.0], &[1.0, 1e-9], 2, 1, false, Tolerance { atol: 0.0, rtol: 0.0 }).remove(0);
        assert!(exact.max_tolerance_ratio == f64::INFINITY, "{exact:?}");
    }

    #[test]
    fn shift_invariant_rtol_applies_at_the_magnitude_before_centering() {
        // Logits near -60 (GPT-2's scale) whose centered values are a few units: rtol 1e-5 at
        // |r| = 60 allows 6e-4 more than atol, at the centered |r| of ~3 only 3e-5 more.
        let reference: Vec<f32> = [-57.0f32, -60.0, -63.0, -60.0, -61.5, -58.5].to_vec();
        let tolerance = Tolerance { atol: 1e-4, rtol: 1e-5 };
        let compare = |planted: f32| {
            let mut candidate = reference.clone();
            candidate[0] += planted;
            compare_logits("scale", Criterion::ShiftInvariant, &candidate, &reference, 6, tolerance, &|id| id.to_string())
        };
        let noise = compare(4e-4);
        assert!(noise.passed, "4e-4 at |r| = 57 is within 1e-4 + 1e-5 * 57: {noise:?}");
        assert!((noise.min_passing_atol - 0.0).abs() < 1e-12);
        let fault = compare(1e-3);
        assert!(!fault.passed && fault.centered_violations == 1, "1e-3 at |r| = 57 is outside: {fault:?}");
        // The needed atol: the centered diff (1e-3 less its share of the mean) minus rtol * 57.
        let centered_diff = 1e-3 * 5.0 / 6.0;
        assert!((fault.min_passing_atol - (centered_diff - 1e-5 * 57.0)).abs() < 1e-5, "{}", fault.min_passing_atol);
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

    /// A deterministic stream of uniform numbers in [0, 1) (splitmix64).
    fn uniform(seed: u64) -> impl FnMut() -> f64 {
        let mut state = seed;
        move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as f64 / (u64::MAX as f64 + 1.0)
        }
    }

    /// GPT-2-sized magnitudes (mean near -60, std ~17) over `positions` x `vocab`, and a
    /// candidate that differs by float32-sized noise.
    fn gpt2_like(seed: u64, positions: usize, vocab: usize) -> (Vec<f32>, Vec<f32>) {
        let mut next = uniform(seed);
        let reference: Vec<f32> = (0..positions * vocab).map(|_| (-60.0 + 17.0 * 3f64.sqrt() * (2.0 * next() - 1.0)) as f32).collect();
        let candidate = reference.iter().map(|&r| r * (1.0 + 2e-7 * (2.0 * next() as f32 - 1.0))).collect();
        (candidate, reference)
    }

    #[test]
    fn the_worst_element_is_the_planted_fault_under_either_criterion() {
        let tolerance = Tolerance { atol: 1e-4, rtol: 1e-5 };
        let (positions, vocab) = (7, 500);
        for seed in 0..20 {
            let mut next = uniform(1000 + seed);
            let (mut candidate, reference) = gpt2_like(seed, positions, vocab);
            // center_unembed's shift: every position moves by minus its mean, tens of units.
            for row in candidate.chunks_exact_mut(vocab) {
                let mean = finite_mean(row) as f32;
                row.iter_mut().for_each(|value| *value -= mean);
            }
            let (position, token) = ((next() * positions as f64) as usize, (next() * vocab as f64) as usize);
            candidate[position * vocab + token] += 0.01;
            let planted = Some(DiffLocation { position, token_id: token as i64, token: format!("t{token}") });
            let name = |id: i64| format!("t{id}");
            let shift_free = compare_logits("free", Criterion::ShiftInvariant, &candidate, &reference, vocab, tolerance, &name);
            assert!(!shift_free.passed);
            assert_eq!(shift_free.max_abs_diff_at, planted, "seed {seed}");
            assert_eq!(shift_free.outside_allclose, 1, "seed {seed}");
            assert!((shift_free.worst_abs_diff - 0.01).abs() < 1e-3, "the centered |diff| is reported: {}", shift_free.worst_abs_diff);
            assert!(shift_free.max_abs_diff > 10.0, "the raw figure stays the shift: {}", shift_free.max_abs_diff);
            assert_ne!(shift_free.raw_max_abs_diff_at, planted, "the raw maximum sits in the shift, elsewhere");

            let (mut candidate, reference) = gpt2_like(seed, positions, vocab);
            candidate[position * vocab + token] -= 0.01;
            let raw = compare_logits("raw", Criterion::Raw, &candidate, &reference, vocab, tolerance, &name);
            assert_eq!(raw.max_abs_diff_at, planted, "seed {seed}");
            assert_eq!(raw.raw_max_abs_diff_at, planted, "seed {seed}");
            assert!(!raw.worst_is_position_shift);
        }
    }

    #[test]
    fn a_failing_pure_shift_names_the_position_not_a_token() {
        let shifted: Vec<f32> = REFERENCE.iter().map(|&value| value + 1.0).collect();
        let raw = compare_logits("raw", Criterion::Raw, &shifted, &REFERENCE, 6, TOLERANCE, &|id| id.to_string());
        assert!(!raw.passed && raw.worst_is_position_shift);
        let c = hand_made();
        assert!(!c.worst_is_position_shift, "a real difference names its token");
    }

    #[test]
    fn statistics_over_non_finite_values_are_nan_and_each_side_is_counted() {
        let mut candidate = CANDIDATE;
        candidate[3] = f32::INFINITY;
        candidate[9] = f32::NAN;
        let mut reference = REFERENCE;
        reference[10] = f32::NAN;
        let c = compare_logits("nan", Criterion::ShiftInvariant, &candidate, &reference, 6, TOLERANCE, &|id| format!("t{id}"));
        assert_eq!((c.non_finite, c.candidate_non_finite, c.reference_non_finite), (3, 2, 1));
        for (name, value) in [
            ("max_abs_diff", c.max_abs_diff),
            ("mean_abs_diff", c.mean_abs_diff),
            ("rmse", c.rmse),
            ("centered_max_abs_diff", c.centered_max_abs_diff),
            ("min_passing_atol", c.min_passing_atol),
            ("kl_mean", c.kl_mean),
            ("top1_agreement", c.top1_agreement),
            ("candidate_mean", c.candidate_mean),
            ("reference_std", c.reference_std),
        ] {
            assert!(value.is_nan(), "{name} = {value}");
        }
        assert_eq!(c.max_abs_diff_at.as_ref().map(|at| (at.position, at.token_id)), Some((0, 3)), "the first non-finite element");
        assert!(serde_json::to_value(&c).unwrap()["max_abs_diff"].is_null());
    }

    /// The fast path ([`kernel`]) and the element-by-element definitions on the same input.
    fn both_paths(criterion: Criterion, candidate: &[f32], reference: &[f32], vocab: usize, tolerance: Tolerance) -> [Comparison; 2] {
        let name = |id: i64| format!("t{id}");
        let rows = kernel::summarize_rows(candidate, reference, vocab, criterion, tolerance).expect("finite input");
        [
            Totals::from_rows(&rows, vocab, criterion).into_comparison("fast", criterion, candidate.len(), vocab, tolerance, &name),
            Totals::element_by_element(candidate, reference, vocab, criterion, tolerance).into_comparison(
                "plain",
                criterion,
                candidate.len(),
                vocab,
                tolerance,
                &name,
            ),
        ]
    }

    /// What the fast path may differ by: nothing for counts, places and verdicts, nor for
    /// figures computed element by element the same way (max |diff|, max relative diff); the
    /// rounding of sums in lanes and of the row means elsewhere; and for KL and the log-softmax
    /// difference, the rounding of the element-by-element formula's two log-sum-exps at these
    /// magnitudes.
    fn assert_within_rounding(fast: &Comparison, plain: &Comparison, case: &str) {
        assert_eq!(
            (fast.violations, fast.centered_violations, fast.outside_allclose, &fast.positions_outside, fast.passed),
            (plain.violations, plain.centered_violations, plain.outside_allclose, &plain.positions_outside, plain.passed),
            "{case}: verdicts"
        );
        assert_eq!((&fast.max_abs_diff_at, &fast.raw_max_abs_diff_at), (&plain.max_abs_diff_at, &plain.raw_max_abs_diff_at), "{case}");
        assert_eq!(
            (fast.top1_agreement, fast.top5_overlap, fast.worst_is_position_shift),
            (plain.top1_agreement, plain.top5_overlap, plain.worst_is_position_shift),
            "{case}"
        );
        assert_eq!((fast.max_abs_diff, fast.max_rel_diff), (plain.max_abs_diff, plain.max_rel_diff), "{case}: element-wise maxima");
        assert_eq!(fast.position_max_abs_diff, plain.position_max_abs_diff, "{case}");
        assert_eq!(fast.position_centered_max_abs_diff.len(), plain.position_centered_max_abs_diff.len(), "{case}");
        assert_eq!(fast.non_finite_positions, plain.non_finite_positions, "{case}");
        let close = |what: &str, a: f64, b: f64, absolute: f64, relative: f64| {
            assert!((a - b).abs() <= absolute + relative * b.abs(), "{case}: {what} {a} vs {b}");
        };
        for (what, a, b) in [
            ("candidate_mean", fast.candidate_mean, plain.candidate_mean),
            ("reference_mean", fast.reference_mean, plain.reference_mean),
            ("candidate_std", fast.candidate_std, plain.candidate_std),
            ("reference_std", fast.reference_std, plain.reference_std),
            ("mean_abs_diff", fast.mean_abs_diff, plain.mean_abs_diff),
            ("rmse", fast.rmse, plain.rmse),
            ("cosine_similarity", fast.cosine_similarity, plain.cosine_similarity),
        ] {
            close(what, a, b, 0.0, 1e-12);
        }
        for (what, a, b) in [
            ("worst_abs_diff", fast.worst_abs_diff, plain.worst_abs_diff),
            ("centered_max_abs_diff", fast.centered_max_abs_diff, plain.centered_max_abs_diff),
            ("min_passing_atol", fast.min_passing_atol, plain.min_passing_atol),
            ("log_softmax_max_abs_diff", fast.log_softmax_max_abs_diff, plain.log_softmax_max_abs_diff),
            ("kl_mean", fast.kl_mean, plain.kl_mean),
            ("kl_max", fast.kl_max, plain.kl_max),
        ] {
            close(what, a, b, 1e-12, 1e-9);
        }
        for (a, b) in fast.position_shift.iter().zip(&plain.position_shift) {
            close("position_shift", *a, *b, 1e-12, 0.0);
        }
        // Centered with row means that round differently on the two paths.
        for (a, b) in fast.position_centered_max_abs_diff.iter().zip(&plain.position_centered_max_abs_diff) {
            close("position_centered_max_abs_diff", *a, *b, 1e-12, 1e-9);
        }
    }

    #[test]
    fn the_fast_path_agrees_with_the_definitions_within_rounding() {
        let tolerance = Tolerance { atol: 1e-4, rtol: 1e-5 };
        // 501 entries: rows that do not fill the last set of lanes.
        let (positions, vocab) = (6, 501);
        for seed in 0..12 {
            let mut next = uniform(500 + seed);
            let (candidate, reference) = gpt2_like(seed, positions, vocab);
            // A center_unembed-like shift per position, and faults from rounding size to large.
            let mut shifted = candidate.clone();
            for row in shifted.chunks_exact_mut(vocab) {
                let shift = (20.0 * next() - 10.0) as f32;
                row.iter_mut().for_each(|value| *value += shift);
            }
            let mut faulty = candidate.clone();
            for _ in 0..3 {
                let at = (next() * faulty.len() as f64) as usize;
                faulty[at] += (10f64.powf(-5.0 + 6.0 * next()) * if next() < 0.5 { -1.0 } else { 1.0 }) as f32;
            }
            // Near-zero logits, as a tiny random model gives.
            let small: Vec<f32> = reference.iter().map(|&r| (r + 60.0) / 50.0).collect();
            let small_candidate: Vec<f32> = small.iter().map(|&r| r + 1e-6 * (next() as f32 - 0.5)).collect();
            for (case, candidate, reference) in [
                ("noise", &candidate, &reference),
                ("shifted", &shifted, &reference),
                ("faulty", &faulty, &reference),
                ("small", &small_candidate, &small),
                ("identical", &reference, &reference),
            ] {
                for criterion in [Criterion::Raw, Criterion::ShiftInvariant] {
                    let [fast, plain] = both_paths(criterion, candidate, reference, vocab, tolerance);
                    assert_within_rounding(&fast, &plain, &format!("{case}, {criterion:?}, seed {seed}"));
                }
            }
        }
        let [fast, plain] = both_paths(Criterion::Raw, &CANDIDATE, &REFERENCE, 6, TOLERANCE);
        assert_within_rounding(&fast, &plain, "hand-made");
    }

    #[test]
    fn the_figures_do_not_depend_on_the_thread_count() {
        let tolerance = Tolerance { atol: 1e-4, rtol: 1e-5 };
        let (candidate, reference) = gpt2_like(3, 37, 1000);
        let json = |threads: usize, criterion: Criterion| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let comparison = compare_logits("threads", criterion, &candidate, &reference, 1000, tolerance, &|id| id.to_string());
                serde_json::to_string(&comparison).unwrap()
            })
        };
        for criterion in [Criterion::Raw, Criterion::ShiftInvariant] {
            let one = json(1, criterion);
            for threads in [2, 3, 8] {
                assert_eq!(json(threads, criterion), one, "{threads} threads, {criterion:?}");
            }
        }
    }
}
