//! What every comparison of one compare run shares, and how one comparison is made: the
//! statistics, the residual stream, the rounding envelope's verdict, the noise floor and the
//! diagnosis, for our models' passes and for a candidate alike.
use crate::diagnose::{diagnose, Provenance};
use crate::numeric::noise_floor::{noise_floor, ReferenceFloat64};
use crate::numeric::{compare_logits, compare_resid};
use crate::reference::PromptReference;
use crate::schema::rounding::Rounding;
use crate::schema::{Comparison, Criterion, Tolerance};
use crate::sys::timings::{timed, Phase};

/// One forward's outputs, row-major; the residual stream when the candidate has one.
pub(super) struct Candidate {
    pub logits: Vec<f32>,
    pub resid: Option<Vec<f32>>,
}

/// What every comparison of one run shares: the model's shapes, the tolerance, token names.
pub(super) struct Comparer<'a> {
    pub vocab: usize,
    pub d_model: usize,
    pub snapshots: usize,
    pub tolerance: Tolerance,
    pub token_text: &'a dyn Fn(i64) -> String,
}

impl Comparer<'_> {
    /// Logits against logits, diagnosed when they fail.
    pub(super) fn logits(
        &self,
        name: &str,
        criterion: Criterion,
        candidate: &[f32],
        reference: &[f32],
        provenance: &Provenance,
        rounding: Option<Rounding>,
    ) -> Comparison {
        let comparison = with_rounding(self.statistics(name, criterion, candidate, reference), rounding);
        self.diagnosed(comparison, candidate, reference, provenance)
    }

    fn statistics(&self, name: &str, criterion: Criterion, candidate: &[f32], reference: &[f32]) -> Comparison {
        timed(Phase::Statistics, || compare_logits(name, criterion, candidate, reference, self.vocab, self.tolerance, self.token_text))
    }

    /// The comparison with its noise floor attached when the candidate's float64 result is
    /// there (`--noise-floor`): each side as (float32 logits, float64 result).
    pub(super) fn with_noise_floor(
        &self,
        mut comparison: Comparison,
        (candidate, candidate_float64): (&[f32], Option<&[f32]>),
        reference: (&[f32], ReferenceFloat64),
    ) -> Comparison {
        if let Some(candidate_float64) = candidate_float64 {
            comparison.noise_floor = Some(timed(Phase::Statistics, || {
                noise_floor(comparison.criterion, self.tolerance, self.vocab, comparison.passed, (candidate, candidate_float64), reference)
            }));
        }
        comparison
    }

    fn diagnosed(&self, mut comparison: Comparison, candidate: &[f32], reference: &[f32], provenance: &Provenance) -> Comparison {
        timed(Phase::Statistics, || diagnose(&mut comparison, candidate, reference, self.vocab, self.tolerance, provenance));
        comparison
    }

    /// Logits against the reference's, plus the residual stream when both sides have it
    /// (centered over d_model first for the processed model, whose residual stream is mean-free).
    pub(super) fn against_reference(
        &self,
        name: &str,
        criterion: Criterion,
        candidate: &Candidate,
        reference: &PromptReference,
        processed: bool,
        provenance: &Provenance,
        rounding: Option<Rounding>,
    ) -> Comparison {
        let mut comparison = self.statistics(name, criterion, &candidate.logits, &reference.logits);
        if let (Some(candidate), Some(reference)) = (&candidate.resid, &reference.resid) {
            comparison.resid = Some(timed(Phase::Statistics, || {
                compare_resid(candidate, reference, self.d_model, self.snapshots, processed, self.tolerance)
            }));
        }
        let comparison = with_rounding(comparison, rounding);
        self.diagnosed(comparison, &candidate.logits, &reference.logits, provenance)
    }
}

/// The comparison judged by the rounding envelope too: it fails when either side leaves it, and
/// each residual snapshot passes only where both sides are within it.
fn with_rounding(mut comparison: Comparison, rounding: Option<Rounding>) -> Comparison {
    let Some(rounding) = rounding else { return comparison };
    for snapshot in comparison.resid.iter_mut().flatten() {
        snapshot.passed = Some(rounding.snapshot_within(snapshot.index));
    }
    comparison.rounding = Some(rounding);
    comparison.passed = comparison.verdict();
    comparison
}
