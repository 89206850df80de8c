//! What a difference means, in plain words: the expected per-position shift of center_unembed
//! (not a bug), or for a failing comparison every finding the evidence supports: non-finite
//! values and on which side, a per-position shift (checked against what each side's processing
//! switches say), a shift plus a scale, a permuted vocabulary, a single element, a single
//! position, rounding noise, switches that differ from the reference's, and where the residual
//! stream diverges. Every check runs; nothing is said that the numbers do not show.
use serde::{Deserialize, Serialize};

use super::attribution::describe_shift;
use super::envelope::TestedCause;
use super::stats::{finite_mean, DiffLocation, ResidDiff};
use super::{Comparison, Criterion, Tolerance};
use crate::model::switches::{ProcessingOptions, RecordedSwitches, Step};
use crate::tokenize::token_with_id;

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

/// One TransformerLens switch on which the two sides disagree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchDifference {
    pub switch: String,
    pub ours: bool,
    pub reference: bool,
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

/// Which side holds a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Ours,
    Reference,
    Both,
}

/// One finding about a failing comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cause {
    /// NaN or infinite values: how many on each side, and where the first is.
    NonFinite { count: usize, candidate: usize, reference: usize, first_at: Option<DiffLocation>, first_side: Side },
    /// Every failing position is shifted by its own constant; softmax unchanged.
    PerPositionShift { ours_center_unembed: bool, reference_center_unembed: Option<bool> },
    /// A per-position shift and one common scale factor (candidate ≈ scale × reference + shift).
    ShiftAndScale { scale: f64 },
    /// Each position holds the reference's values in another vocabulary order.
    PermutedVocabulary,
    /// Exactly one element is outside tolerance.
    SingleElement { at: DiffLocation, abs_diff: f64 },
    /// Every element outside tolerance (more than one) sits in one position of several.
    SinglePosition { position: usize, elements: usize },
    /// Small differences spread over many elements with every argmax agreeing.
    Noise { ulps: f64, elements: usize, positions: usize, of_positions: usize, min_passing_atol: f64 },
    /// Our processing switches differ from those the reference records.
    ProcessingDiffers { switches: Vec<SwitchDifference> },
    /// The residual stream first exceeds tolerance, by more than rounding noise, at this
    /// snapshot (0 = embeddings).
    ResidualDiverges { index: usize, max_abs_diff: f64 },
    /// The residual stream exceeds tolerance somewhere, but nowhere by more than rounding noise.
    ResidualNoise { max_abs_diff: f64, ulps: f64 },
    /// The residual stream agrees at every snapshot.
    ResidualAgrees { max_abs_diff: f64 },
    /// A side leaves the rounding envelope: where first, by how much, and what a search of the
    /// catalogue of port deviations found (docs/metrics.md).
    LeavesEnvelope {
        side: String,
        place: String,
        /// NaN (`null`) when the side holds a non-finite value there.
        #[serde(deserialize_with = "crate::report::nullable::number")]
        multiple: f64,
        factor: f64,
        cause: Option<TestedCause>,
        tried: usize,
        pattern: Option<PositionPattern>,
        /// Whether the side recorded its residual stream (else only the logits can be judged).
        localised: bool,
    },
}

/// Where along the prompt a side's deviation sits, at the first place it leaves the envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionPattern {
    /// Earlier positions are off and the last one is within the envelope: what a missing causal
    /// mask does (the last position sees every token either way).
    LastPositionExact { worst_position: usize },
    /// Only this position leaves the envelope.
    SinglePosition { position: usize },
    /// Most positions leave it; the worst is this one.
    Spread { worst_position: usize, outside: usize, of: usize },
}

impl Cause {
    /// Residual-stream findings say where, not what: they are never the likely cause.
    fn is_cause(&self) -> bool {
        match self {
            Cause::LeavesEnvelope { cause, .. } => cause.is_some(),
            other => !matches!(other, Cause::ResidualDiverges { .. } | Cause::ResidualNoise { .. } | Cause::ResidualAgrees { .. }),
        }
    }

    fn sentence(&self) -> String {
        match self {
            Cause::NonFinite { candidate, reference, first_at, first_side, .. } => {
                let sides = match (candidate, reference) {
                    (0, _) => format!("the reference holds {} and ours none", count_of(*reference, "NaN/Inf value")),
                    (_, 0) => format!("ours hold {} and the reference none", count_of(*candidate, "NaN/Inf value")),
                    _ => format!("ours hold {} and the reference {}", count_of(*candidate, "NaN/Inf value"), reference),
                };
                let side = match first_side {
                    Side::Ours => "ours",
                    Side::Reference => "the reference's",
                    Side::Both => "both sides'",
                };
                let first = first_at
                    .as_ref()
                    .map(|at| format!("; the first is {side}, at position {} token {}", at.position, token_with_id(at.token_id, &at.token)))
                    .unwrap_or_default();
                format!("{sides}{first}. Non-finite logits always fail, and the difference statistics are NaN.")
            }
            Cause::PerPositionShift { ours_center_unembed, reference_center_unembed } => {
                let on_off = |on: bool| if on { "with" } else { "without" };
                let lead = "the logits differ only by a per-position shift; softmax, log-probabilities and argmax are unchanged.";
                match reference_center_unembed {
                    Some(reference) if reference != ours_center_unembed => format!(
                        "{lead} That is center_unembed's shift: our logits were made {} it, the reference's {} it (as its metadata \
                         records); {}.",
                        on_off(*ours_center_unembed),
                        on_off(*reference),
                        if *reference { "drop --no-center-unembed to match" } else { "pass --no-center-unembed to match" }
                    ),
                    Some(_) => format!(
                        "{lead} Both sides were made {} center_unembed, so something else adds a constant to every logit of a \
                         position (an output bias, or ln_f applied differently).",
                        on_off(*ours_center_unembed)
                    ),
                    None => format!(
                        "{lead} Our logits were made {} center_unembed; the reference does not record its processing: was it made \
                         with TransformerLens's center_unembed (HookedTransformer.from_pretrained rather than \
                         from_pretrained_no_processing)?",
                        on_off(*ours_center_unembed)
                    ),
                }
            }
            Cause::ShiftAndScale { scale } => format!(
                "the logits match up to a per-position shift and a common scale of {scale:.6}: a temperature, a LayerNorm gain or an \
                 unembedding scaled on one side?"
            ),
            Cause::PermutedVocabulary => "each position holds the same values in another vocabulary order, and the argmax disagrees: \
                a transposed or permuted vocabulary (another tokenizer, or the unembedding read the wrong way)."
                .to_owned(),
            Cause::SingleElement { at, abs_diff } => format!(
                "a single element is outside tolerance: position {}, token {} (|diff| {}); every other logit agrees.",
                at.position,
                token_with_id(at.token_id, &at.token),
                sci(*abs_diff)
            ),
            Cause::SinglePosition { position, elements } => format!(
                "only position {position} is outside tolerance ({elements} elements); every other position agrees, which points at \
                 something specific to that position (its token, its position embedding row, a prepended BOS)."
            ),
            Cause::Noise { ulps, elements, positions, of_positions, min_passing_atol } => format!(
                "this looks like float32 rounding noise: the differences reach {ulps:.0} ulps of the largest |reference|, spread \
                 over {} at {positions} of {of_positions} positions, and every argmax agrees. The smallest passing atol at this rtol \
                 is {}.",
                count_of(*elements, "element"),
                sci(*min_passing_atol)
            ),
            Cause::ProcessingDiffers { switches } => {
                let listed: Vec<String> = switches
                    .iter()
                    .map(|difference| {
                        let on_off = |on: bool| if on { "on" } else { "off" };
                        format!(
                            "{} ({} here, {} in the reference)",
                            difference.switch,
                            on_off(difference.ours),
                            on_off(difference.reference)
                        )
                    })
                    .collect();
                format!("this run's processing differs from the switches the reference records: {}.", listed.join(", "))
            }
            Cause::ResidualDiverges { index: 0, max_abs_diff } => {
                format!(
                    "the residual stream already differs at the embeddings (max |diff| {}): check wte, wpe and the token ids.",
                    sci(*max_abs_diff)
                )
            }
            Cause::ResidualDiverges { index, max_abs_diff } => format!(
                "the residual stream first diverges at the output of block h.{} (max |diff| {}); earlier blocks agree.",
                index - 1,
                sci(*max_abs_diff)
            ),
            Cause::ResidualNoise { max_abs_diff, ulps } => format!(
                "the residual stream differs by at most {} ({ulps:.0} ulps of its largest value): rounding noise at every block, \
                 no block diverges.",
                sci(*max_abs_diff)
            ),
            Cause::LeavesEnvelope { side, place, multiple, factor, cause, tried, pattern, localised } => {
                let unlocalised = if *localised {
                    ""
                } else {
                    " Without its residual stream only the logits can be judged; record it to find the block (docs/candidates.md)."
                };
                let lead = format!(
                    "{side} leaves the rounding envelope first at {place} ({} rounding, more than the {factor:.0}x a faithful float32 GPT-2 stays within)",
                    times(*multiple)
                );
                match cause {
                    Some(TestedCause { description, correlation: Some(correlation), .. }) => format!(
                        "{lead}. Tested cause: {description}; {side}'s residual stream agrees with ours through the last block, yet its \
                         logits correlate at most |r| = {correlation:.3} with what wte's unembedding gives on that residual stream \
                         (a faithful head gives 1)."
                    ),
                    Some(cause) => format!(
                        "{lead}. Tested cause: {}; with that change our float64 forward matches {side} to {} in the logits ({} rounding).{unlocalised}",
                        cause.description,
                        sci(cause.logits_max_abs_diff),
                        times(cause.multiple)
                    ),
                    None => {
                        let shown = match pattern {
                            Some(PositionPattern::LastPositionExact { worst_position }) => format!(
                                " The earlier positions are off (worst: position {worst_position}) and the last one is within the envelope: \
                                 the signature of a missing causal mask."
                            ),
                            Some(PositionPattern::SinglePosition { position }) => format!(" Only position {position} is off."),
                            Some(PositionPattern::Spread { worst_position, outside, of }) => {
                                format!(" {outside} of {of} positions are off; the worst is position {worst_position}.")
                            }
                            None => String::new(),
                        };
                        let searched = if *tried > 0 {
                            format!("none of the {tried} catalogued port deviations that could start there reproduces it")
                        } else {
                            "no catalogued deviation was tried".to_owned()
                        };
                        format!("{lead}; {searched}.{shown}{unlocalised}")
                    }
                }
            }
            Cause::ResidualAgrees { max_abs_diff } => format!(
                "the residual stream agrees at every block (max |diff| {}), so the difference arises after it: in ln_f, the \
                 unembedding, or the reference's logits themselves.",
                sci(*max_abs_diff)
            ),
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
        if let (1, Some(at)) = (comparison.outside_allclose, &comparison.max_abs_diff_at) {
            findings.push(Cause::SingleElement { at: at.clone(), abs_diff: comparison.worst_abs_diff });
        } else if let [position] = comparison.positions_outside[..] {
            if positions > 1 {
                findings.push(Cause::SinglePosition { position, elements: comparison.outside_allclose });
            }
        }
        if findings.is_empty() && comparison.top1_agreement == 1.0 && !outside_envelope {
            let largest = reference.iter().fold(0.0f64, |largest, &value| largest.max(f64::from(value).abs()));
            let ulps = comparison.worst_abs_diff.max(comparison.min_passing_atol) / (largest * f64::from(f32::EPSILON));
            if ulps <= NOISE_ULPS {
                findings.push(Cause::Noise {
                    ulps,
                    elements: comparison.outside_allclose,
                    positions: comparison.positions_outside.len(),
                    of_positions: positions,
                    min_passing_atol: comparison.min_passing_atol,
                });
            }
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
                super::envelope::snapshot_name(place.index)
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

/// "412x", "3.1x", "0.8x": a multiple of the envelope.
pub fn times(multiple: f64) -> String {
    match multiple {
        value if value.is_nan() || value.is_infinite() => "non-finite".to_owned(),
        value if value >= 100.0 => format!("{value:.0}x"),
        value if value >= 10.0 => format!("{value:.0}x"),
        value => format!("{value:.1}x"),
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

/// One note per comparison with something to say, in table order.
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
pub fn expected_shift(comparison: &Comparison) -> bool {
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
    let mut sentences: Vec<String> = comparison.findings.iter().map(|finding| capitalized(&finding.sentence())).collect();
    let breaches_tolerance = comparison.outside_allclose > 0 || comparison.non_finite > 0;
    if breaches_tolerance && !comparison.findings.iter().any(Cause::is_cause) {
        sentences.insert(
            0,
            format!(
                "Max |diff| {} exceeds the tolerance at {} ({}); log-softmax differs by up to {}, top-1 agreement {}.",
                sci(comparison.worst_abs_diff),
                count_of(comparison.outside_allclose, "element"),
                percent(comparison.outside_allclose_percent, 3),
                sci(comparison.log_softmax_max_abs_diff),
                percent(100.0 * comparison.top1_agreement, 0)
            ),
        );
    }
    Some(format!("{name}: {}", sentences.join(" ")))
}

fn capitalized(sentence: &str) -> String {
    let mut chars = sentence.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// Compact scientific notation for differences ("NaN" when it cannot be computed).
pub fn sci(value: f64) -> String {
    format!("{value:.2e}")
}

/// A percentage with `decimals` places, never "-0.00%" (rounding a tiny negative share to zero
/// keeps no sign).
pub fn percent(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    let text =
        if text.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') { text.trim_start_matches('-').to_owned() } else { text };
    format!("{text}%")
}

/// "1 element", "8 elements".
pub fn count_of(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}
