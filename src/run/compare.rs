//! `gpt2-parity compare`, the flow only: resolve the model, get the reference (read or made),
//! select the prompts, run the passes (passes.rs) or check a candidate (candidate.rs), and write
//! one [`Report`].
use anyhow::{bail, Result};

use super::cases::select_cases;
use super::comparer::Comparer;
use super::passes::{compare_models, Clocked};
use super::rounding::EnvelopeJudge;
use super::{candidate, load_weights};
use crate::cli::options::{CompareOptions, Compute};
use crate::diagnose::prose;
use crate::model::dtype::Dtype;
use crate::model::inputs::ModelInputs;
use crate::reference::bundled::{cached_reference, ReferenceRequest};
use crate::reference::ReferenceFile;
use crate::schema::rounding::Gate;
use crate::schema::{prompts_digest, Criteria, ModelInfo, PromptReport, ReferenceInfo, Report, ShardInfo, Timing, Tool, SCHEMA_VERSION};
use crate::sys::python::find_python;
use crate::sys::timings::{timed, Phase};

/// Runs the comparison and writes the report; returns whether parity holds.
pub fn run(options: &CompareOptions) -> Result<bool> {
    let started_at = std::time::SystemTime::now();
    let (gate, processing) = (options.gate, options.processing);
    let Compute { device, dtype, threads } = options.compute;
    let requested = options.model.prompts.clone();
    let inputs = ModelInputs::resolve(&options.model.model)?;
    let checkpoint = inputs.open_checkpoint()?;
    let digest = checkpoint.digest.clone();
    let candidate_file = match &options.candidate {
        Some(path) => Some(candidate::open(path, &inputs, &digest, options.allow_other_weights)?),
        None => None,
    };
    // A candidate is checked on every prompt it holds unless prompts are named.
    let requested = match &candidate_file {
        Some(file) if requested.is_empty() => file.meta.prompts.clone(),
        _ => requested,
    };

    let (reference, prepend_bos, bundled) = reference_for(options, &inputs, &digest, &requested)?;
    reference.check_model(&inputs.config, &digest, options.allow_other_weights)?;
    let cases = select_cases(&inputs, &reference, &requested, prepend_bos)?;
    let run_prompts: Vec<String> = cases.iter().map(|case| case.prompt.clone()).collect();
    let shard = options.shard.map(|shard| ShardInfo { shard, total_prompts: cases.len() });
    let cases = match options.shard {
        Some(shard) => shard.select(cases),
        None => cases,
    };

    let config = &inputs.config;
    let token_text = |id: i64| inputs.tokenizer.token_text(id);
    let comparer = Comparer {
        vocab: config.vocab_size as usize,
        d_model: config.n_embd as usize,
        snapshots: config.n_layer as usize + 1,
        tolerance: options.tolerance,
        token_text: &token_text,
    };
    let (reports, repeatability, attribution) = match &candidate_file {
        Some(candidate) => {
            // The envelope needs our float64 and float32 forwards even when a candidate takes our models' place.
            let weights = match gate {
                Gate::Envelope => Some(load_weights(&inputs, checkpoint, device, dtype)?),
                Gate::Tolerance => None,
            };
            let judge = weights.as_ref().map(EnvelopeJudge::new);
            (candidate::compare_each(candidate, &reference, &cases, &comparer, judge.as_ref())?, None, None)
        }
        None => compare_models(options, (&inputs, checkpoint, device), &reference, &cases, &comparer)?,
    };

    let prompt_seconds = reports.iter().map(|report| report.seconds).collect();
    let prompts: Vec<PromptReport> = cases
        .into_iter()
        .zip(reports)
        .map(|(case, Clocked { comparisons, .. })| PromptReport {
            notes: prose::notes(&comparisons),
            passed: false,
            prompt: case.prompt,
            tokens: case.tokens,
            comparisons,
        })
        .collect();
    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        tool: Tool::current(),
        model: ModelInfo::new(&inputs.files.source, &inputs.config, &digest),
        reference: reference_info(&reference, bundled),
        candidate: candidate_file.as_ref().map(candidate::info),
        shard,
        prompts_digest: prompts_digest(&run_prompts),
        tolerance: comparer.tolerance,
        criteria: Criteria::current(),
        processing,
        repeatability,
        prepend_bos,
        device: crate::sys::device::name(device),
        dtype,
        threads,
        gate,
        passed: false,
        worst: Vec::new(),
        summary: Vec::new(),
        summary_notes: Vec::new(),
        prompts,
        attribution,
        timing: Timing::new(started_at, prompt_seconds),
    };
    report.finish();
    report.summary_notes = prose::summary_notes(&report.summary);
    timed(Phase::Render, || options.destinations.write(&report))?;
    Ok(report.passed)
}

/// The reference: `--reference`, or one the bundled script makes (cached) for the requested
/// prompts; with whether prompts get <|endoftext|> first and whether the script made it.
fn reference_for(
    options: &CompareOptions,
    inputs: &ModelInputs,
    digest: &str,
    requested: &[String],
) -> Result<(ReferenceFile, bool, bool)> {
    match &options.reference {
        Some(path) => {
            let reference = ReferenceFile::open(path)?;
            if options.model.prepend_bos && !reference.meta.prepend_bos {
                bail!(
                    "--prepend-bos was given but reference {} was made without <|endoftext|>; drop the flag or make a new reference",
                    path.display()
                );
            }
            let prepend_bos = reference.meta.prepend_bos;
            Ok((reference, prepend_bos, false))
        }
        None => {
            inputs.tokenize_all(requested, options.model.prepend_bos)?;
            let python = find_python(options.python.as_deref())?;
            let request = ReferenceRequest {
                model: &inputs.files,
                weights_digest: digest,
                prompts: requested,
                prepend_bos: options.model.prepend_bos,
                transformer_lens: options.transformer_lens.then_some(options.processing),
                dtype: Dtype::bundled_reference_for(options.compute.dtype),
            };
            let made = timed(Phase::Reference, || cached_reference(&python, &request))?;
            Ok((ReferenceFile::open(&made)?, options.model.prepend_bos, true))
        }
    }
}

/// What the report records about the reference.
fn reference_info(reference: &ReferenceFile, bundled: bool) -> ReferenceInfo {
    ReferenceInfo {
        path: reference.path().display().to_string(),
        digest: reference.content_digest(),
        bundled,
        model: reference.meta.model.clone(),
        weights: reference.meta.weights.clone(),
        dtype: reference.meta.dtype.clone(),
        attn_implementation: reference.meta.attn_implementation.clone(),
        producer: reference.meta.producer.clone(),
    }
}
