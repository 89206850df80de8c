//! Markdown, for pull-request comments and CI summaries.
use super::{comparison_table, prompt_heading, Report};

pub fn render(report: &Report, wide: bool) -> String {
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
        let (header, rows) = comparison_table(&prompt.comparisons, wide);
        out.push_str(&row(&header.iter().map(|cell| cell.to_string()).collect::<Vec<_>>()));
        out.push_str(&row(&vec!["---".to_owned(); header.len()]));
        for cells in rows {
            out.push_str(&row(&cells));
        }
        for note in &prompt.notes {
            out.push_str(&format!("\n> {note}\n"));
        }
    }
    out
}
