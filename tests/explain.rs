//! `gpt2-parity explain` on the fixture: center_unembed accounts for the raw difference, every
//! other step leaves log-probabilities alone.
mod common;

use common::{fixture_dir, fixture_with_weights, gpt2_parity, json_stdout, repo_path, report_json};
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

/// On a model whose unembedding is already centered over the vocabulary, center_unembed has
/// nothing to remove: the raw difference left is rounding spread over the steps, and the
/// conclusion says that no single step accounts for it, naming the one with the largest share.
#[test]
fn with_nothing_for_center_unembed_to_remove_no_single_step_accounts_for_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    fixture_with_weights(dir.path(), |weights| {
        let (vocab, d_model) = match weights.tensors["transformer.wte.weight"].1[..] {
            [vocab, d_model] => (vocab, d_model),
            ref shape => panic!("wte is {shape:?}"),
        };
        let mut sums = vec![0.0f64; d_model];
        weights.map_f32("transformer.wte.weight", |index, value| {
            sums[index % d_model] += f64::from(value);
            value
        });
        let means: Vec<f32> = sums.iter().map(|sum| (sum / vocab as f64) as f32).collect();
        weights.map_f32("transformer.wte.weight", |index, value| value - means[index % d_model]);
    });

    let (code, report) =
        report_json(gpt2_parity().args(["explain", "Hello World", "--format", "json", "--threads", "1", "--model"]).arg(dir.path()));
    assert_eq!(code, Some(0));
    let share = |row: &&Value| row["min_share_of_raw_difference"].as_f64().unwrap();
    let alone: Vec<&Value> = report["rows"].as_array().unwrap().iter().filter(|row| row["kind"] == "alone").collect();
    let largest = alone.iter().copied().max_by(|a, b| share(a).total_cmp(&share(b))).expect("rows for each step alone");
    assert!(share(&largest) < 0.9999, "{largest}");
    let name = largest["steps"].as_array().unwrap().iter().map(|step| step.as_str().unwrap()).collect::<Vec<_>>().join(" + ");
    let conclusion = report["conclusions"][0].as_str().unwrap();
    assert!(
        conclusion.starts_with(&format!("No single step accounts for the whole raw difference; {name} accounts for the most")),
        "{conclusion}"
    );
}
