//! The criterion a run's comparisons are judged by: part of the report (merge refuses shards
//! judged differently) and chosen on the command line.
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

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
