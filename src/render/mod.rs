//! Every output format of a report, behind one trait: the terminal table, markdown and JSON (the
//! `--format`s), and JUnit and HTML (extra files); one file per format. Renderers lay out the
//! figures a report holds and compute none; format.rs writes every number, token and place, and
//! cells.rs makes the grids that the table, markdown, JUnit and HTML share.
mod cells;
pub mod explain;
pub mod format;
mod html;
mod json;
mod junit;
mod markdown;
pub mod outputs;
mod table;

pub use html::Html;
pub use json::Json;
pub use junit::Junit;
pub use markdown::{Markdown, COMMENT_LIMIT};
pub use table::Table;

use crate::schema::rounding::{Gate, ENVELOPE_FACTOR};
use crate::schema::{ComparisonSummary, Report, Tolerance};
use crate::tokenize::abbreviate;
use cells::summary_verdict;
use format::{count_of, criterion_suffix, place, place_in_words, sci};

/// One output format: a document (a [`Report`], or explain's report) in, its text out.
pub trait Render<Document> {
    fn render(&self, document: &Document) -> String;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Markdown,
}

/// `document` in `format`, laid out by `view` (JSON always has everything).
pub fn render<Document>(document: &Document, format: Format, view: View) -> String
where
    Table: Render<Document>,
    Json: Render<Document>,
    Markdown: Render<Document>,
{
    match format {
        Format::Table => Table { view }.render(document),
        Format::Json => Json.render(document),
        Format::Markdown => Markdown { view }.render(document),
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

/// The closing line of the human-readable formats.
pub(crate) fn verdict_line(report: &Report) -> String {
    let (comparisons, failed) = report.comparison_counts();
    let Tolerance { atol, rtol } = report.tolerance;
    let prompts = count_of(report.prompts.len(), "prompt");
    let unrepeatable = match report.repeatability {
        Some(runs) if !runs.identical => format!("; {} runs of every forward were not bit-identical", runs.runs),
        _ => String::new(),
    };
    match (report.passed, report.shard) {
        (true, Some(shard)) if report.prompts.is_empty() => format!(
            "PASS: shard {}/{} checks none of the run's {} (more shards than prompts)",
            shard.shard.index,
            shard.shard.count,
            count_of(shard.total_prompts, "prompt")
        ),
        (true, _) => format!(
            "PASS: {} on {prompts} within atol {atol:e}, rtol {rtol:e}{}",
            count_of(comparisons, "comparison"),
            envelope_bound(report, "and")
        ),
        (false, _) => format!(
            "FAIL: {failed} of {} on {prompts} breach atol {atol:e}, rtol {rtol:e}{}{unrepeatable}",
            count_of(comparisons, "comparison"),
            envelope_bound(report, "or")
        ),
    }
}

/// " and 8x float32 rounding" under `--criterion envelope` (`joined` by "and" or "or"), else "".
fn envelope_bound(report: &Report, joined: &str) -> String {
    match report.gate {
        Gate::Envelope => format!(" {joined} {:.0}x float32 rounding", ENVELOPE_FACTOR),
        Gate::Tolerance => String::new(),
    }
}

/// "shard 2/3 of 50 prompts": which part of a run the report holds; `None` for a whole run.
fn shard_label(report: &Report) -> Option<String> {
    report.shard.map(|shard| format!("shard {}/{} of {}", shard.shard.index, shard.shard.count, count_of(shard.total_prompts, "prompt")))
}

/// The one line that tells a CI log the verdict when the report itself goes elsewhere:
/// the verdict, the worst failing element and where the report is (`report`, when a file).
pub fn verdict_summary(report: &Report, path: Option<&std::path::Path>) -> String {
    let mut line = verdict_line(report);
    if let Some(shard) = shard_label(report).filter(|_| !report.prompts.is_empty()) {
        line = line.replacen(':', &format!(" ({shard}):"), 1);
    }
    let failing = report.summary.iter().find(|summary| summary.failing_prompts > 0);
    if let Some(ComparisonSummary { worst, .. }) = failing {
        line.push_str(&format!(
            "; worst {}{} #{} {} {}",
            worst.comparison,
            criterion_suffix(worst.criterion),
            prompt_number(report, worst.prompt_index).0,
            place(&worst.at(), worst.is_position_shift),
            sci(worst.abs_diff)
        ));
    }
    if let Some(path) = path {
        line.push_str(&format!("; report {}", path.display()));
    }
    line
}

/// "processed-vs-reference (shift-free) FAILS on 2 of 8 prompts; worst |diff| 1.88e-6 in prompt 7
/// "The quick brown …", position 25, token 17071 " stub"": a comparison's verdict over every
/// prompt and its worst element, as the table and markdown close.
fn worst_sentence(report: &Report, summary: &ComparisonSummary) -> String {
    let worst = &summary.worst;
    format!(
        "{}{} {}; worst |diff| {} in prompt {} {:?}, {}",
        worst.comparison,
        criterion_suffix(worst.criterion),
        summary_verdict(summary),
        sci(worst.abs_diff),
        prompt_number(report, worst.prompt_index).0,
        abbreviate(&worst.prompt),
        place_in_words(&worst.at(), worst.is_position_shift),
    )
}

/// A prompt's number in the whole run, counting from 1, and the run's prompt count: also in a
/// shard's report, whose `index` counts the shard's own prompts.
fn prompt_number(report: &Report, index: usize) -> (usize, usize) {
    match report.shard {
        Some(shard) => (shard.shard.global_position(index) + 1, shard.total_prompts),
        None => (index + 1, report.prompts.len()),
    }
}

/// "prompt 3/8: \"Hello World\"": numbered as in the whole run, also in a shard's report.
fn prompt_label(report: &Report, index: usize) -> String {
    let (number, total) = prompt_number(report, index);
    format!("prompt {number}/{total}: {:?}", abbreviate(&report.prompts[index].prompt))
}

#[cfg(test)]
pub(crate) mod sample;
