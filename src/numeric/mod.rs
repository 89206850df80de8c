//! The arithmetic on logits: the figures of a comparison (stats, with kernel as its fast path),
//! the one allclose judge (tolerance), the noise floor and the rounding envelope. Pure functions
//! of slices that fill schema's records.
pub mod envelope;
pub(crate) mod kernel;
pub mod noise_floor;
pub mod stats;
mod tolerance;

pub use stats::{compare_logits, compare_resid};
