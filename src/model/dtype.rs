//! The floating-point types our models can run in, and the tolerance each earns by default.
//! One enum so that the flag, the weights' libtorch kind, the attention mask and the report's
//! `dtype` cannot disagree.
use serde::{Deserialize, Serialize};
use tch::Kind;

use crate::compare::Tolerance;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[clap(rename_all = "lowercase")]
pub enum Dtype {
    Float32,
    Float64,
    Float16,
    Bfloat16,
}

impl Dtype {
    pub fn kind(self) -> Kind {
        match self {
            Dtype::Float32 => Kind::Float,
            Dtype::Float64 => Kind::Double,
            Dtype::Float16 => Kind::Half,
            Dtype::Bfloat16 => Kind::BFloat16,
        }
    }

    /// The default tolerance, from torch.testing.assert_close's table where it fits a whole
    /// network's logits (docs/metrics.md has the measurements):
    /// - float32 keeps atol 1e-4, rtol 1e-5: assert_close's pair (1e-5, 1.3e-6) fails plain
    ///   float32 rounding at GPT-2's magnitudes;
    /// - float64: assert_close's atol 1e-7, rtol 2.5e-7 instead of 1e-7, since reference files
    ///   store float32 and one float32 ulp is up to 1.19e-7 * |x|;
    /// - float16 and bfloat16: assert_close's rtol (1e-3, 1.6e-2), atol 4 * epsilon * 64 (0.25,
    ///   2.0) instead of 1e-5, which is below one ulp of any logit of GPT-2's size (|x| ~ 64).
    pub fn default_tolerance(self) -> Tolerance {
        match self {
            Dtype::Float32 => Tolerance { atol: 1e-4, rtol: 1e-5 },
            Dtype::Float64 => Tolerance { atol: 1e-7, rtol: 2.5e-7 },
            Dtype::Float16 => Tolerance { atol: 0.25, rtol: 1e-3 },
            Dtype::Bfloat16 => Tolerance { atol: 2.0, rtol: 1.6e-2 },
        }
    }

    /// The dtype the bundled script computes a reference in for a run in `candidate`: float64
    /// for float64 (a float32 reference's own rounding would dominate the comparison), float32
    /// otherwise. A half-precision model is judged against float32, the closest to the true
    /// values the script offers, at its own dtype's tolerance: a half-precision reference would
    /// carry rounding errors as large as the candidate's.
    pub fn bundled_reference_for(candidate: Dtype) -> Dtype {
        match candidate {
            Dtype::Float64 => Dtype::Float64,
            _ => Dtype::Float32,
        }
    }

    /// The name the flags, the report and the reference script use.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Float32 => "float32",
            Dtype::Float64 => "float64",
            Dtype::Float16 => "float16",
            Dtype::Bfloat16 => "bfloat16",
        }
    }
}
