//! The one result every output format renders: a serde struct whose JSON form is the report
//! that scripts read (docs/report-schema.md). Renderers only format; nothing here computes.
mod cells;
pub mod explain;
mod gate;
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
use crate::compare::diagnose::expected_shift;
use crate::compare::{Comparison, Criterion, Tolerance};
use crate::model::dtype::Dtype;
use crate::model::process::ProcessingOptions;
use crate::shard::Shard;
use crate::tokenize::abbreviate;
pub use gate::Gate;

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
    /// [`prompts_digest`] of the whole run's prompts in run order (every shard's, not only this
    /// report's): shards of one run share it.
    pub prompts_digest: String,
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
    /// libtorch's CPU threads (`--threads`): a report repeats bit for bit at one count, and
    /// `--threads 1` on every machine.
    pub threads: i32,
    /// The dtype of our models' weights and forward passes (the reference's is its own).
    pub dtype: Dtype,
    /// `--criterion`: tolerance and the rounding envelope (`envelope`), or tolerance alone.
    pub gate: Gate,
    /// True when every comparison of every prompt passed.
    pub passed: bool,
    pub prompts: Vec<PromptReport>,
    /// Per comparison name, the element worst under its criterion over all prompts.
    pub worst: Vec<WorstElement>,
    /// With `--attribution`: explain's rows, each processing step's share of the
    /// processed-vs-unprocessed difference over this report's prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<Vec<StepRow>>,
    /// Per comparison name, over all prompts: what the summary table shows.
    #[serde(default)]
    pub summary: Vec<ComparisonSummary>,
    /// Sentences about the whole run (the summary table's notes).
    #[serde(default)]
    pub summary_notes: Vec<String>,
    /// When the run started and how long each prompt took: the only figures that differ
    /// between two runs of the same check.
    pub timing: Timing,
}

/// When a run started and the wall time of each prompt's forward passes and comparisons.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timing {
    /// UTC, RFC 3339 to the second ("2026-12-04T15:10:00Z"); a merged report has the earliest shard's.
    pub started_at: String,
    /// Seconds, one per entry of `prompts` (in a shard's report, the shard's prompts).
    pub prompt_seconds: Vec<f64>,
    /// The sum of `prompt_seconds`.
    pub seconds: f64,
}

impl Timing {
    pub fn new(started_at: std::time::SystemTime, prompt_seconds: Vec<f64>) -> Self {
        Self { started_at: utc_timestamp(started_at), seconds: prompt_seconds.iter().sum(), prompt_seconds }
    }
}

/// "2026-12-04T15:10:00Z": a time in UTC as RFC 3339 writes it, to the second.
pub fn utc_timestamp(time: std::time::SystemTime) -> String {
    let seconds = time.duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs());
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's days_from_civil, inverted).
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", of_day / 3600, of_day % 3600 / 60, of_day % 60)
}

/// `sha256:<hex>` of the prompts, in order, as one compact JSON array of strings: the run's
/// prompt list, which the shards of one run share.
pub fn prompts_digest(prompts: &[String]) -> String {
    use sha2::Digest;
    let json = serde_json::to_string(prompts).expect("strings serialize");
    format!("sha256:{:x}", sha2::Sha256::digest(json.as_bytes()))
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
    /// `sha256:<hex>` of the whole candidate file.
    pub digest: String,
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// True when the whole position is shifted (the token is then arbitrary).
    #[serde(default)]
    pub is_position_shift: bool,
    /// The raw max |diff| of this comparison over all prompts, wherever it sits.
    #[serde(deserialize_with = "crate::report::nullable::number")]
    pub raw_max_abs_diff: f64,
}

/// A figure taken over all prompts, and the prompt (index into `prompts`) it comes from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Extreme {
    #[serde(deserialize_with = "crate::report::nullable::number")]
    pub value: f64,
    pub prompt_index: usize,
}

/// One comparison over every prompt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComparisonSummary {
    pub comparison: String,
    pub criterion: Criterion,
    pub prompts: usize,
    pub failing_prompts: usize,
    /// The element worst under the criterion, over all prompts.
    pub worst: WorstElement,
    /// Largest raw max |diff|, largest shift-free max |diff|, largest per-position KL, lowest
    /// top-1 agreement; NaN (null) when a prompt's figure cannot be computed.
    pub max_abs_diff: Extreme,
    pub centered_max_abs_diff: Extreme,
    pub kl_max: Extreme,
    pub min_top1_agreement: Extreme,
    /// Prompts on which the comparison passes only once each position's mean is removed
    /// (center_unembed's expected shift).
    pub expected_shift_prompts: usize,
    /// The worst element's ranking, to compare later prompts against.
    #[serde(skip)]
    worst_severity: Severity,
}

impl ComparisonSummary {
    /// Per comparison name, in first-seen order. The worst element ranks prompts by non-finite
    /// values first, then the atol needed, then the criterion's worst |diff|.
    pub fn collect(prompts: &[PromptReport]) -> Vec<ComparisonSummary> {
        let mut summaries: Vec<ComparisonSummary> = Vec::new();
        for (prompt_index, prompt) in prompts.iter().enumerate() {
            for comparison in &prompt.comparisons {
                let here = |value: f64| Extreme { value, prompt_index };
                let worst = comparison.max_abs_diff_at.as_ref().map(|at| WorstElement {
                    comparison: comparison.name.clone(),
                    criterion: comparison.criterion,
                    prompt: prompt.prompt.clone(),
                    prompt_index,
                    position: at.position,
                    token_id: at.token_id,
                    token: at.token.clone(),
                    abs_diff: comparison.worst_abs_diff,
                    is_position_shift: comparison.worst_is_position_shift,
                    raw_max_abs_diff: comparison.max_abs_diff,
                });
                let Some(summary) = summaries.iter_mut().find(|known| known.comparison == comparison.name) else {
                    let Some(worst) = worst else { continue };
                    summaries.push(ComparisonSummary {
                        comparison: comparison.name.clone(),
                        criterion: comparison.criterion,
                        prompts: 1,
                        failing_prompts: usize::from(!comparison.passed),
                        worst,
                        max_abs_diff: here(comparison.max_abs_diff),
                        centered_max_abs_diff: here(comparison.centered_max_abs_diff),
                        kl_max: here(comparison.kl_max),
                        min_top1_agreement: here(comparison.top1_agreement),
                        expected_shift_prompts: usize::from(expected_shift(comparison)),
                        worst_severity: severity(comparison),
                    });
                    continue;
                };
                summary.prompts += 1;
                summary.failing_prompts += usize::from(!comparison.passed);
                summary.expected_shift_prompts += usize::from(expected_shift(comparison));
                summary.max_abs_diff = larger(summary.max_abs_diff, here(comparison.max_abs_diff));
                summary.centered_max_abs_diff = larger(summary.centered_max_abs_diff, here(comparison.centered_max_abs_diff));
                summary.kl_max = larger(summary.kl_max, here(comparison.kl_max));
                summary.min_top1_agreement = smaller(summary.min_top1_agreement, here(comparison.top1_agreement));
                let raw_max_abs_diff = summary.max_abs_diff.value;
                summary.worst.raw_max_abs_diff = raw_max_abs_diff;
                if let Some(worst) = worst.filter(|_| severity(comparison) > summary.worst_severity) {
                    summary.worst = WorstElement { raw_max_abs_diff, ..worst };
                    summary.worst_severity = severity(comparison);
                }
            }
        }
        summaries
    }
}
/// The summary table's notes: center_unembed's expected shift, told once (for the first
/// comparison that shows it on every prompt, as the per-prompt notes do; otherwise the failing
/// prompts' own notes tell it).
pub fn summary_notes(summaries: &[ComparisonSummary]) -> Vec<String> {
    summaries
        .iter()
        .find(|summary| summary.expected_shift_prompts == summary.prompts)
        .map(|summary| {
            let on = format!("on all {}", count_of(summary.prompts, "prompt"));
            format!(
                "{}: {on} the raw max |diff| (up to {}) is center_unembed's shift of every position by minus its mean over the \
                 vocabulary; with it removed the logits agree to {}, and softmax, log-probabilities and argmax are unchanged. Not a bug.",
                summary.comparison,
                crate::compare::diagnose::sci(summary.max_abs_diff.value),
                crate::compare::diagnose::sci(summary.centered_max_abs_diff.value)
            )
        })
        .into_iter()
        .collect()
}

/// How badly a comparison fails, for ranking prompts: non-finite values, then the atol needed,
/// then the criterion's worst |diff| (the figures are NaN only with non-finite values, so two
/// such prompts compare as unordered and the first is kept).
type Severity = (bool, f64, f64);

fn severity(comparison: &Comparison) -> Severity {
    (comparison.non_finite > 0, comparison.min_passing_atol, comparison.worst_abs_diff)
}

/// The larger figure, NaN when either is: a statistic that cannot be computed on one prompt
/// cannot be computed over all of them; ties keep the earlier prompt.
fn larger(known: Extreme, new: Extreme) -> Extreme {
    if known.value.is_nan() || (!new.value.is_nan() && new.value <= known.value) {
        known
    } else {
        new
    }
}

/// The smaller figure, NaN when either is.
fn smaller(known: Extreme, new: Extreme) -> Extreme {
    if known.value.is_nan() || (!new.value.is_nan() && new.value >= known.value) {
        known
    } else {
        new
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
    pub fn new(inputs: &crate::model::inputs::ModelInputs, weights_digest: &str) -> Self {
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
    /// `sha256:<hex>` of the whole reference file, whichever shard of it a run checks.
    pub digest: String,
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

impl PromptReport {
    /// A prompt passes when every comparison's stored verdict does.
    pub fn verdict(comparisons: &[Comparison]) -> bool {
        comparisons.iter().all(|comparison| comparison.passed)
    }
}

/// How the human-readable formats are laid out.
#[derive(Debug, Clone, Copy, Default)]
pub struct View {
    /// Every metric as a column, none dropped for width.
    pub wide: bool,
    /// Every prompt's table, not only the failing ones'.
    pub verbose: bool,
    /// The terminal's width to fit; `None` when not writing to a terminal.
    pub width: Option<usize>,
    /// Colour the verdicts (a terminal, and NO_COLOR unset).
    pub color: bool,
}

impl View {
    /// For a report written to `file`, or to stdout when `None`: fitted to the terminal and
    /// coloured when stdout is one (NO_COLOR, when set and not empty, turns colour off); plain
    /// when piped or written to a file.
    pub fn for_output(wide: bool, verbose: bool, file: Option<&std::path::Path>) -> Self {
        use std::io::IsTerminal;
        if file.is_some() || !std::io::stdout().is_terminal() {
            return Self { wide, verbose, ..Self::default() };
        }
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        let width = comfy_table::Table::new().width().map(usize::from);
        Self { wide, verbose, width, color: !no_color }
    }
}

/// From this many prompts on, the table and markdown open with the summary table and show only
/// the failing prompts' tables (all with --verbose).
pub const SUMMARY_FROM_PROMPTS: usize = 4;

/// What the human-readable formats show: the summary table's heading (with enough prompts) and
/// which prompts get a table of their own.
struct Shown {
    summary_heading: Option<String>,
    prompts: Vec<usize>,
}

/// `hints`: whether the heading may point at command-line options (not in a pull-request comment).
fn shown_prompts(report: &Report, verbose: bool, hints: bool) -> Shown {
    let total = report.prompts.len();
    if total < SUMMARY_FROM_PROMPTS {
        return Shown { summary_heading: None, prompts: (0..total).collect() };
    }
    let failing: Vec<usize> = (0..total).filter(|&index| !report.prompts[index].passed).collect();
    let hint = if hints { " (--verbose shows all)" } else { "" };
    let below = match (verbose, failing.len()) {
        (true, _) => "every prompt's table follows".to_owned(),
        (false, 0) if hints => "--verbose shows every prompt's table".to_owned(),
        (false, 0) => "every prompt passes".to_owned(),
        (false, 1) => format!("the failing prompt's table follows{hint}"),
        (false, _) => format!("the failing prompts' tables follow{hint}"),
    };
    Shown {
        summary_heading: Some(format!("Summary of {}, {} failing; {below}", count_of(total, "prompt"), failing.len())),
        prompts: if verbose { (0..total).collect() } else { failing },
    }
}

impl Report {
    /// A report passes when every prompt passes and, with `--repeat`, every forward repeated bit for bit.
    pub fn verdict(prompts: &[PromptReport], repeatability: Option<Repeatability>) -> bool {
        prompts.iter().all(|prompt| prompt.passed) && repeatability.map_or(true, |runs| runs.identical)
    }

    /// Renders in `format`; the view lays out the table and markdown forms (JSON always has all).
    pub fn render(&self, format: Format, view: &View) -> String {
        match format {
            Format::Table => table::render(self, view),
            Format::Json => json::render(self),
            Format::Markdown => markdown::render(self, view),
        }
    }

    /// The closing line of the human-readable formats.
    fn verdict_line(&self) -> String {
        let comparisons: usize = self.prompts.iter().map(|prompt| prompt.comparisons.len()).sum();
        let failed: usize = self.prompts.iter().flat_map(|prompt| &prompt.comparisons).filter(|c| !c.passed).count();
        let Tolerance { atol, rtol } = self.tolerance;
        let prompts = count_of(self.prompts.len(), "prompt");
        let unrepeatable = match self.repeatability {
            Some(runs) if !runs.identical => format!("; {} runs of every forward were not bit-identical", runs.runs),
            _ => String::new(),
        };
        match (self.passed, self.shard) {
            (true, Some(shard)) if self.prompts.is_empty() => format!(
                "PASS: shard {}/{} checks none of the run's {} (more shards than prompts)",
                shard.shard.index,
                shard.shard.count,
                count_of(shard.total_prompts, "prompt")
            ),
            (true, _) => format!(
                "PASS: {} on {prompts} within atol {atol:e}, rtol {rtol:e}{}",
                count_of(comparisons, "comparison"),
                self.envelope_bound("and")
            ),
            (false, _) => format!(
                "FAIL: {failed} of {} on {prompts} breach atol {atol:e}, rtol {rtol:e}{}{unrepeatable}",
                count_of(comparisons, "comparison"),
                self.envelope_bound("or")
            ),
        }
    }

    /// " and 8x float32 rounding" under `--criterion envelope` (`joined` by "and" or "or"), else "".
    fn envelope_bound(&self, joined: &str) -> String {
        match self.gate {
            Gate::Envelope => format!(" {joined} {:.0}x float32 rounding", crate::compare::envelope::ENVELOPE_FACTOR),
            Gate::Tolerance => String::new(),
        }
    }

    /// "shard 2/3 of 50 prompts": which part of a run the report holds; `None` for a whole run.
    fn shard_label(&self) -> Option<String> {
        self.shard.map(|shard| format!("shard {}/{} of {}", shard.shard.index, shard.shard.count, count_of(shard.total_prompts, "prompt")))
    }

    /// The one line that tells a CI log the verdict when the report itself goes elsewhere:
    /// the verdict, the worst failing element and where the report is (`report`, when a file).
    pub fn verdict_summary(&self, report: Option<&std::path::Path>) -> String {
        let mut line = self.verdict_line();
        if let Some(shard) = self.shard_label().filter(|_| !self.prompts.is_empty()) {
            line = line.replacen(':', &format!(" ({shard}):"), 1);
        }
        let failing = self.summary.iter().find(|summary| summary.failing_prompts > 0);
        if let Some(ComparisonSummary { worst, .. }) = failing {
            let at = crate::compare::DiffLocation { position: worst.position, token_id: worst.token_id, token: worst.token.clone() };
            line.push_str(&format!(
                "; worst {}{} #{} {} {}",
                worst.comparison,
                criterion_suffix(worst.criterion),
                prompt_number(self, worst.prompt_index).0,
                cells::place(&at, worst.is_position_shift),
                crate::compare::diagnose::sci(worst.abs_diff)
            ));
        }
        if let Some(path) = report {
            line.push_str(&format!("; report {}", path.display()));
        }
        line
    }
}

/// A prompt's number in the whole run, counting from 1, and the run's prompt count: also in a
/// shard's report, whose `index` counts the shard's own prompts.
fn prompt_number(report: &Report, index: usize) -> (usize, usize) {
    match report.shard {
        Some(shard) => (shard.shard.global_position(index) + 1, shard.total_prompts),
        None => (index + 1, report.prompts.len()),
    }
}

/// "" for raw comparisons, " (shift-free)" for shift-invariant ones.
fn criterion_suffix(criterion: Criterion) -> &'static str {
    match criterion {
        Criterion::Raw => "",
        Criterion::ShiftInvariant => " (shift-free)",
    }
}

/// "prompt 3/8: \"Hello World\"": numbered as in the whole run, also in a shard's report.
fn prompt_label(report: &Report, index: usize) -> String {
    let (number, total) = prompt_number(report, index);
    format!("prompt {number}/{total}: {:?}", abbreviate(&report.prompts[index].prompt))
}

/// "embeddings" for residual snapshot 0, then the block whose output snapshot l is: "h.{l-1}".
fn snapshot_name(index: usize) -> String {
    crate::compare::envelope::snapshot_name(index)
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::utc_timestamp;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        for (seconds, expected) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_796_396_096, "2026-12-04T14:54:56Z"),
            (4_107_542_399, "2100-02-28T23:59:59Z"),
        ] {
            assert_eq!(utc_timestamp(UNIX_EPOCH + Duration::from_secs(seconds)), expected);
        }
    }
}
