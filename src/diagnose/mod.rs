//! What a failing comparison shows: every finding the evidence supports, as data (schema::cause;
//! diagnose::prose puts them in words): non-finite values and on which side, a per-position shift
//! (checked against what each side's processing switches say), a shift plus a scale, a permuted
//! vocabulary, a single element, a single position, rounding noise, switches that differ from
//! the reference's, where a side leaves the rounding envelope, and where the residual stream
//! diverges. Every check runs; nothing is found that the numbers do not show.
pub mod attribution;
pub mod prose;

use crate::model::switches::{ProcessingOptions, RecordedSwitches, Step};
use crate::numeric::stats::finite_mean;
use crate::render::format::snapshot_name;
use crate::schema::cause::{Cause, PositionPattern, Side, SwitchDifference};
use crate::schema::{Comparison, Criterion, ResidDiff, Tolerance};

/// A difference of at most this many float32 ulps of the largest |reference|, spread over the
/// matrix with every argmax agreeing, is called rounding noise. On the fixture our float32
/// forward and Hugging Face's differ by 3-5 such ulps; an error of 0.01 in one logit where the
/// largest |logit| is 100 (GPT-2's scale) is about 840.
const NOISE_ULPS: f64 = 64.0;

/// What is known about how each side's logits were made, for judging a per-position shift.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// Whether our logits had center_unembed.
    pub ours_center_unembed: bool,
    /// Whether the reference's had it; `None` when the file does not record it.
    pub reference_center_unembed: Option<bool>,
    /// Switches where our processing and the reference's recorded processing disagree.
    pub differing_switches: Vec<SwitchDifference>,
}

impl Provenance {
    /// Against a reference whose TransformerLens processing is recorded (`recorded`, the
    /// `transformer_lens_processing` metadata object), with ours processed by `ours`.
    pub fn against_recorded(ours: &ProcessingOptions, recorded: Option<&RecordedSwitches>) -> Self {
        Self {
            ours_center_unembed: ours.center_unembed,
            reference_center_unembed: recorded.and_then(|recorded| recorded.get(Step::CenterUnembed)),
            differing_switches: recorded
                .map(|recorded| ours.differences_from(recorded))
                .unwrap_or_default()
                .into_iter()
                .map(|(step, ours, reference)| SwitchDifference { switch: step.name().to_owned(), ours, reference })
                .collect(),
        }
    }
}

/// Runs every check on a failing comparison and records the findings (and the first cause
/// among them as `likely_cause`). Call after the residual stream, if any, is compared.
pub fn diagnose(
    comparison: &mut Comparison,
    candidate: &[f32],
    reference: &[f32],
    vocab: usize,
    tolerance: Tolerance,
    provenance: &Provenance,
) {
    if comparison.passed {
        return;
    }
    let findings = findings(comparison, candidate, reference, vocab, tolerance, provenance);
    comparison.likely_cause = findings.iter().find(|finding| finding.is_cause()).cloned();
    comparison.findings = findings;
}

fn findings(
    comparison: &Comparison,
    candidate: &[f32],
    reference: &[f32],
    vocab: usize,
    tolerance: Tolerance,
    provenance: &Provenance,
) -> Vec<Cause> {
    // A side's tested cause leads; a side outside the envelope with none follows what the
    // logits themselves show.
    let (tested, untested): (Vec<Cause>, Vec<Cause>) =
        envelope_findings(comparison).into_iter().partition(|finding| matches!(finding, Cause::LeavesEnvelope { cause: Some(_), .. }));
    let outside_envelope = !(tested.is_empty() && untested.is_empty());
    let mut findings = tested;
    let positions = comparison.position_shift.len();
    if comparison.non_finite > 0 {
        let first_side = comparison.first_non_finite_at.as_ref().map_or(Side::Both, |at| {
            let index = at.position * vocab + at.token_id as usize;
            match (candidate[index].is_finite(), reference[index].is_finite()) {
                (false, true) => Side::Ours,
                (true, false) => Side::Reference,
                _ => Side::Both,
            }
        });
        findings.push(Cause::NonFinite {
            count: comparison.non_finite,
            candidate: comparison.candidate_non_finite,
            reference: comparison.reference_non_finite,
            first_at: comparison.first_non_finite_at.clone(),
            first_side,
        });
    } else if comparison.outside_allclose > 0 {
        // What the logits show, when they breach the tolerance (inside it, only the envelope
        // failed the comparison, and its findings say where).
        let shift = comparison.criterion == Criterion::Raw && comparison.centered_violations == 0;
        if shift {
            findings.push(Cause::PerPositionShift {
                ours_center_unembed: provenance.ours_center_unembed,
                reference_center_unembed: provenance.reference_center_unembed,
            });
        } else if let Some(scale) = common_scale(candidate, reference, vocab, tolerance) {
            findings.push(Cause::ShiftAndScale { scale });
        }
        if comparison.top1_agreement == 0.0 && same_values_per_position(candidate, reference, vocab, tolerance) {
            findings.push(Cause::PermutedVocabulary);
        }
        // Noise in a few places is still noise: a prompt's first position often comes out bit
        // for bit the same on both sides (its attention is over itself alone), leaving the rest
        // of a two-token prompt's noise on one position.
        let noise = rounding_noise(comparison, reference, outside_envelope);
        if noise.is_none() {
            if let (1, Some(at)) = (comparison.outside_allclose, &comparison.max_abs_diff_at) {
                findings.push(Cause::SingleElement { at: at.clone(), abs_diff: comparison.worst_abs_diff });
            } else if let [position] = comparison.positions_outside[..] {
                if positions > 1 {
                    findings.push(Cause::SinglePosition { position, elements: comparison.outside_allclose });
                }
            }
        }
        if findings.is_empty() {
            findings.extend(noise);
        }
    }
    findings.extend(untested);
    // A shift finding already names center_unembed when the sides disagree on it.
    let explained_by_shift = |difference: &&SwitchDifference| {
        difference.switch == "center_unembed" && findings.iter().any(|finding| matches!(finding, Cause::PerPositionShift { .. }))
    };
    let switches: Vec<SwitchDifference> =
        provenance.differing_switches.iter().filter(|difference| !explained_by_shift(difference)).cloned().collect();
    if !switches.is_empty() {
        findings.push(Cause::ProcessingDiffers { switches });
    }
    if let Some(resid) = &comparison.resid {
        let finding = residual_finding(resid);
        // Beside rounding noise in the logits, a residual stream that agrees adds nothing.
        let adds_nothing = matches!(finding, Cause::ResidualAgrees { .. }) && findings.iter().any(|f| matches!(f, Cause::Noise { .. }));
        if !adds_nothing {
            findings.push(finding);
        }
    }
    findings
}

/// The comparison's breach as rounding noise, when it is: every argmax agreeing, no side outside
/// the rounding envelope, and the difference within [`NOISE_ULPS`] of the largest |reference|.
fn rounding_noise(comparison: &Comparison, reference: &[f32], outside_envelope: bool) -> Option<Cause> {
    if comparison.top1_agreement != 1.0 || outside_envelope {
        return None;
    }
    let largest = reference.iter().fold(0.0f64, |largest, &value| largest.max(f64::from(value).abs()));
    let ulps = comparison.worst_abs_diff.max(comparison.min_passing_atol) / (largest * f64::from(f32::EPSILON));
    (ulps <= NOISE_ULPS).then_some(Cause::Noise {
        ulps,
        elements: comparison.outside_allclose,
        positions: comparison.positions_outside.len(),
        of_positions: comparison.position_shift.len(),
        min_passing_atol: comparison.min_passing_atol,
    })
}

/// Each side of the comparison that leaves the rounding envelope: where, by how much, and the
/// tested cause.
fn envelope_findings(comparison: &Comparison) -> Vec<Cause> {
    let Some(rounding) = &comparison.rounding else { return Vec::new() };
    let snapshots = comparison.resid.as_ref().map_or(0, Vec::len);
    [&rounding.candidate, &rounding.reference]
        .into_iter()
        .filter_map(|side| {
            let place = side.first_outside?;
            let multiple = side.snapshots.as_ref().and_then(|snapshots| snapshots.get(place.index).copied()).unwrap_or(side.logits);
            let name = if side.snapshots.as_ref().is_some_and(|snapshots| place.index < snapshots.len()) || place.index < snapshots {
                snapshot_name(place.index)
            } else {
                "the logits".to_owned()
            };
            Some(Cause::LeavesEnvelope {
                side: side.side.clone(),
                place: name,
                multiple,
                factor: rounding.factor,
                cause: side.cause.clone(),
                tried: side.deviations_tried,
                pattern: side.positions.as_deref().and_then(|positions| position_pattern(positions, rounding.factor)),
                localised: side.snapshots.is_some(),
            })
        })
        .collect()
}

/// How a side's multiples spread over the positions at the place it first leaves the envelope.
fn position_pattern(positions: &[f64], factor: f64) -> Option<PositionPattern> {
    let outside: Vec<usize> = (0..positions.len()).filter(|&position| !(positions[position] <= factor)).collect();
    let worst_position = (0..positions.len()).max_by(|&a, &b| positions[a].total_cmp(&positions[b]))?;
    let last = positions.len() - 1;
    match outside[..] {
        [] => None,
        [position] if positions.len() > 1 => Some(PositionPattern::SinglePosition { position }),
        _ if positions.len() > 2 && positions[last] <= factor => Some(PositionPattern::LastPositionExact { worst_position }),
        _ => Some(PositionPattern::Spread { worst_position, outside: outside.len(), of: positions.len() }),
    }
}

/// Where the residual stream first diverges beyond rounding (judged by the envelope when the
/// comparison has one, else by tolerance and float32 ulps), or that it does not.
fn residual_finding(resid: &[ResidDiff]) -> Cause {
    let judged_by_envelope = resid.iter().any(|snapshot| snapshot.passed.is_some());
    if judged_by_envelope {
        let max_abs_diff = resid.iter().map(|snapshot| snapshot.max_abs_diff).fold(0.0, f64::max);
        return match resid.iter().find(|snapshot| snapshot.passed == Some(false)) {
            Some(first) => Cause::ResidualDiverges { index: first.index, max_abs_diff: first.max_abs_diff },
            None => Cause::ResidualAgrees { max_abs_diff },
        };
    }
    let ulps = |snapshot: &ResidDiff| snapshot.max_abs_diff / (snapshot.reference_max_abs * f64::from(f32::EPSILON));
    let failing = || resid.iter().filter(|snapshot| !(snapshot.max_tolerance_ratio <= 1.0));
    match failing().find(|snapshot| !(ulps(snapshot) <= NOISE_ULPS)) {
        Some(first) => Cause::ResidualDiverges { index: first.index, max_abs_diff: first.max_abs_diff },
        None if failing().next().is_some() => Cause::ResidualNoise {
            max_abs_diff: resid.iter().map(|snapshot| snapshot.max_abs_diff).fold(0.0, f64::max),
            ulps: failing().map(ulps).fold(0.0, f64::max),
        },
        None => Cause::ResidualAgrees { max_abs_diff: resid.iter().map(|snapshot| snapshot.max_abs_diff).fold(0.0, f64::max) },
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numeric::stats::compare_logits;

    const VOCAB: usize = 512;

    /// Two positions of logits in [-10, 10]; the candidate as `edit` makes it from the reference.
    fn diagnosed(edit: impl Fn(usize, f32) -> f32) -> Comparison {
        let reference: Vec<f32> = (0..2 * VOCAB).map(|index| 10.0 * (index as f32 * 0.37).sin()).collect();
        let candidate: Vec<f32> = reference.iter().enumerate().map(|(index, &value)| edit(index, value)).collect();
        let tolerance = Tolerance { atol: 0.0, rtol: 0.0 };
        let mut comparison =
            compare_logits("unprocessed-vs-reference", Criterion::Raw, &candidate, &reference, VOCAB, tolerance, &|id| id.to_string());
        diagnose(&mut comparison, &candidate, &reference, VOCAB, tolerance, &Provenance::default());
        comparison
    }

    #[test]
    fn noise_on_one_position_is_noise() {
        let one_ulp_up = |value: f32| f32::from_bits(value.to_bits() + 1);
        let comparison = diagnosed(|index, value| if index >= VOCAB { one_ulp_up(value) } else { value });
        assert_eq!(comparison.positions_outside, [1]);
        assert!(matches!(comparison.likely_cause, Some(Cause::Noise { positions: 1, of_positions: 2, .. })), "{:?}", comparison.findings);
    }

    #[test]
    fn one_position_far_off_is_a_single_position() {
        let comparison = diagnosed(|index, value| if index >= VOCAB { value + 0.01 * (index % 7) as f32 } else { value });
        assert!(matches!(comparison.likely_cause, Some(Cause::SinglePosition { position: 1, .. })), "{:?}", comparison.findings);
    }

    #[test]
    fn one_element_far_off_is_a_single_element() {
        let comparison = diagnosed(|index, value| if index == VOCAB + 7 { value + 0.5 } else { value });
        assert!(matches!(comparison.likely_cause, Some(Cause::SingleElement { .. })), "{:?}", comparison.findings);
    }
}
