//! What a person reads: markdown that a CommonMark/GFM parser renders with every table and with
//! prompt text as text, tables that fit 100 columns, summary-first output for many prompts,
//! colour only on a terminal, and the small words (help, grammar).
mod common;

use std::path::{Path, PathBuf};

use common::{fixture_dir, fixture_reference, gpt2_parity, json_report, load_fixture, EditableSafetensors};
use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

const VOCAB: usize = 50257;

/// A reference for `prompts` made in-process from our own unprocessed forward of the fixture
/// (no Python): it passes, and it lets a test choose any prompt text.
fn reference_for(prompts: &[&str], path: &Path) {
    let fixture = load_fixture();
    let mut reference = EditableSafetensors::read(&fixture_reference());
    reference.tensors.clear();
    for (index, prompt) in prompts.iter().enumerate() {
        let tokens = fixture.tokenizer.encode(prompt, false, fixture.config.n_positions).unwrap();
        let activations = gpt2_parity::model::gpt2::forward(&fixture.weights, &tokens);
        let bytes = |tensor: &tch::Tensor| -> Vec<u8> {
            Vec::<f32>::try_from(&tensor.contiguous().view([-1])).unwrap().iter().flat_map(|v| v.to_le_bytes()).collect()
        };
        reference.set_i64(&format!("prompt.{index}.tokens"), &tokens);
        reference
            .tensors
            .insert(format!("prompt.{index}.logits"), (safetensors::Dtype::F32, vec![tokens.len(), VOCAB], bytes(&activations.logits)));
    }
    reference.metadata.insert("prompts".into(), serde_json::to_string(prompts).unwrap());
    reference.write(path);
}

/// The fixture reference's prompts repeated to `count`, one of them (index `faulty`) with a
/// logit raised: a many-prompt reference without Python.
fn many_prompts_reference(count: usize, faulty: usize, path: &Path) {
    let mut reference = EditableSafetensors::read(&fixture_reference());
    let held: Vec<String> = serde_json::from_str(&reference.metadata["prompts"]).unwrap();
    let originals = reference.tensors.clone();
    let prompts: Vec<&String> = (0..count).map(|index| &held[index % held.len()]).collect();
    for index in 0..count {
        for kind in ["tokens", "logits", "resid"] {
            let tensor = originals[&format!("prompt.{}.{kind}", index % held.len())].clone();
            reference.tensors.insert(format!("prompt.{index}.{kind}"), tensor);
        }
    }
    reference.map_f32(&format!("prompt.{faulty}.logits"), |index, value| if index == 123 { value + 0.01 } else { value });
    reference.metadata.insert("prompts".into(), serde_json::to_string(&prompts).unwrap());
    reference.write(path);
}

fn compare(reference: &Path, args: &[&str]) -> (Option<i32>, String) {
    let output =
        gpt2_parity().arg("compare").arg("--model").arg(fixture_dir()).arg("--reference").arg(reference).args(args).output().unwrap();
    (output.status.code(), String::from_utf8(output.stdout).unwrap())
}

struct Rendered {
    tables: usize,
    header_cells: Vec<usize>,
    headings: Vec<String>,
    code_spans: usize,
    html: usize,
}

fn render_markdown(text: &str) -> Rendered {
    let mut rendered = Rendered { tables: 0, header_cells: Vec::new(), headings: Vec::new(), code_spans: 0, html: 0 };
    let (mut in_heading, mut in_head, mut cells) = (false, false, 0);
    for event in Parser::new_ext(text, Options::ENABLE_TABLES) {
        match event {
            Event::Start(Tag::Table(_)) => rendered.tables += 1,
            Event::Start(Tag::TableHead) => (in_head, cells) = (true, 0),
            Event::Start(Tag::TableCell) if in_head => cells += 1,
            Event::End(TagEnd::TableHead) => {
                in_head = false;
                rendered.header_cells.push(cells);
            }
            Event::Start(Tag::Heading { .. }) => {
                in_heading = true;
                rendered.headings.push(String::new());
            }
            Event::End(TagEnd::Heading(_)) => in_heading = false,
            Event::Text(text) if in_heading => rendered.headings.last_mut().unwrap().push_str(&text),
            Event::Code(_) => rendered.code_spans += 1,
            // Line breaks inside cells are the one HTML the renderer writes.
            Event::Html(html) | Event::InlineHtml(html) if &*html != "<br>" => rendered.html += 1,
            _ => {}
        }
    }
    rendered
}

const MARKUP: &str = "a|b `c` <b>x</b> &*y* [l](u)";

#[test]
fn markdown_renders_every_table_with_prompt_text_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("markup.safetensors");
    reference_for(&[MARKUP, "line\nnext", "Hello World"], &path);
    let (code, markdown) = compare(&path, &["--format", "markdown"]);
    assert_eq!(code, Some(0), "{markdown}");
    let rendered = render_markdown(&markdown);
    assert_eq!(rendered.tables, 3, "one table per prompt:\n{markdown}");
    // comparison, worst, max raw, log-softmax, top-1, x rounding, verdict.
    assert!(rendered.header_cells.iter().all(|&cells| cells == 7), "{:?}", rendered.header_cells);
    assert_eq!(rendered.html, 0, "no prompt text becomes HTML:\n{markdown}");
    assert_eq!(rendered.code_spans, 3, "only the model, weights and reference are code:\n{markdown}");
    assert!(rendered.headings.iter().any(|heading| heading.contains(&format!("{MARKUP:?}"))), "{:?}", rendered.headings);
    assert!(rendered.headings.iter().any(|heading| heading.contains(r#""line\nnext""#)), "{:?}", rendered.headings);

    let (_, wide) = compare(&path, &["--format", "markdown", "--wide"]);
    assert!(render_markdown(&wide).header_cells.iter().all(|&cells| cells == 20), "{wide}");
}

#[test]
fn explain_markdown_renders_its_table() {
    let output = gpt2_parity().args(["explain", "Hello World", "--format", "markdown", "--model"]).arg(fixture_dir()).output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let markdown = String::from_utf8(output.stdout).unwrap();
    let rendered = render_markdown(&markdown);
    assert_eq!((rendered.tables, rendered.header_cells), (1, vec![7]), "{markdown}");
    assert!(markdown.contains("max \\|logit<br>diff\\|"), "{markdown}");
}

#[test]
fn many_prompts_open_with_a_summary_and_show_only_the_failing_prompt_before_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fifty.safetensors");
    many_prompts_reference(50, 41, &path);

    let (code, table) = compare(&path, &[]);
    assert_eq!(code, Some(1));
    let summary = table.find("Summary of 50 prompts, 1 failing").unwrap_or_else(|| panic!("no summary:\n{table}"));
    let headings: Vec<&str> = table.lines().filter(|line| line.starts_with("Prompt ")).collect();
    assert_eq!(headings.len(), 1, "{table}");
    assert!(headings[0].starts_with("Prompt 42/50: "), "{headings:?}");
    assert!(summary < table.find("Prompt 42/50").unwrap());
    assert!(table.contains("1 of 50"), "failing prompts per comparison:\n{table}");
    assert!(table.contains("#42 @0"), "the worst element's prompt and position:\n{table}");
    assert!(table.trim_end().lines().last().unwrap().starts_with("FAIL: 2 of 150 comparisons on 50 prompts"), "{table}");
    assert!(table.lines().all(|line| line.chars().count() <= 100), "piped output fits 100 columns:\n{table}");

    let (_, verbose) = compare(&path, &["--verbose"]);
    assert_eq!(verbose.lines().filter(|line| line.starts_with("Prompt ")).count(), 50);

    let (_, markdown) = compare(&path, &["--format", "markdown"]);
    let rendered = render_markdown(&markdown);
    assert_eq!(rendered.tables, 2, "the summary and the failing prompt:\n{markdown}");
    assert!(rendered.headings.iter().any(|heading| heading.starts_with("Prompt 42/50")));
    assert!(rendered.headings.iter().all(|heading| !heading.contains("--")), "no command-line hints in headings: {:?}", rendered.headings);
    assert!(markdown.contains("- processed-vs-unprocessed (shift-free) passes; worst"), "the worst list says which rows pass:\n{markdown}");
    assert!(markdown.contains("- unprocessed-vs-reference FAILS on 1 of 50 prompts; worst"), "{markdown}");
    assert!(markdown.trim_end().lines().last().unwrap().starts_with("**FAIL: 2 of 150"), "the verdict last");

    let (_, verbose_markdown) = compare(&path, &["--format", "markdown", "--verbose"]);
    assert!(verbose_markdown.chars().count() <= 65_536, "fits a pull-request comment: {}", verbose_markdown.chars().count());
    assert_eq!(render_markdown(&verbose_markdown).tables, 51);

    let (_, json) = compare(&path, &["--format", "json"]);
    let report = json_report(json.as_bytes());
    assert_eq!(report["prompts"].as_array().unwrap().len(), 50, "JSON keeps every prompt");
    let summary = &report["summary"][0];
    assert_eq!((summary["prompts"].as_u64(), summary["failing_prompts"].as_u64()), (Some(50), Some(1)));
    assert_eq!(summary["worst"]["prompt_index"], 41);
}

#[test]
fn markdown_beyond_a_pull_request_comment_leaves_sections_out_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.safetensors");
    many_prompts_reference(200, 0, &path);
    let (_, markdown) = compare(&path, &["--format", "markdown", "--verbose", "--wide"]);
    assert!(markdown.chars().count() <= 65_536, "{}", markdown.chars().count());
    assert!(markdown.contains("more prompt sections are left out"), "{markdown}");
    assert!(markdown.trim_end().lines().last().unwrap().starts_with("**FAIL"), "the verdict stays last");
}

#[test]
fn long_prompts_are_abbreviated_in_headings_and_tables_fit_100_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.safetensors");
    let long = "word ".repeat(30);
    reference_for(&[&long, "Hello"], &path);
    let (code, table) = compare(&path, &["--atol", "0"]);
    assert_eq!(code, Some(1), "{table}");
    let heading = table.lines().find(|line| line.starts_with("Prompt 1/2")).unwrap();
    assert!(heading.chars().count() <= 100 && heading.contains('…') && heading.contains("(31 tokens)"), "{heading}");
    assert!(table.contains("Prompt 2/2: \"Hello\" (1 token)\n"), "every heading has the same form, ids in the JSON:\n{table}");
    assert!(table.lines().all(|line| line.chars().count() <= 100), "{table}");
    assert!(!table.contains('\x1b'), "no colour when piped");
}

/// Runs `command` under a pseudo-terminal `columns` wide (util-linux `script`), with NO_COLOR
/// set or not, and returns what the terminal showed.
fn on_a_terminal(command: &str, columns: u16, no_color: bool) -> String {
    let mut script = std::process::Command::new("script");
    // stderr (the progress bar) is left out: only the report is looked at.
    script.args(["-qec", &format!("stty cols {columns}; {command} 2>/dev/null"), "/dev/null"]).env("HF_HUB_OFFLINE", "1");
    if no_color {
        script.env("NO_COLOR", "1");
    } else {
        script.env_remove("NO_COLOR");
    }
    String::from_utf8_lossy(&script.output().expect("util-linux script runs the binary under a terminal").stdout).into_owned()
}

#[test]
fn a_terminal_gets_colour_unless_no_color_and_a_table_that_fits_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fifty.safetensors");
    many_prompts_reference(8, 3, &path);
    let command =
        format!("{} compare --model {} --reference {}", env!("CARGO_BIN_EXE_gpt2-parity"), fixture_dir().display(), path.display());
    let coloured = on_a_terminal(&command, 80, false);
    assert!(coloured.contains("\x1b[") && coloured.contains("FAIL"), "{coloured}");
    let plain = on_a_terminal(&command, 80, true);
    assert!(!plain.contains("\x1b[") && plain.contains("FAIL"), "{plain}");
    let widest = plain.lines().map(|line| line.trim_end_matches('\r').chars().count()).max().unwrap();
    assert!(widest <= 80, "{widest} columns:\n{plain}");
    assert!(plain.contains("hidden to fit 80 columns"), "{plain}");
}

#[test]
fn explain_help_does_not_offer_reference_and_compare_help_offers_verbose() {
    let help = String::from_utf8(gpt2_parity().args(["explain", "--help"]).output().unwrap().stdout).unwrap();
    assert!(!help.contains("--reference"), "{help}");
    let help = String::from_utf8(gpt2_parity().args(["compare", "--help"]).output().unwrap().stdout).unwrap();
    assert!(help.contains("--verbose"), "{help}");
}

fn fixture_path(name: &str) -> PathBuf {
    common::repo_path(&format!("fixtures/reference/{name}"))
}

#[test]
fn a_pure_shift_names_the_position_not_a_token_and_counts_read_as_words() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shift.safetensors");
    let mut reference = EditableSafetensors::read(&fixture_path("tiny-gpt2.safetensors"));
    reference.map_f32("prompt.5.logits", |_, value| value + 0.5);
    reference.write(&path);
    let (code, table) = compare(&path, &["Hello"]);
    assert_eq!(code, Some(1));
    let table = table.replace("\n      ", " "); // notes and footer lines, unwrapped
    assert!(table.contains("@0 all tokens"), "{table}");
    assert!(table.contains("position 0, every token (the whole position is shifted)"), "{table}");
    assert!(table.contains("(1 token)"), "{table}");
    assert!(!table.contains("1 tokens") && !table.contains("-0.0000%"), "{table}");
}

/// The fixture reference with prompt 1's logit at position 1, token 262 (" the") raised by
/// 0.01: a fault both comparisons against the reference see, raw and shift-free.
fn reference_with_a_planted_fault(path: &Path) {
    let mut reference = EditableSafetensors::read(&fixture_reference());
    reference.map_f32("prompt.0.logits", |index, value| if index == VOCAB + 262 { value + 0.01 } else { value });
    reference.write(path);
}

/// `compare --format json` against [`reference_with_a_planted_fault`] (made at `reference`),
/// writing `flag`'s file to `path`.
fn compare_planted_fault(reference: &Path, flag: &str, path: &Path) -> std::process::Output {
    reference_with_a_planted_fault(reference);
    gpt2_parity()
        .args(["compare", "--format", "json", flag])
        .arg(path)
        .arg("--model")
        .arg(fixture_dir())
        .arg("--reference")
        .arg(reference)
        .output()
        .unwrap()
}

#[test]
fn a_report_written_to_a_file_leaves_one_verdict_line_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let (reference, report) = (dir.path().join("fault.safetensors"), dir.path().join("report.json"));
    let output = compare_planted_fault(&reference, "--output", &report);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "the report went to its file");
    let stderr = String::from_utf8(output.stderr).unwrap();
    let expected = format!(
        "FAIL: 2 of 24 comparisons on 8 prompts breach atol 1e-4, rtol 1e-5 or 8x float32 rounding; worst unprocessed-vs-reference #1 @1 \" the\" 1.00e-2; \
         report {}",
        report.display()
    );
    assert_eq!(stderr.lines().collect::<Vec<_>>(), [expected.as_str()], "{stderr}");
    assert_eq!(common::json_report_file(&report)["passed"], false);

    let (code, table) = compare(&reference, &["Hello"]);
    assert_eq!(code, Some(0));
    assert!(
        table.trim_end().ends_with("within atol 1e-4, rtol 1e-5 and 8x float32 rounding"),
        "a table on stdout ends with the verdict itself:\n{table}"
    );
}

/// What the Jenkins junit-10.xsd requires of a document, checked element by element: the
/// elements it allows where it allows them, the required attributes, and SUREFIRE_TIME times.
fn check_junit_structure(document: &roxmltree::Document) {
    let surefire_time =
        |time: &str| !time.is_empty() && time.chars().all(|c| c.is_ascii_digit() || c == '.') && time.matches('.').count() <= 1;
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    assert!(root.attribute("time").is_some_and(surefire_time), "{:?}", root.attribute("time"));
    for suite in root.children().filter(roxmltree::Node::is_element) {
        assert_eq!(suite.tag_name().name(), "testsuite");
        for required in ["name", "tests", "failures", "errors"] {
            assert!(suite.attribute(required).is_some(), "a testsuite lacks {required}");
        }
        assert!(suite.attribute("time").is_some_and(surefire_time), "{:?}", suite.attribute("time"));
        for child in suite.children().filter(roxmltree::Node::is_element) {
            match child.tag_name().name() {
                "properties" => {
                    for property in child.children().filter(roxmltree::Node::is_element) {
                        assert_eq!(property.tag_name().name(), "property");
                        assert!(property.attribute("name").is_some() && property.attribute("value").is_some());
                    }
                }
                "testcase" => {
                    assert!(child.attribute("name").is_some(), "a testcase lacks its name");
                    for inner in child.children().filter(roxmltree::Node::is_element) {
                        assert!(["failure", "error", "skipped", "system-out", "system-err"].contains(&inner.tag_name().name()));
                    }
                }
                other => panic!("a testsuite holds <{other}>"),
            }
        }
    }
}

#[test]
fn junit_leads_with_the_planted_shift_free_fault_and_names_each_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let (reference, junit) = (dir.path().join("fault.safetensors"), dir.path().join("junit.xml"));
    let output = compare_planted_fault(&reference, "--junit", &junit);
    assert_eq!(output.status.code(), Some(1));
    let report = common::json_stdout(&output);
    let xml = std::fs::read_to_string(&junit).unwrap();
    let document = roxmltree::Document::parse(&xml).unwrap();
    check_junit_structure(&document);

    let suite = document.descendants().find(|node| node.has_tag_name("testsuite")).unwrap();
    let timestamp = suite.attribute("timestamp").unwrap();
    assert_eq!(timestamp, report["timing"]["started_at"], "the run's start");
    let cases: Vec<roxmltree::Node> = document.descendants().filter(|node| node.has_tag_name("testcase")).collect();
    assert_eq!(cases.len(), 24);
    let names: std::collections::HashSet<&str> = cases.iter().map(|case| case.attribute("name").unwrap()).collect();
    assert_eq!(names.len(), cases.len(), "every row has its own name");
    for case in &cases {
        let time: f64 = case.attribute("time").unwrap().parse().unwrap();
        assert!(time > 0.0, "a real time: {time}");
    }

    let shift_free = &report["prompts"][0]["comparisons"][1];
    assert_eq!(shift_free["criterion"], "shift_invariant");
    let case = cases.iter().find(|case| case.attribute("name") == Some("prompt 1/8: \"Hello World\": processed-vs-reference")).unwrap();
    let failure = case.children().find(|node| node.has_tag_name("failure")).unwrap();
    let message = failure.attribute("message").unwrap();
    assert!(message.starts_with("shift-free |diff| 1.00e-2 @1 \" the\" (atol 1e-4, rtol 1e-5); A single element"), "{message}");
    let raw_shift = format!("{:.2e}", shift_free["max_abs_diff"].as_f64().unwrap());
    assert!(!message.contains(&raw_shift), "the raw shift {raw_shift} is not the failure: {message}");
    assert!(message.chars().count() <= 200 && !message.contains('{'), "short, and no JSON: {message}");
    let body = failure.text().unwrap();
    assert!(body.contains("worst |diff|") && body.contains("1.00e-2") && body.contains("FAIL"), "the comparison's table: {body}");
}

#[test]
fn a_shard_says_which_it_is_an_empty_one_says_so_and_the_step_summary_keeps_its_lines() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.md");
    std::fs::write(&summary, "| a | b |\n| --- | --- |\n| 1 | 2 |").unwrap();
    let run = |args: &[&str]| {
        let output = gpt2_parity()
            .env("GITHUB_STEP_SUMMARY", &summary)
            .args(["compare", "--format", "markdown", "--model"])
            .arg(fixture_dir())
            .arg("--reference")
            .arg(fixture_reference())
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let shard = run(&["--shard", "2/3"]);
    assert_eq!(render_markdown(&shard).headings[0], "gpt2-parity, shard 2/3 of 8 prompts: PASS", "{shard}");
    let empty = run(&["Hello", "--shard", "2/2"]);
    assert_eq!(render_markdown(&empty).headings[0], "gpt2-parity, shard 2/2 of 1 prompt: no prompts", "{empty}");
    assert!(empty.contains("shard 2/2 checks none of the run's 1 prompt") && !empty.contains("0 comparisons"), "{empty}");

    let appended = std::fs::read_to_string(&summary).unwrap();
    assert!(appended.starts_with("| a | b |\n| --- | --- |\n| 1 | 2 |\n# gpt2-parity, shard 2/3"), "{appended}");
    let headings = render_markdown(&appended).headings;
    assert_eq!(headings.iter().filter(|heading| heading.starts_with("gpt2-parity")).count(), 2, "{headings:?}");
}

#[test]
fn a_non_finite_top_1_reads_as_words() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.safetensors");
    let mut reference = EditableSafetensors::read(&fixture_reference());
    reference.map_f32("prompt.5.logits", |index, value| if index == 7 { f32::NAN } else { value });
    reference.write(&path);
    let (code, table) = compare(&path, &["--wide", "Hello"]);
    assert_eq!(code, Some(1));
    assert!(table.contains("n/a (non-finite)") && !table.contains("NaN%"), "{table}");
}
