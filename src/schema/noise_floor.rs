//! `--noise-floor`'s record: how far each side of a comparison sits from float64, and what kind
//! of breach a failing comparison is (docs/metrics.md). numeric::noise_floor measures it.
use serde::{Deserialize, Serialize};

/// One comparison's noise floor (docs/metrics.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NoiseFloor {
    /// Max |float32 candidate − its float64 result|, under the comparison's criterion (centered
    /// for shift-invariant rows): our own float32 rounding.
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub candidate_vs_float64: f64,
    /// Max |float32 reference − float64|: against the reference side's own float64 result when
    /// that side is our model, else against our candidate's float64 result (the best estimate of
    /// the exact values the reference should hold).
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub reference_vs_float64: f64,
    /// Whether the comparison passes with our side(s) at float64 (an external reference stays
    /// as it is).
    pub float64_passes: bool,
    /// For a failing comparison: `rounding_noise` when it passes at float64, or when an external
    /// reference sits no further from float64 than numeric::noise_floor::REFERENCE_NOISE_FACTOR times our own
    /// float32 rounding; else `real`.
    pub breach: Option<Breach>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Breach {
    /// The comparison passes once our float32 rounding is taken out.
    RoundingNoise,
    /// It fails even at float64: the two sides compute different things.
    Real,
}
