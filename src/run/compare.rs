//! `gpt2-parity compare`: the unprocessed model, then the processed one, each prompt against the
//! reference, into one [`Report`].
use anyhow::{bail, Context, Result};
use tch::Kind;

use std::collections::VecDeque;

use super::rounding::{Dimensions, EnvelopeJudge, ExternalSide, Outputs, PromptTruth};
use super::spill::LogitsSpill;
use super::{candidate, explain, load_weights, progress_bar, to_vec};
use crate::cli::options::{CompareOptions, Compute};
use crate::compare::attribution::StepRow;
use crate::compare::diagnose::{self, diagnose, Provenance};
use crate::compare::envelope::{Envelope, Form, Forms, Rounding};
use crate::compare::noise_floor::{noise_floor, ReferenceFloat64};
use crate::compare::{compare_logits, compare_resid, Comparison, Criterion, Tolerance};
use crate::model::dtype::Dtype;
use crate::model::gpt2::{forward_packed, packs, PackedActivations};
use crate::model::inputs::ModelInputs;
use crate::model::load::Checkpoint;
use crate::model::process::{process, ProcessingOptions};
use crate::model::Weights;
use crate::reference::bundled::{cached_reference, find_python, ReferenceRequest};
use crate::reference::{PromptReference, ReferenceFile};
use crate::report::{
    prompts_digest, summary_notes, ComparisonSummary, Criteria, Gate, ModelInfo, PromptReport, ReferenceInfo, Repeatability, Report,
    ShardInfo, Timing, Tool, SCHEMA_VERSION,
};
use crate::sys::timings::{timed, Phase};
use crate::tokenize::{abbreviate, END_OF_TEXT};

/// One prompt to check: its text, its token ids and where the reference holds it.
pub(super) struct PromptCase {
    pub prompt: String,
    pub tokens: Vec<i64>,
    pub reference_index: usize,
}

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

    let (reference, prepend_bos, bundled) = match &options.reference {
        Some(path) => {
            let reference = ReferenceFile::open(path)?;
            if options.model.prepend_bos && !reference.meta.prepend_bos {
                bail!(
                    "--prepend-bos was given but reference {} was made without <|endoftext|>; drop the flag or make a new reference",
                    path.display()
                );
            }
            let prepend_bos = reference.meta.prepend_bos;
            (reference, prepend_bos, false)
        }
        None => {
            inputs.tokenize_all(&requested, options.model.prepend_bos)?;
            let python = find_python(options.python.as_deref())?;
            let request = ReferenceRequest {
                model: &inputs.files,
                weights_digest: &digest,
                prompts: &requested,
                prepend_bos: options.model.prepend_bos,
                transformer_lens: options.transformer_lens.then_some(processing),
                dtype: Dtype::bundled_reference_for(dtype),
            };
            let made = timed(Phase::Reference, || cached_reference(&python, &request))?;
            (ReferenceFile::open(&made)?, options.model.prepend_bos, true)
        }
    };
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
            let reports = cases
                .iter()
                .map(|case| clocked(|| candidate::compare(candidate, &reference, std::slice::from_ref(case), &comparer, judge.as_ref())))
                .map(|(compared, seconds)| Ok(Clocked { comparisons: compared?.remove(0), seconds }))
                .collect::<Result<Vec<_>>>()?;
            (reports, None, None)
        }
        None => compare_models(options, (&inputs, checkpoint, device), &reference, &cases, &comparer)?,
    };

    let prompt_seconds = reports.iter().map(|report| report.seconds).collect();
    let prompts: Vec<PromptReport> = cases
        .into_iter()
        .zip(reports)
        .map(|(case, Clocked { comparisons, .. })| PromptReport {
            notes: diagnose::explain(&comparisons),
            passed: PromptReport::verdict(&comparisons),
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
            digest: reference.content_digest(),
            bundled,
            model: reference.meta.model.clone(),
            weights: reference.meta.weights.clone(),
            dtype: reference.meta.dtype.clone(),
            attn_implementation: reference.meta.attn_implementation.clone(),
            producer: reference.meta.producer.clone(),
        },
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
        passed: Report::verdict(&prompts, repeatability),
        worst: summary.iter().map(|comparison| comparison.worst.clone()).collect(),
        summary_notes: summary_notes(&summary),
        summary,
        prompts,
        attribution,
        timing: Timing::new(started_at, prompt_seconds),
    };
    timed(Phase::Render, || options.destinations.write(&report))?;
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
    options: &CompareOptions,
    (inputs, checkpoint, device): (&ModelInputs, Checkpoint, tch::Device),
    reference: &ReferenceFile,
    cases: &[PromptCase],
    comparer: &Comparer,
) -> Result<Compared> {
    let weights = load_weights(inputs, checkpoint, device, options.compute.dtype)?;
    let processing = options.processing;
    // With --noise-floor, a float64 copy of the model runs beside the candidate.
    let unprocessed =
        Model { exact: options.noise_floor.then(|| weights.shallow_clone().map(|tensor| tensor.to_kind(Kind::Double))), weights };
    let spills = options.spill.spills(unprocessed.weights.processed_bytes());
    let mut passes = Passes {
        comparer,
        reference,
        spill: if spills { LogitsSpill::file()? } else { LogitsSpill::memory() },
        repeatability: Repeatability { runs: options.repeat, identical: true, max_abs_diff: 0.0 },
        progress: progress_bar(2 * cases.len() as u64),
        provenance: ProcessedProvenance::new(processing, reference),
        first_pass: VecDeque::new(),
        dtype: options.compute.dtype,
        dimensions: Dimensions::of(&inputs.config),
    };
    let judging = options.gate == Gate::Envelope;
    let attribute = |weights: &Weights| -> Result<Option<Vec<StepRow>>> {
        if !options.attribution {
            return Ok(None);
        }
        let tokens: Vec<Vec<i64>> = cases.iter().map(|case| case.tokens.clone()).collect();
        Ok(Some(explain::attribute(weights, &tokens, &processing.steps(), comparer.vocab, comparer.tolerance, comparer.token_text)?))
    };
    // Prompts run through each model a pack at a time (model::gpt2), and are compared one by one.
    let lengths: Vec<usize> = cases.iter().map(|case| case.tokens.len()).collect();
    let packs = packs(&lengths, comparer.vocab);
    let mut reports: Vec<Clocked> = Vec::with_capacity(cases.len());
    let attribution = if spills {
        let judge = judging.then(|| EnvelopeJudge::new(&unprocessed.weights));
        for pack in &packs {
            reports.extend(passes.unprocessed(&unprocessed, &cases[pack.clone()], judge.as_ref())?);
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
        let judge = judging.then(|| EnvelopeJudge::new(&unprocessed.weights));
        for pack in &packs {
            let mut compared = passes.unprocessed(&unprocessed, &cases[pack.clone()], judge.as_ref())?;
            passes.processed(&processed, &cases[pack.clone()], &mut compared)?;
            reports.extend(compared);
        }
        attribution
    };
    passes.progress.finish_and_clear();
    let repeatability = passes.repeatability;
    Ok((reports, (options.repeat > 1).then_some(repeatability), attribution))
}

/// Each prompt's comparisons and time, the repeatability (with --repeat) and explain's rows (with --attribution).
type Compared = (Vec<Clocked>, Option<Repeatability>, Option<Vec<StepRow>>);

/// One prompt's comparisons and the wall time its forward passes and comparisons took (a pack's
/// forward shared among its prompts by their tokens).
struct Clocked {
    comparisons: Vec<Comparison>,
    seconds: f64,
}

/// `work`'s result and how many seconds it took.
fn clocked<T>(work: impl FnOnce() -> T) -> (T, f64) {
    let start = std::time::Instant::now();
    let result = work();
    (result, start.elapsed().as_secs_f64())
}

/// A pack's forward time shared among its prompts in proportion to their tokens.
fn shares(cases: &[PromptCase], seconds: f64) -> impl Iterator<Item = f64> + '_ {
    let tokens: usize = cases.iter().map(|case| case.tokens.len()).sum();
    cases.iter().map(move |case| seconds * case.tokens.len() as f64 / tokens.max(1) as f64)
}

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
        crate::sys::memory::return_free_heap();
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
    /// Per prompt, what the unprocessed pass learnt about the rounding envelope, for the
    /// processed pass (the truth itself waits in the spill); `None` where it could not be
    /// measured (a non-finite value in our own forward).
    first_pass: VecDeque<Option<FirstPass>>,
    dtype: Dtype,
    dimensions: Dimensions,
}

/// One prompt's envelopes, and how our unprocessed model and the reference sit in them.
struct FirstPass {
    envelopes: [Envelope; 2],
    ours: ExternalSide,
    reference: ExternalSide,
}

impl Passes<'_> {
    /// The unprocessed model on a pack of prompts: each one's comparisons and time.
    fn unprocessed(&mut self, model: &Model, cases: &[PromptCase], judge: Option<&EnvelopeJudge>) -> Result<Vec<Clocked>> {
        let (outputs, seconds) = clocked(|| model.forward(cases, &mut self.repeatability));
        let outputs = outputs?;
        cases
            .iter()
            .zip(shares(cases, seconds))
            .enumerate()
            .map(|(index, (case, share))| {
                let (comparisons, seconds) = clocked(|| self.unprocessed_prompt(outputs.prompt(index)?, case, judge));
                Ok(Clocked { comparisons: comparisons?, seconds: share + seconds })
            })
            .collect()
    }

    /// One prompt through the unprocessed model: unprocessed-vs-reference, its logits (and their
    /// float64 counterpart, and the float64 truth of the rounding envelope) kept for the processed pass.
    fn unprocessed_prompt(
        &mut self,
        (candidate, exact): (Candidate, Option<Vec<f32>>),
        case: &PromptCase,
        judge: Option<&EnvelopeJudge>,
    ) -> Result<Vec<Comparison>> {
        let reference_prompt = self.reference.prompt(case.reference_index)?;
        let mut truth = None;
        let mut rounding = None;
        if let Some(judge) = judge {
            let prompt_truth = judge.truth(&case.tokens, (self.dtype == Dtype::Float32).then_some(&candidate))?;
            let first = match prompt_truth {
                Some(prompt_truth) => {
                    let (ours, reference) =
                        judge_against_reference(judge, Outputs::of(&candidate), &reference_prompt, &case.tokens, &prompt_truth)?;
                    rounding = Some(Rounding::new(ours.raw.clone(), reference.raw.clone()));
                    let (parts, envelopes) = prompt_truth.into_parts();
                    truth = Some(parts);
                    Some(FirstPass { envelopes, ours, reference })
                }
                None => None,
            };
            self.first_pass.push_back(first);
        }
        let comparison = self.comparer.against_reference(
            "unprocessed-vs-reference",
            Criterion::Raw,
            &candidate,
            &reference_prompt,
            false,
            &Provenance::default(),
            rounding,
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
        for part in truth.into_iter().flatten() {
            self.spill.push(part)?;
        }
        self.progress.inc(1);
        Ok(vec![comparison])
    }

    /// The processed model on a pack of prompts: each one's rows appended to its comparisons.
    fn processed(&mut self, model: &Model, cases: &[PromptCase], compared: &mut [Clocked]) -> Result<()> {
        let (outputs, seconds) = clocked(|| model.forward(cases, &mut self.repeatability));
        let outputs = outputs?;
        for (index, ((case, clocked_prompt), share)) in cases.iter().zip(compared).zip(shares(cases, seconds)).enumerate() {
            let (done, seconds) = clocked(|| self.processed_prompt(outputs.prompt(index)?, case, &mut clocked_prompt.comparisons));
            done?;
            clocked_prompt.seconds += share + seconds;
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
        let first_pass = self.first_pass.pop_front().flatten();
        let truth = match &first_pass {
            Some(FirstPass { envelopes, .. }) => {
                let logits = case.tokens.len() * comparer.vocab;
                let resid = comparer.snapshots * case.tokens.len() * comparer.d_model;
                let parts = [self.spill.next(logits)?, self.spill.next(logits)?, self.spill.next(resid)?, self.spill.next(resid)?];
                Some(PromptTruth::from_parts(parts, envelopes.clone()))
            }
            None => None,
        };
        let processed_sides = (&candidate.logits[..], exact.as_deref());
        let dimensions = self.dimensions;
        // Our processed residual stream is mean-free, and its logits center_unembed shifts (when
        // on, which is when the comparisons are shift-free): judged so against the truth.
        let logits_form = match criterion {
            Criterion::Raw => Form::Raw,
            Criterion::ShiftInvariant => Form::Centered,
        };
        let processed_forms = Forms { resid: Form::Centered, logits: logits_form };
        let processed_rounding =
            truth.as_ref().map(|truth| dimensions.judge("ours (processed)", Outputs::of(&candidate), truth, processed_forms));
        let rounding_against = |other: &dyn Fn(&FirstPass) -> &ExternalSide| {
            processed_rounding
                .clone()
                .zip(first_pass.as_ref())
                .map(|(processed, first)| Rounding::new(processed, other(first).under(criterion)))
        };
        let unprocessed_reference =
            (&unprocessed[..], unprocessed_exact.as_deref().map_or(ReferenceFloat64::External, ReferenceFloat64::Ours));
        let comparison = comparer.against_reference(
            "processed-vs-reference",
            criterion,
            &candidate,
            &reference_prompt,
            true,
            &provenance.vs_reference,
            rounding_against(&|first| &first.reference),
        );
        comparisons.push(comparer.with_noise_floor(comparison, processed_sides, (&reference_prompt.logits, ReferenceFloat64::External)));
        let comparison = comparer.logits(
            "processed-vs-unprocessed",
            criterion,
            &candidate.logits,
            unprocessed,
            &provenance.vs_unprocessed,
            rounding_against(&|first| &first.ours),
        );
        comparisons.push(comparer.with_noise_floor(comparison, processed_sides, unprocessed_reference));
        if let Some(tl) = &reference_prompt.tl_processed_logits {
            let tl_side = |truth: &PromptTruth| {
                let forms = Forms { resid: Form::Raw, logits: Form::Centered };
                dimensions.judge("TransformerLens (processed)", Outputs { logits: tl, resid: None }, truth, forms)
            };
            let rounding =
                processed_rounding.clone().zip(truth.as_ref()).map(|(processed, truth)| Rounding::new(processed, tl_side(truth)));
            let comparison = comparer.logits(
                "processed-vs-transformer-lens",
                Criterion::Raw,
                &candidate.logits,
                tl,
                &provenance.vs_transformer_lens,
                rounding,
            );
            comparisons.push(comparer.with_noise_floor(comparison, processed_sides, (tl, ReferenceFloat64::External)));
        }
        if let Some(tl) = &reference_prompt.tl_unprocessed_logits {
            let comparison = comparer.logits(
                "unprocessed-vs-transformer-lens-unprocessed",
                Criterion::Raw,
                unprocessed,
                tl,
                &provenance.unprocessed_vs_transformer_lens,
                first_pass.as_ref().zip(truth.as_ref()).map(|(first, truth)| {
                    let tl_side = dimensions.judge("TransformerLens (unprocessed)", Outputs { logits: tl, resid: None }, truth, Forms::RAW);
                    Rounding::new(first.ours.raw.clone(), tl_side)
                }),
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
    fn logits(
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

/// Our unprocessed side and the reference's against one prompt's truth, each as it is and
/// shift-free; the reference searched for a tested cause when it leaves the envelope.
pub(super) fn judge_against_reference(
    judge: &EnvelopeJudge,
    ours: Outputs,
    reference: &PromptReference,
    tokens: &[i64],
    truth: &PromptTruth,
) -> Result<(ExternalSide, ExternalSide)> {
    let dimensions = judge.dimensions;
    let ours = ExternalSide {
        raw: dimensions.judge("ours (unprocessed)", ours, truth, Forms::RAW),
        shift_free: dimensions.judge("ours (unprocessed)", ours, truth, Forms { resid: Form::Raw, logits: Form::Centered }),
    };
    let reference_outputs = Outputs { logits: &reference.logits, resid: reference.resid.as_deref() };
    Ok((ours, judge.judge_external("the reference", reference_outputs, tokens, truth)?))
}
