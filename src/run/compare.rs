//! `gpt2-parity compare`: the unprocessed model, then the processed one, each prompt against the
//! reference, into one [`Report`].
use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;

use super::{to_vec, ModelInputs};
use crate::cli::{check_device, check_writable, CompareArgs};
use crate::compare::{compare_logits, compare_resid, diagnose, Comparison, Criterion};
use crate::model::gpt2::forward;
use crate::model::load::Checkpoint;
use crate::model::process::process;
use crate::output::emit;
use crate::reference::bundled::{cached_reference, find_python, ReferenceRequest};
use crate::reference::{PromptReference, ReferenceFile};
use crate::report::{ModelInfo, PromptReport, ReferenceInfo, Report, Tool, WorstElement, SCHEMA_VERSION};
use crate::tokenize::{abbreviate, END_OF_TEXT};

/// One prompt to check: its text, its token ids and where the reference holds it.
struct PromptCase {
    prompt: String,
    tokens: Vec<i64>,
    reference_index: usize,
}

/// Runs the comparison and writes the report; returns whether parity holds.
pub fn run(args: &CompareArgs) -> Result<bool> {
    if let Some(path) = args.output_file() {
        check_writable(path)?;
    }
    check_device(args.device)?;
    let requested = args.model.prompts()?;
    let inputs = ModelInputs::resolve(&args.model.model)?;
    let checkpoint = Checkpoint::open(&inputs.files.weights)?;

    let (reference, prepend_bos, bundled) = match &args.reference {
        Some(path) => {
            let reference = ReferenceFile::open(path)?;
            if args.model.prepend_bos && !reference.meta.prepend_bos {
                bail!(
                    "--prepend-bos was given but reference {} was made without <|endoftext|>; drop the flag or make a new reference",
                    path.display()
                );
            }
            let prepend_bos = reference.meta.prepend_bos;
            (reference, prepend_bos, false)
        }
        None => {
            inputs.tokenize_all(&requested, args.model.prepend_bos)?;
            let python = find_python(args.model.python.as_deref())?;
            let request = ReferenceRequest {
                model: &inputs.files,
                weights_digest: &checkpoint.digest,
                prompts: &requested,
                prepend_bos: args.model.prepend_bos,
            };
            (ReferenceFile::open(&cached_reference(&python, &request)?)?, args.model.prepend_bos, true)
        }
    };
    reference.check_model(&inputs.config, &checkpoint.digest, args.allow_other_weights)?;
    let cases = select_cases(&inputs, &reference, &requested, prepend_bos)?;

    let weights = checkpoint.weights(&inputs.config, &inputs.files.weights, args.device)?;
    let tolerance = args.tolerance();
    let config = &inputs.config;
    let (vocab, d_model, snapshots) = (config.vocab_size as usize, config.n_embd as usize, config.n_layer as usize + 1);
    let token_text = |id: i64| inputs.tokenizer.token_text(id);
    let progress = ProgressBar::new(2 * cases.len() as u64);

    // Pass 1: the unprocessed model. Only its logits are kept, for processed-vs-unprocessed.
    let mut reports = Vec::with_capacity(cases.len());
    let mut unprocessed_logits = Vec::with_capacity(cases.len());
    for case in &cases {
        let reference_prompt = reference.prompt(case.reference_index)?;
        let activations = forward(&weights, &case.tokens);
        let logits = to_vec(&activations.logits)?;
        let mut comparison =
            compare_logits("unprocessed-vs-reference", Criterion::Raw, &logits, &reference_prompt.logits, vocab, tolerance, &token_text);
        if let Some(reference_resid) = &reference_prompt.resid {
            comparison.resid = Some(compare_resid(&to_vec(&activations.resid)?, reference_resid, d_model, snapshots, false, tolerance));
        }
        reports.push(vec![comparison]);
        unprocessed_logits.push(logits);
        progress.inc(1);
    }

    // Pass 2: the processed model, made from the same tensors (one copy of the weights at a time).
    let processing = args.processing();
    let processed = process(weights, processing);
    let shift_criterion = if processing.center_unembed { Criterion::ShiftInvariant } else { Criterion::Raw };
    for ((case, comparisons), unprocessed) in cases.iter().zip(&mut reports).zip(&unprocessed_logits) {
        let reference_prompt = reference.prompt(case.reference_index)?;
        let activations = forward(&processed, &case.tokens);
        let logits = to_vec(&activations.logits)?;
        let mut against_reference =
            compare_logits("processed-vs-reference", shift_criterion, &logits, &reference_prompt.logits, vocab, tolerance, &token_text);
        if let Some(reference_resid) = &reference_prompt.resid {
            against_reference.resid =
                Some(compare_resid(&to_vec(&activations.resid)?, reference_resid, d_model, snapshots, true, tolerance));
        }
        comparisons.push(against_reference);
        comparisons.push(compare_logits("processed-vs-unprocessed", shift_criterion, &logits, unprocessed, vocab, tolerance, &token_text));
        comparisons.extend(transformer_lens_rows(&reference_prompt, &logits, unprocessed, vocab, tolerance, &token_text));
        progress.inc(1);
    }
    progress.finish_and_clear();

    let prompts: Vec<PromptReport> = cases
        .into_iter()
        .zip(reports)
        .map(|(case, comparisons)| PromptReport {
            notes: diagnose::explain(&comparisons),
            passed: comparisons.iter().all(|comparison| comparison.passed),
            prompt: case.prompt,
            tokens: case.tokens,
            comparisons,
        })
        .collect();
    let report = Report {
        schema_version: SCHEMA_VERSION,
        tool: Tool::current(),
        model: ModelInfo::new(&inputs, &checkpoint.digest),
        reference: ReferenceInfo {
            path: reference.path().display().to_string(),
            bundled,
            model: reference.meta.model.clone(),
            weights: reference.meta.weights.clone(),
            attn_implementation: reference.meta.attn_implementation.clone(),
            producer: reference.meta.producer.clone(),
        },
        tolerance,
        processing,
        prepend_bos,
        device: format!("{:?}", args.device).to_lowercase(),
        passed: prompts.iter().all(|prompt| prompt.passed),
        worst: WorstElement::collect(&prompts),
        prompts,
    };
    emit(&report.render(args.format, args.wide), args.output_file())?;
    Ok(report.passed)
}

/// The prompts to check, each matched to the reference's copy and its tokens verified.
fn select_cases(inputs: &ModelInputs, reference: &ReferenceFile, requested: &[String], prepend_bos: bool) -> Result<Vec<PromptCase>> {
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

/// Rows against TransformerLens's own logits, when the reference carries them.
fn transformer_lens_rows(
    reference: &PromptReference,
    processed: &[f32],
    unprocessed: &[f32],
    vocab: usize,
    tolerance: crate::compare::Tolerance,
    token_text: &dyn Fn(i64) -> String,
) -> Vec<Comparison> {
    let mut rows = Vec::new();
    if let Some(tl) = &reference.tl_processed_logits {
        rows.push(compare_logits("processed-vs-transformer-lens", Criterion::Raw, processed, tl, vocab, tolerance, token_text));
    }
    if let Some(tl) = &reference.tl_unprocessed_logits {
        rows.push(compare_logits(
            "unprocessed-vs-transformer-lens-unprocessed",
            Criterion::Raw,
            unprocessed,
            tl,
            vocab,
            tolerance,
            token_text,
        ));
    }
    rows
}
