//! One comparison's record: the figures a parity table shows for two sets of logits, the
//! criterion and tolerance that judged them, and the verdict, as the JSON report holds them.
//! numeric::stats computes them; diagnose adds `findings`; render shows them.
use serde::{Deserialize, Serialize};

use super::cause::Cause;
use super::location::{DiffLocation, NonFinitePosition};
use super::noise_floor::NoiseFloor;
use super::rounding::Rounding;

/// numpy's allclose: |candidate - reference| <= atol + rtol * |reference|. The one judge of it is
/// in numeric::tolerance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
}

/// How a comparison passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// Allclose on the logits as they are: |c - r| <= atol + rtol * |r|.
    Raw,
    /// Allclose after subtracting each position's mean over the vocabulary from both sides, with
    /// rtol applied to the reference before centering, the magnitude at which the candidate
    /// computed the value and so made its rounding error:
    /// |(c - mean c) - (r - mean r)| <= atol + rtol * |r|.
    ShiftInvariant,
}

impl Criterion {
    /// The rule in words, as the report records it.
    pub fn definition(self) -> &'static str {
        match self {
            Criterion::Raw => "|c - r| <= atol + rtol * |r|",
            Criterion::ShiftInvariant => {
                "|(c - mean(c)) - (r - mean(r))| <= atol + rtol * |r|, means over the vocabulary per position, r before centering"
            }
        }
    }
}

/// One row of a prompt's table (and one object in the JSON report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub name: String,
    pub criterion: Criterion,
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub candidate_mean: f64,
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub reference_mean: f64,
    /// Sample standard deviation (n - 1), as torch.std computes it.
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub candidate_std: f64,
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub reference_std: f64,
    /// Max |diff| over all elements, raw whatever the criterion; NaN when a value is non-finite.
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub max_abs_diff: f64,
    /// Where `max_abs_diff` sits.
    pub raw_max_abs_diff_at: Option<DiffLocation>,
    /// The element worst under this comparison's criterion: the one furthest outside (or
    /// closest to) allclose, i.e. the one that sets `min_passing_atol`; for a shift-invariant
    /// comparison judged on centered values. With non-finite values, the first of them.
    pub max_abs_diff_at: Option<DiffLocation>,
    /// |diff| at `max_abs_diff_at` as the criterion judges it (centered for shift-invariant).
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub worst_abs_diff: f64,
    /// True when a raw comparison's worst element sits in a position that passes once its mean
    /// is removed: the whole position is shifted, and the token named is arbitrary.
    pub worst_is_position_shift: bool,
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub mean_abs_diff: f64,
    /// Root of the mean squared difference.
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub rmse: f64,
    /// Cosine similarity of the two matrices as flat vectors.
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub cosine_similarity: f64,
    /// Max |diff| / |reference| over elements whose reference is not zero.
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub max_rel_diff: f64,
    /// Max |diff| after removing each position's mean over the vocabulary from both sides.
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub centered_max_abs_diff: f64,
    /// Per position: mean of candidate minus mean of reference (the shift that centering removes).
    #[serde(deserialize_with = "crate::schema::nullable::numbers")]
    pub position_shift: Vec<f64>,
    /// Per position: max |candidate - reference| over the vocabulary; NaN where the position
    /// holds a non-finite value (`non_finite_positions` says which).
    #[serde(deserialize_with = "crate::schema::nullable::numbers")]
    pub position_max_abs_diff: Vec<f64>,
    /// Per position: max |diff| after removing the position's mean over the vocabulary from both
    /// sides (what a shift-invariant comparison judges, before rtol); NaN as above.
    #[serde(default, deserialize_with = "crate::schema::nullable::numbers")]
    pub position_centered_max_abs_diff: Vec<f64>,
    /// Elements outside allclose, raw.
    pub violations: usize,
    /// Elements outside allclose after centering (rtol at the reference's magnitude before
    /// centering, as [`Criterion::ShiftInvariant`] says).
    pub centered_violations: usize,
    /// Elements outside allclose under this comparison's criterion, and their share in percent.
    pub outside_allclose: usize,
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub outside_allclose_percent: f64,
    /// Positions holding at least one element outside allclose under the criterion, or a
    /// non-finite value.
    pub positions_outside: Vec<usize>,
    /// The smallest atol that would pass at the given rtol, under the criterion.
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub min_passing_atol: f64,
    /// Max |diff| of log-softmax over the vocabulary: what the model predicts, free of shifts.
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub log_softmax_max_abs_diff: f64,
    /// KL(reference || candidate) of the next-token distributions, per position: mean and max.
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub kl_mean: f64,
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub kl_max: f64,
    /// Share of positions whose argmax agrees.
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub top1_agreement: f64,
    /// Mean share of the reference's top 5 tokens that are in the candidate's top 5.
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub top5_overlap: f64,
    /// Elements where either side is NaN or infinite; any fails the comparison, and every
    /// statistic that would cover them is NaN.
    pub non_finite: usize,
    /// Non-finite values on each side.
    pub candidate_non_finite: usize,
    pub reference_non_finite: usize,
    pub first_non_finite_at: Option<DiffLocation>,
    /// Each position holding a non-finite value, in position order.
    #[serde(default)]
    pub non_finite_positions: Vec<NonFinitePosition>,
    /// Per residual-stream index, when both sides have it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resid: Option<Vec<ResidDiff>>,
    /// With `--noise-floor`: how far each side sits from float64, and what a breach is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_floor: Option<NoiseFloor>,
    /// Under `--criterion envelope` (the default): each side's distance from our float64
    /// forward as a multiple of the rounding envelope, per residual snapshot and at the logits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounding: Option<Rounding>,
    /// For a failing comparison, the most likely cause this tool can detect: the first cause
    /// among `findings`.
    pub likely_cause: Option<Cause>,
    /// For a failing comparison, everything the checks found (diagnose), residual
    /// stream included.
    pub findings: Vec<Cause>,
    pub passed: bool,
}

/// One residual-stream snapshot's agreement: index 0 is the embeddings, index l the output of block h.{l-1}.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResidDiff {
    pub index: usize,
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub max_abs_diff: f64,
    /// The largest |reference| value of the snapshot: the scale rounding noise is judged against.
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub reference_max_abs: f64,
    /// Max over the snapshot's elements of |diff| / (atol + rtol * |reference|), the criterion
    /// scaled to its bound: within tolerance when this is at most 1 (0 where |diff| is 0; NaN
    /// when a difference is NaN; +Inf when one is, or when the bound is 0 and |diff| is not). At
    /// GPT-2's magnitudes faithful blocks exceed atol, so this judges nothing by itself.
    #[serde(default, deserialize_with = "crate::schema::nullable::number")]
    pub max_tolerance_ratio: f64,
    /// Whether both sides are within the rounding envelope here; `null` under `--criterion
    /// tolerance`, which judges the logits alone.
    pub passed: Option<bool>,
}

impl Comparison {
    /// The one tolerance judge: whether the comparison passes, from its stored figures alone.
    /// compare sets `passed` with it, and merge recomputes every shard's verdicts with it, so
    /// a criterion added to a comparison is added here.
    pub fn verdict(&self) -> bool {
        self.non_finite == 0 && self.outside_allclose == 0 && self.rounding.as_ref().is_none_or(Rounding::passed)
    }

    /// A shift-invariant comparison that passes only because the shift is removed: center_unembed's
    /// expected shift.
    pub fn is_expected_shift(&self) -> bool {
        self.criterion == Criterion::ShiftInvariant && self.passed && self.violations > 0
    }
}
