//! compare's two passes over our models: the unprocessed model on every prompt, then the
//! processed one, each prompt's logits waiting in the spill between them, every comparison
//! made by the [`Comparer`] and timed per prompt.
use std::collections::VecDeque;

use anyhow::Result;
use tch::Kind;

use super::cases::PromptCase;
use super::comparer::{Candidate, Comparer};
use super::rounding::{Dimensions, EachBlock, EnvelopeJudge, ExternalSide, Outputs, PromptTruth};
use super::spill::LogitsSpill;
use super::{explain, load_weights, progress_bar, to_vec};
use crate::cli::options::CompareOptions;
use crate::diagnose::Provenance;
use crate::model::dtype::Dtype;
use crate::model::gpt2::{forward_packed, packs, PackedActivations};
use crate::model::inputs::ModelInputs;
use crate::model::load::Checkpoint;
use crate::model::process::{process, ProcessingOptions};
use crate::model::Weights;
use crate::numeric::envelope::Envelope;
use crate::numeric::noise_floor::ReferenceFloat64;
use crate::reference::ReferenceFile;
use crate::schema::attribution::StepRow;
use crate::schema::rounding::Gate;
use crate::schema::rounding::{Form, Forms, Rounding};
use crate::schema::Repeatability;
use crate::schema::{Comparison, Criterion};
use crate::sys::timings::{timed, Phase};

/// Our two models against the reference: each prompt's comparisons, how repeatable the forwards
/// were (with --repeat), and explain's per-step rows (with --attribution).
///
/// Spilling (`--spill`), one weight set is held at a time. The first pack of prompts runs
/// through the unprocessed model, its logits to a temporary file, then the weights are processed
/// (the checkpoint's pages leaving memory as their processed copies arrive) and the pack runs
/// through the processed model. Every later pack runs through both in turn, the unprocessed
/// model's float32 weights read back block by block from the checkpoint file's pages and let go
/// after each block ([`Weights::released_after_use`]). Weights that do not view the checkpoint
/// (converted to another dtype, or with --noise-floor's float64 copy) cannot be read back, and
/// the rounding envelope would read them back once per prompt: then every prompt runs through
/// the unprocessed model first, its logits (and the envelope's truth) to the file, and the
/// weights are processed in place. Not spilling, both weight sets are held and each pack runs
/// through both. Either way each comparison sees the same logits.
pub(super) fn compare_models(
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
    // The envelope's float64 forwards read every weight again for each prompt: let go after
    // each block, they read the checkpoint back once per prompt (40 prompts of about 55 tokens:
    // 3.9-4.6 s more forward, against 3.1-3.3 s less writing the spill), so they keep the file.
    let read_back = !judging && unprocessed.exact.is_none() && unprocessed.weights.views_checkpoint();
    let attribute = |weights: &Weights| -> Result<Option<Vec<StepRow>>> {
        if !options.attribution {
            return Ok(None);
        }
        let tokens: Vec<Vec<i64>> = cases.iter().map(|case| case.tokens.clone()).collect();
        let steps = processing.steps();
        Ok(Some(explain::attribute(weights, &tokens, &steps, comparer.vocab, comparer.tolerance, comparer.token_text, spills)?))
    };
    // Prompts run through each model a pack at a time (model::gpt2), and are compared one by one.
    let lengths: Vec<usize> = cases.iter().map(|case| case.tokens.len()).collect();
    let packs = packs(&lengths, &unprocessed.weights);
    let ahead = match (spills, read_back) {
        (false, _) => 0,
        (true, true) => 1.min(packs.len()),
        (true, false) => packs.len(),
    };
    let (before_processing, after_processing) = packs.split_at(ahead);
    let mut reports: Vec<Clocked> = Vec::with_capacity(cases.len());
    {
        let judge = judging.then(|| EnvelopeJudge::new(&unprocessed.weights));
        for pack in before_processing {
            reports.extend(passes.unprocessed(&unprocessed, &cases[pack.clone()], judge.as_ref())?);
        }
    }
    passes.spill.rewind()?;
    let attribution = attribute(&unprocessed.weights)?;
    let (processed, unprocessed) = if spills && !read_back {
        (unprocessed.processed(processing), None)
    } else {
        (unprocessed.shallow_clone().processed(processing), Some(unprocessed))
    };
    for pack in before_processing {
        passes.processed(&processed, &cases[pack.clone()], &mut reports[pack.clone()])?;
    }
    if let Some(unprocessed) = unprocessed.filter(|_| !after_processing.is_empty()) {
        passes.spill = LogitsSpill::memory();
        let unprocessed = if spills { unprocessed.released_after_use() } else { unprocessed };
        let judge = judging.then(|| EnvelopeJudge::new(&unprocessed.weights));
        for pack in after_processing {
            let mut compared = passes.unprocessed(&unprocessed, &cases[pack.clone()], judge.as_ref())?;
            passes.processed(&processed, &cases[pack.clone()], &mut compared)?;
            reports.extend(compared);
        }
    }
    passes.progress.finish_and_clear();
    let repeatability = passes.repeatability;
    Ok((reports, (options.repeat > 1).then_some(repeatability), attribution))
}

/// Each prompt's comparisons and time, the repeatability (with --repeat) and explain's rows (with --attribution).
pub(super) type Compared = (Vec<Clocked>, Option<Repeatability>, Option<Vec<StepRow>>);

/// One prompt's comparisons and the wall time its forward passes and comparisons took (a pack's
/// forward shared among its prompts by their tokens).
pub(super) struct Clocked {
    pub comparisons: Vec<Comparison>,
    pub seconds: f64,
}

/// `work`'s result and how many seconds it took.
pub(super) fn clocked<T>(work: impl FnOnce() -> T) -> (T, f64) {
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

    /// A second handle whose forwards let the checkpoint's pages go after each block (its
    /// weights view the checkpoint, and there is no float64 copy).
    fn released_after_use(&self) -> Model {
        Model { weights: self.weights.released_after_use(), exact: None }
    }

    /// The model on a pack of prompts, run `repeatability.runs` times (later runs must match the
    /// first bit for bit), and its float64 copy once, with --noise-floor.
    fn forward(&self, cases: &[PromptCase], repeatability: &mut Repeatability) -> Result<PackOutputs> {
        let prompts: Vec<&[i64]> = cases.iter().map(|case| &case.tokens[..]).collect();
        let candidate = forward_packed(&self.weights, &prompts);
        if repeatability.runs > 1 {
            let first = to_vec(&candidate.logits);
            for _ in 1..repeatability.runs {
                let again = to_vec(&forward_packed(&self.weights, &prompts).logits);
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
        let candidate = Candidate { logits: to_vec(&activations.logits), resid: Some(to_vec(&activations.resid)) };
        let exact = self.exact.as_ref().map(|exact| to_vec(&exact.prompt(index).logits));
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
        let reference_prompt = self.reference.prompt_without_transformer_lens(case.reference_index)?;
        let mut truth = None;
        let mut rounding = None;
        if let Some(judge) = judge {
            let reference_outputs = Outputs { logits: &reference_prompt.logits, resid: reference_prompt.resid.as_deref() };
            let prompt_truth = judge.truth(&case.tokens, (self.dtype == Dtype::Float32).then_some(&candidate), &[reference_outputs])?;
            let first = match prompt_truth {
                Some((prompt_truth, mut each_block)) => {
                    let reference_each_block = each_block.pop().flatten();
                    let reference = (reference_outputs, reference_each_block);
                    let (ours, reference) =
                        judge_against_reference(judge, Outputs::of(&candidate), reference, &case.tokens, &prompt_truth)?;
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

/// Our unprocessed side and the reference's (with our float64 blocks on its residual stream,
/// when it records one) against one prompt's truth, each as it is and shift-free; the reference
/// searched for a tested cause when it leaves the envelope.
fn judge_against_reference(
    judge: &EnvelopeJudge,
    ours: Outputs,
    (reference, each_block): (Outputs, Option<EachBlock>),
    tokens: &[i64],
    truth: &PromptTruth,
) -> Result<(ExternalSide, ExternalSide)> {
    let dimensions = judge.dimensions;
    let ours = ExternalSide {
        raw: dimensions.judge("ours (unprocessed)", ours, truth, Forms::RAW),
        shift_free: dimensions.judge("ours (unprocessed)", ours, truth, Forms { resid: Form::Raw, logits: Form::Centered }),
    };
    Ok((ours, judge.judge_external("the reference", reference, each_block, tokens, truth)?))
}
