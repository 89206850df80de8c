//! One self-contained HTML page (XHTML syntax, so any XML parser can check it): the summary,
//! per-prompt tables, and inline SVG charts of the error along the residual stream, per
//! position, and per processing step. No scripts, no network, no external assets. Charts lay
//! out numbers the report already holds; nothing is computed here but pixel positions.
use std::fmt::Write;

use super::cells::comparison_grid;
use super::{count_of, prompt_label, snapshot_name, xml_escape, Report};
use crate::compare::attribution::{LogitEffect, StepRow};
use crate::compare::diagnose::sci;
use crate::compare::Comparison;

const STYLE: &str = "
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 24px 48px; color: #1b1f24; }
header { margin: 24px 0 8px; padding: 16px 20px; border-radius: 8px; color: #fff; }
header.pass { background: #1a7f37; } header.fail { background: #cf222e; }
header h1 { margin: 0; font-size: 28px; } header p { margin: 4px 0 0; font-size: 16px; }
h2 { margin-top: 32px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.fail td, td.fail { background: #ffebe9; } td.pass { color: #1a7f37; }
.notes { background: #fff8c5; border-left: 4px solid #d4a72c; padding: 6px 12px; margin: 8px 0; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; } figcaption { font-size: 12px; color: #57606a; max-width: 560px; }
code { font-size: 12px; background: #f6f8fa; padding: 1px 4px; border-radius: 4px; }
";

/// Series colours, in comparison order; red is kept for failing points.
const COLOURS: [&str; 5] = ["#0969da", "#8250df", "#bf8700", "#1b7c83", "#57606a"];
const FAIL_COLOUR: &str = "#cf222e";

pub fn render(report: &Report) -> String {
    let verdict = if report.passed { "pass" } else { "fail" };
    let mut page = format!(
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n\
         <title>gpt2-parity: {summary}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <header class=\"{verdict}\"><h1>{title}</h1><p>{summary}</p></header>\n",
        summary = xml_escape(&report.verdict_line()),
        title = verdict.to_uppercase(),
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
            "<section id=\"prompt-{index}\">\n<h2>{} — {status}</h2>\n<p>{}: <code>{:?}</code></p>\n",
            xml_escape(&prompt_label(report, index)),
            count_of(prompt.tokens.len(), "token"),
            prompt.tokens
        );
        page.push_str(&comparisons(&prompt.comparisons));
        for note in &prompt.notes {
            let _ = writeln!(page, "<p class=\"notes\">{}</p>", xml_escape(note));
        }
        page.push_str("<div class=\"charts\">\n");
        page.push_str(&residual_chart(&prompt.comparisons, report.tolerance.atol));
        page.push_str(&position_chart(&prompt.comparisons, report.tolerance.atol));
        page.push_str("</div>\n</section>\n");
    }
    let _ =
        write!(page, "<footer><p>{} {}</p></footer>\n</body>\n</html>\n", xml_escape(&report.tool.name), xml_escape(&report.tool.version));
    page
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
    let mut out = String::from("<h2>Run</h2>\n<table>\n");
    for (name, value) in rows {
        let _ = writeln!(out, "<tr><th>{name}</th><td>{}</td></tr>", xml_escape(&value));
    }
    out.push_str("</table>\n");
    out
}

/// One row per prompt with its verdict and each comparison's worst |diff| under its criterion
/// (centered for shift-free rows, as the verdict judges it), then the worst elements.
fn overview(report: &Report) -> String {
    let names: Vec<&str> = report.worst.iter().map(|worst| worst.comparison.as_str()).collect();
    let mut out = String::from("<h2>Prompts</h2>\n<table>\n<tr><th>prompt</th><th>verdict</th>");
    for name in &names {
        let _ = write!(out, "<th>{} worst |diff|</th>", xml_escape(name));
    }
    out.push_str("</tr>\n");
    for (index, prompt) in report.prompts.iter().enumerate() {
        let (class, verdict) = if prompt.passed { ("pass", "pass") } else { ("fail", "FAIL") };
        let _ = write!(
            out,
            "<tr class=\"{class}\"><td><a href=\"#prompt-{index}\">{}</a></td><td class=\"{class}\">{verdict}</td>",
            xml_escape(&prompt_label(report, index))
        );
        for name in &names {
            match prompt.comparisons.iter().find(|comparison| comparison.name == *name) {
                Some(comparison) => {
                    let class = if comparison.passed { "num" } else { "num fail" };
                    let _ = write!(out, "<td class=\"{class}\">{}</td>", sci(comparison.worst_abs_diff));
                }
                None => out.push_str("<td></td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n<h2>Worst elements</h2>\n<table>\n<tr><th>comparison</th><th>|diff|</th><th>prompt</th><th>position</th><th>token</th></tr>\n");
    for worst in &report.worst {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td><code>{}</code></td></tr>",
            xml_escape(&worst.comparison),
            sci(worst.abs_diff),
            xml_escape(&format!("{:?}", crate::tokenize::abbreviate(&worst.prompt))),
            worst.position,
            xml_escape(&crate::tokenize::token_with_id(worst.token_id, &worst.token))
        );
    }
    out.push_str("</table>\n");
    out
}

fn comparisons(comparisons: &[Comparison]) -> String {
    let grid = comparison_grid(comparisons, false);
    let mut out = String::from("<table>\n<tr>");
    for column in &grid.columns {
        let _ = write!(out, "<th>{}</th>", xml_escape(&column.header.replace('\n', " ")));
    }
    out.push_str("</tr>\n");
    for (cells, comparison) in grid.rows.iter().zip(comparisons) {
        let class = if comparison.passed { "" } else { " class=\"fail\"" };
        let _ = write!(out, "<tr{class}>");
        for cell in cells {
            let _ = write!(out, "<td>{}</td>", xml_escape(&cell.text.replace('\n', " ")));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

/// One line per comparison: max |diff| of each residual snapshot (embeddings, then each block's output).
fn residual_chart(comparisons: &[Comparison], atol: f64) -> String {
    let series: Vec<Series> = comparisons
        .iter()
        .filter_map(|comparison| {
            let resid = comparison.resid.as_ref()?;
            Some(Series {
                name: &comparison.name,
                values: resid.iter().map(|snapshot| snapshot.max_abs_diff).collect(),
                failing: resid.iter().map(|snapshot| snapshot.passed == Some(false)).collect(),
            })
        })
        .collect();
    let Some(first) = comparisons.iter().find_map(|comparison| comparison.resid.as_ref()) else {
        return "<p>No residual stream in the reference (or the candidate): no per-block chart.</p>\n".to_owned();
    };
    let labels: Vec<String> = first.iter().map(|snapshot| snapshot_name(snapshot.index)).collect();
    log_chart("Max |diff| along the residual stream", "residual stream after", &labels, &series, atol)
}

/// One line per comparison: max |diff| over the vocabulary at each position.
fn position_chart(comparisons: &[Comparison], atol: f64) -> String {
    let series: Vec<Series> = comparisons
        .iter()
        .map(|comparison| Series {
            name: &comparison.name,
            values: comparison.position_max_abs_diff.clone(),
            failing: (0..comparison.position_max_abs_diff.len()).map(|position| comparison.positions_outside.contains(&position)).collect(),
        })
        .collect();
    let positions = comparisons.iter().map(|comparison| comparison.position_max_abs_diff.len()).max().unwrap_or(0);
    let labels: Vec<String> = (0..positions).map(|position| position.to_string()).collect();
    log_chart("Max |logit diff| per position (raw)", "position", &labels, &series, atol)
}

struct Series<'a> {
    name: &'a str,
    values: Vec<f64>,
    /// Points outside tolerance, drawn in red.
    failing: Vec<bool>,
}

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 44.0;
/// Up to this many points per line, every point gets a marker with its value as tooltip.
const MARKED_POINTS: usize = 64;

/// A line chart on a log scale with a dashed line at atol. Zeros sit on the bottom edge;
/// NaN and ±Inf on the top edge, in red. Each point's exact value is its tooltip.
fn log_chart(title: &str, x_title: &str, labels: &[String], series: &[Series], atol: f64) -> String {
    let finite_positive = series.iter().flat_map(|series| &series.values).copied().filter(|value| value.is_finite() && *value > 0.0);
    let (low, high) = finite_positive
        .chain([atol].into_iter().filter(|atol| *atol > 0.0))
        .fold((f64::INFINITY, 0.0f64), |(low, high), value| (low.min(value), high.max(value)));
    let (low, high) = if low.is_finite() { (low.log10().floor(), high.log10().ceil().max(low.log10().floor() + 1.0)) } else { (-8.0, 0.0) };
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let x = |index: usize| LEFT + if labels.len() > 1 { plot_width * index as f64 / (labels.len() - 1) as f64 } else { plot_width / 2.0 };
    let y = |value: f64| {
        if !value.is_finite() {
            TOP
        } else if value <= 0.0 {
            TOP + plot_height
        } else {
            TOP + plot_height * (1.0 - (value.log10().clamp(low, high) - low) / (high - low))
        }
    };
    let mut svg = format!(
        "<figure><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\">\n\
         <title>{title}</title>\n<rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#fff\"/>\n\
         <text x=\"{LEFT}\" y=\"16\" font-size=\"14\" font-weight=\"600\">{title}</text>\n",
        title = xml_escape(title)
    );
    for decade in (low as i32)..=(high as i32) {
        let tick_y = y(10f64.powi(decade));
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{tick_y:.1}\" x2=\"{:.1}\" y2=\"{tick_y:.1}\" stroke=\"#eaeef2\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">1e{decade}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            tick_y + 4.0
        );
    }
    let step = labels.len().div_ceil(16).max(1);
    for (index, label) in labels.iter().enumerate().step_by(step) {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            x(index),
            TOP + plot_height + 16.0,
            xml_escape(label)
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#57606a\">{}</text>",
        LEFT + plot_width / 2.0,
        HEIGHT - 6.0,
        xml_escape(x_title)
    );
    if atol > 0.0 {
        let atol_y = y(atol);
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{atol_y:.1}\" x2=\"{:.1}\" y2=\"{atol_y:.1}\" stroke=\"{FAIL_COLOUR}\" stroke-dasharray=\"5 4\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"{FAIL_COLOUR}\">atol {}</text>",
            WIDTH - RIGHT,
            WIDTH - RIGHT,
            atol_y - 4.0,
            sci(atol)
        );
    }
    for (number, series) in series.iter().enumerate() {
        let colour = COLOURS[number % COLOURS.len()];
        let points: Vec<String> =
            series.values.iter().enumerate().map(|(index, &value)| format!("{:.1},{:.1}", x(index), y(value))).collect();
        let _ = writeln!(svg, "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>", points.join(" "));
        for (index, &value) in series.values.iter().enumerate() {
            let failing = series.failing.get(index).copied().unwrap_or(false) || !value.is_finite();
            // Long prompts: a marker only where something fails, so the page stays light.
            if !failing && labels.len() > MARKED_POINTS {
                continue;
            }
            let (fill, radius) = if failing { (FAIL_COLOUR, 4.5) } else { (colour, 3.0) };
            let label = labels.get(index).map(String::as_str).unwrap_or("");
            let _ = writeln!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{radius}\" fill=\"{fill}\"><title>{}: {}, {}</title></circle>",
                x(index),
                y(value),
                xml_escape(series.name),
                xml_escape(label),
                sci(value)
            );
        }
    }
    svg.push_str("</svg>\n<figcaption>");
    for (number, series) in series.iter().enumerate() {
        let _ = write!(svg, "<span style=\"color:{}\">■</span> {} ", COLOURS[number % COLOURS.len()], xml_escape(series.name));
    }
    svg.push_str(
        "<br/>Log scale; red points are outside tolerance, the dashed line is atol. A shift-invariant row may sit above atol \
         and pass: its per-position shift is expected.</figcaption></figure>\n",
    );
    svg
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
        "<h2>Where the processed-vs-unprocessed difference comes from</h2>\n<figure><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\">\n\
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
    svg.push_str("</svg>\n<figcaption>Each row is the model with those steps applied, against the unprocessed model (what <code>gpt2-parity explain</code> shows).</figcaption></figure>\n");
    svg
}
