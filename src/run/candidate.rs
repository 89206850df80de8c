//! `compare --candidate FILE`: another implementation's logits (and residual stream, when it
//! records one), written in the reference format, take the place of our two models. Each prompt
//! gets one row, candidate-vs-reference, judged as unprocessed-vs-reference is: the same metrics,
//! likely cause, first divergent block and verdict. No forward runs; `--model` still supplies
//! the tokenizer (tokens and token names), the shapes and the weights digest the files must name.
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::cases::PromptCase;
use super::comparer::{Candidate, Comparer};
use super::passes::{clocked, Clocked};
use super::rounding::{EnvelopeJudge, Outputs};
use crate::diagnose::Provenance;
use crate::model::inputs::ModelInputs;
use crate::reference::{PromptReference, ReferenceFile};
use crate::schema::rounding::Rounding;
use crate::schema::CandidateInfo;
use crate::schema::{Comparison, Criterion};
use crate::sys::timings::{timed, Phase};
use crate::tokenize::abbreviate;

/// The row name of a candidate's comparison.
pub const COMPARISON: &str = "candidate-vs-reference";

/// Opens a candidate and checks it as a reference is checked: format, tensors, shapes against
/// the model, and the weights digest (unless `allow_other_weights`).
pub fn open(path: &Path, inputs: &ModelInputs, weights_digest: &str, allow_other_weights: bool) -> Result<ReferenceFile> {
    if !path.exists() {
        bail!(
            "candidate {} does not exist; write one with scripts/write_candidate.py (docs/candidates.md) or fix the --candidate path",
            path.display()
        );
    }
    let candidate = ReferenceFile::open(path)?;
    candidate.check_model(&inputs.config, weights_digest, allow_other_weights)?;
    Ok(candidate)
}

/// Checks that the candidate and the reference agree on `<|endoftext|>` in front, before any
/// prompt is read.
fn check_prepend_bos(candidate: &ReferenceFile, reference: &ReferenceFile) -> Result<()> {
    if candidate.meta.prepend_bos != reference.meta.prepend_bos {
        bail!(
            "candidate {} has prepend_bos {} but reference {} has {}; write the candidate from the reference's tokens (scripts/write_candidate.py does)",
            candidate.path().display(),
            candidate.meta.prepend_bos,
            reference.path().display(),
            reference.meta.prepend_bos
        );
    }
    Ok(())
}

/// A case's two sides as read from the files: the candidate's, then the reference's.
type ReadCase = (PromptReference, PromptReference);

/// Reads a case's prompt from both files (untimed: see [`compare_each`]). The candidate holds the
/// prompt under the same text, with the same tokens (which the case already checked against the
/// reference and our tokenizer).
fn read_case(candidate: &ReferenceFile, reference: &ReferenceFile, case: &PromptCase) -> Result<ReadCase> {
    let index = candidate.meta.prompts.iter().position(|prompt| *prompt == case.prompt).with_context(|| {
        format!(
            "prompt {:?} is not in candidate {} (it holds {} prompts); write the candidate for every prompt of the reference or name only the prompts it holds",
            abbreviate(&case.prompt),
            candidate.path().display(),
            candidate.meta.prompts.len()
        )
    })?;
    let held = candidate.prompt_read_ahead(index)?;
    if held.tokens != case.tokens {
        bail!(
            "candidate {}, prompt {:?}: its tokens {:?} differ from the reference's {:?}; feed the port the reference's token ids",
            candidate.path().display(),
            abbreviate(&case.prompt),
            held.tokens,
            case.tokens
        );
    }
    Ok((held, reference.prompt_read_ahead(case.reference_index)?))
}

/// A case's candidate-vs-reference comparison.
fn compare(
    (held, reference_prompt): ReadCase,
    case: &PromptCase,
    comparer: &Comparer,
    judge: Option<&EnvelopeJudge>,
) -> Result<Comparison> {
    let outputs = Candidate { logits: held.logits, resid: held.resid };
    let reference_outputs = Outputs { logits: &reference_prompt.logits, resid: reference_prompt.resid.as_deref() };
    let sides = [Outputs::of(&outputs), reference_outputs];
    let rounding = match judge.map(|judge| Ok::<_, anyhow::Error>((judge, judge.truth(&case.tokens, None, &sides)?))).transpose()? {
        Some((judge, Some((truth, each_block)))) => {
            let [candidate_each_block, reference_each_block]: [Option<_>; 2] =
                each_block.try_into().map_err(|_| anyhow::anyhow!("one float64 pass per side"))?;
            let side = judge.judge_external("the candidate", sides[0], candidate_each_block, &case.tokens, &truth)?;
            let reference = judge.judge_external("the reference", reference_outputs, reference_each_block, &case.tokens, &truth)?;
            Some(Rounding::new(side.raw, reference.raw))
        }
        _ => None,
    };
    Ok(comparer.against_reference(COMPARISON, Criterion::Raw, &outputs, &reference_prompt, false, &Provenance::default(), rounding))
}

/// Each case's candidate-vs-reference comparison, timed. The next case is read from both files
/// on a thread of its own while this one is compared: reading copies from the page cache on one
/// core, which the comparison's threads would otherwise wait for (100 prompts of 55 tokens, 2 x
/// 1.1 GB on the 2-core VM: reading 0.54 s, comparing 1.15 s, one after the other). `--timings`
/// counts the reading where the comparisons wait for it.
pub(super) fn compare_each(
    candidate: &ReferenceFile,
    reference: &ReferenceFile,
    cases: &[PromptCase],
    comparer: &Comparer,
    judge: Option<&EnvelopeJudge>,
) -> Result<Vec<Clocked>> {
    check_prepend_bos(candidate, reference)?;
    std::thread::scope(|scope| {
        // One case waits read while one is compared: memory stays at a few prompts' logits.
        let (sender, read_cases) = std::sync::mpsc::sync_channel(1);
        scope.spawn(move || {
            for case in cases {
                // The comparisons stopped (an error): nothing waits for more.
                if sender.send(read_case(candidate, reference, case)).is_err() {
                    break;
                }
            }
        });
        cases
            .iter()
            .map(|case| {
                let read = timed(Phase::Reference, || read_cases.recv()).context("the reading thread stopped")??;
                let (comparison, seconds) = clocked(|| compare(read, case, comparer, judge));
                Ok(Clocked { comparisons: vec![comparison?], seconds })
            })
            .collect()
    })
}

/// What the report records about the candidate.
pub fn info(candidate: &ReferenceFile) -> CandidateInfo {
    CandidateInfo {
        path: candidate.path().display().to_string(),
        digest: candidate.content_digest(),
        model: candidate.meta.model.clone(),
        weights: candidate.meta.weights.clone(),
        attn_implementation: candidate.meta.attn_implementation.clone(),
        producer: candidate.meta.producer.clone(),
    }
}
