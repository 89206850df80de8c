//! The cells the human-readable formats (table and markdown) show: which columns a prompt's
//! table and the summary table have, how each figure, place and prompt is written, and which
//! columns a narrow terminal may drop. One place, so that the two formats never disagree.
use super::format::{count_of, criterion_label, percent, place, sci, share, times};
use super::prompt_number;
use crate::schema::noise_floor::Breach;
use crate::schema::{Comparison, ComparisonSummary, Criterion, Report};
use crate::tokenize::abbreviate;

/// Whether a cell states a verdict (terminals colour it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Pass,
    Fail,
}

#[derive(Debug, Clone)]
pub struct Cell {
    /// May hold line breaks: the table shows them as lines, markdown as `<br>`.
    pub text: String,
    pub tone: Tone,
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Self { text, tone: Tone::Plain }
    }
}

/// A column's header and when a terminal too narrow for the table drops it: 0 never, else
/// lower numbers first.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub header: &'static str,
    pub drop_order: u8,
}

/// A table before layout: columns and rows of cells.
pub struct Grid {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
}

impl Grid {
    /// The grid without the columns a terminal drops at `level` (those with 0 < drop_order <= level).
    pub fn dropping(&self, level: u8) -> Grid {
        let kept = |column: &Column| column.drop_order == 0 || column.drop_order > level;
        let keep: Vec<bool> = self.columns.iter().map(kept).collect();
        let select = |cells: &[Cell]| cells.iter().zip(&keep).filter(|(_, keep)| **keep).map(|(cell, _)| cell.clone()).collect();
        Grid { columns: self.columns.iter().copied().filter(kept).collect(), rows: self.rows.iter().map(|row| select(row)).collect() }
    }

    /// The highest drop order: how many levels of dropping there are.
    pub fn drop_levels(&self) -> u8 {
        self.columns.iter().map(|column| column.drop_order).max().unwrap_or(0)
    }
}

/// A prompt's comparisons: the default columns fit 100 terminal columns; `wide` has every metric.
pub fn comparison_grid(comparisons: &[Comparison], wide: bool) -> Grid {
    type Figure = fn(&Comparison) -> String;
    let compact: [(Column, Figure); 6] = [
        (Column { header: "comparison", drop_order: 0 }, |c| comparison_name(&c.name, c.criterion)),
        (Column { header: "worst |diff|\n@pos token", drop_order: 0 }, |c| {
            let at = c.max_abs_diff_at.as_ref().map(|at| place(at, c.worst_is_position_shift)).unwrap_or_default();
            // A non-finite value is named (NaN, +Inf, -Inf), not left as the NaN of the statistic.
            let figure = c.non_finite_positions.first().map_or_else(|| sci(c.worst_abs_diff), |first| first.name());
            format!("{figure}\n{at}")
        }),
        (Column { header: "max |diff|\n(raw)", drop_order: 3 }, |c| sci(c.max_abs_diff)),
        (Column { header: "log-softmax\nmax |diff|", drop_order: 1 }, |c| sci(c.log_softmax_max_abs_diff)),
        (Column { header: "top-1", drop_order: 2 }, |c| share(c.top1_agreement)),
        (Column { header: "verdict", drop_order: 0 }, |_| String::new()),
    ];
    let extra: [(Column, Figure); 13] = [
        (Column { header: "cand mean", drop_order: 0 }, |c| format!("{:.4}", c.candidate_mean)),
        (Column { header: "ref mean", drop_order: 0 }, |c| format!("{:.4}", c.reference_mean)),
        (Column { header: "cand std", drop_order: 0 }, |c| format!("{:.4}", c.candidate_std)),
        (Column { header: "ref std", drop_order: 0 }, |c| format!("{:.4}", c.reference_std)),
        (Column { header: "mean |diff|", drop_order: 0 }, |c| sci(c.mean_abs_diff)),
        (Column { header: "shift-free\nmax |diff|", drop_order: 0 }, |c| sci(c.centered_max_abs_diff)),
        (Column { header: "rmse", drop_order: 0 }, |c| sci(c.rmse)),
        (Column { header: "cosine", drop_order: 0 }, |c| format!("{:.8}", c.cosine_similarity)),
        (Column { header: "max rel\ndiff", drop_order: 0 }, |c| sci(c.max_rel_diff)),
        (Column { header: "outside\nallclose", drop_order: 0 }, |c| {
            format!("{}\n({})", c.outside_allclose, percent(c.outside_allclose_percent, 3))
        }),
        (Column { header: "min passing\natol", drop_order: 0 }, |c| sci(c.min_passing_atol)),
        (Column { header: "KL\nmean / max", drop_order: 0 }, |c| format!("{} /\n{}", sci(c.kl_mean), sci(c.kl_max))),
        (Column { header: "top-5\noverlap", drop_order: 0 }, |c| share(c.top5_overlap)),
    ];
    let (head, verdict_column) = compact.split_at(compact.len() - 1);
    let mut columns: Vec<&(Column, Figure)> = head.iter().collect();
    if wide {
        columns.extend(&extra);
    }
    // With --noise-floor: each side's distance from a float64 run, and the breach's kind.
    let noise_floor: (Column, Figure) = (Column { header: "from float64:\ncand / ref", drop_order: 0 }, |c| {
        c.noise_floor
            .as_ref()
            .map_or_else(String::new, |floor| format!("{} /\n{}", sci(floor.candidate_vs_float64), sci(floor.reference_vs_float64)))
    });
    if comparisons.iter().any(|comparison| comparison.noise_floor.is_some()) {
        columns.push(&noise_floor);
    }
    // Under --criterion envelope: each side's worst distance from float64, in multiples of float32 rounding.
    let rounding: (Column, Figure) = (Column { header: "x rounding\ncand / ref", drop_order: 4 }, |c| {
        c.rounding
            .as_ref()
            .map_or_else(String::new, |rounding| format!("{} /\n{}", times(rounding.candidate.worst()), times(rounding.reference.worst())))
    });
    if comparisons.iter().any(|comparison| comparison.rounding.is_some()) {
        columns.push(&rounding);
    }
    let rows = comparisons
        .iter()
        .map(|comparison| {
            let mut row: Vec<Cell> = columns.iter().map(|(_, figure)| Cell::from(figure(comparison))).collect();
            let mut verdict = verdict(comparison.passed, comparison.non_finite > 0);
            match comparison.noise_floor.as_ref().and_then(|floor| floor.breach) {
                Some(Breach::RoundingNoise) => verdict.text.push_str("\nrounding noise"),
                Some(Breach::Real) => verdict.text.push_str("\nreal"),
                None => {}
            }
            row.push(verdict);
            row
        })
        .collect();
    columns.push(&verdict_column[0]);
    Grid { columns: columns.into_iter().map(|(column, _)| *column).collect(), rows }
}

/// One row per comparison over every prompt.
pub fn summary_grid(summaries: &[ComparisonSummary], wide: bool) -> Grid {
    let mut columns = vec![
        Column { header: "comparison", drop_order: 0 },
        Column { header: "failing\nprompts", drop_order: 0 },
        Column { header: "worst |diff|\n#prompt @pos token", drop_order: 0 },
        Column { header: "max |diff|\n(raw)", drop_order: 3 },
        Column { header: "KL max", drop_order: 1 },
        Column { header: "lowest\ntop-1", drop_order: 2 },
        Column { header: "shift-free\nmax |diff|", drop_order: 0 },
        Column { header: "verdict", drop_order: 0 },
    ];
    if !wide {
        columns.remove(6);
    }
    let rows = summaries
        .iter()
        .map(|summary| {
            let worst = &summary.worst;
            vec![
                Cell::from(comparison_name(&summary.comparison, summary.criterion)),
                Cell::from(format!("{} of {}", summary.failing_prompts, summary.prompts)),
                Cell::from(format!("{}\n#{} {}", sci(worst.abs_diff), worst.prompt_index + 1, place(&worst.at(), worst.is_position_shift))),
                Cell::from(sci(summary.max_abs_diff.value)),
                Cell::from(sci(summary.kl_max.value)),
                Cell::from(share(summary.min_top1_agreement.value)),
                Cell::from(sci(summary.centered_max_abs_diff.value)),
                verdict(summary.failing_prompts == 0, worst.abs_diff.is_nan()),
            ]
        })
        .map(|mut row: Vec<Cell>| {
            if !wide {
                row.remove(6);
            }
            row
        })
        .collect();
    Grid { columns, rows }
}

fn verdict(passed: bool, non_finite: bool) -> Cell {
    match (passed, non_finite) {
        (true, _) => Cell { text: "pass".to_owned(), tone: Tone::Pass },
        (false, true) => Cell { text: "FAIL\n(NaN/Inf)".to_owned(), tone: Tone::Fail },
        (false, false) => Cell { text: "FAIL".to_owned(), tone: Tone::Fail },
    }
}

/// The comparison's name broken at hyphens into lines of at most 24 characters, and the
/// criterion under it for shift-invariant rows: long names never widen the table.
fn comparison_name(name: &str, criterion: Criterion) -> String {
    let mut lines: Vec<String> = vec![String::new()];
    for part in name.split_inclusive('-') {
        let line = lines.last_mut().expect("never empty");
        if !line.is_empty() && line.len() + part.len() > 24 {
            lines.push(part.to_owned());
        } else {
            line.push_str(part);
        }
    }
    if criterion == Criterion::ShiftInvariant {
        lines.push(format!("({})", criterion_label(criterion)));
    }
    lines.join("\n")
}

/// "Prompt 3/8: "Hello World" (2 tokens)": numbered as in the whole run, the prompt cut to 40
/// characters; every heading has the same form (the token ids are in the JSON report).
pub fn prompt_heading(report: &Report, index: usize) -> String {
    let (number, total) = prompt_number(report, index);
    let prompt = &report.prompts[index];
    format!("Prompt {number}/{total}: {:?} ({})", abbreviate(&prompt.prompt), count_of(prompt.tokens.len(), "token"))
}

/// "passes" or "FAILS on 2 of 50 prompts": a comparison's verdict over every prompt.
pub fn summary_verdict(summary: &ComparisonSummary) -> String {
    match summary.failing_prompts {
        0 => "passes".to_owned(),
        failing => format!("FAILS on {failing} of {}", count_of(summary.prompts, "prompt")),
    }
}
