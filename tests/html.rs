//! The HTML page (`--html`) says what the JSON says, where a reader looks: NaN and Inf marked at
//! their position and named, shift-free rows plotted shift-free, the residual chart on its
//! criterion's scale, failing prompts linked from the verdict banner, and a page usable on a
//! phone (viewport, tables scrolling in their own box, numbers kept whole, prompt whitespace kept).
//! Faults are planted in copies of the fixture reference; the page is read back as XML.
mod common;

use common::{fixture_dir, fixture_reference, gpt2_parity, EditableSafetensors};
use roxmltree::{Document, Node};
use serde_json::Value;
use tempfile::TempDir;

const VOCAB: usize = 50257;

/// The JSON report and the HTML page of one compare run against an edited fixture reference.
struct Run {
    code: Option<i32>,
    report: Value,
    html: String,
}

fn run_against(edit: impl FnOnce(&mut EditableSafetensors)) -> Run {
    let dir = TempDir::new().unwrap();
    let mut reference = EditableSafetensors::read(&fixture_reference());
    edit(&mut reference);
    let path = dir.path().join("reference.safetensors");
    reference.write(&path);
    let (json, html) = (dir.path().join("report.json"), dir.path().join("report.html"));
    let output = gpt2_parity()
        .arg("compare")
        .arg("--model")
        .arg(fixture_dir())
        .arg("--reference")
        .arg(&path)
        .args(["--format", "json", "--output"])
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    Run {
        code: output.status.code(),
        report: serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap(),
        html: std::fs::read_to_string(&html).unwrap(),
    }
}

/// Sets one logit of the reference: prompt, position, vocabulary id.
fn set_logit(reference: &mut EditableSafetensors, (prompt, position, token): (usize, usize, usize), value: f32) {
    reference.map_f32(&format!("prompt.{prompt}.logits"), |index, old| if index == position * VOCAB + token { value } else { old });
}

fn parse(html: &str) -> Document<'_> {
    let options = roxmltree::ParsingOptions { allow_dtd: true, ..roxmltree::ParsingOptions::default() };
    Document::parse_with_options(html, options).unwrap_or_else(|error| panic!("the page is not well-formed ({error})"))
}

fn has_class(node: Node, class: &str) -> bool {
    node.attribute("class").is_some_and(|classes| classes.split(' ').any(|name| name == class))
}

fn text_of(node: Node) -> String {
    node.descendants().filter(|node| node.is_text()).filter_map(|node| node.text()).collect()
}

fn number(node: Node, attribute: &str) -> f64 {
    node.attribute(attribute).unwrap_or_else(|| panic!("no {attribute} on {node:?}")).parse().unwrap()
}

fn section<'a, 'input>(document: &'a Document<'input>, prompt: usize) -> Node<'a, 'input> {
    let id = format!("prompt-{prompt}");
    document.descendants().find(|node| node.attribute("id") == Some(id.as_str())).unwrap_or_else(|| panic!("no section {id}"))
}

/// The chart of class `class` ("positions" or "residual") in a prompt's section.
fn chart<'a, 'input>(section: Node<'a, 'input>, class: &str) -> Node<'a, 'input> {
    section.descendants().find(|node| node.has_tag_name("svg") && has_class(*node, class)).unwrap_or_else(|| panic!("no {class} chart"))
}

/// A chart's point markers: (x, y, red, tooltip).
fn points(chart: Node) -> Vec<(f64, f64, bool, String)> {
    chart
        .descendants()
        .filter(|node| node.has_tag_name("circle") && has_class(*node, "point"))
        .map(|node| (number(node, "cx"), number(node, "cy"), has_class(node, "fail"), text_of(node)))
        .collect()
}

/// A chart's NaN/Inf markers: (x, y, tooltip).
fn non_finite_markers(chart: Node) -> Vec<(f64, f64, String)> {
    chart
        .descendants()
        .filter(|node| has_class(*node, "non-finite"))
        .map(|group| {
            let circle = group.children().find(|node| node.has_tag_name("circle")).expect("a marker's ring");
            (number(circle, "cx"), number(circle, "cy"), text_of(group))
        })
        .collect()
}

fn x_of_label(chart: Node, label: &str) -> f64 {
    let node = chart
        .descendants()
        .find(|node| has_class(*node, "x-label") && node.text() == Some(label))
        .unwrap_or_else(|| panic!("no x label {label}"));
    number(node, "x")
}

fn threshold_y(chart: Node) -> f64 {
    number(chart.descendants().find(|node| has_class(*node, "threshold")).expect("a threshold line"), "y1")
}

fn comparison<'a>(report: &'a Value, prompt: usize, name: &str) -> &'a Value {
    report["prompts"][prompt]["comparisons"].as_array().unwrap().iter().find(|row| row["name"] == name).unwrap()
}

#[test]
fn nan_and_inf_are_marked_at_their_position_and_named() {
    // (prompt, position, vocabulary id), the value, and the name the page must give it.
    let planted =
        [((7, 1, 7), f32::NAN, "NaN", "nan"), ((4, 3, 9), f32::INFINITY, "+Inf", "+inf"), ((2, 5, 11), f32::NEG_INFINITY, "-Inf", "-inf")];
    let run = run_against(|reference| {
        for (at, value, _, _) in planted {
            set_logit(reference, at, value);
        }
    });
    assert_eq!(run.code, Some(1));
    let document = parse(&run.html);
    for ((prompt, position, _), _, name, json_name) in planted {
        for row in ["unprocessed-vs-reference", "processed-vs-reference"] {
            let comparison = comparison(&run.report, prompt, row);
            assert_eq!(comparison["positions_outside"], serde_json::json!([position]), "{row} of prompt {prompt}");
            let expected = serde_json::json!([{"position": position, "elements": 1, "candidate": [], "reference": [json_name]}]);
            assert_eq!(comparison["non_finite_positions"], expected, "{row} of prompt {prompt}");
            assert!(
                comparison["position_max_abs_diff"][position].is_null() && comparison["position_centered_max_abs_diff"][position].is_null()
            );
        }
        assert_eq!(comparison(&run.report, prompt, "processed-vs-unprocessed")["non_finite_positions"], serde_json::json!([]));

        let section = section(&document, prompt);
        let positions = chart(section, "positions");
        let x = x_of_label(positions, &position.to_string());
        let markers = non_finite_markers(positions);
        assert_eq!(markers.len(), 2, "one marker per comparison against the reference: {markers:?}");
        let lowest_point = points(positions).iter().map(|point| point.1).fold(f64::INFINITY, f64::min);
        for (marker_x, marker_y, tooltip) in &markers {
            assert_eq!(*marker_x, x, "at position {position}: {tooltip}");
            assert!(*marker_y < lowest_point.min(threshold_y(positions)), "in the band above the plot, not on its scale: {tooltip}");
            assert!(tooltip.ends_with(&format!("@{position}: reference {name}; 1 element")), "{tooltip}");
        }
        let names: Vec<String> = positions.descendants().filter(|node| has_class(*node, "non-finite-name")).map(text_of).collect();
        assert_eq!(names, [name], "named once beside the markers");
        for (point_x, _, _, tooltip) in points(positions) {
            assert!(point_x != x || tooltip.starts_with("processed-vs-unprocessed"), "drawn as a healthy value: {tooltip}");
        }
        // The tables name it too: the prompts overview and the prompt's own table.
        let overview_row = document
            .descendants()
            .find(|node| node.has_tag_name("tr") && node.descendants().any(|a| a.attribute("href") == Some(&format!("#prompt-{prompt}"))))
            .unwrap();
        let cells: Vec<String> = overview_row.children().filter(|node| node.has_tag_name("td")).map(text_of).collect();
        assert_eq!(cells[2..4], [format!("{name} @{position}"), format!("{name} @{position}")], "{cells:?}");
        let table = section.descendants().find(|node| node.has_tag_name("table")).unwrap();
        assert_eq!(text_of(table).matches(&format!("{name}@{position} ")).count(), 2, "{}", text_of(table));
    }
}

#[test]
fn shift_free_rows_are_plotted_from_centered_data() {
    // Prompt 7 (32 tokens): position 1 shifted by 0.5 over the whole vocabulary, which only the
    // raw rows see, and a real 0.01 fault at position 2, which both see.
    let run = run_against(|reference| {
        reference.map_f32("prompt.6.logits", |index, value| match index {
            index if index / VOCAB == 1 => value + 0.5,
            index if index == 2 * VOCAB + 123 => value + 0.01,
            _ => value,
        })
    });
    assert_eq!(run.code, Some(1));
    let shift_free = comparison(&run.report, 6, "processed-vs-reference");
    assert_eq!(shift_free["criterion"], "shift_invariant");
    assert_eq!(shift_free["positions_outside"], serde_json::json!([2]));
    assert_eq!(comparison(&run.report, 6, "unprocessed-vs-reference")["positions_outside"], serde_json::json!([1, 2]));
    let centered: Vec<f64> = shift_free["position_centered_max_abs_diff"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let raw: Vec<f64> = shift_free["position_max_abs_diff"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(raw[1] > 0.4 && centered[1] < 1e-4, "the data tells the shift from the fault: raw {} centered {}", raw[1], centered[1]);

    let document = parse(&run.html);
    let positions = chart(section(&document, 6), "positions");
    let series = |name: &str| -> Vec<(f64, f64, bool, String)> {
        points(positions).into_iter().filter(|point| point.3.starts_with(&format!("{name} @"))).collect()
    };
    let plotted = series("processed-vs-reference (shift-free)");
    let tooltips: Vec<&str> = plotted.iter().map(|point| point.3.as_str()).collect();
    let expected: Vec<String> = centered
        .iter()
        .enumerate()
        .map(|(position, value)| format!("processed-vs-reference (shift-free) @{position}: {value:.2e}"))
        .collect();
    assert_eq!(tooltips, expected, "every position, centered");
    let red: Vec<&str> = plotted.iter().filter(|point| point.2).map(|point| point.3.as_str()).collect();
    assert_eq!(red.len(), 1, "{red:?}");
    assert!(red[0].contains(" @2: "), "{red:?}");
    // At position 1 the shift-free row sits below the atol line, the raw row above it.
    let line = threshold_y(positions);
    let unprocessed = series("unprocessed-vs-reference");
    assert!(plotted[1].1 > line && unprocessed[1].1 < line && unprocessed[1].2, "{:?} / {:?}", plotted[1], unprocessed[1]);
}

#[test]
fn the_residual_chart_draws_each_side_against_the_rounding_envelope_red_where_it_leaves_it() {
    // Prompt 1's residual stream [snapshots 4, positions 2, d_model 32]: one value of snapshot 2
    // (the output of h.1) moved by 0.5. Snapshot 3 was computed from the unmoved value, so h.2 on
    // the reference's own (moved) input no longer gives it: the block-by-block view sees both.
    let run =
        run_against(|reference| reference.map_f32("prompt.0.resid", |index, value| if index == 2 * 64 + 5 { value + 0.5 } else { value }));
    let document = parse(&run.html);
    let residual = chart(section(&document, 0), "residual");
    let line = threshold_y(residual);
    let drawn = points(residual);
    let row = comparison(&run.report, 0, "unprocessed-vs-reference");
    let factor = row["rounding"]["factor"].as_f64().unwrap();
    let passed: Vec<bool> = row["resid"].as_array().unwrap().iter().map(|snapshot| snapshot["passed"].as_bool().unwrap()).collect();
    assert_eq!(passed, [true, true, false, false], "{row}");
    for (which, expected_red) in [("candidate", [false; 4]), ("reference", [false, false, true, true])] {
        let side = &row["rounding"][which];
        let name = side["side"].as_str().unwrap();
        let own: Vec<&(f64, f64, bool, String)> = drawn.iter().filter(|point| point.3.starts_with(&format!("{name} "))).collect();
        assert_eq!(own.len(), 4, "{name}: one point per snapshot: {drawn:?}");
        for (index, point) in own.iter().enumerate() {
            let whole = side["snapshots"][index].as_f64().unwrap();
            let each_block = side["each_block"].get(index).and_then(Value::as_f64).unwrap_or(whole);
            let drawn_value = whole.max(each_block);
            assert_eq!(drawn_value > factor, expected_red[index], "{name} @{index}: {side}");
            assert_eq!(point.2, expected_red[index], "red exactly where the side leaves the envelope: {point:?}");
            assert_eq!(point.1 < line, expected_red[index], "above the {factor}x line exactly there: {point:?}, line at {line}");
        }
    }
    let caption = text_of(residual.parent().unwrap());
    assert!(caption.contains("multiple of how far our own float32"), "{caption}");
}

#[test]
fn failing_prompts_are_linked_from_the_banner() {
    let run = run_against(|reference| {
        set_logit(reference, (2, 0, 123), 5.0);
        set_logit(reference, (5, 0, 123), 5.0);
    });
    assert_eq!(run.code, Some(1));
    let document = parse(&run.html);
    let header = document.descendants().find(|node| node.has_tag_name("header")).unwrap();
    assert!(text_of(header).starts_with("FAILFAIL: "), "{}", text_of(header));
    let links: Vec<&str> = header.descendants().filter_map(|node| node.attribute("href")).collect();
    assert_eq!(links, ["#prompt-2", "#prompt-5"]);
    for prompt in [2, 5] {
        let heading = section(&document, prompt).children().find(|node| node.has_tag_name("h2")).unwrap();
        assert!(text_of(heading).ends_with("— FAIL"), "{}", text_of(heading));
    }

    let passing = run_against(|_| {});
    assert_eq!(passing.code, Some(0));
    let document = parse(&passing.html);
    let header = document.descendants().find(|node| node.has_tag_name("header")).unwrap();
    assert!(header.descendants().all(|node| node.attribute("href").is_none()), "nothing to link on a pass");
}

#[test]
fn the_page_fits_a_phone_and_keeps_prompt_whitespace() {
    let run = run_against(|_| {});
    let document = parse(&run.html);
    let viewport = document.descendants().find(|node| node.has_tag_name("meta") && node.attribute("name") == Some("viewport"));
    assert_eq!(viewport.and_then(|node| node.attribute("content")), Some("width=device-width, initial-scale=1"));
    let style = text_of(document.descendants().find(|node| node.has_tag_name("style")).unwrap());
    for rule in [
        ".scroll { overflow-x: auto;",
        "td.num, .nowrap { white-space: nowrap; }",
        ".prompt { white-space: pre-wrap;",
        ".charts svg { max-width: 100%;",
    ] {
        assert!(style.contains(rule), "the style lacks {rule}");
    }
    for table in document.descendants().filter(|node| node.has_tag_name("table")) {
        assert!(table.parent().is_some_and(|parent| has_class(parent, "scroll")), "a table outside a scrolling box");
    }
    // Each line of a prompt table's cell is kept whole: "1.23e-6" never breaks at its "-".
    let section = section(&document, 0);
    let table = section.descendants().find(|node| node.has_tag_name("table")).unwrap();
    for cell in table.descendants().filter(|node| node.has_tag_name("td")) {
        for text in cell.descendants().filter(|node| node.is_text() && !node.text().unwrap().is_empty()) {
            assert!(text.parent().is_some_and(|parent| has_class(parent, "nowrap")), "{:?} may wrap", text.text());
        }
    }
    // Every prompt's text as it is, runs of spaces, tabs and line breaks included.
    for (index, prompt) in run.report["prompts"].as_array().unwrap().iter().enumerate() {
        let shown = self::section(&document, index).descendants().find(|node| has_class(*node, "prompt")).map(text_of);
        assert_eq!(shown.as_deref(), prompt["prompt"].as_str(), "prompt {index}");
    }
    assert!(run.report["prompts"].as_array().unwrap().iter().any(|prompt| prompt["prompt"].as_str().unwrap().starts_with("   ")));
}
