//! What diagnose found, and what a comparison's figures mean, in plain words: the notes under
//! each prompt's table (one per comparison with something to say), the summary table's note, and
//! explain's conclusions. Every sentence is made from figures and findings the report holds.
use crate::render::format::{count_of, percent, place_in_words, sci, times};
use crate::schema::attribution::{LogitEffect, RowKind, StepRow};
use crate::schema::cause::{Cause, PositionPattern, Side};
use crate::schema::rounding::TestedCause;
use crate::schema::DiffLocation;
use crate::schema::{Comparison, ComparisonSummary, Note, Tolerance};

/// One note per comparison with something to say, in table order.
pub fn notes(comparisons: &[Comparison]) -> Vec<Note> {
    let mut shift_explained = false;
    comparisons
        .iter()
        .filter_map(|comparison| {
            // One sentence about center_unembed's shift per prompt is enough.
            let repeat = comparison.is_expected_shift() && std::mem::replace(&mut shift_explained, true);
            if repeat {
                None
            } else {
                note(comparison).map(|text| Note { comparison: comparison.name.clone(), text })
            }
        })
        .collect()
}

fn note(comparison: &Comparison) -> Option<String> {
    if comparison.is_expected_shift() {
        return Some(format!(
            "the raw max |diff| {} is center_unembed's shift of every position by minus its mean over the vocabulary ({}); \
             with that removed the logits agree to {}, and softmax, log-probabilities and argmax are unchanged. Not a bug.",
            sci(comparison.max_abs_diff),
            describe_shift(&comparison.position_shift),
            sci(comparison.centered_max_abs_diff),
        ));
    }
    if comparison.passed {
        return None;
    }
    let mut sentences: Vec<String> = comparison.findings.iter().map(|finding| capitalized(&sentence(finding))).collect();
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
    Some(sentences.join(" "))
}

fn capitalized(sentence: &str) -> String {
    let mut chars = sentence.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

fn sentence(cause: &Cause) -> String {
    match cause {
        Cause::NonFinite { candidate, reference, first_at, first_side, .. } => {
            non_finite(*candidate, *reference, first_at.as_ref(), *first_side)
        }
        Cause::PerPositionShift { ours_center_unembed, reference_center_unembed } => {
            per_position_shift(*ours_center_unembed, *reference_center_unembed)
        }
        Cause::ShiftAndScale { scale } => format!(
            "the logits match up to a per-position shift and a common scale of {scale:.6}: a temperature, a LayerNorm gain or an \
             unembedding scaled on one side?"
        ),
        Cause::PermutedVocabulary => "each position holds the same values in another vocabulary order, and the argmax disagrees: \
            a transposed or permuted vocabulary (another tokenizer, or the unembedding read the wrong way)."
            .to_owned(),
        Cause::SingleElement { at, abs_diff } => format!(
            "a single element is outside tolerance: {} (|diff| {}); every other logit agrees.",
            place_in_words(at, false),
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
                    format!("{} ({} here, {} in the reference)", difference.switch, on_off(difference.ours), on_off(difference.reference))
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
                None => format!("{lead}; {}{unlocalised}", untested(*tried, pattern.as_ref())),
            }
        }
        Cause::ResidualAgrees { max_abs_diff } => format!(
            "the residual stream agrees at every block (max |diff| {}), so the difference arises after it: in ln_f, the \
             unembedding, or the reference's logits themselves.",
            sci(*max_abs_diff)
        ),
    }
}

/// "ours hold 3 NaN/Inf values and the reference none; the first is ours, at position 1, token ...".
fn non_finite(candidate: usize, reference: usize, first_at: Option<&DiffLocation>, first_side: Side) -> String {
    let sides = match (candidate, reference) {
        (0, _) => format!("the reference holds {} and ours none", count_of(reference, "NaN/Inf value")),
        (_, 0) => format!("ours hold {} and the reference none", count_of(candidate, "NaN/Inf value")),
        _ => format!("ours hold {} and the reference {}", count_of(candidate, "NaN/Inf value"), reference),
    };
    let side = match first_side {
        Side::Ours => "ours",
        Side::Reference => "the reference's",
        Side::Both => "both sides'",
    };
    let first = first_at.map(|at| format!("; the first is {side}, at {}", place_in_words(at, false))).unwrap_or_default();
    format!("{sides}{first}. Non-finite logits always fail, and the difference statistics are NaN.")
}

/// A per-position shift, and what each side's recorded center_unembed says about it.
fn per_position_shift(ours_center_unembed: bool, reference_center_unembed: Option<bool>) -> String {
    let on_off = |on: bool| if on { "with" } else { "without" };
    let lead = "the logits differ only by a per-position shift; softmax, log-probabilities and argmax are unchanged.";
    match reference_center_unembed {
        Some(reference) if reference != ours_center_unembed => format!(
            "{lead} That is center_unembed's shift: our logits were made {} it, the reference's {} it (as its metadata \
             records); {}.",
            on_off(ours_center_unembed),
            on_off(reference),
            if reference { "drop --no-center-unembed to match" } else { "pass --no-center-unembed to match" }
        ),
        Some(_) => format!(
            "{lead} Both sides were made {} center_unembed, so something else adds a constant to every logit of a \
             position (an output bias, or ln_f applied differently).",
            on_off(ours_center_unembed)
        ),
        None => format!(
            "{lead} Our logits were made {} center_unembed; the reference does not record its processing: was it made \
             with TransformerLens's center_unembed (HookedTransformer.from_pretrained rather than \
             from_pretrained_no_processing)?",
            on_off(ours_center_unembed)
        ),
    }
}

/// For a side outside the envelope that no catalogued deviation reproduces: how many were tried,
/// and where along the prompt it is off.
fn untested(tried: usize, pattern: Option<&PositionPattern>) -> String {
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
    let searched = if tried > 0 {
        format!("none of the {tried} catalogued port deviations that could start there reproduces it")
    } else {
        "no catalogued deviation was tried".to_owned()
    };
    format!("{searched}.{shown}")
}

/// Plain sentences: which step accounts for the raw difference, and what the rest do to
/// log-probabilities.
pub fn conclusions(rows: &[StepRow], tolerance: Tolerance) -> Vec<String> {
    let alone: Vec<&StepRow> = rows.iter().filter(|row| row.kind == RowKind::Alone).collect();
    let mut sentences = Vec::new();
    let dominant = alone.iter().copied().max_by(|a, b| a.min_share_of_raw_difference.total_cmp(&b.min_share_of_raw_difference));
    if let Some(dominant) = dominant.filter(|row| row.min_share_of_raw_difference >= 0.9999) {
        let shift = dominant.per_prompt.first().map(|effect| describe_shift(&effect.position_shift)).unwrap_or_default();
        let kind = match dominant.logit_effect {
            LogitEffect::PureShift => "every position shifted by minus its mean over the vocabulary",
            _ => "and it is not a pure per-position shift",
        };
        let others = alone.iter().filter(|row| row.name != dominant.name).map(|row| row.log_softmax_max_abs_diff).fold(0.0, f64::max);
        sentences.push(format!(
            "{} accounts for the whole raw difference (at least {:.2}% on every prompt): {kind} ({shift}); all other steps change \
             log-probabilities by at most {}.",
            dominant.step_names(),
            100.0 * dominant.min_share_of_raw_difference,
            sci(others)
        ));
    } else if let Some(dominant) = dominant {
        sentences.push(format!(
            "No single step accounts for the whole raw difference; {} accounts for the most (at least {:.2}% on every prompt).",
            dominant.step_names(),
            100.0 * dominant.min_share_of_raw_difference
        ));
    }
    for row in &alone {
        if row.log_softmax_max_abs_diff > tolerance.atol {
            sentences.push(format!(
                "{} changes log-probabilities by up to {} (top-1 agreement {:.0}%): it should leave them unchanged, so this is a bug \
                 in the processing or a loss of precision.",
                row.step_names(),
                sci(row.log_softmax_max_abs_diff),
                100.0 * row.top1_agreement
            ));
        }
    }
    if let Some(all) = rows.iter().rev().find(|row| row.kind == RowKind::Accumulated) {
        sentences.push(format!(
            "All steps together: raw max |diff| {}, log-probabilities within {}, top-1 agreement {:.0}%.",
            sci(all.max_abs_diff),
            sci(all.log_softmax_max_abs_diff),
            100.0 * all.top1_agreement
        ));
    }
    sentences
}

/// "-59.52 at position 0, -60.01 at position 1, ..." (the first three positions).
pub fn describe_shift(shift: &[f64]) -> String {
    let shown: Vec<String> =
        shift.iter().take(3).enumerate().map(|(position, value)| format!("{value:.4} at position {position}")).collect();
    let more = if shift.len() > 3 { ", ..." } else { "" };
    format!("{}{more}", shown.join(", "))
}

/// The summary table's notes: center_unembed's expected shift, told once (for the first
/// comparison that shows it on every prompt, as the per-prompt notes do; otherwise the failing
/// prompts' own notes tell it).
pub fn summary_notes(summaries: &[ComparisonSummary]) -> Vec<String> {
    summaries
        .iter()
        .find(|summary| summary.expected_shift_prompts == summary.prompts)
        .map(|summary| {
            let on = format!("on all {}", count_of(summary.prompts, "prompt"));
            format!(
                "{}: {on} the raw max |diff| (up to {}) is center_unembed's shift of every position by minus its mean over the \
                 vocabulary; with it removed the logits agree to {}, and softmax, log-probabilities and argmax are unchanged. Not a bug.",
                summary.comparison,
                sci(summary.max_abs_diff.value),
                sci(summary.centered_max_abs_diff.value)
            )
        })
        .into_iter()
        .collect()
}
