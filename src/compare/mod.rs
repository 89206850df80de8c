//! Numbers about two sets of logits (stats) and what they most likely mean (diagnose).
pub mod diagnose;
pub mod stats;

pub use stats::{compare_logits, compare_resid, Comparison, Criterion, DiffLocation, ResidDiff, Tolerance};
