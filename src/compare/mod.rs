//! Numbers about two sets of logits (stats), what they most likely mean (diagnose), and which
//! processing step a difference comes from (attribution).
pub mod attribution;
pub mod diagnose;
pub mod envelope;
mod kernel;
pub mod noise_floor;
pub mod stats;

pub use stats::{compare_logits, compare_resid, Comparison, Criterion, DiffLocation, ResidDiff, Tolerance};
