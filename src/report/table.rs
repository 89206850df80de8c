//! The terminal table: one block per prompt, its notes, and a closing PASS/FAIL line.
use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};

use super::{comparison_cells, prompt_heading, Report, HEADER};

pub fn render(report: &Report) -> String {
    let mut out = format!(
        "gpt2-parity {}: model {} ({}), reference {}\n",
        report.tool.version, report.model.source, report.model.weights, report.reference.path
    );
    for (index, prompt) in report.prompts.iter().enumerate() {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_header(HEADER);
        for comparison in &prompt.comparisons {
            table.add_row(comparison_cells(comparison));
        }
        out.push_str(&format!("\n{}\n{table}\n", prompt_heading(index, report.prompts.len(), prompt)));
        for note in &prompt.notes {
            out.push_str(&format!("note: {note}\n"));
        }
    }
    out.push_str(&format!("\n{}\n", report.summary()));
    out
}
