//! Each likely cause fires on a reference perturbed to show it, and none on the clean one.
mod common;

use common::{fixture_bos_reference, fixture_dir, fixture_reference, gpt2_parity, json_stdout, EditableSafetensors};
use predicates::prelude::*;
use serde_json::{json, Value};

const VOCAB: usize = 50257;

/// Compares "Hello World" (prompt 0, two positions) against the fixture reference after `edit`.
fn compare_with(edit: impl FnOnce(&mut EditableSafetensors)) -> (Option<i32>, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reference.safetensors");
    let mut reference = EditableSafetensors::read(&fixture_reference());
    edit(&mut reference);
    reference.write(&path);
    let output = gpt2_parity()
        .args(["compare", "Hello World", "--format", "json", "--model"])
        .arg(fixture_dir())
        .arg("--reference")
        .arg(&path)
        .output()
        .unwrap();
    // Exit 2 prints no report.
    let report = if output.stdout.is_empty() { Value::Null } else { json_stdout(&output) };
    (output.status.code(), report, String::from_utf8_lossy(&output.stderr).into_owned())
}

fn unprocessed_row(report: &Value) -> &Value {
    &report["prompts"][0]["comparisons"][0]
}

fn notes(report: &Value) -> String {
    report["prompts"][0]["notes"].as_array().unwrap().iter().map(|note| note.as_str().unwrap()).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_clean_reference_has_no_likely_cause() {
    let (code, report, _) = compare_with(|_| {});
    assert_eq!(code, Some(0));
    for comparison in report["prompts"][0]["comparisons"].as_array().unwrap() {
        assert!(comparison["likely_cause"].is_null(), "{comparison}");
    }
}

#[test]
fn a_per_position_shift_is_named() {
    let (code, report, _) = compare_with(|reference| {
        reference.map_f32("prompt.0.logits", |index, value| value + if index < VOCAB { 0.5 } else { -0.25 });
    });
    assert_eq!(code, Some(1));
    assert_eq!(unprocessed_row(&report)["likely_cause"]["kind"], "per_position_shift");
    assert_eq!(report["prompts"][0]["comparisons"][1]["passed"], true, "processed-vs-reference ignores shifts");
    assert!(notes(&report).contains("per-position shift"));
}

#[test]
fn a_shift_and_scale_is_named_with_the_scale() {
    let (code, report, _) = compare_with(|reference| reference.map_f32("prompt.0.logits", |_, value| 1.25 * value + 0.1));
    assert_eq!(code, Some(1));
    let cause = &unprocessed_row(&report)["likely_cause"];
    assert_eq!(cause["kind"], "shift_and_scale");
    assert!((cause["scale"].as_f64().unwrap() - 0.8).abs() < 1e-4, "candidate = reference / 1.25: {cause}");
}

#[test]
fn a_single_position_far_off_is_named() {
    let (code, report, _) = compare_with(|reference| {
        reference.map_f32("prompt.0.logits", |index, value| if index >= VOCAB { value + 0.01 * (index % 7) as f32 } else { value });
    });
    assert_eq!(code, Some(1));
    let cause = &unprocessed_row(&report)["likely_cause"];
    assert_eq!(cause["kind"], "single_position");
    assert_eq!(cause["position"], 1);
}

#[test]
fn a_permuted_vocabulary_is_named() {
    let (code, report, _) = compare_with(|reference| {
        let (_, _, data) = reference.tensors.get_mut("prompt.0.logits").unwrap();
        for row in data.chunks_exact_mut(VOCAB * 4) {
            let mut values: Vec<[u8; 4]> = row.chunks_exact(4).map(|chunk| chunk.try_into().unwrap()).collect();
            values.reverse();
            row.copy_from_slice(&values.concat());
        }
    });
    assert_eq!(code, Some(1));
    assert_eq!(unprocessed_row(&report)["likely_cause"]["kind"], "permuted_vocabulary");
    assert_eq!(unprocessed_row(&report)["top1_agreement"], 0.0);
}

#[test]
fn non_finite_values_are_named_with_their_location() {
    let (code, report, _) = compare_with(|reference| {
        reference.map_f32("prompt.0.logits", |index, value| if index == VOCAB + 42 { f32::NAN } else { value });
    });
    assert_eq!(code, Some(1));
    let cause = &unprocessed_row(&report)["likely_cause"];
    assert_eq!(cause["kind"], "non_finite");
    assert_eq!(cause["first_at"]["position"], 1);
    assert_eq!(cause["first_at"]["token_id"], 42);
}

#[test]
fn a_bos_mismatch_is_named() {
    // A reference made with <|endoftext|> prepended but labelled as made without it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bos.safetensors");
    let mut reference = EditableSafetensors::read(&fixture_bos_reference());
    reference.metadata.insert("prepend_bos".into(), "false".into());
    reference.write(&path);
    gpt2_parity()
        .args(["compare", "--model"])
        .arg(fixture_dir())
        .arg("--reference")
        .arg(&path)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("<|endoftext|>").and(predicate::str::contains("--prepend-bos")));
}

fn comparison<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["prompts"][0]["comparisons"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no {name}"))
}

fn kinds(comparison: &Value) -> Vec<&str> {
    comparison["findings"].as_array().unwrap().iter().map(|finding| finding["kind"].as_str().unwrap()).collect()
}

#[test]
fn a_single_bad_logit_is_a_single_element_and_the_residual_stream_agrees() {
    let (code, report, _) = compare_with(|reference| {
        reference.map_f32("prompt.0.logits", |index, value| if index == VOCAB + 234 { value + 0.01 } else { value });
    });
    assert_eq!(code, Some(1));
    for name in ["unprocessed-vs-reference", "processed-vs-reference"] {
        let row = comparison(&report, name);
        assert_eq!(row["likely_cause"]["kind"], "single_element", "{name}: {row}");
        assert_eq!(row["likely_cause"]["at"]["position"], 1);
        assert_eq!(row["likely_cause"]["at"]["token_id"], 234);
        // The reference leaves the rounding envelope at the logits, only at position 1, and no
        // catalogued port deviation reproduces a single bad logit.
        assert_eq!(kinds(row), ["single_element", "leaves_envelope", "residual_agrees"], "{name}");
        let envelope = &row["findings"][1];
        assert_eq!((&envelope["side"], &envelope["place"]), (&json!("the reference"), &json!("the logits")), "{name}: {envelope}");
        assert!(envelope["cause"].is_null(), "{name}: {envelope}");
        assert_eq!(envelope["pattern"], json!({ "single_position": { "position": 1 } }), "{name}: {envelope}");
    }
    let notes = notes(&report);
    assert!(notes.contains("A single element is outside tolerance: position 1, token #234 \\x8c"), "{notes}");
    assert!(notes.contains("The residual stream agrees at every block"), "{notes}");
    for unsupported in ["position embedding", "only position", "noise", "center_unembed (e.g."] {
        assert!(!notes.contains(unsupported), "{unsupported:?} in {notes}");
    }
}

#[test]
fn float32_noise_at_zero_atol_is_called_noise_with_the_smallest_passing_atol() {
    let output = gpt2_parity()
        .args(["compare", "Hello World", "--atol", "0", "--format", "json", "--model"])
        .arg(fixture_dir())
        .arg("--reference")
        .arg(fixture_reference())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report = json_stdout(&output);
    let row = comparison(&report, "unprocessed-vs-reference");
    let cause = &row["likely_cause"];
    assert_eq!(cause["kind"], "noise", "{row}");
    assert_eq!(cause["min_passing_atol"], row["min_passing_atol"]);
    assert!(!kinds(row).contains(&"residual_diverges"), "noise is not blamed on a block: {row}");
    let notes = notes(&report);
    assert!(notes.contains("rounding noise") && notes.contains("smallest passing atol"), "{notes}");
    assert!(!notes.contains("position embedding") && !notes.contains("diverges at"), "{notes}");
}

#[test]
fn a_divergence_in_the_residual_stream_is_placed_at_its_block() {
    let (code, report, _) = compare_with(|reference| {
        // resid is [L + 1, T, D] with T = 2, D = 32: from snapshot 2 on (the output of h.1), every value is off.
        reference.map_f32("prompt.0.resid", |index, value| if index >= 2 * 2 * 32 { value + 0.5 } else { value });
        reference.map_f32("prompt.0.logits", |index, value| value + 0.01 * (index % 7) as f32);
    });
    assert_eq!(code, Some(1));
    let row = unprocessed_row(&report);
    let diverges = row["findings"].as_array().unwrap().iter().find(|finding| finding["kind"] == "residual_diverges").expect("found");
    assert_eq!(diverges["index"], 2, "{row}");
    assert!(notes(&report).contains("first diverges at the output of block h.1"));
}

#[test]
fn a_shift_against_transformer_lens_is_judged_by_the_switches_the_reference_records() {
    let output = gpt2_parity()
        .args(["compare", "Hello World", "--no-center-unembed", "--format", "json", "--model"])
        .arg(fixture_dir())
        .arg("--reference")
        .arg(common::repo_path("fixtures/reference/tiny-gpt2-tl.safetensors"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report = json_stdout(&output);
    let row = comparison(&report, "processed-vs-transformer-lens");
    assert_eq!(row["likely_cause"]["kind"], "per_position_shift");
    assert_eq!(row["likely_cause"]["ours_center_unembed"], false);
    assert_eq!(row["likely_cause"]["reference_center_unembed"], true);
    let notes = notes(&report);
    assert!(notes.contains("our logits were made without it, the reference's with it"), "{notes}");
    assert!(notes.contains("drop --no-center-unembed"), "{notes}");
}

#[test]
fn non_finite_values_in_our_model_are_null_statistics_and_named_as_ours() {
    let dir = tempfile::tempdir().unwrap();
    common::fixture_with_weights(dir.path(), |weights| {
        let name = weights.tensors.keys().find(|name| name.ends_with("ln_f.weight")).unwrap().clone();
        weights.map_f32(&name, |_, _| f32::NAN);
    });
    let run = |format: &str| {
        gpt2_parity()
            .args(["compare", "Hello World", "--allow-other-weights", "--format", format, "--model"])
            .arg(dir.path())
            .arg("--reference")
            .arg(fixture_reference())
            .output()
            .unwrap()
    };
    let output = run("json");
    assert_eq!(output.status.code(), Some(1));
    let report = json_stdout(&output);
    let row = unprocessed_row(&report);
    for field in ["max_abs_diff", "mean_abs_diff", "kl_mean", "min_passing_atol", "centered_max_abs_diff", "candidate_mean"] {
        assert!(row[field].is_null(), "{field}: {}", row[field]);
    }
    assert!(row["reference_mean"].is_f64());
    assert_eq!(row["candidate_non_finite"], 2 * VOCAB);
    assert_eq!(row["reference_non_finite"], 0);
    assert_eq!(row["likely_cause"]["first_side"], "ours");
    let worst = report["worst"].as_array().unwrap();
    assert_eq!(worst.len(), 3, "every comparison keeps its worst entry: {worst:?}");
    assert!(worst[0]["abs_diff"].is_null());
    assert!(notes(&report).contains("Ours hold 100514 NaN/Inf values and the reference none"), "{}", notes(&report));
    let table = String::from_utf8(run("table").stdout).unwrap();
    assert!(table.contains("NaN"), "{table}");
    assert!(!table.contains("0.00e0"), "{table}");
}

/// `compare "Hello World"` of the fixture against `reference` at atol = rtol = 0, with `extra`:
/// float32 rounding alone fails it (exit 1); the report.
fn failing_at_zero_tolerance(reference: &std::path::Path, extra: &[&str]) -> Value {
    let mut args: Vec<std::ffi::OsString> = ["Hello World", "--atol", "0", "--rtol", "0", "--model"].map(Into::into).to_vec();
    args.extend([fixture_dir().into(), "--reference".into(), reference.into()]);
    args.extend(extra.iter().map(Into::into));
    let (code, report) = common::compare_json(args);
    assert_eq!(code, Some(1), "{report:#}");
    report
}

/// Our processing switches against those a TransformerLens reference records: with fold_ln off
/// here and on there, a failing processed-vs-transformer-lens row names the switch each way.
#[test]
fn switches_that_differ_from_the_references_are_named() {
    let tl_reference = common::repo_path("fixtures/reference/tiny-gpt2-tl.safetensors");
    let report = failing_at_zero_tolerance(&tl_reference, &["--no-fold-ln"]);
    let row = comparison(&report, "processed-vs-transformer-lens");
    let differs = row["findings"].as_array().unwrap().iter().find(|finding| finding["kind"] == "processing_differs").expect("named");
    assert_eq!(differs["switches"], json!([{"switch": "fold_ln", "ours": false, "reference": true}]), "{row}");
    // Only the processed TransformerLens row is processed with switches the reference records.
    for name in ["unprocessed-vs-reference", "processed-vs-reference", "unprocessed-vs-transformer-lens-unprocessed"] {
        assert!(!kinds(comparison(&report, name)).contains(&"processing_differs"), "{name}");
    }
    let notes = notes(&report);
    assert!(
        notes.contains("processing differs from the switches the reference records: fold_ln (off here, on in the reference)"),
        "{notes}"
    );
}

/// Judged by tolerance alone (no rounding envelope) at zero tolerance, the residual stream breaches
/// it everywhere by float32 rounding and nowhere by more: rounding noise, no diverging block.
#[test]
fn a_residual_stream_off_by_rounding_alone_is_called_noise() {
    let report = failing_at_zero_tolerance(&fixture_reference(), &["--criterion", "tolerance"]);
    let row = unprocessed_row(&report);
    let noise = row["findings"].as_array().unwrap().iter().find(|finding| finding["kind"] == "residual_noise").expect("found");
    let largest_snapshot_diff =
        row["resid"].as_array().unwrap().iter().map(|snapshot| snapshot["max_abs_diff"].as_f64().unwrap()).fold(0.0, f64::max);
    assert!(largest_snapshot_diff > 0.0, "{row}");
    assert_eq!(noise["max_abs_diff"].as_f64().unwrap(), largest_snapshot_diff, "{row}");
    assert!(!kinds(row).contains(&"residual_diverges"), "{row}");
    assert!(notes(&report).contains("rounding noise at every block, no block diverges"), "{}", notes(&report));
}
