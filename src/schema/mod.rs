//! The report's data, as scripts read it (docs/report-schema.md) and `merge` reads it back: the
//! report, each comparison's figures and findings, and how [`Report::finish`] derives the verdict
//! and summaries from them. The lowest layer: numeric, diagnose and run fill these types, render
//! shows them, and nothing here computes on logits, writes prose or formats a number.
pub mod attribution;
pub mod cause;
mod comparison;
pub mod explain;
mod location;
pub mod noise_floor;
pub(crate) mod nullable;
mod prompt;
mod report;
pub mod rounding;
mod summary;

pub use comparison::{Comparison, Criterion, ResidDiff, Tolerance};
pub use location::{DiffLocation, NonFinite, NonFinitePosition};
pub use prompt::{Note, PromptReport};
pub use report::{
    prompts_digest, utc_timestamp, CandidateInfo, Criteria, ModelInfo, ReferenceInfo, Repeatability, Report, ShardInfo, Timing, Tool,
    SCHEMA_VERSION,
};
pub use summary::{ComparisonSummary, Extreme, WorstElement};
