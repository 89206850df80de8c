//! compare's rounding-envelope work for one prompt: our float64 forward (the truth, once per
//! prompt), the envelope our float32 forward sets around it, each side judged against both, and,
//! for a side outside the envelope, the search of the catalogue of port deviations for the one
//! that reproduces it (compare::envelope holds the arithmetic, model::deviation the catalogue).
use anyhow::{Context, Result};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::compare::Candidate;
use crate::compare::envelope::{self, Envelope, Exact, Form, Measured, Scaling, Shape, SideRounding, TestedCause, ENVELOPE_FACTOR};
use crate::model::deviation::Deviation;
use crate::model::dtype::Dtype;
use crate::model::gpt2::{forward_with, Activations, Computation};
use crate::model::Weights;
use crate::timings::{timed, Phase};

/// `compare --criterion`: what a comparison must satisfy to pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Tolerance, and every side within the rounding envelope at every residual snapshot and
    /// at the logits (runs our forward once more per prompt, in float64)
    Envelope,
    /// Tolerance on the logits only (for ports allowed to compute differently: TF32, half
    /// precision); no float64 forward
    Tolerance,
}

/// One prompt's truth and envelopes, in float64 precision.
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

    fn envelope(&self, form: Form) -> &Envelope {
        match form {
            Form::Raw => &self.raw,
            Form::Centered => &self.centered,
        }
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

    /// One side (`name` says which, as a note names it) judged against the truth in `form`.
    pub fn judge(&self, name: &str, side: Outputs, truth: &PromptTruth, form: Form) -> SideRounding {
        timed(Phase::Statistics, || {
            let (resid, logits) = self.measure(side, (&truth.resid, &truth.logits), form);
            SideRounding::judge(name, form, resid.as_deref(), &logits, truth.envelope(form), self.n_layer + 1)
        })
    }

    fn measure(&self, side: Outputs, (resid_truth, logits_truth): (&Exact, &Exact), form: Form) -> (Option<Vec<Measured>>, Measured) {
        let positions = side.logits.len() / self.vocab;
        let resid = side.resid.map(|resid| envelope::measure(resid, resid_truth, self.resid_shape(positions), form));
        let logits = envelope::measure(side.logits, logits_truth, self.logits_shape(positions), form).remove(0);
        (resid, logits)
    }
}

/// Judging with the model at hand: the unprocessed weights our float64 forward (and each tested
/// deviation) runs on.
pub struct EnvelopeJudge<'a> {
    weights: &'a Weights,
    /// The dtype the envelope is measured in: float32, or the run's own when it is coarser.
    envelope_kind: Kind,
    pub dimensions: Dimensions,
}

impl<'a> EnvelopeJudge<'a> {
    pub fn new(weights: &'a Weights, dtype: Dtype) -> Self {
        let envelope_kind = if dtype == Dtype::Float64 { Kind::Float } else { dtype.kind() };
        Self { weights, envelope_kind, dimensions: Dimensions::of(&weights.config) }
    }

    /// Whether the run's own forward is the one the envelope is measured with.
    pub fn envelope_is(&self, dtype: Dtype) -> bool {
        dtype.kind() == self.envelope_kind
    }

    /// Our float64 forward on `tokens`, and the envelope our forward in the envelope's dtype
    /// sets around it (`ours` is that forward's output when the run already made it).
    pub(super) fn truth(&self, tokens: &[i64], ours: Option<&Candidate>) -> Result<PromptTruth> {
        let (logits, resid) = exact_outputs(&forward_with(self.weights, tokens, &Computation::FLOAT64))?;
        let computed;
        let ours = match ours {
            Some(ours) => ours,
            None => {
                let activations = forward_with(self.weights, tokens, &Computation { kind: Some(self.envelope_kind), deviation: None });
                computed = Candidate { logits: super::to_vec(&activations.logits)?, resid: Some(super::to_vec(&activations.resid)?) };
                &computed
            }
        };
        let dimensions = self.dimensions;
        let positions = tokens.len();
        let ours_resid = ours.resid.as_deref().context("our forward records its residual stream")?;
        let envelope = |form| {
            timed(Phase::Statistics, || {
                Envelope::of(
                    Some((ours_resid, &resid, dimensions.resid_shape(positions))),
                    (&ours.logits, &logits, dimensions.logits_shape(positions)),
                    form,
                )
            })
        };
        Ok(PromptTruth { raw: envelope(Form::Raw), centered: envelope(Form::Centered), logits, resid })
    }

    /// For a side outside the envelope: our float64 forward with each catalogued deviation that
    /// could start where the side first leaves it, and the one that brings the side back within
    /// the envelope everywhere (the closest, when several do).
    pub fn search(&self, judged: &mut SideRounding, side: Outputs, tokens: &[i64], truth: &PromptTruth) -> Result<()> {
        let Some(first) = judged.first_outside else { return Ok(()) };
        let dimensions = self.dimensions;
        let candidates: Vec<Deviation> = Deviation::candidates(first.index, dimensions.n_layer, side.resid.is_some())
            .into_iter()
            .filter(|deviation| applicable(deviation, tokens, self.weights.config.n_positions as usize))
            .collect();
        let envelope = truth.envelope(judged.form);
        let mut best: Option<TestedCause> = None;
        for deviation in &candidates {
            let variant = forward_with(self.weights, tokens, &Computation { kind: Some(Kind::Double), deviation: Some(*deviation) });
            let (logits_truth, resid_truth) = exact_outputs(&variant)?;
            let multiple = timed(Phase::Statistics, || {
                let (resid, logits) = dimensions.measure(side, (&resid_truth, &logits_truth), judged.form);
                SideRounding::judge("variant", judged.form, resid.as_deref(), &logits, envelope, dimensions.n_layer + 1).worst()
            });
            if !(multiple <= ENVELOPE_FACTOR) || best.as_ref().is_some_and(|best| best.multiple <= multiple) {
                continue;
            }
            best = Some(TestedCause {
                deviation: *deviation,
                description: deviation.describe(),
                multiple,
                logits_max_abs_diff: envelope::max_abs_diff(side.logits, &logits_truth, tokens.len(), dimensions.vocab, judged.form),
            });
        }
        judged.cause = best;
        judged.deviations_tried = candidates.len();
        Ok(())
    }
}

/// Whether a deviation can be tried on this prompt: a prepended <|endoftext|> needs a prompt
/// without one and room for it; a shift of the position ids needs room too.
fn applicable(deviation: &Deviation, tokens: &[i64], n_positions: usize) -> bool {
    use crate::model::deviation::DeviationKind;
    match deviation.kind {
        DeviationKind::BosPrepended => tokens.first() != Some(&crate::tokenize::END_OF_TEXT) && tokens.len() < n_positions,
        DeviationKind::PositionOffset { offset } if offset > 0 => tokens.len() < n_positions,
        _ => true,
    }
}

/// A float64 forward's logits and residual stream, kept at float64 precision.
fn exact_outputs(activations: &Activations) -> Result<(Exact, Exact)> {
    let values = |tensor: &Tensor| -> Result<Vec<f64>> {
        let flat = tensor.to_device(tch::Device::Cpu).to_kind(Kind::Double).contiguous().view([-1]);
        Vec::<f64>::try_from(&flat).context("cannot read values back from libtorch")
    };
    Ok((Exact::from_f64(&values(&activations.logits)?), Exact::from_f64(&values(&activations.resid)?)))
}
