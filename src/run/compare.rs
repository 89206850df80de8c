//! `gpt2-parity compare`: the unprocessed model, then the processed one, each prompt against the
//! reference, into one [`Report`].
use anyhow::{bail, Context, Result};
use tch::Kind;

use super::spill::LogitsSpill;
use super::{candidate, explain, load_weights, progress_bar, to_vec, ModelInputs};
use crate::cli::CompareArgs;
use crate::compare::attribution::StepRow;
use crate::compare::diagnose::{self, diagnose, Provenance};
use crate::compare::noise_floor::{noise_floor, ReferenceFloat64};
use crate::compare::{compare_logits, compare_resid, Comparison, Criterion, Tolerance};
use crate::model::dtype::Dtype;
use crate::model::gpt2::{forward_packed, packs, PackedActivations};
use crate::model::load::Checkpoint;
use crate::model::process::{process, ProcessingOptions};
use crate::model::Weights;
use crate::reference::bundled::{cached_reference, find_python, ReferenceRequest};
use crate::reference::{PromptReference, ReferenceFile};
use crate::report::outputs::Destinations;
use crate::report::{
    summary_notes, ComparisonSummary, Criteria, ModelInfo, PromptReport, ReferenceInfo, Repeatability, Report, ShardInfo, Tool,
    SCHEMA_VERSION,
};
use crate::timings::{timed, Phase};
use crate::tokenize::{abbreviate, END_OF_TEXT};

/// One prompt to check: its text, its token ids and where the reference holds it.
pub(super) struct PromptCase {
    pub prompt: String,
    pub tokens: Vec<i64>,
    pub reference_index: usize,
}

/// Runs the comparison and writes the report; returns whether parity holds.
pub fn run(args: &CompareArgs) -> Result<bool> {
    let destinations =
        Destinations { format: args.report.format, layout: &args.layout, output: args.report.output_file(), extra: &args.outputs };
    destinations.check()?;
    let (device, threads) = args.compute.apply()?;
    let dtype = args.compute.dtype;
    let requested = args.model.prompts()?;
    let inputs = ModelInputs::resolve(&args.model.model)?;
    let checkpoint = inputs.open_checkpoint()?;
    let digest = checkpoint.digest.clone();
    let candidate_file = match &args.candidate {
        Some(path) => Some(candidate::open(path, &inputs, &digest, args.allow_other_weights)?),
        None => None,
    };
    // A candidate is checked on every prompt it holds unless prompts are named.
    let requested = match &candidate_file {
        Some(file) if requested.is_empty() => file.meta.prompts.clone(),
        _ => requested,
    };

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
            let python = find_python(args.python.as_deref())?;
            let request = ReferenceRequest {
                model: &inputs.files,
                weights_digest: &digest,
                prompts: &requested,
                prepend_bos: args.model.prepend_bos,
                transformer_lens: args.transformer_lens.then(|| args.processing()),
                dtype: Dtype::bundled_reference_for(dtype),
            };
            let made = timed(Phase::Reference, || cached_reference(&python, &request))?;
            (ReferenceFile::open(&made)?, args.model.prepend_bos, true)
        }
    };
    reference.check_model(&inputs.config, &digest, args.allow_other_weights)?;
    let cases = select_cases(&inputs, &reference, &requested, prepend_bos)?;
    let shard = args.shard.map(|shard| ShardInfo { shard, total_prompts: cases.len() });
    let cases = match args.shard {
        Some(shard) => shard.select(cases),
        None => cases,
    };

    let config = &inputs.config;
    let token_text = |id: i64| inputs.tokenizer.token_text(id);
    let comparer = Comparer {
        vocab: config.vocab_size as usize,
        d_model: config.n_embd as usize,
        snapshots: config.n_layer as usize + 1,
        tolerance: args.report.tolerance(dtype),
        token_text: &token_text,
    };
    let (reports, repeatability, attribution) = match &candidate_file {
        Some(candidate) => (candidate::compare(candidate, &reference, &cases, &comparer)?, None, None),
        None => compare_models(args, (&inputs, checkpoint, device), &reference, &cases, &comparer)?,
    };

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
    let summary = ComparisonSummary::collect(&prompts);
    let report = Report {
        schema_version: SCHEMA_VERSION,
        tool: Tool::current(),
        model: ModelInfo::new(&inputs, &digest),
        reference: ReferenceInfo {
            path: reference.path().display().to_string(),
            bundled,
            model: reference.meta.model.clone(),
            weights: reference.meta.weights.clone(),
            dtype: reference.meta.dtype.clone(),
            attn_implementation: reference.meta.attn_implementation.clone(),
            producer: reference.meta.producer.clone(),
        },
        candidate: candidate_file.as_ref().map(candidate::info),
        shard,
        tolerance: comparer.tolerance,
        criteria: Criteria::current(),
        processing: args.processing(),
        repeatability,
        prepend_bos,
        device: crate::device::name(device),
        threads,
        dtype,
        passed: prompts.iter().all(|prompt| prompt.passed) && repeatability.map_or(true, |repeatability| repeatability.identical),
        worst: summary.iter().map(|comparison| comparison.worst.clone()).collect(),
        summary_notes: summary_notes(&summary),
        summary,
        prompts,
        attribution,
    };
    timed(Phase::Render, || destinations.write(&report))?;
    Ok(report.passed)
}

/// Our two models against the reference: each prompt's comparisons, how repeatable the forwards
/// were (with --repeat), and explain's per-step rows (with --attribution).
///
/// Spilling (`--spill`), one weight set is held at a time: every prompt through the unprocessed
/// model, its logits to a temporary file, then the weights processed in place and every prompt
/// through the processed model. Otherwise both weight sets are held and each prompt runs through
/// both in turn. Either way each comparison sees the same logits.
fn compare_models(
    args: &CompareArgs,
    (inputs, checkpoint, device): (&ModelInputs, Checkpoint, tch::Device),
    reference: &ReferenceFile,
    cases: &[PromptCase],
    comparer: &Comparer,
) -> Result<ModelsOutcome> {
    let weights = load_weights(inputs, checkpoint, device, args.compute.dtype)?;
    let processing = args.processing();
    // With --noise-floor, a float64 copy of the model runs beside the candidate.
    let unprocessed =
        Model { exact: args.noise_floor.then(|| weights.shallow_clone().map(|tensor| tensor.to_kind(Kind::Double))), weights };
    let spills = args.spill.spills(unprocessed.weights.processed_bytes());
    let mut passes = Passes {
        comparer,
        reference,
        spill: if spills { LogitsSpill::file()? } else { LogitsSpill::memory() },
        repeatability: Repeatability { runs: args.repeat, identical: true, max_abs_diff: 0.0 },
        progress: progress_bar(2 * cases.len() as u64),
        provenance: ProcessedProvenance::new(processing, reference),
    };
    let attribute = |weights: &Weights| -> Result<Option<Vec<StepRow>>> {
        if !args.attribution {
            return Ok(None);
        }
        let tokens: Vec<Vec<i64>> = cases.iter().map(|case| case.tokens.clone()).collect();
        Ok(Some(explain::attribute(weights, &tokens, &processing.steps(), comparer.vocab, comparer.tolerance, comparer.token_text)?))
    };
    // Prompts run through each model a pack at a time (model::gpt2), and are compared one by one.
    let lengths: Vec<usize> = cases.iter().map(|case| case.tokens.len()).collect();
    let packs = packs(&lengths, comparer.vocab);
    let mut reports = Vec::with_capacity(cases.len());
    let attribution = if spills {
        for pack in &packs {
            reports.extend(passes.unprocessed(&unprocessed, &cases[pack.clone()])?);
        }
        passes.spill.rewind()?;
        let attribution = attribute(&unprocessed.weights)?;
        let processed = unprocessed.processed(processing);
        for pack in &packs {
            passes.processed(&processed, &cases[pack.clone()], &mut reports[pack.clone()])?;
        }
        attribution
    } else {
        let attribution = attribute(&unprocessed.weights)?;
        let processed = unprocessed.shallow_clone().processed(processing);
        for pack in &packs {
            let mut comparisons = passes.unprocessed(&unprocessed, &cases[pack.clone()])?;
            passes.processed(&processed, &cases[pack.clone()], &mut comparisons)?;
            reports.extend(comparisons);
        }
        attribution
    };
    passes.progress.finish_and_clear();
    let repeatability = passes.repeatability;
    Ok((reports, (args.repeat > 1).then_some(repeatability), attribution))
}

/// Each prompt's comparisons, the repeatability (with --repeat), explain's rows (with --attribution).
type ModelsOutcome = (Vec<Vec<Comparison>>, Option<Repeatability>, Option<Vec<StepRow>>);

/// One of our models: its weights, and their float64 copy with --noise-floor.
struct Model {
    weights: Weights,
    exact: Option<Weights>,
}

impl Model {
    /// The model processed; its tensors are freed as they are replaced when nothing else holds them.
    fn processed(self, processing: ProcessingOptions) -> Model {
        let model = Model {
            weights: timed(Phase::Processing, || process(self.weights, processing)),
            exact: self.exact.map(|weights| process(weights, processing)),
        };
        return_free_heap();
        model
    }

    /// A second handle on the same tensors.
    fn shallow_clone(&self) -> Model {
        Model { weights: self.weights.shallow_clone(), exact: self.exact.as_ref().map(Weights::shallow_clone) }
    }

    /// The model on a pack of prompts, run `repeatability.runs` times (later runs must match the
    /// first bit for bit), and its float64 copy once, with --noise-floor.
    fn forward(&self, cases: &[PromptCase], repeatability: &mut Repeatability) -> Result<PackOutputs> {
        let prompts: Vec<&[i64]> = cases.iter().map(|case| &case.tokens[..]).collect();
        let candidate = forward_packed(&self.weights, &prompts);
        if repeatability.runs > 1 {
            let first = to_vec(&candidate.logits)?;
            for _ in 1..repeatability.runs {
                let again = to_vec(&forward_packed(&self.weights, &prompts).logits)?;
                if again != first {
                    repeatability.identical = false;
                    let diff = again.iter().zip(&first).map(|(a, b)| f64::from((a - b).abs())).fold(0.0, f64::max);
                    repeatability.max_abs_diff = repeatability.max_abs_diff.max(diff);
                }
            }
        }
        Ok(PackOutputs { candidate, exact: self.exact.as_ref().map(|weights| forward_packed(weights, &prompts)) })
    }
}

/// One model's forward over a pack of prompts: its activations, and its float64 copy's with --noise-floor.
struct PackOutputs {
    candidate: PackedActivations,
    exact: Option<PackedActivations>,
}

impl PackOutputs {
    /// Prompt `index`'s logits and residual stream, and its float64 logits with --noise-floor.
    fn prompt(&self, index: usize) -> Result<(Candidate, Option<Vec<f32>>)> {
        let activations = self.candidate.prompt(index);
        let candidate = Candidate { logits: to_vec(&activations.logits)?, resid: Some(to_vec(&activations.resid)?) };
        let exact = self.exact.as_ref().map(|exact| to_vec(&exact.prompt(index).logits)).transpose()?;
        Ok((candidate, exact))
    }
}

/// Hands the heap's free memory back to the kernel. Processing's float64 working memory stays in
/// the heap for reuse while it runs (see main.rs); once it is done, the processed pass's own
/// allocations would land beside it rather than in it, and the resident set would grow by both.
fn return_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns the allocator's free pages, under the allocator's own lock.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What each row about the processed model knows about how its two sides were made, for judging
/// a shift.
struct ProcessedProvenance {
    criterion: Criterion,
    vs_reference: Provenance,
    vs_unprocessed: Provenance,
    vs_transformer_lens: Provenance,
    unprocessed_vs_transformer_lens: Provenance,
}

impl ProcessedProvenance {
    fn new(processing: ProcessingOptions, reference: &ReferenceFile) -> Self {
        let vs_reference = Provenance { ours_center_unembed: processing.center_unembed, ..Provenance::default() };
        Self {
            criterion: if processing.center_unembed { Criterion::ShiftInvariant } else { Criterion::Raw },
            vs_unprocessed: Provenance { reference_center_unembed: Some(false), ..vs_reference.clone() },
            vs_reference,
            vs_transformer_lens: Provenance::against_recorded(&processing, reference.meta.transformer_lens_processing.as_ref()),
            unprocessed_vs_transformer_lens: Provenance { reference_center_unembed: Some(false), ..Provenance::default() },
        }
    }
}

/// The state compare's two passes share: the unprocessed logits waiting for the processed pass,
/// the repeatability so far, the progress bar.
struct Passes<'a> {
    comparer: &'a Comparer<'a>,
    reference: &'a ReferenceFile,
    spill: LogitsSpill,
    repeatability: Repeatability,
    progress: indicatif::ProgressBar,
    provenance: ProcessedProvenance,
}

impl Passes<'_> {
    /// The unprocessed model on a pack of prompts: each one's comparisons.
    fn unprocessed(&mut self, model: &Model, cases: &[PromptCase]) -> Result<Vec<Vec<Comparison>>> {
        let outputs = model.forward(cases, &mut self.repeatability)?;
        cases.iter().enumerate().map(|(index, case)| self.unprocessed_prompt(outputs.prompt(index)?, case)).collect()
    }

    /// One prompt through the unprocessed model: unprocessed-vs-reference, its logits (and their
    /// float64 counterpart) kept for the processed pass.
    fn unprocessed_prompt(&mut self, (candidate, exact): (Candidate, Option<Vec<f32>>), case: &PromptCase) -> Result<Vec<Comparison>> {
        let reference_prompt = self.reference.prompt(case.reference_index)?;
        let comparison = self.comparer.against_reference(
            "unprocessed-vs-reference",
            Criterion::Raw,
            &candidate,
            &reference_prompt,
            false,
            &Provenance::default(),
        );
        let comparison = self.comparer.with_noise_floor(
            comparison,
            (&candidate.logits, exact.as_deref()),
            (&reference_prompt.logits, ReferenceFloat64::External),
        );
        self.spill.push(candidate.logits)?;
        if let Some(exact) = exact {
            self.spill.push(exact)?;
        }
        self.progress.inc(1);
        Ok(vec![comparison])
    }

    /// The processed model on a pack of prompts: each one's rows appended to its comparisons.
    fn processed(&mut self, model: &Model, cases: &[PromptCase], comparisons: &mut [Vec<Comparison>]) -> Result<()> {
        let outputs = model.forward(cases, &mut self.repeatability)?;
        for (index, (case, comparisons)) in cases.iter().zip(comparisons).enumerate() {
            self.processed_prompt(outputs.prompt(index)?, case, comparisons)?;
        }
        Ok(())
    }

    /// One prompt through the processed model: its rows appended to the prompt's comparisons.
    fn processed_prompt(
        &mut self,
        (candidate, exact): (Candidate, Option<Vec<f32>>),
        case: &PromptCase,
        comparisons: &mut Vec<Comparison>,
    ) -> Result<()> {
        let (comparer, provenance, criterion) = (self.comparer, &self.provenance, self.provenance.criterion);
        let reference_prompt = self.reference.prompt(case.reference_index)?;
        let unprocessed = &self.spill.next(case.tokens.len() * comparer.vocab)?;
        let unprocessed_exact = exact.as_ref().map(|_| self.spill.next(case.tokens.len() * comparer.vocab)).transpose()?;
        let processed_sides = (&candidate.logits[..], exact.as_deref());
        let unprocessed_reference =
            (&unprocessed[..], unprocessed_exact.as_deref().map_or(ReferenceFloat64::External, ReferenceFloat64::Ours));
        let comparison =
            comparer.against_reference("processed-vs-reference", criterion, &candidate, &reference_prompt, true, &provenance.vs_reference);
        comparisons.push(comparer.with_noise_floor(comparison, processed_sides, (&reference_prompt.logits, ReferenceFloat64::External)));
        let comparison = comparer.logits("processed-vs-unprocessed", criterion, &candidate.logits, unprocessed, &provenance.vs_unprocessed);
        comparisons.push(comparer.with_noise_floor(comparison, processed_sides, unprocessed_reference));
        if let Some(tl) = &reference_prompt.tl_processed_logits {
            let comparison =
                comparer.logits("processed-vs-transformer-lens", Criterion::Raw, &candidate.logits, tl, &provenance.vs_transformer_lens);
            comparisons.push(comparer.with_noise_floor(comparison, processed_sides, (tl, ReferenceFloat64::External)));
        }
        if let Some(tl) = &reference_prompt.tl_unprocessed_logits {
            let comparison = comparer.logits(
                "unprocessed-vs-transformer-lens-unprocessed",
                Criterion::Raw,
                unprocessed,
                tl,
                &provenance.unprocessed_vs_transformer_lens,
            );
            comparisons.push(comparer.with_noise_floor(
                comparison,
                (unprocessed, unprocessed_exact.as_deref()),
                (tl, ReferenceFloat64::External),
            ));
        }
        self.progress.inc(1);
        Ok(())
    }
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

/// One forward's outputs, row-major; the residual stream when the candidate has one.
pub(super) struct Candidate {
    pub logits: Vec<f32>,
    pub resid: Option<Vec<f32>>,
}

/// What every comparison of one run shares: the model's shapes, the tolerance, token names.
pub(super) struct Comparer<'a> {
    vocab: usize,
    d_model: usize,
    snapshots: usize,
    tolerance: Tolerance,
    token_text: &'a dyn Fn(i64) -> String,
}

impl Comparer<'_> {
    /// Logits against logits, diagnosed when they fail.
    fn logits(&self, name: &str, criterion: Criterion, candidate: &[f32], reference: &[f32], provenance: &Provenance) -> Comparison {
        self.diagnosed(self.statistics(name, criterion, candidate, reference), candidate, reference, provenance)
    }

    fn statistics(&self, name: &str, criterion: Criterion, candidate: &[f32], reference: &[f32]) -> Comparison {
        timed(Phase::Statistics, || compare_logits(name, criterion, candidate, reference, self.vocab, self.tolerance, self.token_text))
    }

    /// The comparison with its noise floor attached when the candidate's float64 result is
    /// there (`--noise-floor`): each side as (float32 logits, float64 result).
    fn with_noise_floor(
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
    ) -> Comparison {
        let mut comparison = self.statistics(name, criterion, &candidate.logits, &reference.logits);
        if let (Some(candidate), Some(reference)) = (&candidate.resid, &reference.resid) {
            comparison.resid = Some(timed(Phase::Statistics, || {
                compare_resid(candidate, reference, self.d_model, self.snapshots, processed, self.tolerance)
            }));
        }
        self.diagnosed(comparison, &candidate.logits, &reference.logits, provenance)
    }
}
