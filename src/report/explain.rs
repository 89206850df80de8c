//! The report of `gpt2-parity explain`: one row per processing step (alone, then accumulated),
//! and the sentences that sum them up; rendered as a table, JSON or markdown.
use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use serde::Serialize;

use super::{Format, ModelInfo, Tool};
use crate::compare::attribution::{LogitEffect, StepRow};
use crate::compare::diagnose::sci;
use crate::compare::Tolerance;

#[derive(Debug, Serialize)]
pub struct ExplainReport {
    pub schema_version: u32,
    pub tool: Tool,
    pub model: ModelInfo,
    /// atol decides whether a step is a pure shift (spread within atol).
    pub tolerance: Tolerance,
    pub prepend_bos: bool,
    pub device: String,
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

const HEADER: [&str; 7] = [
    "weights",
    "tensors changed (largest relative change)",
    "max |logit diff|",
    "shift spread (effect)",
    "log-softmax max |diff|",
    "top-1",
    "share of raw diff",
];

impl ExplainReport {
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => super::json::to_document(self),
            Format::Table => {
                let mut table = Table::new();
                table.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_header(HEADER);
                for row in self.cells() {
                    table.add_row(row);
                }
                format!("{}\n{table}\n\n{}\n", self.heading(), self.conclusions.join("\n"))
            }
            Format::Markdown => {
                let line = |cells: &[String]| format!("| {} |\n", cells.join(" | ").replace('\n', " "));
                let mut out = format!("# gpt2-parity explain\n\n{}\n\n", self.heading());
                out.push_str(&line(&HEADER.map(String::from)));
                out.push_str(&line(&vec!["---".to_owned(); HEADER.len()]));
                for row in self.cells() {
                    out.push_str(&line(&row));
                }
                for sentence in &self.conclusions {
                    out.push_str(&format!("\n> {sentence}\n"));
                }
                out
            }
        }
    }

    fn heading(&self) -> String {
        format!(
            "Where the processed-vs-unprocessed difference comes from: model {} ({}), {}, each row against the unprocessed model",
            self.model.source,
            self.model.weights,
            super::count_of(self.prompts.len(), "prompt")
        )
    }

    fn cells(&self) -> Vec<Vec<String>> {
        self.rows
            .iter()
            .map(|row| {
                let largest = row.changed_tensors.iter().max_by(|a, b| a.relative_change.total_cmp(&b.relative_change));
                let changed = match largest {
                    Some(largest) => format!("{} ({} {:.2e})", row.changed_tensors.len(), largest.tensor, largest.relative_change),
                    None => "0".to_owned(),
                };
                let effect = match row.logit_effect {
                    LogitEffect::Unchanged => "unchanged",
                    LogitEffect::PureShift => "pure shift",
                    LogitEffect::ChangesDistribution => "CHANGES DISTRIBUTION",
                };
                vec![
                    row.name.clone(),
                    changed,
                    sci(row.max_abs_diff),
                    format!("{} ({effect})", sci(row.shift_spread)),
                    sci(row.log_softmax_max_abs_diff),
                    format!("{:.0}%", 100.0 * row.top1_agreement),
                    format!("{:.4}%", 100.0 * row.min_share_of_raw_difference),
                ]
            })
            .collect()
    }
}
