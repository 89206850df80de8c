//! The terminal table: one block per prompt, its notes, and a closing PASS/FAIL line.
use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};

use super::{comparison_table, criterion_suffix, prompt_heading, Report};

pub fn render(report: &Report, wide: bool) -> String {
    let mut out = format!(
        "gpt2-parity {}: model {} ({}), reference {}\n",
        report.tool.version, report.model.source, report.model.weights, report.reference.path
    );
    for (index, prompt) in report.prompts.iter().enumerate() {
        let mut table = Table::new();
        let (header, rows) = comparison_table(&prompt.comparisons, wide);
        table.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_header(header);
        for row in rows {
            table.add_row(row);
        }
        out.push_str(&format!("\n{}\n{table}\n", prompt_heading(index, report.prompts.len(), prompt)));
        for note in &prompt.notes {
            out.push_str(&format!("note: {note}\n"));
        }
    }
    if let Some(repeatability) = report.repeatability {
        let verdict = if repeatability.identical {
            "bit-identical".to_owned()
        } else {
            format!("NOT identical (max |diff| {:.2e}): nondeterministic forward", repeatability.max_abs_diff)
        };
        out.push_str(&format!("\n{} runs of every forward: {verdict}\n", repeatability.runs));
    }
    if !report.passed {
        for worst in &report.worst {
            out.push_str(&format!(
                "worst {}{}: |diff| {:.2e} in prompt {} {:?}, position {}, token {} {:?}\n",
                worst.comparison,
                criterion_suffix(worst.criterion),
                worst.abs_diff,
                worst.prompt_index + 1,
                crate::tokenize::abbreviate(&worst.prompt),
                worst.position,
                worst.token_id,
                worst.token
            ));
        }
    }
    out.push_str(&format!("\n{}\n", report.summary()));
    out
}
