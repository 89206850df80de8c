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
    assert!(rendered.header_cells.iter().all(|&cells| cells == 6), "{:?}", rendered.header_cells);
    assert_eq!(rendered.html, 0, "no prompt text becomes HTML:\n{markdown}");
    assert_eq!(rendered.code_spans, 3, "only the model, weights and reference are code:\n{markdown}");
    assert!(rendered.headings.iter().any(|heading| heading.contains(&format!("{MARKUP:?}"))), "{:?}", rendered.headings);
    assert!(rendered.headings.iter().any(|heading| heading.contains(r#""line\nnext""#)), "{:?}", rendered.headings);

    let (_, wide) = compare(&path, &["--format", "markdown", "--wide"]);
    assert!(render_markdown(&wide).header_cells.iter().all(|&cells| cells == 19), "{wide}");
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
    assert!(table.contains("Prompt 2/2: \"Hello\" (1 token: [15496])"), "{table}");
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
    assert!(table.contains("(1 token: [15496])"), "{table}");
    assert!(!table.contains("1 tokens") && !table.contains("-0.0000%"), "{table}");
}
