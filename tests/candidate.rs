//! `compare --candidate`: another implementation's logits, written with scripts/write_candidate.py
//! from tests/support/numpy_port.py (a float64 numpy GPT-2 that shares no code with the tool), and
//! the extra outputs (JUnit, HTML, markdown, GitHub's job summary) read back with real parsers.
mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::{fixture_dir, fixture_reference, gpt2_parity, json_stdout, python, EditableSafetensors};
use serde_json::Value;
use tempfile::TempDir;

const PROMPTS: usize = 8;
const BLOCKS: usize = 3;

/// Writes a candidate for every prompt of the fixture reference with the numpy port.
fn write_candidate(dir: &TempDir, port_args: &[&str]) -> PathBuf {
    let output = dir.path().join("candidate.safetensors");
    let (model, reference) = (fixture_dir(), fixture_reference());
    let paths = [OsStr::new("--model"), model.as_os_str(), OsStr::new("--reference"), reference.as_os_str(), OsStr::new("--output")];
    python("tests/support/numpy_port.py", paths.into_iter().chain([output.as_os_str()]).chain(port_args.iter().map(OsStr::new)));
    output
}

fn compare_candidate(candidate: &Path) -> assert_cmd::Command {
    let mut command = gpt2_parity();
    command.arg("compare").arg("--model").arg(fixture_dir()).arg("--reference").arg(fixture_reference()).arg("--candidate").arg(candidate);
    command
}

#[test]
fn a_matching_candidate_passes_on_every_prompt_and_block() {
    let dir = TempDir::new().unwrap();
    let candidate = write_candidate(&dir, &[]);
    let output = compare_candidate(&candidate).args(["--format", "json"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report = json_stdout(&output);
    assert_eq!(report["candidate"]["model"], "numpy port");
    assert_eq!(report["candidate"]["producer"]["port"], "tests/support/numpy_port.py");
    let prompts = report["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), PROMPTS, "every prompt the candidate holds");
    for prompt in prompts {
        let comparisons = prompt["comparisons"].as_array().unwrap();
        assert_eq!(comparisons.len(), 1, "the candidate replaces our two models: {prompt}");
        let row = &comparisons[0];
        assert_eq!(row["name"], "candidate-vs-reference");
        assert_eq!(row["passed"], true);
        // float64 numpy against float32 torch on logits of size ~1: a few float32 ulps.
        assert!(row["max_abs_diff"].as_f64().unwrap() < 1e-5, "{row}");
        let resid = row["resid"].as_array().unwrap();
        assert_eq!(resid.len(), BLOCKS + 1);
        assert!(resid.iter().all(|snapshot| snapshot["passed"] == true), "{row}");
        assert_eq!(row["position_max_abs_diff"].as_array().unwrap().len(), prompt["tokens"].as_array().unwrap().len());
    }
}

/// A fault planted in block h.1 of the port: the report names that block, and every extra output
/// carries the failure with its numbers.
#[test]
fn a_fault_in_one_block_is_localised_and_every_output_shows_it() {
    let dir = TempDir::new().unwrap();
    let candidate = write_candidate(&dir, &["--fault-block", "1"]);
    let [junit, html, markdown, summary] = ["junit.xml", "report.html", "comment.md", "step-summary.md"].map(|name| dir.path().join(name));
    std::fs::write(&summary, "# an earlier step\n").unwrap();
    let output = compare_candidate(&candidate)
        .args(["--format", "json", "--junit"])
        .arg(&junit)
        .arg("--html")
        .arg(&html)
        .arg("--markdown")
        .arg(&markdown)
        .env("GITHUB_STEP_SUMMARY", &summary)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
    let report = json_stdout(&output);
    assert_eq!(report["passed"], false);
    for prompt in report["prompts"].as_array().unwrap() {
        let row = &prompt["comparisons"][0];
        assert_eq!(row["passed"], false, "{row}");
        let passed: Vec<bool> = row["resid"].as_array().unwrap().iter().map(|snapshot| snapshot["passed"].as_bool().unwrap()).collect();
        assert_eq!(passed, [true, true, false, false], "embeddings and h.0 agree, h.1 and after do not");
        let notes = prompt["notes"].to_string();
        assert!(notes.contains("first diverges at the output of block h.1"), "{notes}");
    }

    check_junit(&std::fs::read_to_string(&junit).unwrap(), &report);
    check_html(&std::fs::read_to_string(&html).unwrap(), &report);
    let comment = std::fs::read_to_string(&markdown).unwrap();
    assert!(comment.contains("FAIL") && comment.contains("block h.1"), "{comment}");
    let summary = std::fs::read_to_string(&summary).unwrap();
    assert_eq!(summary, format!("# an earlier step\n{comment}"), "the job summary gets the same markdown, appended");
}

/// One testcase per prompt and comparison; each failure names max |diff| and where, the
/// criterion, the tolerance and the likely cause (here: the first divergent block).
fn check_junit(xml: &str, report: &Value) {
    let document = roxmltree::Document::parse(xml).unwrap_or_else(|error| panic!("JUnit is not XML ({error}):\n{xml}"));
    let suites = document.root_element();
    assert_eq!(suites.tag_name().name(), "testsuites");
    assert_eq!(suites.attribute("tests"), Some("8"));
    assert_eq!(suites.attribute("failures"), Some("8"));
    let cases: Vec<_> = document.descendants().filter(|node| node.has_tag_name("testcase")).collect();
    assert_eq!(cases.len(), PROMPTS);
    for (case, prompt) in cases.iter().zip(report["prompts"].as_array().unwrap()) {
        assert_eq!(case.attribute("classname"), Some("gpt2-parity.candidate-vs-reference"));
        let text = prompt["prompt"].as_str().unwrap();
        let shown: String = text.chars().take(40).collect();
        let shown = format!("{shown:?}").trim_end_matches('"').to_owned();
        assert!(case.attribute("name").unwrap().contains(&shown), "{:?} names {shown}", case.attribute("name"));
        let failure = case.children().find(|node| node.has_tag_name("failure")).expect("a failure element");
        let row = &prompt["comparisons"][0];
        let message = failure.attribute("message").unwrap();
        let worst = format!("raw |diff| {:.2e} @{} ", row["worst_abs_diff"].as_f64().unwrap(), row["max_abs_diff_at"]["position"]);
        assert!(message.starts_with(&worst), "{message} does not lead with {worst}");
        assert!(message.contains("atol 1e-4, rtol 1e-5"), "{message}");
        let body = failure.text().unwrap();
        assert!(body.contains("first diverges at the output of block h.1"), "{body}");
    }
}

/// Well-formed (XHTML, parsed as XML), self-contained, and holding each prompt's numbers and charts.
fn check_html(html: &str, report: &Value) {
    let options = roxmltree::ParsingOptions { allow_dtd: true, ..roxmltree::ParsingOptions::default() };
    let document =
        roxmltree::Document::parse_with_options(html, options).unwrap_or_else(|error| panic!("the page is not well-formed ({error})"));
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "html");
    for node in document.descendants() {
        for attribute in node.attributes() {
            let external = matches!(attribute.name(), "src" | "href") && !attribute.value().starts_with('#');
            assert!(!external, "external reference {}={}", attribute.name(), attribute.value());
        }
        assert!(!node.has_tag_name("script"), "no scripts");
    }
    let svgs: Vec<_> = document.descendants().filter(|node| node.tag_name().name() == "svg").collect();
    assert_eq!(svgs.len(), 2 * PROMPTS, "a residual-stream chart and a per-position chart per prompt");
    let text: String = document.descendants().filter_map(|node| node.text()).collect();
    assert!(text.contains("FAIL"));
    for prompt in report["prompts"].as_array().unwrap() {
        let row = &prompt["comparisons"][0];
        assert!(text.contains(&format!("{:.2e}", row["max_abs_diff"].as_f64().unwrap())), "the page lacks {row}");
        // Each snapshot's distance from float64, in multiples of float32 rounding end to end, is a
        // point of the residual-stream chart (the rounding envelope judges the residual stream).
        for multiple in row["rounding"]["candidate"]["snapshots"].as_array().unwrap() {
            let multiple = multiple.as_f64().unwrap();
            let shown = if multiple >= 10.0 { format!("{multiple:.0}x") } else { format!("{multiple:.1}x") };
            assert!(text.contains(&format!("{shown} rounding end to end")), "the chart lacks {shown}");
        }
    }
}

#[test]
fn a_candidate_without_a_residual_stream_is_judged_on_its_logits() {
    let dir = TempDir::new().unwrap();
    let candidate = write_candidate(&dir, &["--no-resid", "--fault-block", "2"]);
    let output = compare_candidate(&candidate).args(["--format", "json", "Hello World"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let row = &json_stdout(&output)["prompts"][0]["comparisons"][0];
    assert!(row.get("resid").is_none(), "{row}");
    assert_eq!(row["passed"], false);
}

#[test]
fn a_candidate_with_other_tokens_is_refused() {
    let dir = TempDir::new().unwrap();
    let candidate = write_candidate(&dir, &[]);
    let mut edited = EditableSafetensors::read(&candidate);
    edited.set_i64("prompt.0.tokens", &[15496, 2160]);
    edited.write(&candidate);
    let output = compare_candidate(&candidate).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("candidate") && stderr.contains("[15496, 2160]") && stderr.contains("[15496, 2159]"), "{stderr}");
}

/// The last prompt is read on the read-ahead thread while the others are compared: its error
/// still ends the run with the one line, and no report.
#[test]
fn a_candidate_with_other_tokens_in_its_last_prompt_is_refused() {
    let dir = TempDir::new().unwrap();
    let candidate = write_candidate(&dir, &[]);
    let mut edited = EditableSafetensors::read(&candidate);
    let name = format!("prompt.{}.tokens", PROMPTS - 1);
    let mut tokens: Vec<i64> = edited.tensors[&name].2.chunks_exact(8).map(|bytes| i64::from_le_bytes(bytes.try_into().unwrap())).collect();
    tokens[0] = if tokens[0] == 11 { 13 } else { 11 };
    edited.set_i64(&name, &tokens);
    edited.write(&candidate);
    let output = compare_candidate(&candidate).args(["--format", "json"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty(), "no report: {}", String::from_utf8_lossy(&output.stdout));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("candidate") && stderr.contains(&format!("{tokens:?}")), "{stderr}");
}

#[test]
fn output_paths_are_checked_before_any_work() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("no-such-dir/junit.xml");
    let output = gpt2_parity().args(["compare", "--model", "no-such-model", "--junit"]).arg(&missing).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no-such-dir") && stderr.contains("--junit"), "{stderr}");

    let same = dir.path().join("report");
    let output =
        gpt2_parity().args(["compare", "--model", "no-such-model", "--output"]).arg(&same).arg("--html").arg(&same).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--output and --html both name"), "{stderr}");
}
