//! One self-contained HTML page (XHTML syntax, so any XML parser can check it): the summary,
//! per-prompt tables, and inline SVG charts of the error along the residual stream, per
//! position, and per processing step. No scripts, no network, no external assets. Charts lay
//! out numbers the report already holds; nothing is computed here but pixel positions.
use std::fmt::Write;

use super::cells::comparison_grid;
use super::format::{count_of, criterion_suffix, sci, snapshot_name, times, token_with_id, xml_escape};
use super::{prompt_label, verdict_line, Render};
use crate::schema::attribution::{LogitEffect, StepRow};
use crate::schema::{Comparison, Criterion, NonFinite, NonFinitePosition, Report};
use crate::tokenize::abbreviate;

const STYLE: &str = "
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 24px 48px; color: #1b1f24; }
header { margin: 24px 0 8px; padding: 16px 20px; border-radius: 8px; color: #fff; }
header.pass { background: #1a7f37; } header.fail { background: #cf222e; }
header h1 { margin: 0; font-size: 28px; } header p { margin: 4px 0 0; font-size: 16px; }
header a { color: #fff; font-weight: 600; }
h2 { margin-top: 32px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num, .nowrap { white-space: nowrap; }
table.run td { overflow-wrap: anywhere; min-width: 12em; }
tr.fail td, td.fail { background: #ffebe9; } td.pass { color: #1a7f37; }
.label { white-space: pre-wrap; }
.prompt { white-space: pre-wrap; overflow-wrap: anywhere; font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 6px 10px; margin: 8px 0; }
.notes { background: #fff8c5; border-left: 4px solid #d4a72c; padding: 6px 12px; margin: 8px 0; overflow-wrap: anywhere; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.charts figure { max-width: 100%; }
.charts svg { max-width: 100%; height: auto; }
figure { margin: 0; } figcaption { font-size: 12px; color: #57606a; max-width: 560px; }
code { font-size: 12px; background: #f6f8fa; padding: 1px 4px; border-radius: 4px; overflow-wrap: anywhere; }
@media (max-width: 600px) { body { padding: 0 10px 32px; } header { padding: 12px 14px; } header h1 { font-size: 22px; } }
";

/// Series colours, in comparison order; red is kept for failing points.
const COLOURS: [&str; 5] = ["#0969da", "#8250df", "#bf8700", "#1b7c83", "#57606a"];
const FAIL_COLOUR: &str = "#cf222e";
/// The banner links at most this many failing prompts; the prompts table marks them all.
const LINKED_FAILURES: usize = 10;

/// One self-contained HTML page.
pub struct Html;

impl Render<Report> for Html {
    fn render(&self, report: &Report) -> String {
        let verdict = if report.passed { "pass" } else { "fail" };
        let mut page = format!(
            "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n\
             <title>gpt2-parity: {summary}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
             <header class=\"{verdict}\"><h1>{title}</h1><p>{summary}</p>{failing}</header>\n",
            summary = xml_escape(&verdict_line(report)),
            title = verdict.to_uppercase(),
            failing = failing_links(report),
        );
        page.push_str(&run_table(report));
        page.push_str(&overview(report));
        if let Some(rows) = &report.attribution {
            page.push_str(&attribution(rows));
        }
        for (index, prompt) in report.prompts.iter().enumerate() {
            let status = if prompt.passed { "pass" } else { "FAIL" };
            let _ = write!(
                page,
                "<section id=\"prompt-{index}\">\n<h2 class=\"label\">{} — {status}</h2>\n<div class=\"prompt\">{}</div>\n<p>{}: <code>{:?}</code></p>\n",
                xml_escape(&prompt_label(report, index)),
                xml_escape(&prompt.prompt),
                count_of(prompt.tokens.len(), "token"),
                prompt.tokens
            );
            page.push_str(&comparisons(&prompt.comparisons));
            for note in &prompt.notes {
                let _ = writeln!(page, "<p class=\"notes\">{}</p>", xml_escape(&note.to_string()));
            }
            page.push_str("<div class=\"charts\">\n");
            page.push_str(&residual_chart(&prompt.comparisons));
            page.push_str(&position_chart(&prompt.comparisons, report.tolerance.atol));
            page.push_str("</div>\n</section>\n");
        }
        let _ = write!(
            page,
            "<footer><p>{} {}</p></footer>\n</body>\n</html>\n",
            xml_escape(&report.tool.name),
            xml_escape(&report.tool.version)
        );
        page
    }
}

/// The banner's links to the failing prompts' sections (the first [`LINKED_FAILURES`] of them).
fn failing_links(report: &Report) -> String {
    let failing: Vec<usize> = (0..report.prompts.len()).filter(|&index| !report.prompts[index].passed).collect();
    if failing.is_empty() {
        return String::new();
    }
    let links: Vec<String> = failing
        .iter()
        .take(LINKED_FAILURES)
        .map(|&index| format!("<a class=\"label\" href=\"#prompt-{index}\">{}</a>", xml_escape(&prompt_label(report, index))))
        .collect();
    let more = match failing.len().checked_sub(LINKED_FAILURES) {
        Some(more) if more > 0 => format!("; {more} more in the prompts table"),
        _ => String::new(),
    };
    format!("<p>Failing: {}{more}</p>", links.join(", "))
}

/// A table in a box of its own that scrolls sideways when the page is narrower than the table.
fn scrolling(table: &str) -> String {
    format!("<div class=\"scroll\">\n{table}</div>\n")
}

fn run_table(report: &Report) -> String {
    let mut rows = vec![
        ("model", format!("{} ({})", report.model.source, report.model.weights)),
        ("reference", format!("{} (made by {}, weights {})", report.reference.path, report.reference.model, report.reference.weights)),
    ];
    if let Some(candidate) = &report.candidate {
        rows.push((
            "candidate",
            format!("{} (made by {}, weights {}, producer {})", candidate.path, candidate.model, candidate.weights, candidate.producer),
        ));
    }
    rows.push(("tolerance", format!("|a − b| ≤ atol {:e} + rtol {:e} × |b|", report.tolerance.atol, report.tolerance.rtol)));
    if report.candidate.is_none() {
        rows.push(("processing", serde_json::to_string(&report.processing).expect("options serialize")));
    }
    rows.push(("prepend BOS", report.prepend_bos.to_string()));
    rows.push(("device", report.device.clone()));
    if let Some(shard) = report.shard {
        rows.push(("shard", format!("{}/{} of {}", shard.shard.index, shard.shard.count, count_of(shard.total_prompts, "prompt"))));
    }
    if let Some(repeatability) = report.repeatability {
        let verdict = if repeatability.identical {
            "bit-identical".to_owned()
        } else {
            format!("NOT identical, max |diff| {}", sci(repeatability.max_abs_diff))
        };
        rows.push(("repeatability", format!("{} runs of every forward: {verdict}", repeatability.runs)));
    }
    let mut out = String::from("<h2>Run</h2>\n");
    let mut table = String::from("<table class=\"run\">\n");
    for (name, value) in rows {
        let _ = writeln!(table, "<tr><th>{name}</th><td>{}</td></tr>", xml_escape(&value));
    }
    table.push_str("</table>\n");
    out.push_str(&scrolling(&table));
    out
}

/// "reference NaN; 1 element": each side by the name it has in the comparison's name
/// ("processed" in processed-vs-reference), what it holds, and how many elements.
fn non_finite_detail(comparison: &str, at: &NonFinitePosition) -> String {
    let (left, right) = comparison.split_once("-vs-").unwrap_or(("candidate", "reference"));
    let names = |kinds: &[NonFinite]| kinds.iter().map(|kind| kind.name()).collect::<Vec<_>>().join("/");
    let sides: Vec<String> = [(left, &at.candidate), (right, &at.reference)]
        .into_iter()
        .filter(|(_, kinds)| !kinds.is_empty())
        .map(|(side, kinds)| format!("{side} {}", names(kinds)))
        .collect();
    format!("{}; {}", sides.join(", "), count_of(at.elements, "element"))
}

/// A comparison's worst figure as its criterion judges it, or, with non-finite values, what the
/// first of them is and where: "+Inf @3".
fn worst_figure(comparison: &Comparison) -> String {
    match comparison.non_finite_positions.first() {
        Some(at) => format!("{} @{}", at.name(), at.position),
        None => sci(comparison.worst_abs_diff),
    }
}

/// One row per prompt with its verdict and each comparison's worst |diff| under its criterion
/// (centered for shift-free rows, as the verdict judges it), then the worst elements.
fn overview(report: &Report) -> String {
    let names: Vec<&str> = report.worst.iter().map(|worst| worst.comparison.as_str()).collect();
    let mut table = String::from("<table>\n<tr><th>prompt</th><th>verdict</th>");
    for name in &names {
        let _ = write!(table, "<th>{} worst |diff|</th>", xml_escape(name));
    }
    table.push_str("</tr>\n");
    for (index, prompt) in report.prompts.iter().enumerate() {
        let (class, verdict) = if prompt.passed { ("pass", "pass") } else { ("fail", "FAIL") };
        let _ = write!(
            table,
            "<tr class=\"{class}\"><td class=\"label\"><a href=\"#prompt-{index}\">{}</a></td><td class=\"{class}\">{verdict}</td>",
            xml_escape(&prompt_label(report, index))
        );
        for name in &names {
            match prompt.comparisons.iter().find(|comparison| comparison.name == *name) {
                Some(comparison) => {
                    let class = if comparison.passed { "num" } else { "num fail" };
                    let _ = write!(table, "<td class=\"{class}\">{}</td>", xml_escape(&worst_figure(comparison)));
                }
                None => table.push_str("<td></td>"),
            }
        }
        table.push_str("</tr>\n");
    }
    table.push_str("</table>\n");
    let mut out = format!("<h2>Prompts</h2>\n{}", scrolling(&table));
    let mut table = String::from("<table>\n<tr><th>comparison</th><th>|diff|</th><th>prompt</th><th>position</th><th>token</th></tr>\n");
    for worst in &report.worst {
        let non_finite = report
            .prompts
            .get(worst.prompt_index)
            .and_then(|prompt| prompt.comparisons.iter().find(|comparison| comparison.name == worst.comparison))
            .and_then(|comparison| comparison.non_finite_positions.iter().find(|at| at.position == worst.position));
        let figure = non_finite.map_or_else(|| sci(worst.abs_diff), NonFinitePosition::name);
        let _ = writeln!(
            table,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"label\">{}</td><td class=\"num\">{}</td><td><code>{}</code></td></tr>",
            xml_escape(&worst.comparison),
            xml_escape(&figure),
            xml_escape(&format!("{:?}", abbreviate(&worst.prompt))),
            worst.position,
            xml_escape(&token_with_id(worst.token_id, &worst.token))
        );
    }
    table.push_str("</table>\n");
    out.push_str("<h2>Worst elements</h2>\n");
    out.push_str(&scrolling(&table));
    out
}

/// The prompt's table, as the terminal table has it: each line of a cell kept whole (a number
/// never breaks mid-token), lines as the terminal breaks them.
fn comparisons(comparisons: &[Comparison]) -> String {
    let grid = comparison_grid(comparisons, false);
    let lines = |text: &str| {
        text.split('\n').map(|line| format!("<span class=\"nowrap\">{}</span>", xml_escape(line))).collect::<Vec<_>>().join("<br/>")
    };
    let mut table = String::from("<table>\n<tr>");
    for column in &grid.columns {
        let _ = write!(table, "<th>{}</th>", lines(column.header));
    }
    table.push_str("</tr>\n");
    for (cells, comparison) in grid.rows.iter().zip(comparisons) {
        let class = if comparison.passed { "" } else { " class=\"fail\"" };
        let _ = write!(table, "<tr{class}>");
        for cell in cells {
            let _ = write!(table, "<td>{}</td>", lines(&cell.text));
        }
        table.push_str("</tr>\n");
    }
    table.push_str("</table>\n");
    scrolling(&table)
}

/// One line per comparison: each residual snapshot (embeddings, then each block's output) as
/// its criterion judges it, its worst |diff| / (atol + rtol × |reference|), against the pass line 1.
fn residual_chart(comparisons: &[Comparison]) -> String {
    let Some(first) = comparisons.iter().find_map(|comparison| comparison.resid.as_ref()) else {
        return "<p>No residual stream in the reference (or the candidate): no per-block chart.</p>\n".to_owned();
    };
    let labels: Vec<String> = first.iter().map(|snapshot| snapshot_name(snapshot.index)).collect();
    match comparisons.iter().find_map(|comparison| comparison.rounding.as_ref()) {
        Some(rounding) => envelope_chart(comparisons, &labels, rounding.factor),
        None => tolerance_chart(comparisons, &labels),
    }
}

/// Under `--criterion envelope`: each side's distance from our float64 forward, per snapshot, as a
/// multiple of the rounding envelope (the larger of its end-to-end and block-by-block figures),
/// against the factor that judges it. Each side once, however many comparisons it is in.
fn envelope_chart(comparisons: &[Comparison], labels: &[String], factor: f64) -> String {
    let mut series: Vec<Series> = Vec::new();
    let sides = comparisons
        .iter()
        .filter_map(|comparison| comparison.rounding.as_ref())
        .flat_map(|rounding| [&rounding.candidate, &rounding.reference]);
    for side in sides {
        let Some(snapshots) = &side.snapshots else { continue };
        if series.iter().any(|known| known.name == side.side) {
            continue;
        }
        let points = snapshots
            .iter()
            .enumerate()
            .map(|(index, &whole)| {
                let each_block = side.each_block.as_ref().and_then(|multiples| multiples.get(index).copied());
                let value = side.snapshot_multiple(index).unwrap_or(whole);
                let block_part = each_block.map(|each_block| format!(", block on its own {}", times(each_block))).unwrap_or_default();
                Point {
                    value,
                    failing: !(value <= factor),
                    detail: format!("{}: {} rounding end to end{block_part}", snapshot_name(index), times(whole)),
                    non_finite_name: None,
                }
            })
            .collect();
        series.push(Series { name: side.side.clone(), points });
    }
    LogChart {
        class: "residual",
        title: "Residual stream: distance from float64, in multiples of float32 rounding",
        x_title: "residual stream after",
        labels,
        series: &series,
        threshold: Threshold { value: factor, label: format!("{factor:.0}x rounding") },
        caption: "Each side's distance from our float64 forward at each snapshot, as a multiple of how far our own float32 \
                  forward lands (the rounding envelope; the larger of the end-to-end and the block-on-its-own figures, \
                  docs/metrics.md): a faithful float32 GPT-2 stays near 1x; above the dashed line a snapshot fails (red).",
    }
    .render()
}

/// Under `--criterion tolerance`, which does not judge the residual stream: each snapshot's worst
/// |diff| against the tolerance bound, for reading only.
fn tolerance_chart(comparisons: &[Comparison], labels: &[String]) -> String {
    let series: Vec<Series> = comparisons
        .iter()
        .filter_map(|comparison| {
            let resid = comparison.resid.as_ref()?;
            let points = resid
                .iter()
                .map(|snapshot| Point {
                    value: snapshot.max_tolerance_ratio,
                    failing: snapshot.passed == Some(false),
                    detail: format!(
                        "{}: {} × the bound (max |diff| {}, largest |reference| {})",
                        snapshot_name(snapshot.index),
                        sci(snapshot.max_tolerance_ratio),
                        sci(snapshot.max_abs_diff),
                        sci(snapshot.reference_max_abs)
                    ),
                    non_finite_name: None,
                })
                .collect();
            Some(Series { name: comparison.name.clone(), points })
        })
        .collect();
    LogChart {
        class: "residual",
        title: "Residual stream: worst |diff| / tolerance bound (not judged)",
        x_title: "residual stream after",
        labels,
        series: &series,
        threshold: Threshold { value: 1.0, label: "bound 1".to_owned() },
        caption: "Each snapshot's worst |diff| divided by its bound atol + rtol × |reference|, element by element. \
                  --criterion tolerance judges the logits only: at GPT-2's magnitudes faithful blocks sit above 1.",
    }
    .render()
}

/// One line per comparison: max |diff| over the vocabulary at each position, centered for
/// shift-free rows (as their criterion judges them: center_unembed's expected shift removed).
fn position_chart(comparisons: &[Comparison], atol: f64) -> String {
    let series: Vec<Series> = comparisons
        .iter()
        .map(|comparison| {
            let values = match comparison.criterion {
                Criterion::Raw => &comparison.position_max_abs_diff,
                Criterion::ShiftInvariant => &comparison.position_centered_max_abs_diff,
            };
            let points = values
                .iter()
                .enumerate()
                .map(|(position, &value)| {
                    let non_finite = comparison.non_finite_positions.iter().find(|at| at.position == position);
                    Point {
                        value,
                        failing: comparison.positions_outside.contains(&position),
                        detail: format!(
                            "@{position}: {}",
                            non_finite.map_or_else(|| sci(value), |at| non_finite_detail(&comparison.name, at))
                        ),
                        non_finite_name: non_finite.map(NonFinitePosition::name),
                    }
                })
                .collect();
            Series { name: format!("{}{}", comparison.name, criterion_suffix(comparison.criterion)), points }
        })
        .collect();
    let positions = series.iter().map(|series| series.points.len()).max().unwrap_or(0);
    let labels: Vec<String> = (0..positions).map(|position| position.to_string()).collect();
    LogChart {
        class: "positions",
        title: "Max |logit diff| per position",
        x_title: "position",
        labels: &labels,
        series: &series,
        threshold: Threshold { value: atol, label: format!("atol {}", sci(atol)) },
        caption: "Shift-free rows are plotted with each position's mean over the vocabulary removed, as their criterion judges \
                  them; raw rows as they are. Red points are positions outside tolerance (atol + rtol × |reference| per \
                  element, so a point above the dashed atol line may still pass).",
    }
    .render()
}

struct Series {
    name: String,
    points: Vec<Point>,
}

struct Point {
    value: f64,
    /// Outside tolerance: drawn in red.
    failing: bool,
    /// The tooltip after the series' name: the point's place and figures.
    detail: String,
    /// What a non-finite value is called ("NaN", "+Inf", "NaN/+Inf") when the value alone cannot
    /// tell: a position's figure is NaN whatever it holds, and an Inf read back from JSON is NaN.
    non_finite_name: Option<String>,
}

impl Point {
    /// The name beside a non-finite point in the NaN/Inf band; `None` for a finite one.
    fn non_finite(&self) -> Option<String> {
        match self.value {
            value if value.is_finite() => None,
            _ if self.non_finite_name.is_some() => self.non_finite_name.clone(),
            f64::INFINITY => Some("+Inf".to_owned()),
            f64::NEG_INFINITY => Some("-Inf".to_owned()),
            _ => Some("NaN".to_owned()),
        }
    }
}

/// The horizontal line a point passes at or below.
struct Threshold {
    value: f64,
    label: String,
}

/// A line chart on a log scale: one line per series over the x labels, a dashed threshold, and
/// a band above the plot for non-finite points (drawn only when there are any). Zeros sit on the
/// bottom edge. Each point's figures are its tooltip.
struct LogChart<'a> {
    /// The svg's class: what tests and styles find the chart by.
    class: &'a str,
    title: &'a str,
    x_title: &'a str,
    labels: &'a [String],
    series: &'a [Series],
    threshold: Threshold,
    caption: &'a str,
}

const WIDTH: f64 = 560.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 24.0;
const PLOT_WIDTH: f64 = WIDTH - LEFT - RIGHT;
const PLOT_HEIGHT: f64 = 186.0;
/// The title's line above the plot.
const TITLE_HEIGHT: f64 = 30.0;
/// The NaN/Inf band between the title and the plot, when a point is non-finite.
const NON_FINITE_BAND: f64 = 26.0;
const FONT_SIZE: f64 = 11.0;
/// A generous advance of one character at [`FONT_SIZE`] in a sans-serif face: labels are
/// spaced by their width at this advance, so that they never overlap.
const CHAR_WIDTH: f64 = 7.0;
/// Up to this many points per line, every point gets a marker with its value as tooltip.
const MARKED_POINTS: usize = 64;

/// How the x labels are laid out: every `step`-th one, level or slanted at 45°.
#[derive(Debug, PartialEq)]
struct XLabels {
    step: usize,
    slanted: bool,
    /// The height they take below the plot.
    height: f64,
}

impl XLabels {
    /// Level labels, every `step`-th with `step` chosen from the widest label; slanted at 45°
    /// when that shows at least twice as many (slanted labels need only a line's height
    /// between them, whatever their width).
    fn layout(labels: &[String], spacing: f64) -> Self {
        let widest = labels.iter().map(|label| label.chars().count()).max().unwrap_or(0) as f64 * CHAR_WIDTH;
        let steps_for = |room: f64| ((room / spacing).ceil() as usize).max(1);
        // Parallel lines at 45° stand apart by their x distance times sin 45°.
        let (level, slanted) = (steps_for(widest + CHAR_WIDTH), steps_for((FONT_SIZE + 2.0) * std::f64::consts::SQRT_2));
        if 2 * slanted <= level {
            Self { step: slanted, slanted: true, height: 12.0 + widest * std::f64::consts::FRAC_1_SQRT_2 + FONT_SIZE }
        } else {
            Self { step: level, slanted: false, height: 12.0 + FONT_SIZE }
        }
    }
}

impl LogChart<'_> {
    fn render(&self) -> String {
        let threshold = self.threshold.value;
        let finite_positive = self.series.iter().flat_map(|series| &series.points).map(|point| point.value);
        let (low, high) = finite_positive
            .chain([threshold])
            .filter(|value| value.is_finite() && *value > 0.0)
            .fold((f64::INFINITY, 0.0f64), |(low, high), value| (low.min(value), high.max(value)));
        let (low, high) =
            if low.is_finite() { (low.log10().floor(), high.log10().ceil().max(low.log10().floor() + 1.0)) } else { (-8.0, 0.0) };
        let any_non_finite = self.series.iter().flat_map(|series| &series.points).any(|point| !point.value.is_finite());
        let band_top = TITLE_HEIGHT;
        let plot_top = band_top + if any_non_finite { NON_FINITE_BAND + 8.0 } else { 0.0 };
        let plot_bottom = plot_top + PLOT_HEIGHT;
        let count = self.labels.len();
        let spacing = if count > 1 { PLOT_WIDTH / (count - 1) as f64 } else { PLOT_WIDTH };
        let x_labels = XLabels::layout(self.labels, spacing);
        let height = plot_bottom + x_labels.height + 20.0;
        let x = |index: usize| LEFT + if count > 1 { spacing * index as f64 } else { PLOT_WIDTH / 2.0 };
        let y = |value: f64| {
            if value <= 0.0 {
                plot_bottom
            } else {
                plot_top + PLOT_HEIGHT * (1.0 - (value.log10().clamp(low, high) - low) / (high - low))
            }
        };
        let mut svg = format!(
            "<figure><svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart {class}\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\">\n\
             <title>{title}</title>\n<rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{height}\" fill=\"#fff\"/>\n\
             <text x=\"{LEFT}\" y=\"18\" font-size=\"14\" font-weight=\"600\">{title}</text>\n",
            class = self.class,
            title = xml_escape(self.title)
        );
        if any_non_finite {
            let _ = writeln!(
                svg,
                "<rect x=\"{LEFT}\" y=\"{band_top}\" width=\"{PLOT_WIDTH}\" height=\"{NON_FINITE_BAND}\" fill=\"#ffebe9\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{FONT_SIZE}\" text-anchor=\"end\" fill=\"{FAIL_COLOUR}\" font-weight=\"600\">NaN/Inf</text>",
                LEFT - 6.0,
                band_top + NON_FINITE_BAND / 2.0 + 4.0
            );
        }
        for decade in (low as i32)..=(high as i32) {
            let tick_y = y(10f64.powi(decade));
            let _ = writeln!(
                svg,
                "<line x1=\"{LEFT}\" y1=\"{tick_y:.1}\" x2=\"{:.1}\" y2=\"{tick_y:.1}\" stroke=\"#eaeef2\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{FONT_SIZE}\" text-anchor=\"end\">1e{decade}</text>",
                WIDTH - RIGHT,
                LEFT - 6.0,
                tick_y + 4.0
            );
        }
        let label_y = plot_bottom + 16.0;
        for (index, label) in self.labels.iter().enumerate().step_by(x_labels.step) {
            let (anchor, transform) = if x_labels.slanted {
                ("end", format!(" transform=\"rotate(-45 {:.1} {label_y:.1})\"", x(index)))
            } else {
                ("middle", String::new())
            };
            let _ = writeln!(
                svg,
                "<text class=\"x-label\" x=\"{:.1}\" y=\"{label_y:.1}\" font-size=\"{FONT_SIZE}\" text-anchor=\"{anchor}\"{transform}>{}</text>",
                x(index),
                xml_escape(label)
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{FONT_SIZE}\" text-anchor=\"middle\" fill=\"#57606a\">{}</text>",
            LEFT + PLOT_WIDTH / 2.0,
            height - 6.0,
            xml_escape(self.x_title)
        );
        if threshold > 0.0 && threshold.is_finite() {
            let threshold_y = y(threshold);
            let _ = writeln!(
                svg,
                "<line class=\"threshold\" x1=\"{LEFT}\" y1=\"{threshold_y:.1}\" x2=\"{:.1}\" y2=\"{threshold_y:.1}\" stroke=\"{FAIL_COLOUR}\" stroke-dasharray=\"5 4\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{FONT_SIZE}\" text-anchor=\"end\" fill=\"{FAIL_COLOUR}\">{}</text>",
                WIDTH - RIGHT,
                WIDTH - RIGHT,
                threshold_y - 4.0,
                xml_escape(&self.threshold.label)
            );
        }
        self.draw_series(&mut svg, &x, &y, band_top + NON_FINITE_BAND / 2.0);
        svg.push_str("</svg>\n<figcaption>");
        for (number, series) in self.series.iter().enumerate() {
            let _ = write!(
                svg,
                "<span class=\"nowrap\"><span style=\"color:{}\">■</span> {}</span> ",
                COLOURS[number % COLOURS.len()],
                xml_escape(&series.name)
            );
        }
        let _ = write!(svg, "<br/>Log scale (zeros on the bottom edge). {}", xml_escape(self.caption));
        if any_non_finite {
            svg.push_str(" A red ⊗ in the NaN/Inf band is a non-finite value at that x, named beside it.");
        }
        svg.push_str("</figcaption></figure>\n");
        svg
    }

    /// Each series: its line (broken at non-finite points), its markers, and its NaN/Inf markers
    /// in the band at `band_y`, named where there is room.
    fn draw_series(&self, svg: &mut String, x: &dyn Fn(usize) -> f64, y: &dyn Fn(f64) -> f64, band_y: f64) {
        let count = self.labels.len();
        // Names beside NaN/Inf markers, left to right over all series: one is left out where it
        // would run into the previous one (the marker's tooltip still names it).
        let mut named_up_to = f64::NEG_INFINITY;
        for (number, series) in self.series.iter().enumerate() {
            let colour = COLOURS[number % COLOURS.len()];
            // The line breaks at non-finite points: nothing is drawn between them and their neighbours.
            let runs = series.points.split(|point| !point.value.is_finite());
            let mut start = 0;
            for run in runs {
                if run.len() > 1 {
                    let points: Vec<String> =
                        run.iter().enumerate().map(|(offset, point)| format!("{:.1},{:.1}", x(start + offset), y(point.value))).collect();
                    let _ =
                        writeln!(svg, "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>", points.join(" "));
                }
                for (offset, point) in run.iter().enumerate() {
                    // Long lines: a marker only where something fails (or stands alone), so the page stays light.
                    if !point.failing && count > MARKED_POINTS && run.len() > 1 {
                        continue;
                    }
                    let (fill, radius, class) = if point.failing { (FAIL_COLOUR, 4.5, "point fail") } else { (colour, 3.0, "point") };
                    let _ = writeln!(
                        svg,
                        "<circle class=\"{class}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"{radius}\" fill=\"{fill}\"><title>{}</title></circle>",
                        x(start + offset),
                        y(point.value),
                        xml_escape(&format!("{} {}", series.name, point.detail))
                    );
                }
                start += run.len() + 1;
            }
            for (index, point) in series.points.iter().enumerate() {
                let Some(name) = point.non_finite() else { continue };
                let marker_x = x(index);
                let _ = writeln!(
                svg,
                "<g class=\"non-finite\"><circle cx=\"{marker_x:.1}\" cy=\"{band_y:.1}\" r=\"6\" fill=\"#fff\" stroke=\"{FAIL_COLOUR}\" stroke-width=\"2\"/>\
                 <path d=\"M{:.1} {:.1}l6 6m0 -6l-6 6\" stroke=\"{FAIL_COLOUR}\" stroke-width=\"2\"/><title>{}</title></g>",
                marker_x - 3.0,
                band_y - 3.0,
                xml_escape(&format!("{} {}", series.name, point.detail))
            );
                if marker_x - 8.0 > named_up_to {
                    let _ = writeln!(
                    svg,
                    "<text class=\"non-finite-name\" x=\"{:.1}\" y=\"{:.1}\" font-size=\"{FONT_SIZE}\" font-weight=\"600\" fill=\"{FAIL_COLOUR}\">{}</text>",
                    marker_x + 9.0,
                    band_y + 4.0,
                    xml_escape(&name)
                );
                    named_up_to = marker_x + 9.0 + name.chars().count() as f64 * CHAR_WIDTH;
                }
            }
        }
    }
}

/// Explain's rows: each row's share of the processed-vs-unprocessed raw difference as a bar, with
/// what it does to log-probabilities beside it. Names sit above their bars: they can be long.
fn attribution(rows: &[StepRow]) -> String {
    const BAR_LEFT: f64 = 8.0;
    const BAR_WIDTH: f64 = 520.0;
    const ROW_HEIGHT: f64 = 40.0;
    let height = 32.0 + ROW_HEIGHT * rows.len() as f64;
    let width = BAR_LEFT + BAR_WIDTH + 300.0;
    let mut svg = format!(
        "<h2>Where the processed-vs-unprocessed difference comes from</h2>\n<div class=\"scroll\"><figure><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\">\n\
         <title>Share of the raw difference per processing step</title>\n\
         <text x=\"{BAR_LEFT}\" y=\"14\" font-size=\"12\" fill=\"#57606a\">share of the raw difference (smallest over prompts), 0–100%</text>\n\
         <text x=\"{:.1}\" y=\"14\" font-size=\"12\" fill=\"#57606a\">effect; log-softmax max |diff|</text>\n",
        BAR_LEFT + BAR_WIDTH + 12.0
    );
    for (index, row) in rows.iter().enumerate() {
        let top = 40.0 + ROW_HEIGHT * index as f64;
        let share = row.min_share_of_raw_difference.clamp(0.0, 1.0);
        let (effect, colour) = match row.logit_effect {
            LogitEffect::Unchanged => ("unchanged", COLOURS[4]),
            LogitEffect::PureShift => ("pure shift", COLOURS[0]),
            LogitEffect::ChangesDistribution => ("CHANGES DISTRIBUTION", FAIL_COLOUR),
        };
        let _ = writeln!(
            svg,
            "<text x=\"{BAR_LEFT}\" y=\"{:.1}\" font-size=\"12\">{}</text>\
             <rect x=\"{BAR_LEFT}\" y=\"{top:.1}\" width=\"{BAR_WIDTH}\" height=\"14\" fill=\"#eaeef2\"/>\
             <rect x=\"{BAR_LEFT}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"14\" fill=\"{colour}\"><title>{}: {:.4}%</title></rect>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"{colour}\">{:.2}% · {effect}; {}</text>",
            top - 4.0,
            xml_escape(&row.name),
            BAR_WIDTH * share,
            xml_escape(&row.name),
            100.0 * row.min_share_of_raw_difference,
            BAR_LEFT + BAR_WIDTH + 12.0,
            top + 11.0,
            100.0 * row.min_share_of_raw_difference,
            sci(row.log_softmax_max_abs_diff)
        );
    }
    svg.push_str("</svg>\n<figcaption>Each row is the model with those steps applied, against the unprocessed model (what <code>gpt2-parity explain</code> shows).</figcaption></figure></div>\n");
    svg
}

#[cfg(test)]
mod renderer_tests {
    use super::*;
    use crate::render::sample;

    /// Every line of the hand-built sample report, as src/render/expected/report.html has it
    /// (with the style sheet where it says `{STYLE}`).
    #[test]
    fn renders_the_sample_report_exactly() {
        let expected = include_str!("expected/report.html").replacen("{STYLE}", STYLE, 1);
        assert_eq!(Html.render(&sample::report()), expected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(value: f64, detail: &str) -> Point {
        Point { value, failing: false, detail: detail.to_owned(), non_finite_name: None }
    }

    #[test]
    fn x_labels_never_overlap_and_stay_inside_the_chart() {
        let snapshots = |blocks: usize| -> Vec<String> { (0..=blocks).map(snapshot_name).collect() };
        let positions = |count: usize| -> Vec<String> { (0..count).map(|position| position.to_string()).collect() };
        let sets: Vec<Vec<String>> =
            [2, 3, 12, 24, 36, 48].map(snapshots).into_iter().chain([1, 2, 6, 32, 50, 64, 100, 1024].map(positions)).collect();
        for labels in &sets {
            let spacing = if labels.len() > 1 { PLOT_WIDTH / (labels.len() - 1) as f64 } else { PLOT_WIDTH };
            let layout = XLabels::layout(labels, spacing);
            let width = |label: &String| label.chars().count() as f64 * CHAR_WIDTH;
            let drawn: Vec<(f64, f64)> = labels
                .iter()
                .enumerate()
                .step_by(layout.step)
                .map(|(index, label)| (LEFT + spacing * index as f64, width(label)))
                .collect();
            let case = format!("{} labels from {:?}: {layout:?}", labels.len(), labels[0]);
            for pair in drawn.windows(2) {
                let [(left_x, left_width), (right_x, right_width)] = [pair[0], pair[1]];
                if layout.slanted {
                    // Parallel lines at 45°: their distance apart is the x step times sin 45°.
                    assert!((right_x - left_x) * std::f64::consts::FRAC_1_SQRT_2 >= FONT_SIZE, "{case}");
                } else {
                    assert!(right_x - right_width / 2.0 >= left_x + left_width / 2.0 + 2.0, "{case}");
                }
            }
            let (first_x, first_width) = drawn[0];
            let (last_x, last_width) = drawn[drawn.len() - 1];
            if layout.slanted {
                assert!(first_x - first_width * std::f64::consts::FRAC_1_SQRT_2 >= 0.0, "{case}");
                assert!(layout.height >= first_width * std::f64::consts::FRAC_1_SQRT_2 + FONT_SIZE, "{case}");
            } else {
                assert!(first_x - first_width / 2.0 >= 0.0 && last_x + last_width / 2.0 <= WIDTH, "{case}");
            }
            assert!(drawn.len() >= labels.len().min(8), "{case}: enough labels to read the axis");
        }
        // GPT-2 small's 13 snapshots: every one is labelled, "embeddings" beside "h.0" included.
        assert_eq!(XLabels::layout(&snapshots(12), PLOT_WIDTH / 12.0).step, 1);
    }

    #[test]
    fn a_non_finite_point_sits_in_the_band_at_its_own_x_and_is_named() {
        let labels: Vec<String> = (0..5).map(|index| index.to_string()).collect();
        let mut nan = point(f64::NAN, "@2: reference NaN; 1 element");
        nan.non_finite_name = Some("NaN".to_owned());
        nan.failing = true;
        let series = [Series {
            name: "row".to_owned(),
            points: vec![point(1e-3, "@0"), point(1e-2, "@1"), nan, point(1e-1, "@3"), point(f64::INFINITY, "@4")],
        }];
        let chart = LogChart {
            class: "positions",
            title: "t",
            x_title: "position",
            labels: &labels,
            series: &series,
            threshold: Threshold { value: 1e-4, label: "atol".to_owned() },
            caption: "c",
        }
        .render();
        // x at 64 + 118 per label; the band's middle at 30 + 13; the plot, from 64 to 250, spans
        // 1e-4 (the threshold) to 1e-1, so 62 per decade.
        let band = |x: &str| format!("<g class=\"non-finite\"><circle cx=\"{x}\" cy=\"43.0\" r=\"6\"");
        assert!(chart.contains(&band("300.0")) && chart.contains(&band("536.0")), "{chart}");
        assert!(chart.contains("<title>row @2: reference NaN; 1 element</title></g>"), "{chart}");
        assert!(chart.contains(">NaN</text>") && chart.contains(">+Inf</text>"), "both named: {chart}");
        // The line stops at the NaN: 0-1 joined, 3 alone (a marker, no line), 4 in the band.
        assert!(chart.contains("<polyline points=\"64.0,188.0 182.0,126.0\""), "{chart}");
        assert_eq!(chart.matches("<polyline").count(), 1, "{chart}");
        assert!(chart.contains("<circle class=\"point\" cx=\"418.0\" cy=\"64.0\""), "{chart}");
        assert!(!chart.contains("cx=\"300.0\" cy=\"64.0\""), "the NaN is not drawn on the axis top: {chart}");
        assert!(chart.contains("class=\"threshold\" x1=\"64\" y1=\"250.0\""), "{chart}");
    }
}
