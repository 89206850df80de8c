//! The one allclose judge: whether a difference is within atol + rtol * |magnitude|, and how a
//! criterion (raw, or shift-invariant) measures an element for it. numeric::stats judges every
//! element with it, and so do noise_floor, the residual-stream comparison and diagnose;
//! numeric::kernel writes the same rule inline as its fast path, and stats' tests hold the two
//! together.
use crate::model::dtype::Dtype;
use crate::schema::{Criterion, Tolerance};

impl Tolerance {
    /// The default tolerance, from torch.testing.assert_close's table where it fits a whole
    /// network's logits (docs/metrics.md has the measurements):
    /// - float32 keeps atol 1e-4, rtol 1e-5: assert_close's pair (1e-5, 1.3e-6) fails plain
    ///   float32 rounding at GPT-2's magnitudes;
    /// - float64: assert_close's atol 1e-7, rtol 2.5e-7 instead of 1e-7, since reference files
    ///   store float32 and one float32 ulp is up to 1.19e-7 * |x|;
    /// - float16 and bfloat16: assert_close's rtol (1e-3, 1.6e-2), atol 4 * epsilon * 64 (0.25,
    ///   2.0) instead of 1e-5, which is below one ulp of any logit of GPT-2's size (|x| ~ 64).
    pub fn default_for(dtype: Dtype) -> Self {
        match dtype {
            Dtype::Float32 => Self { atol: 1e-4, rtol: 1e-5 },
            Dtype::Float64 => Self { atol: 1e-7, rtol: 2.5e-7 },
            Dtype::Float16 => Self { atol: 0.25, rtol: 1e-3 },
            Dtype::Bfloat16 => Self { atol: 2.0, rtol: 1.6e-2 },
        }
    }

    /// The largest |diff| allowed where the reference is `magnitude`: atol + rtol * |magnitude|.
    pub fn bound(&self, magnitude: f64) -> f64 {
        self.atol + self.rtol * magnitude.abs()
    }

    pub fn allows(&self, candidate: f64, reference: f64) -> bool {
        self.allows_diff(candidate - reference, reference)
    }

    /// Whether a difference made at `magnitude` (the reference's value where the error arose)
    /// is within atol + rtol * |magnitude|; a NaN difference never is.
    pub fn allows_diff(&self, diff: f64, magnitude: f64) -> bool {
        diff.abs() <= self.bound(magnitude)
    }
}

/// How a criterion sees one element: the |diff| it judges, and the reference's value before
/// centering, the magnitude at which the error was made (rtol applies there).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Judgement {
    pub abs_diff: f64,
    magnitude: f64,
}

impl Judgement {
    /// `means` are the position's means over the vocabulary (candidate, reference).
    pub fn of(criterion: Criterion, candidate: f64, reference: f64, (c_mean, r_mean): (f64, f64)) -> Self {
        let abs_diff = match criterion {
            Criterion::Raw => (candidate - reference).abs(),
            Criterion::ShiftInvariant => ((candidate - c_mean) - (reference - r_mean)).abs(),
        };
        Self { abs_diff, magnitude: reference }
    }

    pub fn fails(&self, tolerance: Tolerance) -> bool {
        !tolerance.allows_diff(self.abs_diff, self.magnitude)
    }

    /// How far the |diff| exceeds what rtol alone allows: the atol this element needs (when
    /// positive). The element with the largest excess is the criterion's worst.
    pub fn excess(&self, tolerance: Tolerance) -> f64 {
        self.abs_diff - tolerance.rtol * self.magnitude.abs()
    }
}
