//! The floating-point types our models can run in, and the tolerance each earns by default.
//! One enum so that the flag, the weights' libtorch kind, the attention mask and the report's
//! `dtype` cannot disagree.
use serde::{Deserialize, Serialize};
use tch::Kind;

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
