//! Each likely cause fires on a reference perturbed to show it, and none on the clean one.
mod common;

use common::{fixture_bos_reference, fixture_dir, fixture_reference, gpt2_parity, EditableSafetensors};
use predicates::prelude::*;
use serde_json::Value;

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
    let report = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
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
