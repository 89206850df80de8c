//! The report of `gpt2-parity explain`: one row per processing step (alone, then accumulated),
//! and the sentences that sum them up; rendered as a table, JSON or markdown.
use serde::Serialize;

use super::cells::{Cell, Column, Grid};
use super::markdown::escape;
use super::{Format, ModelInfo, Tool, View};
use crate::compare::attribution::{LogitEffect, StepRow};
use crate::compare::diagnose::{percent, sci};
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

const COLUMNS: [Column; 7] = [
    Column { header: "weights", drop_order: 0 },
    Column { header: "tensors changed,\nmost (relative)", drop_order: 2 },
    Column { header: "max |logit\ndiff|", drop_order: 0 },
    Column { header: "spread\n(effect)", drop_order: 0 },
    Column { header: "log-softmax\nmax |diff|", drop_order: 0 },
    Column { header: "top-1", drop_order: 1 },
    Column { header: "share of\nraw diff", drop_order: 0 },
];

impl ExplainReport {
    pub fn render(&self, format: Format, view: &View) -> String {
        match format {
            Format::Json => super::json::to_document(self),
            Format::Table => {
                let width = super::table::note_width(view);
                let conclusions: String = self.conclusions.iter().map(|sentence| super::table::wrap(sentence, width, "")).collect();
                format!("{}{}\n{conclusions}", super::table::wrap(&self.heading(), width, ""), super::table::layout(&self.grid(), view))
            }
            Format::Markdown => {
                let mut out = format!("# gpt2-parity explain\n\n{}\n\n", escape(&self.heading()));
                out.push_str(&super::markdown::table(&self.grid()));
                for sentence in &self.conclusions {
                    out.push_str(&format!("\n> {}\n", escape(sentence)));
                }
                out
            }
        }
    }

    fn heading(&self) -> String {
        format!(
            "Where the processed-vs-unprocessed difference comes from: model {} ({}), {}, each row against the unprocessed model",
            self.model.source,
            super::table::short_digest(&self.model.weights),
            super::count_of(self.prompts.len(), "prompt")
        )
    }

    fn grid(&self) -> Grid {
        let rows = self
            .rows
            .iter()
            .map(|row| {
                let largest = row.changed_tensors.iter().max_by(|a, b| a.relative_change.total_cmp(&b.relative_change));
                let changed = match largest {
                    Some(largest) => format!("{}, most\n{}\n{:.2e}", row.changed_tensors.len(), largest.tensor, largest.relative_change),
                    None => "0".to_owned(),
                };
                let effect = match row.logit_effect {
                    LogitEffect::Unchanged => "unchanged",
                    LogitEffect::PureShift => "pure shift",
                    LogitEffect::ChangesDistribution => "CHANGES\nDISTRIBUTION",
                };
                [
                    row.name.replace(" + ", " +\n").replace(" (", "\n("),
                    changed,
                    sci(row.max_abs_diff),
                    format!("{}\n{effect}", sci(row.shift_spread)),
                    sci(row.log_softmax_max_abs_diff),
                    percent(100.0 * row.top1_agreement, 0),
                    percent(100.0 * row.min_share_of_raw_difference, 4),
                ]
                .into_iter()
                .map(Cell::from)
                .collect()
            })
            .collect();
        Grid { columns: COLUMNS.to_vec(), rows }
    }
}
