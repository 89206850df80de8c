//! Every pointer in a report names the planted fault: single logits raised in random prompts,
//! positions and tokens of the fixture reference (deterministic seeds), found in both the raw
//! row (unprocessed-vs-reference) and the shift-invariant one (processed-vs-reference, whose raw
//! |diff| is dominated by center_unembed's expected shift).
mod common;

use common::{fixture_dir, fixture_reference, gpt2_parity, json_stdout, EditableSafetensors};
use serde_json::Value;

const VOCAB: usize = 50257;

/// splitmix64: a deterministic stream of u64.
fn stream(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |below| {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % below
    }
}

struct Fault {
    prompt: usize,
    position: usize,
    token: usize,
    delta: f32,
}

/// Plants one fault in each of three distinct random prompts (the last one the largest) and
/// returns the JSON report.
fn planted_report(seed: u64) -> (Vec<Fault>, Value) {
    let mut next = stream(seed);
    let mut reference = EditableSafetensors::read(&fixture_reference());
    let prompts = reference.tensors.keys().filter(|name| name.ends_with(".logits")).count();
    let mut faults: Vec<Fault> = Vec::new();
    for delta in [0.01f32, -0.02, 0.05] {
        let prompt = loop {
            let prompt = next(prompts as u64) as usize;
            if faults.iter().all(|fault| fault.prompt != prompt) {
                break prompt;
            }
        };
        let positions = reference.tensors[&format!("prompt.{prompt}.logits")].1[0];
        let fault = Fault { prompt, position: next(positions as u64) as usize, token: next(VOCAB as u64) as usize, delta };
        let index = fault.position * VOCAB + fault.token;
        reference.map_f32(&format!("prompt.{prompt}.logits"), |i, value| if i == index { value - delta } else { value });
        faults.push(fault);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("planted.safetensors");
    reference.write(&path);
    let output =
        gpt2_parity().args(["compare", "--format", "json", "--model"]).arg(fixture_dir()).arg("--reference").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
    (faults, json_stdout(&output))
}

#[test]
fn rows_and_the_worst_element_name_the_planted_faults() {
    for seed in [7, 2024] {
        let (faults, report) = planted_report(seed);
        for fault in &faults {
            let comparisons = report["prompts"][fault.prompt]["comparisons"].as_array().unwrap();
            for comparison in &comparisons[..2] {
                let at = &comparison["max_abs_diff_at"];
                let name = &comparison["name"];
                assert_eq!(comparison["passed"], false, "seed {seed}, {name}");
                assert_eq!(comparison["outside_allclose"], 1, "seed {seed}, {name}");
                assert_eq!(
                    (at["position"].as_u64(), at["token_id"].as_u64()),
                    (Some(fault.position as u64), Some(fault.token as u64)),
                    "seed {seed}, {name}: {at}"
                );
                let found = comparison["worst_abs_diff"].as_f64().unwrap();
                assert!((found - f64::from(fault.delta.abs())).abs() < 1e-3, "seed {seed}, {name}: {found}");
            }
            assert_eq!(comparisons[2]["passed"], true, "processed-vs-unprocessed does not see the reference");
        }
        let largest = faults.last().unwrap();
        for name in ["unprocessed-vs-reference", "processed-vs-reference"] {
            let worst = report["worst"].as_array().unwrap().iter().find(|worst| worst["comparison"] == name).unwrap();
            assert_eq!(worst["prompt_index"], largest.prompt, "seed {seed}, {name}: {worst}");
            assert_eq!(worst["prompt"], report["prompts"][largest.prompt]["prompt"]);
            assert_eq!(
                (worst["position"].as_u64(), worst["token_id"].as_u64()),
                (Some(largest.position as u64), Some(largest.token as u64))
            );
            assert!((worst["abs_diff"].as_f64().unwrap() - 0.05).abs() < 1e-3, "{worst}");
        }
        let shift_free = report["worst"].as_array().unwrap().iter().find(|worst| worst["comparison"] == "processed-vs-reference").unwrap();
        assert!(shift_free["raw_max_abs_diff"].as_f64().unwrap() > 0.5, "the raw figure, center_unembed's shift, stays: {shift_free}");
    }
}

#[test]
fn byte_fragment_tokens_show_their_bytes_not_a_replacement_character() {
    let tokenizer = gpt2_parity::tokenize::Gpt2Tokenizer::load(&fixture_dir().join("tokenizer.json")).unwrap();
    assert_eq!(tokenizer.token_text(234), "\\x8c");
    assert_eq!(tokenizer.token_text(447), "\\xe2\\x80", "the first two bytes of a three-byte character");
    assert_eq!(tokenizer.token_text(1240), "ience");
    assert_eq!(tokenizer.token_text(50256), "<|endoftext|>");
    assert_eq!(tokenizer.token_text(tokenizer_id(&tokenizer, " World")), " World");
}

fn tokenizer_id(tokenizer: &gpt2_parity::tokenize::Gpt2Tokenizer, text: &str) -> i64 {
    let ids = tokenizer.encode(text, false, 1024).unwrap();
    assert_eq!(ids.len(), 1);
    ids[0]
}
