//! compare's rounding-envelope work for one prompt: our float64 forward (the truth, once per
//! prompt), the envelope our float32 forward sets around it, each side judged against both, and,
//! for a side outside the envelope, the search of the catalogue of port deviations for the one
//! that reproduces it (numeric::envelope holds the arithmetic, model::deviation the catalogue).
use std::cell::RefCell;

use anyhow::{Context, Result};
use tch::{Kind, Tensor};

use super::comparer::Candidate;
use crate::model::deviation::{Deviation, DeviationKind};
use crate::model::gpt2::{forward_each_block, forward_with, forward_with_each_block, Activations, Computation};
use crate::model::Weights;
use crate::numeric::envelope::{self, Envelope, Exact, Measurements, Scaling, Shape, Widths, UNTIED_CORRELATION};
use crate::schema::rounding::{Form, Forms, Place, SideRounding, TestedCause, ENVELOPE_FACTOR};
use crate::sys::timings::{timed, Phase};

/// One prompt's truth, in float64 precision, and its envelopes.
pub struct PromptTruth {
    pub logits: Exact,
    pub resid: Exact,
    raw: Envelope,
    centered: Envelope,
}

impl PromptTruth {
    /// The truth as float32 pairs, in the order [`PromptTruth::from_parts`] takes them back.
    pub fn into_parts(self) -> ([Vec<f32>; 4], [Envelope; 2]) {
        ([self.logits.base, self.logits.correction, self.resid.base, self.resid.correction], [self.raw, self.centered])
    }

    pub fn from_parts(
        [logits_base, logits_correction, resid_base, resid_correction]: [Vec<f32>; 4],
        [raw, centered]: [Envelope; 2],
    ) -> Self {
        Self {
            logits: Exact { base: logits_base, correction: logits_correction },
            resid: Exact { base: resid_base, correction: resid_correction },
            raw,
            centered,
        }
    }

    fn envelope(&self, forms: Forms) -> Envelope {
        Envelope::for_forms(forms, &self.raw, &self.centered)
    }
}

/// A side's outputs as judging reads them: logits [T, V], and the residual stream [L + 1, T, D]
/// when the side records it.
#[derive(Clone, Copy)]
pub struct Outputs<'a> {
    pub logits: &'a [f32],
    pub resid: Option<&'a [f32]>,
}

impl<'a> Outputs<'a> {
    pub(super) fn of(candidate: &'a Candidate) -> Self {
        Self { logits: &candidate.logits, resid: candidate.resid.as_deref() }
    }
}

/// The model's shapes: all that judging a side against a prompt's truth needs.
#[derive(Debug, Clone, Copy)]
pub struct Dimensions {
    n_layer: usize,
    d_model: usize,
    vocab: usize,
}

impl Dimensions {
    pub fn of(config: &crate::model::Gpt2Config) -> Self {
        Self { n_layer: config.n_layer as usize, d_model: config.n_embd as usize, vocab: config.vocab_size as usize }
    }

    fn resid_shape(&self, positions: usize) -> Shape {
        Shape { snapshots: self.n_layer + 1, positions, width: self.d_model, kind: Scaling::PerDimension }
    }

    fn logits_shape(&self, positions: usize) -> Shape {
        Shape { snapshots: 1, positions, width: self.vocab, kind: Scaling::PerPosition }
    }

    /// One of our own sides (`name` says which, as a note names it) against the truth in `forms`.
    pub fn judge(&self, name: &str, side: Outputs, truth: &PromptTruth, forms: Forms) -> SideRounding {
        timed(Phase::Statistics, || {
            let whole = self.measure(side, (&truth.resid, &truth.logits), forms);
            SideRounding::judge(name, forms, &whole, None, &truth.envelope(forms), self.n_layer + 1)
        })
    }

    fn measure(&self, side: Outputs, (resid_truth, logits_truth): (&Exact, &Exact), forms: Forms) -> Measurements {
        let positions = side.logits.len() / self.vocab;
        Measurements {
            resid: side.resid.map(|resid| envelope::measure(resid, resid_truth, self.resid_shape(positions), forms.resid)),
            logits: envelope::measure(side.logits, logits_truth, self.logits_shape(positions), forms.logits).remove(0),
        }
    }
}

/// Our float64 blocks (and the head) on a side's own residual stream: (logits, resid).
pub type EachBlock = (Exact, Exact);

/// Judging with the model at hand: the unprocessed weights our float64 forward (and each tested
/// deviation) runs on.
pub struct EnvelopeJudge<'a> {
    weights: &'a Weights,
    pub dimensions: Dimensions,
    /// The last tested cause found, tried first on the next side that leaves the envelope.
    last_cause: RefCell<Option<TestedCause>>,
}

/// The envelope is float32's rounding: the precision the reference, candidates and our default
/// models compute in (half precision is judged by tolerance alone: `--criterion`).
const ENVELOPE_KIND: Kind = Kind::Float;

impl<'a> EnvelopeJudge<'a> {
    pub fn new(weights: &'a Weights) -> Self {
        Self { weights, dimensions: Dimensions::of(&weights.config), last_cause: RefCell::new(None) }
    }

    /// Our float64 forward on `tokens`, and the envelopes our forward in the envelope's dtype
    /// sets around it (`ours` is that forward's output when the run already made it); with,
    /// for each of `others` that records its residual stream, our float64 blocks on it (what
    /// [`Self::judge_external`] sets it against block by block). All float64 passes run as one
    /// (model::gpt2::forward_with_each_block). `None` when either of our forwards holds a NaN
    /// or Inf: the envelope cannot be measured, and the comparisons' tolerance verdict (which any
    /// non-finite value fails) stands alone.
    pub(super) fn truth(
        &self,
        tokens: &[i64],
        ours: Option<&Candidate>,
        others: &[Outputs],
    ) -> Result<Option<(PromptTruth, Vec<Option<EachBlock>>)>> {
        let computed;
        let ours = match ours {
            Some(ours) => ours,
            None => {
                computed = candidate_of(&forward_with(self.weights, tokens, &Computation { kind: Some(ENVELOPE_KIND), deviation: None }));
                &computed
            }
        };
        let finite = |values: &[f32]| values.iter().all(|value| value.is_finite());
        let Some(ours_resid) = ours.resid.as_deref().filter(|resid| finite(&ours.logits) && finite(resid)) else { return Ok(None) };
        let sides: Vec<Tensor> = std::iter::once(ours_resid)
            .chain(others.iter().filter_map(|side| side.resid))
            .map(|resid| self.resid_tensor(resid, tokens))
            .collect();
        let (truth, mut each_block) = forward_with_each_block(self.weights, tokens, &sides, &Computation::FLOAT64);
        let (logits, resid) = exact_outputs(&truth);
        let exact_finite = |exact: &Exact| finite(&exact.base) && finite(&exact.correction);
        if !(exact_finite(&logits) && exact_finite(&resid)) {
            return Ok(None);
        }
        let mut each_block = each_block.drain(..).map(|activations| exact_outputs(&activations));
        let (ours_logits, ours_resid) = each_block.next().context("our own side is passed first")?;
        let others_each_block = others.iter().map(|side| side.resid.and_then(|_| each_block.next())).collect();
        let ours = Outputs::of(ours);
        let dimensions = self.dimensions;
        let envelope = |form| {
            let forms = Forms { resid: form, logits: form };
            timed(Phase::Statistics, || Envelope {
                whole: Widths::of(&dimensions.measure(ours, (&resid, &logits), forms)),
                each_block: Some(Widths::of(&dimensions.measure(ours, (&ours_resid, &ours_logits), forms))),
            })
        };
        let truth = PromptTruth { raw: envelope(Form::Raw), centered: envelope(Form::Centered), logits, resid };
        Ok(Some((truth, others_each_block)))
    }

    /// A side's residual stream as a tensor [L + 1, T, D] on the weights' device.
    fn resid_tensor(&self, resid: &[f32], tokens: &[i64]) -> Tensor {
        let device = self.weights.token_embedding.stored().device();
        let shape = [self.dimensions.n_layer as i64 + 1, tokens.len() as i64, self.dimensions.d_model as i64];
        Tensor::from_slice(resid).to_device(device).view(shape)
    }

    /// Each of our float64 blocks (and the head), with `deviation`, on the side's own residual
    /// stream: (logits, resid) to set the side's outputs against.
    fn each_block(&self, side: Outputs, tokens: &[i64], deviation: Option<Deviation>) -> Result<EachBlock> {
        Ok(exact_outputs(&self.each_block_in(Kind::Double, side, tokens, deviation)?))
    }

    /// [`Self::each_block`] computed in `kind`.
    fn each_block_in(&self, kind: Kind, side: Outputs, tokens: &[i64], deviation: Option<Deviation>) -> Result<Activations> {
        let resid = side.resid.context("judging block by block needs the side's residual stream")?;
        Ok(forward_each_block(self.weights, tokens, &self.resid_tensor(resid, tokens), &Computation { kind: Some(kind), deviation }))
    }

    /// Another implementation's side (the reference, a candidate) against the truth, end to end
    /// and block by block (`each_block`: what [`Self::truth`] made for it, when it records its
    /// residual stream): as it is, and with its logits' per-position shift ignored (for
    /// shift-free comparisons). Searched for a tested cause, as it is, when it leaves the envelope.
    pub(super) fn judge_external(
        &self,
        name: &str,
        side: Outputs,
        each_block: Option<EachBlock>,
        tokens: &[i64],
        truth: &PromptTruth,
    ) -> Result<ExternalSide> {
        let dimensions = self.dimensions;
        let judge = |forms: Forms| {
            timed(Phase::Statistics, || {
                let whole = dimensions.measure(side, (&truth.resid, &truth.logits), forms);
                let each_block = each_block.as_ref().map(|(logits, resid)| dimensions.measure(side, (resid, logits), forms));
                SideRounding::judge(name, forms, &whole, each_block.as_ref(), &truth.envelope(forms), dimensions.n_layer + 1)
            })
        };
        let mut raw = judge(Forms::RAW);
        self.search(&mut raw, side, tokens, truth)?;
        let mut shift_free = judge(Forms { resid: Form::Raw, logits: Form::Centered });
        if !shift_free.passed() {
            (shift_free.cause, shift_free.deviations_tried) = (raw.cause.clone(), raw.deviations_tried);
        }
        Ok(ExternalSide { raw, shift_free })
    }

    /// For a side outside the envelope: our float64 forward with each catalogued deviation that
    /// could start where the side first leaves it, and the one that brings the side back within
    /// the envelope everywhere, end to end and block by block (the closest, when several do).
    fn search(&self, judged: &mut SideRounding, side: Outputs, tokens: &[i64], truth: &PromptTruth) -> Result<()> {
        let Some(first) = judged.first_outside else { return Ok(()) };
        let dimensions = self.dimensions;
        let candidates: Vec<Deviation> = Deviation::candidates(first.index, dimensions.n_layer, side.resid.is_some())
            .into_iter()
            .filter(|deviation| applicable(deviation, tokens, self.weights.config.n_positions as usize))
            .collect();
        // The cause found on an earlier prompt is tried first, and kept when it reproduces this
        // side too: a port deviates the same way on every prompt, and the whole catalogue costs
        // two float64 forwards per deviation.
        let head_alone = first.index == dimensions.n_layer + 1 && side.resid.is_some();
        let previous = self.last_cause.borrow().clone().filter(|previous| {
            candidates.contains(&previous.deviation) || (head_alone && previous.deviation.kind == DeviationKind::UnembeddingUntied)
        });
        if let Some(previous) = previous {
            if let Some(found) = self.test(&previous.deviation, side, tokens, truth, first)? {
                judged.cause = Some(TestedCause { description: previous.description, ..found });
                judged.deviations_tried = 1;
                return Ok(());
            }
        }
        let mut reproducing: Vec<TestedCause> = Vec::new();
        for deviation in &candidates {
            reproducing.extend(self.reproduce(deviation, side, tokens, truth, first)?);
        }
        // Only the head is left to differ: the one catalogued deviation no forward can try.
        let head_alone = head_alone && reproducing.is_empty();
        if head_alone {
            reproducing.extend(self.untied_unembedding(side, tokens)?);
        }
        let mut best = reproducing.iter().min_by(|a, b| a.multiple.total_cmp(&b.multiple)).cloned();
        if let Some(found) = &mut best {
            // The same deviation in one block and in every block both match: say so.
            let kind_matches = |scope: Option<usize>| {
                reproducing.iter().any(|other| other.deviation.kind == found.deviation.kind && other.deviation.block == scope)
            };
            let block = found.deviation.block.or_else(|| {
                reproducing.iter().find(|other| other.deviation.kind == found.deviation.kind).and_then(|other| other.deviation.block)
            });
            if let Some(block) = block.filter(|&block| kind_matches(Some(block)) && kind_matches(None)) {
                found.deviation.block = Some(block);
                found.description = found.deviation.describe_from_block_on(block);
            }
        }
        if best.is_some() {
            self.last_cause.replace(best.clone());
        }
        judged.cause = best;
        judged.deviations_tried = candidates.len() + usize::from(head_alone);
        Ok(())
    }

    /// Whether `deviation` reproduces the side: by our forward with it, or, for an untied
    /// unembedding, by its signature.
    fn test(&self, deviation: &Deviation, side: Outputs, tokens: &[i64], truth: &PromptTruth, first: Place) -> Result<Option<TestedCause>> {
        match deviation.kind {
            DeviationKind::UnembeddingUntied => self.untied_unembedding(side, tokens),
            _ => self.reproduce(deviation, side, tokens, truth, first),
        }
    }

    /// Our float64 forward with `deviation` against the side, block by block first (as cheap as
    /// one forward, and it rules out most deviations at the block where the side leaves the
    /// envelope), then end to end: the tested cause when the side lands within the envelope.
    fn reproduce(
        &self,
        deviation: &Deviation,
        side: Outputs,
        tokens: &[i64],
        truth: &PromptTruth,
        first: Place,
    ) -> Result<Option<TestedCause>> {
        let dimensions = self.dimensions;
        // Block by block first (as cheap as one forward, and it rules out most deviations at
        // the block where the side leaves the envelope), then end to end.
        let mut own_each_block = None;
        let each_block = match side.resid.filter(|_| deviation.keeps_positions()) {
            Some(_) => {
                let (logits, resid) = self.each_block(side, tokens, Some(*deviation))?;
                let measured = dimensions.measure(side, (&resid, &logits), Forms::RAW);
                if deviation.rounds_to_half() {
                    let computed = candidate_of(&self.each_block_in(ENVELOPE_KIND, side, tokens, Some(*deviation))?);
                    own_each_block = Some(Widths::of(&dimensions.measure(Outputs::of(&computed), (&resid, &logits), Forms::RAW)));
                }
                let widths = truth.raw.each_block.as_ref().context("the raw envelope is measured block by block")?;
                let at_first = match (first.index, &measured.resid) {
                    (0, _) => 0.0,
                    (index, Some(resid)) if index <= dimensions.n_layer => resid[index].max() / widths.snapshots[index],
                    _ => measured.logits.max() / widths.logits,
                };
                if !deviation.rounds_to_half() && !(at_first <= ENVELOPE_FACTOR) {
                    return Ok(None);
                }
                Some(measured)
            }
            None => None,
        };
        let variant = |kind| forward_with(self.weights, tokens, &Computation { kind: Some(kind), deviation: Some(*deviation) });
        let (logits_truth, resid_truth) = exact_outputs(&variant(Kind::Double));
        // A float16 deviation is matched within its own rounding: our forward with it in
        // float32 against the same in float64 (never less than the float32 envelope).
        let own_envelope = if deviation.rounds_to_half() {
            let computed = candidate_of(&variant(ENVELOPE_KIND));
            let whole = Widths::of(&dimensions.measure(Outputs::of(&computed), (&resid_truth, &logits_truth), Forms::RAW));
            Some(truth.raw.widened_by(&Envelope { whole, each_block: own_each_block }))
        } else {
            None
        };
        let envelope = own_envelope.as_ref().unwrap_or(&truth.raw);
        let multiple = timed(Phase::Statistics, || {
            let whole = dimensions.measure(side, (&resid_truth, &logits_truth), Forms::RAW);
            SideRounding::judge("variant", Forms::RAW, &whole, each_block.as_ref(), envelope, dimensions.n_layer + 1).worst()
        });
        Ok((multiple <= ENVELOPE_FACTOR).then(|| TestedCause {
            deviation: *deviation,
            description: deviation.describe(),
            multiple,
            logits_max_abs_diff: envelope::max_abs_diff(side.logits, &logits_truth, tokens.len(), dimensions.vocab, Form::Raw),
            correlation: None,
        }))
    }

    /// For a side whose residual stream agrees with ours through the last block and whose logits
    /// do not: an unembedding untied from wte, when its logits owe nothing to what wte gives on
    /// that same residual stream (no forward can reproduce an unknown lm_head).
    fn untied_unembedding(&self, side: Outputs, tokens: &[i64]) -> Result<Option<TestedCause>> {
        let (head, _) = self.each_block(side, tokens, None)?;
        let correlation = envelope::largest_correlation(side.logits, &head, tokens.len(), self.dimensions.vocab);
        // Logits that hold wte's values in another order are a permuted vocabulary, which
        // diagnose names; an untied lm_head makes other values altogether.
        let reordered = envelope::is_reordering(side.logits, &head, tokens.len(), self.dimensions.vocab);
        let deviation = Deviation { kind: DeviationKind::UnembeddingUntied, block: None };
        Ok((correlation < UNTIED_CORRELATION && !reordered).then(|| TestedCause {
            deviation,
            description: deviation.describe(),
            multiple: f64::NAN,
            logits_max_abs_diff: f64::NAN,
            correlation: Some(correlation),
        }))
    }
}

/// Another implementation's side judged two ways: as it is, and with its logits' per-position
/// shift ignored.
#[derive(Clone)]
pub struct ExternalSide {
    pub raw: SideRounding,
    pub shift_free: SideRounding,
}

impl ExternalSide {
    /// The judgement a comparison under `criterion` uses.
    pub fn under(&self, criterion: crate::schema::Criterion) -> SideRounding {
        match criterion {
            crate::schema::Criterion::Raw => self.raw.clone(),
            crate::schema::Criterion::ShiftInvariant => self.shift_free.clone(),
        }
    }
}

/// Whether a deviation can be tried on this prompt: a prepended <|endoftext|> needs a prompt
/// without one and room for it; a shift of the position ids needs room too.
fn applicable(deviation: &Deviation, tokens: &[i64], n_positions: usize) -> bool {
    match deviation.kind {
        DeviationKind::BosPrepended => tokens.first() != Some(&crate::tokenize::END_OF_TEXT) && tokens.len() < n_positions,
        DeviationKind::PositionOffset { offset } if offset > 0 => tokens.len() < n_positions,
        _ => true,
    }
}

/// A forward's logits and residual stream as float32 values, like any side's.
fn candidate_of(activations: &Activations) -> Candidate {
    Candidate { logits: super::to_vec(&activations.logits), resid: Some(super::to_vec(&activations.resid)) }
}

/// A float64 forward's logits and residual stream, kept at float64 precision.
fn exact_outputs(activations: &Activations) -> (Exact, Exact) {
    let values = |tensor: &Tensor| Exact::from_f64(&super::values::<f64>(tensor));
    (values(&activations.logits), values(&activations.resid))
}
