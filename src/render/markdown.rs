//! Markdown, for pull-request comments and CI summaries: the same summary-first layout as the
//! table, every cell and heading escaped so that prompt text renders as text, and small enough
//! for a pull-request comment (prompt sections that do not fit are left out, and said so).
use super::cells::{comparison_grid, prompt_heading, summary_grid, Grid};
use super::{shard_label, shown_prompts, verdict_line, worst_sentence, Render, View};
use crate::schema::Report;

/// GitHub's limit on a pull-request comment, in characters.
pub const COMMENT_LIMIT: usize = 65_536;

/// Markdown, laid out by `view`.
pub struct Markdown {
    pub view: View,
}

impl Render<Report> for Markdown {
    fn render(&self, report: &Report) -> String {
        let view = &self.view;
        let verdict = match (report.passed, report.prompts.is_empty()) {
            (true, true) => "no prompts",
            (true, false) => "PASS",
            (false, _) => "FAIL",
        };
        // A job summary collects every shard's section: each heading says which shard it is.
        let title = match shard_label(report) {
            Some(shard) => format!("gpt2-parity, {shard}"),
            None => "gpt2-parity".to_owned(),
        };
        let mut out = format!(
            "# {}: {verdict}\n\nModel `{}` (`{}`), reference `{}`.\n",
            escape(&title),
            code(&report.model.source),
            code(&report.model.weights),
            code(&report.reference.path)
        );
        let shown = shown_prompts(report, view.verbose, false);
        if let Some(heading) = &shown.summary_heading {
            out.push_str(&format!("\n## {}\n\n{}", escape(heading), table(&summary_grid(&report.summary, view.wide))));
            out.push_str(&quotes(&report.summary_notes));
        }
        let mut closing = String::new();
        if !report.passed {
            closing.push('\n');
            for summary in &report.summary {
                closing.push_str(&format!("- {}\n", escape(&worst_sentence(report, summary))));
            }
        }
        closing.push_str(&format!("\n**{}**\n", escape(&verdict_line(report))));
        // Room for the closing lines and for the line that says what was left out.
        let budget = COMMENT_LIMIT - closing.chars().count() - 300;
        let mut used = out.chars().count();
        for (shown_count, &index) in shown.prompts.iter().enumerate() {
            let prompt = &report.prompts[index];
            let section = format!(
                "\n## {}\n\n{}{}",
                escape(&prompt_heading(report, index)),
                table(&comparison_grid(&prompt.comparisons, view.wide)),
                quotes(&prompt.notes)
            );
            let length = section.chars().count();
            if used + length > budget {
                let left = shown.prompts.len() - shown_count;
                out.push_str(&format!(
                    "\n_{left} more prompt sections are left out to keep this under a pull-request comment's {COMMENT_LIMIT} characters; \
                     the JSON report (`--format json`) has every prompt._\n"
                ));
                break;
            }
            used += length;
            out.push_str(&section);
        }
        out.push_str(&closing);
        out
    }
}

/// A GFM table; line breaks inside a cell become `<br>`.
pub(super) fn table(grid: &Grid) -> String {
    let row = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let cell = |text: &str| text.split('\n').map(escape).collect::<Vec<_>>().join("<br>");
    let mut out = row(grid.columns.iter().map(|column| cell(column.header)).collect());
    out.push_str(&row(vec!["---".to_owned(); grid.columns.len()]));
    for cells in &grid.rows {
        out.push_str(&row(cells.iter().map(|shown| cell(&shown.text)).collect()));
    }
    out
}

fn quotes(notes: &[impl std::fmt::Display]) -> String {
    notes.iter().map(|note| format!("\n> {}\n", escape(&note.to_string()))).collect()
}

/// Text that renders as itself in CommonMark/GFM, inside a table cell, a heading or a quote:
/// markup characters are backslash-escaped, HTML's as entities, line breaks as spaces.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '~' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// Text for inside a code span: backticks cannot be escaped there, so they become quotes.
fn code(text: &str) -> String {
    text.replace('`', "'").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod renderer_tests {
    use super::*;
    use crate::render::sample;

    /// Every line of the hand-built sample report, as src/render/expected/markdown.md has it.
    #[test]
    fn renders_the_sample_report_exactly() {
        assert_eq!(Markdown { view: View::default() }.render(&sample::report()), include_str!("expected/markdown.md"));
    }
}
