//! Verdicts at real GPT-2 magnitudes. The committed fixture's logits sit near 0; GPT-2's average
//! about -60 with std about 17, and a few residual dimensions run into the hundreds. Rounding
//! noise and tolerances behave differently there, so these tests run on a generated model with
//! that numeric character (tests/common: real_magnitude_model).
mod common;

use common::{gpt2_parity, real_magnitude_model, EditableSafetensors, REAL_MAGNITUDE_PROMPTS};
use serde_json::Value;

/// Mean, standard deviation and max |value| of a float32 tensor in a safetensors file.
fn figures(file: &EditableSafetensors, name: &str) -> (f64, f64, f64) {
    let (_, _, data) = &file.tensors[name];
    let values: Vec<f64> = data.chunks_exact(4).map(|chunk| f64::from(f32::from_le_bytes(chunk.try_into().unwrap()))).collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let std = (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (values.len() - 1) as f64).sqrt();
    (mean, std, values.iter().fold(0.0, |max, v| max.max(v.abs())))
}

#[test]
fn the_generated_model_has_gpt2_magnitudes_in_the_hugging_face_reference() {
    let model = real_magnitude_model();
    let reference = EditableSafetensors::read(&model.reference);
    let (mean, std, _) = figures(&reference, "prompt.0.logits");
    eprintln!("calibration prompt logits: mean {mean:.2}, std {std:.2}");
    assert!((mean + 60.0).abs() < 3.0 && (std - 17.0).abs() < 2.0, "logits mean {mean}, std {std}");
    for index in 0..REAL_MAGNITUDE_PROMPTS.len() {
        let (mean, std, _) = figures(&reference, &format!("prompt.{index}.logits"));
        let (_, _, resid_max) = figures(&reference, &format!("prompt.{index}.resid"));
        eprintln!("prompt {index}: logits mean {mean:.2}, std {std:.2}; residual max |value| {resid_max:.1}");
        assert!((-80.0..-35.0).contains(&mean) && (12.0..22.0).contains(&std), "prompt {index}: logits mean {mean}, std {std}");
        assert!((200.0..1000.0).contains(&resid_max), "prompt {index}: residual max |value| {resid_max}");
    }
}

#[test]
fn rounding_noise_passes_at_default_tolerances() {
    let model = real_magnitude_model();
    let output = gpt2_parity()
        .args(["compare", "--format", "json", "--model"])
        .arg(&model.dir)
        .arg("--reference")
        .arg(&model.reference)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    for prompt in report["prompts"].as_array().unwrap() {
        for comparison in prompt["comparisons"].as_array().unwrap() {
            eprintln!(
                "{:<28} max |diff| {:.3e}, centered {:.3e}",
                comparison["name"].as_str().unwrap(),
                comparison["max_abs_diff"].as_f64().unwrap(),
                comparison["centered_max_abs_diff"].as_f64().unwrap()
            );
        }
    }
    assert_eq!(output.status.code(), Some(0), "{report:#}");
}
