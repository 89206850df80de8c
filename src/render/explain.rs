//! explain's report as a table or markdown (JSON serializes it whole): one row per processing
//! step, then the sentences that sum them up.
use super::cells::{Cell, Column, Grid};
use super::format::{count_of, percent, sci};
use super::markdown::{self, escape, Markdown};
use super::table::{layout, note_width, short_digest, wrap, Table};
use super::Render;
use crate::schema::attribution::LogitEffect;
use crate::schema::explain::ExplainReport;

const COLUMNS: [Column; 7] = [
    Column { header: "weights", drop_order: 0 },
    Column { header: "tensors changed,\nmost (relative)", drop_order: 2 },
    Column { header: "max |logit\ndiff|", drop_order: 0 },
    Column { header: "spread\n(effect)", drop_order: 0 },
    Column { header: "log-softmax\nmax |diff|", drop_order: 0 },
    Column { header: "top-1", drop_order: 1 },
    Column { header: "share of\nraw diff", drop_order: 0 },
];

impl Render<ExplainReport> for Table {
    fn render(&self, report: &ExplainReport) -> String {
        let width = note_width(&self.view);
        let conclusions: String = report.conclusions.iter().map(|sentence| wrap(sentence, width, "")).collect();
        format!("{}{}\n{conclusions}", wrap(&heading(report), width, ""), layout(&grid(report), &self.view))
    }
}

impl Render<ExplainReport> for Markdown {
    fn render(&self, report: &ExplainReport) -> String {
        let mut out = format!("# gpt2-parity explain\n\n{}\n\n", escape(&heading(report)));
        out.push_str(&markdown::table(&grid(report)));
        for sentence in &report.conclusions {
            out.push_str(&format!("\n> {}\n", escape(sentence)));
        }
        out
    }
}

fn heading(report: &ExplainReport) -> String {
    format!(
        "Where the processed-vs-unprocessed difference comes from: model {} ({}), {}, each row against the unprocessed model",
        report.model.source,
        short_digest(&report.model.weights),
        count_of(report.prompts.len(), "prompt")
    )
}

fn grid(report: &ExplainReport) -> Grid {
    let rows = report
        .rows
        .iter()
        .map(|row| {
            let changed = match row.largest_change() {
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
