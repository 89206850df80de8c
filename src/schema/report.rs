//! The one result every output format renders: a serde struct whose JSON form is the report
//! that scripts read (docs/report-schema.md), and [`Report::finish`], which derives the verdict
//! and the summaries from the prompts, for compare and merge alike.
use serde::{Deserialize, Serialize};

use super::attribution::StepRow;
use super::prompt::PromptReport;
use super::rounding::Gate;
use super::summary::{ComparisonSummary, WorstElement};
use super::{Criterion, Tolerance};
use crate::model::config::Gpt2Config;
use crate::model::dtype::Dtype;
use crate::model::switches::ProcessingOptions;
use crate::shard::Shard;

/// Bumped when a field changes meaning or disappears; adding fields keeps it.
pub const SCHEMA_VERSION: u32 = 1;

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
    #[serde(deserialize_with = "super::nullable::number")]
    pub max_abs_diff: f64,
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
    /// `source` as `--model` gave it; `weights_digest` of model.safetensors.
    pub fn new(source: &str, config: &Gpt2Config, weights_digest: &str) -> Self {
        Self {
            source: source.to_owned(),
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

impl Report {
    /// A report passes when every prompt passes and, with `--repeat`, every forward repeated bit for bit.
    pub fn verdict(prompts: &[PromptReport], repeatability: Option<Repeatability>) -> bool {
        prompts.iter().all(|prompt| prompt.passed) && repeatability.is_none_or(|runs| runs.identical)
    }

    /// How many comparisons the report holds over all prompts, and how many of them fail.
    pub fn comparison_counts(&self) -> (usize, usize) {
        let comparisons = self.prompts.iter().flat_map(|prompt| &prompt.comparisons);
        (comparisons.clone().count(), comparisons.filter(|comparison| !comparison.passed).count())
    }

    /// Derives what the prompts determine: each prompt's verdict, the run's, and the summaries
    /// (`summary`, `worst`). compare calls it on a new report and merge on the joined shards, so
    /// that a merged report is the single run's.
    pub fn finish(&mut self) {
        for prompt in &mut self.prompts {
            prompt.passed = PromptReport::verdict(&prompt.comparisons);
        }
        self.passed = Report::verdict(&self.prompts, self.repeatability);
        self.summary = ComparisonSummary::collect(&self.prompts);
        self.worst = self.summary.iter().map(|summary| summary.worst.clone()).collect();
    }
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

#[cfg(test)]
mod finish_tests {
    use crate::render::sample;
    use crate::schema::Note;

    /// finish derives every verdict and summary from the comparisons alone: once the failing
    /// comparison passes, so do its prompt and the report, and the summary counts no failure.
    #[test]
    fn finish_derives_the_verdicts_and_the_summary_from_the_comparisons() {
        let mut report = sample::report();
        assert!(!report.passed && !report.prompts[0].passed);
        assert_eq!(report.summary[0].failing_prompts, 1);
        assert_eq!((report.worst[0].position, report.worst[0].token.as_str()), (1, " the"));
        assert_eq!(report.comparison_counts(), (2, 1));
        report.prompts[0].comparisons[0].passed = true;
        report.finish();
        assert!(report.passed && report.prompts[0].passed);
        assert_eq!(report.summary.iter().map(|summary| summary.failing_prompts).sum::<usize>(), 0);
        assert_eq!(report.comparison_counts(), (2, 0));
    }

    /// A note reads back from its one JSON string, the comparison's name first; a string
    /// without the name is refused, not read as a note about nothing.
    #[test]
    fn a_note_is_its_comparison_then_its_text() {
        let note: Note = serde_json::from_str("\"processed-vs-reference: Max |diff|: 3e-4.\"").unwrap();
        assert_eq!((note.comparison.as_str(), note.text.as_str()), ("processed-vs-reference", "Max |diff|: 3e-4."));
        assert_eq!(serde_json::to_string(&note).unwrap(), "\"processed-vs-reference: Max |diff|: 3e-4.\"");
        assert!(serde_json::from_str::<Note>("\"no name here\"").is_err());
    }
}
