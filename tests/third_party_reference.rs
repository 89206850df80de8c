//! gpt2-parity against a reference it did not make itself.
//!
//! The committed fixtures come from scripts/dump_reference.py (HF transformers), so a
//! mistake shared by that script and the tool (tokenization, weight names, the format)
//! would pass unnoticed. Here tests/support/numpy_gpt2.py, which uses neither torch nor
//! transformers, writes a random GPT-2 of another shape in the Hub's own unprefixed
//! naming (with the `attn.bias` mask buffers the Hub's gpt2 carries) and computes its
//! reference logits with an independent numpy float64 forward pass.
mod common;

use std::path::Path;

use serde_json::Value;
use tempfile::TempDir;

const PROMPTS: [&str; 3] = ["Hello World", "  two spaces\tand a tab", "é😀"];
const END_OF_TEXT: i64 = 50256;
/// float32 libtorch against a float64 reference cast to float32: a few ulps of logits of size ~5.
const LIMIT: f64 = 1e-5;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn numpy_gpt2(args: &[&str]) {
    common::python("tests/support/numpy_gpt2.py", args);
}

/// A 2-layer, d_model 48, 3-head, 16-position random GPT-2 (the fixture is 3/32/4/32).
fn make_model(dir: &TempDir) -> String {
    let model = dir.path().join("model");
    let tokenizer = repo().join("fixtures/tiny-gpt2/tokenizer.json");
    numpy_gpt2(&[
        "make-model",
        "--out",
        model.to_str().unwrap(),
        "--seed",
        "7",
        "--n-layer",
        "2",
        "--n-embd",
        "48",
        "--n-head",
        "3",
        "--n-positions",
        "16",
        "--tokenizer",
        tokenizer.to_str().unwrap(),
    ]);
    model.to_str().unwrap().to_owned()
}

fn make_reference(dir: &TempDir, model: &str, prepend_bos: bool) -> String {
    let reference = dir.path().join(if prepend_bos { "reference-bos.safetensors" } else { "reference.safetensors" });
    let mut args = vec!["reference", "--model", model, "--output", reference.to_str().unwrap()];
    if prepend_bos {
        args.push("--prepend-bos");
    }
    args.push("--");
    args.extend(PROMPTS);
    numpy_gpt2(&args);
    reference.to_str().unwrap().to_owned()
}

/// Token ids per prompt, read straight from the reference file (not through the tool).
fn reference_tokens(reference: &str) -> Vec<Vec<i64>> {
    let bytes = std::fs::read(reference).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    (0..PROMPTS.len())
        .map(|index| {
            let entry = &header[format!("prompt.{index}.tokens")];
            assert_eq!(entry["dtype"], "I64", "prompt.{index}.tokens");
            let start = entry["data_offsets"][0].as_u64().unwrap() as usize;
            let end = entry["data_offsets"][1].as_u64().unwrap() as usize;
            data[start..end].chunks_exact(8).map(|chunk| i64::from_le_bytes(chunk.try_into().unwrap())).collect()
        })
        .collect()
}

fn compare(model: &str, reference: &str, extra: &[&str]) -> Value {
    let (code, report) = common::compare_json(["--model", model, "--reference", reference].iter().chain(extra));
    assert_eq!(code, Some(0), "{report:#}");
    report
}

fn comparison<'a>(prompt: &'a Value, name: &str) -> &'a Value {
    prompt["comparisons"]
        .as_array()
        .expect("comparisons is an array")
        .iter()
        .find(|comparison| comparison["name"] == name)
        .unwrap_or_else(|| panic!("no comparison named {name} for prompt {}", prompt["prompt"]))
}

fn number(comparison: &Value, field: &str) -> f64 {
    comparison[field].as_f64().unwrap_or_else(|| panic!("{field} is not a number in {comparison}"))
}

fn assert_parity(report: &Value, expected_tokens: &[Vec<i64>]) {
    assert_eq!(report["passed"], true, "report did not pass:\n{report:#}");
    let prompts = report["prompts"].as_array().expect("prompts is an array");
    assert_eq!(prompts.len(), PROMPTS.len(), "{report:#}");
    for ((prompt, text), tokens) in prompts.iter().zip(PROMPTS).zip(expected_tokens) {
        assert_eq!(prompt["prompt"], text);
        let reported: Vec<i64> = prompt["tokens"].as_array().unwrap().iter().map(|id| id.as_i64().unwrap()).collect();
        assert_eq!(&reported, tokens, "tokens of {text:?}");

        let unprocessed = comparison(prompt, "unprocessed-vs-reference");
        let processed = comparison(prompt, "processed-vs-reference");
        let between = comparison(prompt, "processed-vs-unprocessed");
        let unprocessed_max = number(unprocessed, "max_abs_diff");
        let processed_centered = number(processed, "centered_max_abs_diff");
        eprintln!(
            "{text:?}: unprocessed-vs-reference max_abs_diff {unprocessed_max:.3e}, \
             processed-vs-reference centered_max_abs_diff {processed_centered:.3e}, \
             processed-vs-unprocessed centered_max_abs_diff {:.3e}",
            number(between, "centered_max_abs_diff")
        );
        assert!(unprocessed_max <= LIMIT, "{text:?}: unprocessed-vs-reference max_abs_diff {unprocessed_max:e} > {LIMIT:e}");
        assert!(processed_centered <= LIMIT, "{text:?}: processed-vs-reference centered_max_abs_diff {processed_centered:e} > {LIMIT:e}");
        for comparison in [unprocessed, processed, between] {
            assert_eq!(comparison["passed"], true, "{text:?}: {comparison}");
        }
    }
}

#[test]
fn numpy_reference_for_an_unprefixed_model_of_another_shape_passes() {
    let dir = TempDir::new().unwrap();
    let model = make_model(&dir);
    let reference = make_reference(&dir, &model, false);
    let tokens = reference_tokens(&reference);
    assert_eq!(tokens[0], [15496, 2159], "GPT-2's ids for \"Hello World\"");
    let report = compare(&model, &reference, &[]);
    assert_parity(&report, &tokens);
}

#[test]
fn numpy_reference_with_prepended_bos_passes() {
    let dir = TempDir::new().unwrap();
    let model = make_model(&dir);
    let reference = make_reference(&dir, &model, true);
    let tokens = reference_tokens(&reference);
    for ids in &tokens {
        assert_eq!(ids[0], END_OF_TEXT);
    }
    // The reference's metadata alone says BOS was prepended; saying it again must agree.
    for extra in [&[][..], &["--prepend-bos"][..]] {
        let report = compare(&model, &reference, extra);
        assert_parity(&report, &tokens);
        for prompt in report["prompts"].as_array().unwrap() {
            assert_eq!(prompt["tokens"][0], END_OF_TEXT, "{prompt}");
        }
    }
}
