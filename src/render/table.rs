//! The terminal table. With more than a few prompts it opens with one summary table, then the
//! tables of the failing prompts (every prompt with --verbose), then the verdict. On a terminal
//! the tables fit its width (narrower terminals drop the least needed columns first; --wide
//! keeps them all) and verdicts are coloured unless NO_COLOR is set.
use comfy_table::{presets::UTF8_HORIZONTAL_ONLY, Attribute, Color, ContentArrangement};

use super::cells::{comparison_grid, prompt_heading, summary_grid, Grid, Tone};
use super::{shard_label, shown_prompts, verdict_line, worst_sentence, Render, View};
use crate::schema::Report;

/// Tables fit this width when not on a terminal (piped, or written to a file), and notes wrap
/// at it, or at the terminal's width when narrower.
const DEFAULT_WIDTH: usize = 100;

/// The terminal table, laid out by `view`.
pub struct Table {
    pub view: View,
}

impl Render<Report> for Table {
    fn render(&self, report: &Report) -> String {
        let view = &self.view;
        let mut out = format!(
            "gpt2-parity {}\nmodel     {} ({})\nreference {}\n",
            report.tool.version,
            report.model.source,
            short_digest(&report.model.weights),
            report.reference.path
        );
        if let Some(shard) = shard_label(report) {
            out.push_str(&format!("{shard}\n"));
        }
        let shown = shown_prompts(report, view.verbose, true);
        if let Some(heading) = &shown.summary_heading {
            out.push_str(&format!("\n{}{}", wrap(heading, note_width(view), ""), layout(&summary_grid(&report.summary, view.wide), view)));
            out.push_str(&notes(&report.summary_notes, view));
        }
        for &index in &shown.prompts {
            let prompt = &report.prompts[index];
            let heading = wrap(&prompt_heading(report, index), note_width(view), "  ");
            out.push_str(&format!("\n{heading}{}", layout(&comparison_grid(&prompt.comparisons, view.wide), view)));
            out.push_str(&notes(&prompt.notes, view));
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
            out.push('\n');
            for summary in &report.summary {
                out.push_str(&wrap(&worst_sentence(report, summary), note_width(view), "      "));
            }
        }
        let tone = if report.passed { Tone::Pass } else { Tone::Fail };
        // On a terminal the verdict wraps to its width like every other line.
        let verdict = match view.width {
            Some(width) => wrap(&verdict_line(report), width, "      ").trim_end().to_owned(),
            None => verdict_line(report),
        };
        out.push_str(&format!("\n{}\n", paint(&verdict, tone, view.color)));
        out
    }
}

/// The grid as a table that fits `view.width`, dropping columns in their drop order until it
/// does (never with --wide), and saying what was dropped.
pub(super) fn layout(grid: &Grid, view: &View) -> String {
    if view.wide {
        return draw(grid, view.color);
    }
    let width = view.width.unwrap_or(DEFAULT_WIDTH);
    let levels = grid.drop_levels();
    let mut level = 0;
    let fitted = loop {
        let fitted = grid.dropping(level);
        // Measured without colour codes, which take no room on screen.
        let fits = draw(&fitted, false).lines().all(|line| line.chars().count() <= width);
        if fits || level == levels {
            break fitted;
        }
        level += 1;
    };
    let hidden: Vec<String> = grid
        .columns
        .iter()
        .filter(|column| !fitted.columns.iter().any(|kept| kept.header == column.header))
        .map(|column| column.header.replace('\n', " "))
        .collect();
    let note = if hidden.is_empty() {
        String::new()
    } else {
        format!("(hidden to fit {width} columns: {}; --wide shows all)\n", hidden.join(", "))
    };
    format!("{}{note}", draw(&fitted, view.color))
}

fn draw(grid: &Grid, color: bool) -> String {
    let mut table = comfy_table::Table::new();
    table.load_style(UTF8_HORIZONTAL_ONLY).set_content_arrangement(ContentArrangement::Disabled);
    if color {
        table.enforce_styling();
    } else {
        table.force_no_tty();
    }
    table.set_header(grid.columns.iter().map(|column| column.header));
    for row in &grid.rows {
        table.add_row(row.iter().map(|cell| {
            let shown = comfy_table::Cell::new(&cell.text);
            match (color, cell.tone) {
                (true, Tone::Pass) => shown.fg(Color::Green),
                (true, Tone::Fail) => shown.fg(Color::Red).add_attribute(Attribute::Bold),
                _ => shown,
            }
        }));
    }
    // comfy-table pads the last column; trailing blanks only make lines wrap sooner.
    table.to_string().lines().map(|line| format!("{}\n", line.trim_end())).collect()
}

/// Each note as "note: ...", wrapped at word boundaries.
fn notes(notes: &[impl std::fmt::Display], view: &View) -> String {
    notes.iter().map(|note| wrap(&format!("note: {note}"), note_width(view), "      ")).collect()
}

pub(super) fn note_width(view: &View) -> usize {
    view.width.map_or(DEFAULT_WIDTH, |width| width.min(DEFAULT_WIDTH))
}

/// "sha256:d7f8fea53eae…": enough to tell weights apart at a glance (JSON has the whole digest).
pub(super) fn short_digest(digest: &str) -> String {
    match digest.char_indices().nth(19) {
        Some((end, _)) => format!("{}…", &digest[..end]),
        None => digest.to_owned(),
    }
}

/// Greedy word wrap; a word longer than the width gets a line of its own.
pub(super) fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.trim().is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(line.trim_end());
            out.push('\n');
            line = indent.to_owned();
        } else if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out
}

/// `text` in the tone's colour (ANSI), when colour is on.
fn paint(text: &str, tone: Tone, color: bool) -> String {
    match (color, tone) {
        (true, Tone::Pass) => format!("\x1b[32m{text}\x1b[0m"),
        (true, Tone::Fail) => format!("\x1b[1;31m{text}\x1b[0m"),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod renderer_tests {
    use super::*;
    use crate::render::sample;

    /// Every line of the hand-built sample report, as src/render/expected/table.txt has it.
    #[test]
    fn renders_the_sample_report_exactly() {
        assert_eq!(Table { view: View::default() }.render(&sample::report()), include_str!("expected/table.txt"));
    }

    /// A terminal too narrow for every column drops the least needed ones first, and says so.
    #[test]
    fn a_narrow_terminal_drops_columns_and_says_which() {
        let view = View { width: Some(60), ..View::default() };
        let table = Table { view }.render(&sample::report());
        assert!(table.contains("(hidden to fit 60 columns: max |diff| (raw), log-softmax max |diff|, top-1; --wide shows all)"), "{table}");
        let drawn = table.lines().filter(|line| line.starts_with([' ', '─', '═']));
        assert!(drawn.clone().count() >= 8 && drawn.clone().all(|line| line.chars().count() <= 60), "{table}");
    }
}
