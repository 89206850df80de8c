//! Which prompts a compare run checks: those named (else every prompt the reference holds),
//! each matched to the reference's copy, tokenized, and its tokens checked against the reference's.
use anyhow::{bail, Context, Result};

use crate::model::inputs::ModelInputs;
use crate::reference::ReferenceFile;
use crate::tokenize::{abbreviate, END_OF_TEXT};

/// One prompt to check: its text, its token ids and where the reference holds it.
pub(super) struct PromptCase {
    pub prompt: String,
    pub tokens: Vec<i64>,
    pub reference_index: usize,
}

/// The prompts to check, each matched to the reference's copy and its tokens verified.
pub(super) fn select_cases(
    inputs: &ModelInputs,
    reference: &ReferenceFile,
    requested: &[String],
    prepend_bos: bool,
) -> Result<Vec<PromptCase>> {
    let held = &reference.meta.prompts;
    let indices: Vec<usize> = if requested.is_empty() {
        (0..held.len()).collect()
    } else {
        requested
            .iter()
            .map(|prompt| {
                held.iter().position(|candidate| candidate == prompt).with_context(|| {
                    format!(
                        "prompt {:?} is not in reference {} (it holds {} prompts); make a reference for it or drop the prompt",
                        abbreviate(prompt),
                        reference.path().display(),
                        held.len()
                    )
                })
            })
            .collect::<Result<_>>()?
    };
    let prompts: Vec<String> = indices.iter().map(|&index| held[index].clone()).collect();
    let tokenized = inputs.tokenize_all(&prompts, prepend_bos)?;
    indices
        .into_iter()
        .zip(prompts)
        .zip(tokenized)
        .map(|((reference_index, prompt), tokens)| {
            let reference_tokens = reference.tokens(reference_index)?;
            if reference_tokens != tokens {
                bail!(
                    "reference {}, prompt {:?}: its tokens {reference_tokens:?} differ from this model's tokenizer's {tokens:?}{}",
                    reference.path().display(),
                    abbreviate(&prompt),
                    bos_hint(&reference_tokens, &tokens)
                );
            }
            Ok(PromptCase { prompt, tokens, reference_index })
        })
        .collect()
}

/// Names the usual cause when two token lists differ by a leading <|endoftext|>.
fn bos_hint(reference: &[i64], ours: &[i64]) -> &'static str {
    let differs_by_bos = |longer: &[i64], shorter: &[i64]| longer.first() == Some(&END_OF_TEXT) && &longer[1..] == shorter;
    if differs_by_bos(reference, ours) || differs_by_bos(ours, reference) {
        " (one side starts with <|endoftext|>: the reference and this run disagree on --prepend-bos)"
    } else {
        "; the reference was tokenized differently (another tokenizer or model?)"
    }
}
