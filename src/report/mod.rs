//! The one result every output format renders: a serde struct whose JSON form is the report
//! that scripts read (docs/report-schema.md). Renderers only format; nothing here computes.
pub mod explain;
mod html;
mod json;
mod junit;
mod markdown;
pub(crate) mod nullable;
pub mod outputs;
mod table;

use serde::{Deserialize, Serialize};

use crate::compare::attribution::StepRow;
pub use crate::compare::diagnose::count_of;
use crate::compare::noise_floor::Breach;
use crate::compare::{Comparison, Criterion, Tolerance};
use crate::model::dtype::Dtype;
use crate::model::process::ProcessingOptions;
use crate::shard::Shard;
use crate::tokenize::abbreviate;

/// Bumped when a field changes meaning or disappears; adding fields keeps it.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Markdown,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub tool: Tool,
    pub model: ModelInfo,
    pub reference: ReferenceInfo,
    /// With `--candidate`: the file whose logits took the place of our two models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<CandidateInfo>,
    /// With `--shard I/N`: which shard of the run's prompts this report holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardInfo>,
    pub tolerance: Tolerance,
    /// How each criterion applies the tolerance, in words (docs/metrics.md); the tool's own, also
    /// in a merged report.
    #[serde(skip_deserializing, default = "Criteria::current")]
    pub criteria: Criteria,
    /// The TransformerLens processing steps the processed model used (unused with `--candidate`).
    pub processing: ProcessingOptions,
    /// With `--repeat N`: whether N runs of every forward gave bit-identical logits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeatability: Option<Repeatability>,
    pub prepend_bos: bool,
    pub device: String,
    /// The dtype of our models' weights and forward passes (the reference's is its own).
    pub dtype: Dtype,
    /// True when every comparison of every prompt passed.
    pub passed: bool,
    pub prompts: Vec<PromptReport>,
    /// Per comparison name, the element with the largest |diff| over all prompts.
    pub worst: Vec<WorstElement>,
    /// With `--attribution`: explain's rows, each processing step's share of the
    /// processed-vs-unprocessed difference over this report's prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<Vec<StepRow>>,
}

/// The rule of each [`Criterion`], as [`Criterion::definition`] states it.
#[derive(Debug, Serialize)]
pub struct Criteria {
    pub raw: &'static str,
    pub shift_invariant: &'static str,
}

impl Criteria {
    pub fn current() -> Self {
        Self { raw: Criterion::Raw.definition(), shift_invariant: Criterion::ShiftInvariant.definition() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CandidateInfo {
    pub path: String,
    /// From the candidate's metadata: what produced it.
    pub model: String,
    pub weights: String,
    pub attn_implementation: String,
    pub producer: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    #[serde(flatten)]
    pub shard: Shard,
    /// How many prompts the whole run (all shards together) checks.
    pub total_prompts: usize,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Repeatability {
    pub runs: u32,
    pub identical: bool,
    /// The largest |diff| between any later run's logits and the first run's.
    #[serde(deserialize_with = "crate::report::nullable::number")]
    pub max_abs_diff: f64,
}

/// Per comparison name, the element worst under that comparison's criterion over all prompts.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorstElement {
    pub comparison: String,
    pub criterion: Criterion,
    pub prompt: String,
    /// Index into `prompts`.
    pub prompt_index: usize,
    pub position: usize,
    pub token_id: i64,
    pub token: String,
    /// |diff| as the criterion judges it (centered for shift-invariant comparisons); NaN
    /// (null) when the element is non-finite.
    #[serde(deserialize_with = "crate::report::nullable::number")]
    pub abs_diff: f64,
    /// The raw max |diff| of this comparison over all prompts, wherever it sits.
    #[serde(deserialize_with = "crate::report::nullable::number")]
    pub raw_max_abs_diff: f64,
}

impl WorstElement {
    /// For each comparison name, in first-seen order, the prompt and element worst under the
    /// comparison's criterion: a non-finite value first, else the largest atol needed, else the
    /// largest |diff|.
    pub fn collect(prompts: &[PromptReport]) -> Vec<WorstElement> {
        let mut worst: Vec<(WorstElement, &Comparison)> = Vec::new();
        for (prompt_index, prompt) in prompts.iter().enumerate() {
            for comparison in &prompt.comparisons {
                let Some(at) = &comparison.max_abs_diff_at else { continue };
                let known = worst.iter_mut().find(|(known, _)| known.comparison == comparison.name);
                let raw_max_abs_diff =
                    nan_max(known.as_ref().map_or(f64::NEG_INFINITY, |(known, _)| known.raw_max_abs_diff), comparison.max_abs_diff);
                let candidate = WorstElement {
                    comparison: comparison.name.clone(),
                    criterion: comparison.criterion,
                    prompt: prompt.prompt.clone(),
                    prompt_index,
                    position: at.position,
                    token_id: at.token_id,
                    token: at.token.clone(),
                    abs_diff: comparison.worst_abs_diff,
                    raw_max_abs_diff,
                };
                match known {
                    Some((known, known_comparison)) if severity(known_comparison) < severity(comparison) => {
                        *known = candidate;
                        *known_comparison = comparison;
                    }
                    Some((known, _)) => known.raw_max_abs_diff = raw_max_abs_diff,
                    None => worst.push((candidate, comparison)),
                }
            }
        }
        worst.into_iter().map(|(worst, _)| worst).collect()
    }
}

/// How badly a comparison fails, for ranking prompts: non-finite values, then the atol needed,
/// then the criterion's worst |diff| (the figures are NaN only with non-finite values, so two
/// such prompts compare as equal and the first is kept).
fn severity(comparison: &Comparison) -> (bool, f64, f64) {
    (comparison.non_finite > 0, comparison.min_passing_atol, comparison.worst_abs_diff)
}

/// The larger of two figures, NaN when either is: a statistic that cannot be computed on one
/// prompt cannot be computed over all of them.
pub fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
    /// The libtorch version the binary was built with ("unknown" when the build could not tell).
    pub libtorch: String,
}

impl Tool {
    pub fn current() -> Self {
        Self {
            name: "gpt2-parity".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            libtorch: option_env!("GPT2_PARITY_LIBTORCH_VERSION").unwrap_or("unknown").to_owned(),
        }
    }
}

impl ModelInfo {
    pub fn new(inputs: &crate::run::ModelInputs, weights_digest: &str) -> Self {
        let config = &inputs.config;
        Self {
            source: inputs.files.source.clone(),
            weights: weights_digest.to_owned(),
            n_layer: config.n_layer,
            n_head: config.n_head,
            n_embd: config.n_embd,
            vocab_size: config.vocab_size,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// `--model` as given: a directory or a Hub id.
    pub source: String,
    /// `sha256:<hex>` of model.safetensors.
    pub weights: String,
    pub n_layer: i64,
    pub n_head: i64,
    pub n_embd: i64,
    pub vocab_size: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceInfo {
    /// The reference file compared against (a cache entry when the tool made it).
    pub path: String,
    /// True when the bundled script made it for this run.
    pub bundled: bool,
    pub model: String,
    pub weights: String,
    /// What the reference was computed in (its logits are stored as float32).
    pub dtype: String,
    pub attn_implementation: String,
    pub producer: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PromptReport {
    pub prompt: String,
    pub tokens: Vec<i64>,
    pub passed: bool,
    pub comparisons: Vec<Comparison>,
    /// Plain-language findings: why a difference is expected, or where a real one starts.
    pub notes: Vec<String>,
}

impl Report {
    /// Renders in `format`; `wide` shows every metric in the table and markdown forms (JSON always has all).
    pub fn render(&self, format: Format, wide: bool) -> String {
        match format {
            Format::Table => table::render(self, wide),
            Format::Json => json::render(self),
            Format::Markdown => markdown::render(self, wide),
        }
    }

    /// The closing line of the human-readable formats.
    fn summary(&self) -> String {
        let comparisons: usize = self.prompts.iter().map(|prompt| prompt.comparisons.len()).sum();
        let failed: usize = self.prompts.iter().flat_map(|prompt| &prompt.comparisons).filter(|c| !c.passed).count();
        let Tolerance { atol, rtol } = self.tolerance;
        let prompts = count_of(self.prompts.len(), "prompt");
        if self.passed {
            format!("PASS: {comparisons} comparisons on {prompts} within atol {atol:e}, rtol {rtol:e}")
        } else {
            format!("FAIL: {failed} of {comparisons} comparisons on {prompts} breach atol {atol:e}, rtol {rtol:e}")
        }
    }
}

/// A table's header and rows for one prompt: compact by default, every metric with `wide`.
fn comparison_table(comparisons: &[Comparison], wide: bool) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let mut header = vec![
        "comparison",
        "cand mean",
        "ref mean",
        "cand std",
        "ref std",
        "max |diff| @pos token",
        "mean |diff|",
        "shift-free max |diff|",
        "log-softmax max |diff|",
        "top-1",
    ];
    if wide {
        header.extend(["rmse", "cosine", "max rel diff", "outside allclose", "min passing atol", "KL mean / max", "top-5 overlap"]);
    }
    let noise_floor = comparisons.iter().any(|comparison| comparison.noise_floor.is_some());
    if noise_floor {
        header.push("from float64: cand / ref");
    }
    header.push("verdict");
    let rows =
        comparisons
            .iter()
            .map(|comparison| {
                let at = comparison.max_abs_diff_at.as_ref().map(|at| format!(" @{} {:?}", at.position, at.token)).unwrap_or_default();
                let mut cells = vec![
                    comparison.name.clone(),
                    format!("{:.4}", comparison.candidate_mean),
                    format!("{:.4}", comparison.reference_mean),
                    format!("{:.4}", comparison.candidate_std),
                    format!("{:.4}", comparison.reference_std),
                    format!("{:.2e}{at}", comparison.max_abs_diff),
                    format!("{:.2e}", comparison.mean_abs_diff),
                    format!("{:.2e}", comparison.centered_max_abs_diff),
                    format!("{:.2e}", comparison.log_softmax_max_abs_diff),
                    format!("{:.0}%", 100.0 * comparison.top1_agreement),
                ];
                if wide {
                    cells.extend([
                        format!("{:.2e}", comparison.rmse),
                        format!("{:.8}", comparison.cosine_similarity),
                        format!("{:.2e}", comparison.max_rel_diff),
                        format!("{} ({:.3}%)", comparison.outside_allclose, comparison.outside_allclose_percent),
                        format!("{:.2e}", comparison.min_passing_atol),
                        format!("{:.2e} / {:.2e}", comparison.kl_mean, comparison.kl_max),
                        format!("{:.0}%", 100.0 * comparison.top5_overlap),
                    ]);
                }
                if noise_floor {
                    cells.push(comparison.noise_floor.as_ref().map_or_else(String::new, |floor| {
                        format!("{:.2e} / {:.2e}", floor.candidate_vs_float64, floor.reference_vs_float64)
                    }));
                }
                cells.push(verdict(comparison));
                cells
            })
            .collect();
    (header, rows)
}

/// "" for raw comparisons, " (shift-free)" for shift-invariant ones.
fn criterion_suffix(criterion: Criterion) -> &'static str {
    match criterion {
        Criterion::Raw => "",
        Criterion::ShiftInvariant => " (shift-free)",
    }
}

fn verdict(comparison: &Comparison) -> String {
    let basis = criterion_suffix(comparison.criterion);
    if comparison.passed {
        format!("pass{basis}")
    } else if comparison.non_finite > 0 {
        format!("FAIL: {} non-finite", comparison.non_finite)
    } else {
        let breach = match comparison.noise_floor.as_ref().and_then(|floor| floor.breach) {
            Some(Breach::RoundingNoise) => ": rounding noise",
            Some(Breach::Real) => ": real",
            None => "",
        };
        format!("FAIL{basis}{breach}")
    }
}

fn prompt_heading(index: usize, total: usize, prompt: &PromptReport) -> String {
    format!("Prompt {}/{total}: {:?} ({} tokens: {:?})", index + 1, prompt.prompt, prompt.tokens.len(), prompt.tokens)
}

/// "prompt 3/8: \"Hello World\"": numbered as in the whole run, also in a shard's report.
fn prompt_label(report: &Report, index: usize) -> String {
    let (number, total) = match report.shard {
        Some(shard) => (shard.shard.global_position(index) + 1, shard.total_prompts),
        None => (index + 1, report.prompts.len()),
    };
    format!("prompt {number}/{total}: {:?}", abbreviate(&report.prompts[index].prompt))
}

/// "embeddings" for residual snapshot 0, then the block whose output snapshot l is: "h.{l-1}".
fn snapshot_name(index: usize) -> String {
    match index {
        0 => "embeddings".to_owned(),
        block => format!("h.{}", block - 1),
    }
}

/// Text fit for XML (and XHTML) content and attribute values. Control characters XML 1.0 cannot
/// hold at all are written as Rust escapes, so the document stays well-formed and says what was there.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push_str(&character.escape_unicode().to_string()),
            other => out.push(other),
        }
    }
    out
}
