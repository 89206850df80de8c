//! `gpt2-parity explain` on the fixture: center_unembed accounts for the raw difference, every
//! other step leaves log-probabilities alone.
mod common;

use common::{fixture_dir, gpt2_parity, repo_path};
use serde_json::Value;

fn explain(format: &str) -> std::process::Output {
    gpt2_parity()
        .args(["explain", "--format", format, "--model"])
        .arg(fixture_dir())
        .arg("--prompts-file")
        .arg(repo_path("fixtures/reference/prompts.jsonl"))
        .output()
        .unwrap()
}

#[test]
fn center_unembed_accounts_for_the_whole_raw_difference_on_every_prompt() {
    let output = explain("json");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let prompts = report["prompts"].as_array().unwrap().len();
    assert!(prompts >= 8);
    let rows = report["rows"].as_array().unwrap();
    let row = |name: &str| rows.iter().find(|row| row["name"] == name).unwrap_or_else(|| panic!("no row {name}"));

    let center_unembed = row("center_unembed alone");
    assert_eq!(center_unembed["logit_effect"], "pure_shift");
    assert_eq!(center_unembed["per_prompt"].as_array().unwrap().len(), prompts);
    for effect in center_unembed["per_prompt"].as_array().unwrap() {
        assert!(effect["share_of_raw_difference"].as_f64().unwrap() >= 0.9999, "{effect}");
    }
    assert_eq!(center_unembed["changed_tensors"][0]["tensor"], "unembed.weight");

    for name in ["fold_ln alone", "center_writing_weights alone", "fold_value_biases alone"] {
        let other = row(name);
        assert_eq!(other["logit_effect"], "unchanged", "{name}");
        assert!(other["log_softmax_max_abs_diff"].as_f64().unwrap() <= 1e-5, "{name}");
        assert!(other["min_share_of_raw_difference"].as_f64().unwrap().abs() <= 1e-4, "{name}");
        assert!(!other["changed_tensors"].as_array().unwrap().is_empty(), "{name} changes weights");
    }
    let all = rows.last().unwrap();
    assert_eq!(all["kind"], "accumulated");
    assert_eq!(all["steps"], serde_json::json!(["fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases"]));
    assert_eq!(all["top1_agreement"], 1.0);
    assert!(report["conclusions"][0].as_str().unwrap().starts_with("center_unembed accounts for the whole raw difference"));
}

#[test]
fn table_and_markdown_show_the_same_rows_and_conclusions() {
    for format in ["table", "markdown"] {
        let output = explain(format);
        assert_eq!(output.status.code(), Some(0));
        // Markdown escapes the underscores of step names.
        let text = String::from_utf8(output.stdout).unwrap().replace('\\', "");
        for expected in ["fold_ln alone", "center_unembed alone", "pure shift", "center_unembed accounts for the whole raw difference"] {
            assert!(text.contains(expected), "{format} lacks {expected:?}");
        }
    }
}
