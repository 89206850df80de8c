//! `gpt2-parity explain` on the fixture: center_unembed accounts for the raw difference, every
//! other step leaves log-probabilities alone.
mod common;

use common::{fixture_dir, gpt2_parity, json_stdout, repo_path};

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
    let report = json_stdout(&output);
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

/// Each step alone changes exactly the tensors it writes (fold_ln also the LayerNorms it folds
/// away, which read as the identity), and nothing else.
#[test]
fn each_step_alone_changes_only_its_own_tensors() {
    let output = explain("json");
    let report = json_stdout(&output);
    let changed = |name: &str| -> Vec<String> {
        let row = report["rows"].as_array().unwrap().iter().find(|row| row["name"] == name).unwrap();
        row["changed_tensors"].as_array().unwrap().iter().map(|change| change["tensor"].as_str().unwrap().to_owned()).collect()
    };
    let layers = 3;
    let per_block = |suffixes: &[&str]| -> Vec<String> {
        (0..layers).flat_map(|layer| suffixes.iter().map(move |suffix| format!("h.{layer}.{suffix}"))).collect()
    };
    let sorted = |mut names: Vec<String>| {
        names.sort();
        names
    };
    assert_eq!(sorted(changed("fold_value_biases alone")), sorted(per_block(&["attn.c_attn.bias", "attn.c_proj.bias"])));
    let mut writes = per_block(&["attn.c_proj.weight", "attn.c_proj.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"]);
    writes.extend(["wte.weight".to_owned(), "wpe.weight".to_owned()]);
    assert_eq!(sorted(changed("center_writing_weights alone")), sorted(writes));
    let mut reads = per_block(&[
        "ln_1.weight",
        "ln_1.bias",
        "attn.c_attn.weight",
        "attn.c_attn.bias",
        "ln_2.weight",
        "ln_2.bias",
        "mlp.c_fc.weight",
        "mlp.c_fc.bias",
    ]);
    reads.extend(["ln_f.weight", "ln_f.bias", "unembed.weight", "unembed.bias"].map(str::to_owned));
    assert_eq!(sorted(changed("fold_ln alone")), sorted(reads));
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
