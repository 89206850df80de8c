//! What the checks found about a failing comparison, as data: each finding's kind and figures.
//! diagnose detects them; diagnose::prose puts them in words.
use serde::{Deserialize, Serialize};

use super::location::DiffLocation;
use super::rounding::TestedCause;

/// One TransformerLens switch on which the two sides disagree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchDifference {
    pub switch: String,
    pub ours: bool,
    pub reference: bool,
}

/// Which side holds a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Ours,
    Reference,
    Both,
}

/// One finding about a failing comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cause {
    /// NaN or infinite values: how many on each side, and where the first is.
    NonFinite { count: usize, candidate: usize, reference: usize, first_at: Option<DiffLocation>, first_side: Side },
    /// Every failing position is shifted by its own constant; softmax unchanged.
    PerPositionShift { ours_center_unembed: bool, reference_center_unembed: Option<bool> },
    /// A per-position shift and one common scale factor (candidate ≈ scale × reference + shift).
    ShiftAndScale { scale: f64 },
    /// Each position holds the reference's values in another vocabulary order.
    PermutedVocabulary,
    /// Exactly one element is outside tolerance.
    SingleElement { at: DiffLocation, abs_diff: f64 },
    /// Every element outside tolerance (more than one) sits in one position of several.
    SinglePosition { position: usize, elements: usize },
    /// Small differences spread over many elements with every argmax agreeing.
    Noise { ulps: f64, elements: usize, positions: usize, of_positions: usize, min_passing_atol: f64 },
    /// Our processing switches differ from those the reference records.
    ProcessingDiffers { switches: Vec<SwitchDifference> },
    /// The residual stream first exceeds tolerance, by more than rounding noise, at this
    /// snapshot (0 = embeddings).
    ResidualDiverges { index: usize, max_abs_diff: f64 },
    /// The residual stream exceeds tolerance somewhere, but nowhere by more than rounding noise.
    ResidualNoise { max_abs_diff: f64, ulps: f64 },
    /// The residual stream agrees at every snapshot.
    ResidualAgrees { max_abs_diff: f64 },
    /// A side leaves the rounding envelope: where first, by how much, and what a search of the
    /// catalogue of port deviations found (docs/metrics.md).
    LeavesEnvelope {
        side: String,
        place: String,
        /// NaN (`null`) when the side holds a non-finite value there.
        #[serde(deserialize_with = "crate::schema::nullable::number")]
        multiple: f64,
        factor: f64,
        cause: Option<TestedCause>,
        tried: usize,
        pattern: Option<PositionPattern>,
        /// Whether the side recorded its residual stream (else only the logits can be judged).
        localised: bool,
    },
}

/// Where along the prompt a side's deviation sits, at the first place it leaves the envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionPattern {
    /// Earlier positions are off and the last one is within the envelope: what a missing causal
    /// mask does (the last position sees every token either way).
    LastPositionExact { worst_position: usize },
    /// Only this position leaves the envelope.
    SinglePosition { position: usize },
    /// Most positions leave it; the worst is this one.
    Spread { worst_position: usize, outside: usize, of: usize },
}

impl Cause {
    /// Residual-stream findings say where, not what: they are never the likely cause.
    pub fn is_cause(&self) -> bool {
        match self {
            Cause::LeavesEnvelope { cause, .. } => cause.is_some(),
            other => !matches!(other, Cause::ResidualDiverges { .. } | Cause::ResidualNoise { .. } | Cause::ResidualAgrees { .. }),
        }
    }
}
