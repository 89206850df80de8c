//! Places in a [positions, vocab] logit matrix as reports name them: one element, and a position
//! holding non-finite values (with what each side holds there).
use serde::{Deserialize, Serialize};

/// A place in a [positions, vocab] matrix: which position, which vocabulary entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffLocation {
    pub position: usize,
    pub token_id: i64,
    pub token: String,
}

/// A value that is not a number the statistics can use, as the reports name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NonFinite {
    #[serde(rename = "nan")]
    Nan,
    #[serde(rename = "+inf")]
    PositiveInfinity,
    #[serde(rename = "-inf")]
    NegativeInfinity,
}

impl NonFinite {
    const ALL: [NonFinite; 3] = [NonFinite::Nan, NonFinite::PositiveInfinity, NonFinite::NegativeInfinity];

    fn of(value: f32) -> Option<Self> {
        if value.is_nan() {
            Some(Self::Nan)
        } else if value == f32::INFINITY {
            Some(Self::PositiveInfinity)
        } else if value == f32::NEG_INFINITY {
            Some(Self::NegativeInfinity)
        } else {
            None
        }
    }

    /// "NaN", "+Inf", "-Inf".
    pub fn name(self) -> &'static str {
        match self {
            Self::Nan => "NaN",
            Self::PositiveInfinity => "+Inf",
            Self::NegativeInfinity => "-Inf",
        }
    }
}

/// A position holding a non-finite value on either side: what each side holds there, so that
/// reports name it (an Inf and a NaN both read back from JSON as `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NonFinitePosition {
    pub position: usize,
    /// Elements of the position where either side is non-finite.
    pub elements: usize,
    /// The kinds each side holds at the position, each once, in the order NaN, +Inf, -Inf.
    pub candidate: Vec<NonFinite>,
    pub reference: Vec<NonFinite>,
}

impl NonFinitePosition {
    /// `None` when both rows are finite.
    pub(crate) fn of(position: usize, candidate: &[f32], reference: &[f32]) -> Option<Self> {
        let elements = candidate.iter().zip(reference).filter(|(c, r)| !(c.is_finite() && r.is_finite())).count();
        let kinds = |row: &[f32]| -> Vec<NonFinite> {
            NonFinite::ALL.into_iter().filter(|kind| row.iter().any(|&value| NonFinite::of(value) == Some(*kind))).collect()
        };
        (elements > 0).then(|| Self { position, elements, candidate: kinds(candidate), reference: kinds(reference) })
    }

    /// "NaN", "+Inf", "NaN/-Inf": the kinds of value held here, either side, each once.
    pub fn name(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for kind in self.candidate.iter().chain(&self.reference) {
            if !names.contains(&kind.name()) {
                names.push(kind.name());
            }
        }
        names.join("/")
    }
}
