//! Compares a candidate's logits with a reference's: the figures a parity table shows and the
//! allclose verdict, both raw and after removing each position's mean over the vocabulary
//! (a per-position shift that softmax ignores). Pure arithmetic on row-major f32 slices, in f64.
use serde::Serialize;

/// numpy's allclose: |candidate - reference| <= atol + rtol * |reference|.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
}

impl Tolerance {
    fn allows(&self, candidate: f64, reference: f64) -> bool {
        (candidate - reference).abs() <= self.atol + self.rtol * reference.abs()
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

/// Where the largest difference sits: which position, which vocabulary entry.
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
    /// Max |diff| after removing each position's mean over the vocabulary from both sides.
    pub centered_max_abs_diff: f64,
    /// Per position: mean of candidate minus mean of reference (the shift that centering removes).
    pub position_shift: Vec<f64>,
    /// Elements outside allclose, raw.
    pub violations: usize,
    /// Elements outside allclose after centering.
    pub centered_violations: usize,
    /// NaN or infinite values, on either side; any fails the comparison.
    pub non_finite: usize,
    /// Per residual-stream index, when both sides have it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resid: Option<Vec<ResidDiff>>,
    pub passed: bool,
}

/// One residual-stream snapshot's agreement: index 0 is the embeddings, index l the output of block h.{l-1}.
#[derive(Debug, Clone, Serialize)]
pub struct ResidDiff {
    pub index: usize,
    pub max_abs_diff: f64,
    pub passed: bool,
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
    let (candidate_mean, candidate_std) = mean_and_std(candidate);
    let (reference_mean, reference_std) = mean_and_std(reference);
    let candidate_row_means = row_means(candidate, vocab);
    let reference_row_means = row_means(reference, vocab);
    let mut max_abs_diff = 0.0f64;
    let mut max_at = None;
    let mut abs_diff_sum = 0.0;
    let mut finite_count = 0usize;
    let mut centered_max_abs_diff = 0.0f64;
    let (mut violations, mut centered_violations, mut non_finite) = (0, 0, 0);
    for (index, (&c, &r)) in candidate.iter().zip(reference).enumerate() {
        let (c, r) = (f64::from(c), f64::from(r));
        if !(c.is_finite() && r.is_finite()) {
            non_finite += 1;
            continue;
        }
        let position = index / vocab;
        let diff = (c - r).abs();
        finite_count += 1;
        abs_diff_sum += diff;
        if diff > max_abs_diff || max_at.is_none() {
            max_abs_diff = diff;
            max_at = Some(index);
        }
        violations += usize::from(!tolerance.allows(c, r));
        let (c_centered, r_centered) = (c - candidate_row_means[position], r - reference_row_means[position]);
        centered_max_abs_diff = centered_max_abs_diff.max((c_centered - r_centered).abs());
        centered_violations += usize::from(!tolerance.allows(c_centered, r_centered));
    }
    let failing = match criterion {
        Criterion::Raw => violations,
        Criterion::ShiftInvariant => centered_violations,
    };
    Comparison {
        name: name.to_owned(),
        criterion,
        candidate_mean,
        reference_mean,
        candidate_std,
        reference_std,
        max_abs_diff,
        max_abs_diff_at: max_at.map(|index| {
            let token_id = (index % vocab) as i64;
            DiffLocation { position: index / vocab, token_id, token: token_text(token_id) }
        }),
        mean_abs_diff: if finite_count > 0 { abs_diff_sum / finite_count as f64 } else { f64::NAN },
        centered_max_abs_diff,
        position_shift: candidate_row_means.iter().zip(&reference_row_means).map(|(c, r)| c - r).collect(),
        violations,
        centered_violations,
        non_finite,
        resid: None,
        passed: non_finite == 0 && failing == 0,
    }
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
                let shift = if center_reference { r_row.iter().map(|&r| f64::from(r)).sum::<f64>() / d_model as f64 } else { 0.0 };
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

/// Mean and sample standard deviation over the finite values.
fn mean_and_std(values: &[f32]) -> (f64, f64) {
    let finite = || values.iter().map(|&v| f64::from(v)).filter(|v| v.is_finite());
    let count = finite().count();
    if count == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = finite().sum::<f64>() / count as f64;
    let squares: f64 = finite().map(|v| (v - mean) * (v - mean)).sum();
    let std = if count > 1 { (squares / (count - 1) as f64).sqrt() } else { 0.0 };
    (mean, std)
}

/// Each row's mean over its finite values.
fn row_means(values: &[f32], width: usize) -> Vec<f64> {
    values.chunks_exact(width).map(|row| mean_and_std(row).0).collect()
}
