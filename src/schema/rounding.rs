//! How each side of a comparison sits against the rounding envelope (docs/metrics.md), as the
//! report holds it: the multiples, where a side first leaves it, the tested cause, and the verdict
//! those figures give. numeric::envelope measures them.
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::model::deviation::Deviation;

/// A side passes while its deviation from the float64 truth is at most this many times the
/// envelope at every snapshot and at the logits. Calibrated on faithful implementations
/// (docs/metrics.md): Hugging Face in float32 and float64, a numpy port in float32 and float64,
/// and our processed model stay at or below 4x at real GPT-2 magnitudes; the catalogued port
/// deviations that move a block's output at all land at 20x and far beyond.
pub const ENVELOPE_FACTOR: f64 = 8.0;

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

/// How a side is set against the truth: as it is, or with each position's mean over the last
/// axis removed from both (our processed model, whose residual stream is mean-free and whose
/// logits center_unembed shifts; centering is exact in exact arithmetic, so a faithful side
/// stays faithful).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    Raw,
    Centered,
}

/// How a side's residual stream and its logits are each set against the truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forms {
    pub resid: Form,
    pub logits: Form,
}

impl Forms {
    pub const RAW: Self = Self { resid: Form::Raw, logits: Form::Raw };
}

/// A place along the model: a residual snapshot, or the logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// 0 = embeddings, n = output of block h.{n-1}, n_layer + 1 = the logits.
    pub index: usize,
}

/// How one side of a comparison sits against the envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SideRounding {
    /// Which of the comparison's sides, by what it is: "ours (unprocessed)", "the reference", ...
    pub side: String,
    pub forms: Forms,
    /// Per residual snapshot, the side's deviation from the float64 truth as a multiple of the
    /// envelope; absent when the side has no residual stream.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::schema::nullable::optional_numbers")]
    pub snapshots: Option<Vec<f64>>,
    /// The same at the logits.
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub logits: f64,
    /// Per residual snapshot, what the block that wrote it added on its own (each block of our
    /// float64 forward run on the side's own input), as a multiple of what our float32 block
    /// adds; index 0 (the embeddings, which have no input) repeats `snapshots[0]`. Absent for
    /// our own models and for sides without a residual stream.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::schema::nullable::optional_numbers")]
    pub each_block: Option<Vec<f64>>,
    /// The same for ln_f and the unembedding, on the side's last residual snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::schema::nullable::optional_number")]
    pub head: Option<f64>,
    /// The first place the side leaves the envelope by more than the factor, end to end or on
    /// its own.
    pub first_outside: Option<Place>,
    /// At `first_outside`, each position's multiple: where in the prompt the deviation sits.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::schema::nullable::optional_numbers")]
    pub positions: Option<Vec<f64>>,
    /// For a side outside the envelope: the catalogued deviation that reproduces it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<TestedCause>,
    /// How many catalogued deviations were tried on this side (0: no search ran).
    #[serde(default)]
    pub deviations_tried: usize,
}

pub(crate) fn outside(multiple: f64) -> bool {
    !(multiple <= ENVELOPE_FACTOR)
}

/// The largest of the values, NaN when any is NaN.
pub(crate) fn worst_of(values: impl IntoIterator<Item = f64>) -> f64 {
    values.into_iter().fold(0.0, |max, value| if value.is_nan() || max.is_nan() { f64::NAN } else { max.max(value) })
}

impl SideRounding {
    /// Whether every multiple, either view, is within the factor: from the figures alone (so
    /// merge's recomputation does not trust `first_outside`).
    pub fn passed(&self) -> bool {
        self.worst() <= ENVELOPE_FACTOR
    }

    /// The largest multiple anywhere (NaN when a value is non-finite).
    pub fn worst(&self) -> f64 {
        worst_of(self.snapshots.iter().flatten().chain(self.each_block.iter().flatten()).copied().chain([self.logits]).chain(self.head))
    }

    /// At residual snapshot `index`, what judges the side there: the larger of its end-to-end and
    /// block-by-block multiples (NaN when either is); `None` without a residual stream.
    pub fn snapshot_multiple(&self, index: usize) -> Option<f64> {
        let whole = *self.snapshots.as_ref()?.get(index)?;
        let each_block = self.each_block.as_ref().and_then(|multiples| multiples.get(index).copied());
        Some(each_block.map_or(whole, |each_block| if whole.is_nan() || each_block.is_nan() { f64::NAN } else { whole.max(each_block) }))
    }

    /// Whether the side is within the envelope at residual snapshot `index`, both views.
    fn snapshot_within(&self, index: usize) -> bool {
        [&self.snapshots, &self.each_block]
            .into_iter()
            .all(|multiples| multiples.as_ref().and_then(|multiples| multiples.get(index)).is_none_or(|&value| !outside(value)))
    }
}

/// A catalogued deviation that, switched on in our float64 forward, lands within the envelope of
/// the side: the side computes what that deviation computes. Or one recognised by its signature
/// (an untied unembedding), with `correlation` as the evidence and no forward to measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestedCause {
    pub deviation: Deviation,
    /// The deviation in words.
    pub description: String,
    /// The side against our forward with the deviation: its worst multiple of the envelope,
    /// and the logits' max |diff| (NaN, null in JSON, for a cause recognised by its signature).
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub multiple: f64,
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub logits_max_abs_diff: f64,
    /// For an untied unembedding: the largest |correlation| over positions between the side's
    /// logits and what wte's unembedding gives on the side's own last residual snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::schema::nullable::optional_number")]
    pub correlation: Option<f64>,
}

/// Both sides of a comparison against the envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rounding {
    /// The factor a side may exceed the envelope by ([`ENVELOPE_FACTOR`]).
    pub factor: f64,
    pub candidate: SideRounding,
    pub reference: SideRounding,
}

impl Rounding {
    pub fn new(candidate: SideRounding, reference: SideRounding) -> Self {
        Self { factor: ENVELOPE_FACTOR, candidate, reference }
    }

    pub fn passed(&self) -> bool {
        self.candidate.passed() && self.reference.passed()
    }

    /// Whether both sides are within the envelope at residual snapshot `index`.
    pub fn snapshot_within(&self, index: usize) -> bool {
        self.candidate.snapshot_within(index) && self.reference.snapshot_within(index)
    }
}
