//! Markdown, for pull-request comments and CI summaries.
use super::{comparison_cells, prompt_heading, Report, HEADER};

pub fn render(report: &Report) -> String {
    let mut out = format!(
        "# gpt2-parity: {}\n\nModel `{}` (`{}`), reference `{}`.\n",
        report.summary(),
        report.model.source,
        report.model.weights,
        report.reference.path
    );
    let row = |cells: &[String]| format!("| {} |\n", cells.iter().map(|cell| cell.replace('|', "\\|")).collect::<Vec<_>>().join(" | "));
    for (index, prompt) in report.prompts.iter().enumerate() {
        out.push_str(&format!("\n## {}\n\n", prompt_heading(index, report.prompts.len(), prompt)));
        out.push_str(&row(&HEADER.map(String::from)));
        out.push_str(&row(&vec!["---".to_owned(); HEADER.len()]));
        for comparison in &prompt.comparisons {
            out.push_str(&row(&comparison_cells(comparison)));
        }
        for note in &prompt.notes {
            out.push_str(&format!("\n> {note}\n"));
        }
    }
    out
}
