//! The report of `gpt2-parity explain`: one row per processing step (alone, then accumulated),
//! and the sentences that sum them up.
use serde::Serialize;

use super::attribution::StepRow;
use super::{ModelInfo, Tolerance, Tool};

#[derive(Debug, Serialize)]
pub struct ExplainReport {
    pub schema_version: u32,
    pub tool: Tool,
    pub model: ModelInfo,
    /// atol decides whether a step is a pure shift (spread within atol).
    pub tolerance: Tolerance,
    pub prepend_bos: bool,
    pub device: String,
    /// libtorch's CPU threads (`--threads`).
    pub threads: i32,
    /// The dtype of the weights and forward passes.
    pub dtype: crate::model::dtype::Dtype,
    pub prompts: Vec<ExplainedPrompt>,
    pub rows: Vec<StepRow>,
    pub conclusions: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ExplainedPrompt {
    pub prompt: String,
    pub tokens: Vec<i64>,
}
