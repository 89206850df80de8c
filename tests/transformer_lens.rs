//! Our processed and unprocessed GPT-2 against TransformerLens itself, on the committed fixture:
//! fixtures/reference/tiny-gpt2-tl.safetensors holds TransformerLens 4.3 logits with its default
//! processing and with none (scripts/make_fixtures.sh; a separate file to keep fixtures/ small).
mod common;

use common::{fixture_dir, gpt2_parity, json_stdout, load_fixture, max_abs_diff, repo_path, tensor};
use gpt2_parity::model::gpt2::forward;
use gpt2_parity::model::process::{process, ProcessingOptions};
use gpt2_parity::reference::ReferenceFile;
use serde_json::Value;

const TOLERANCE: f64 = 1e-5;

fn tl_reference_path() -> std::path::PathBuf {
    repo_path("fixtures/reference/tiny-gpt2-tl.safetensors")
}

fn tl_reference() -> ReferenceFile {
    ReferenceFile::open(&tl_reference_path()).expect("TransformerLens fixture reference")
}

#[test]
fn the_tl_reference_is_for_the_fixture_and_records_default_processing() {
    let fixture = load_fixture();
    let reference = tl_reference();
    reference.check_model(&fixture.config, &fixture.digest, false).unwrap();
    assert!(reference.meta.producer["transformer_lens"].is_string(), "producer names TransformerLens's version");
    assert!(!reference.meta.prepend_bos);
    // The processed run used TransformerLens's defaults, which are ours.
    let bytes = std::fs::read(tl_reference_path()).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = header.metadata().clone().expect("metadata");
    let switches: Value = serde_json::from_str(&metadata["transformer_lens_processing"]).expect("a JSON object");
    assert_eq!(switches, serde_json::to_value(ProcessingOptions::default()).unwrap());
    for (index, prompt) in reference.meta.prompts.iter().enumerate() {
        let ours = fixture.tokenizer.encode(prompt, false, fixture.config.n_positions).unwrap();
        assert_eq!(reference.tokens(index).unwrap(), ours, "prompt {prompt:?}");
    }
}

#[test]
fn its_hugging_face_logits_equal_the_main_references() {
    // Same script, same model, same prompts: the HF logits must be the same bits.
    let main = load_fixture().reference;
    let reference = tl_reference();
    for (index, prompt) in reference.meta.prompts.iter().enumerate() {
        let shared = main.meta.prompts.iter().position(|p| p == prompt).unwrap_or_else(|| panic!("{prompt:?} not in the main reference"));
        let ours = reference.prompt(index).unwrap();
        let theirs = main.prompt(shared).unwrap();
        assert_eq!(ours.tokens, theirs.tokens, "prompt {prompt:?}");
        assert!(ours.logits == theirs.logits, "prompt {prompt:?}: HF logits differ between the references");
    }
}

#[test]
fn our_logits_match_transformer_lens_processed_and_unprocessed() {
    let fixture = load_fixture();
    let reference = tl_reference();
    let vocab = fixture.config.vocab_size;
    let processed = process(fixture.weights.shallow_clone(), ProcessingOptions::default());
    assert!(reference.meta.prompts.len() >= 4);
    for (index, prompt) in reference.meta.prompts.iter().enumerate() {
        let tl = reference.prompt(index).unwrap();
        let tl_processed = tensor(tl.tl_processed_logits.as_ref().expect("tl_processed_logits"), &[-1, vocab]);
        let tl_unprocessed = tensor(tl.tl_unprocessed_logits.as_ref().expect("tl_unprocessed_logits"), &[-1, vocab]);
        let processed_diff = max_abs_diff(&forward(&processed, &tl.tokens).logits, &tl_processed);
        let unprocessed_diff = max_abs_diff(&forward(&fixture.weights, &tl.tokens).logits, &tl_unprocessed);
        eprintln!(
            "prompt {index} {prompt:?} ({} tokens): processed vs TL processed {processed_diff:e}, unprocessed vs TL unprocessed {unprocessed_diff:e}",
            tl.tokens.len()
        );
        assert!(processed_diff <= TOLERANCE, "prompt {index}: processed vs TransformerLens processed max |diff| {processed_diff:e}");
        assert!(
            unprocessed_diff <= TOLERANCE,
            "prompt {index}: unprocessed vs TransformerLens unprocessed max |diff| {unprocessed_diff:e}"
        );
        // TransformerLens's processed logits are visibly shifted from the unprocessed ones: the
        // comparison above is raw, not up to the shift.
        assert!(max_abs_diff(&tl_processed, &tl_unprocessed) > 1e-2, "prompt {index}: expected center_unembed's shift");
    }
}

#[test]
fn compare_reports_the_transformer_lens_rows_within_tolerance() {
    let output = gpt2_parity()
        .arg("compare")
        .arg("--model")
        .arg(fixture_dir())
        .arg("--reference")
        .arg(tl_reference_path())
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report = json_stdout(&output);
    let prompts = report["prompts"].as_array().expect("prompts");
    assert_eq!(prompts.len(), tl_reference().meta.prompts.len());
    for prompt in prompts {
        let comparisons = prompt["comparisons"].as_array().expect("comparisons");
        for name in ["processed-vs-transformer-lens", "unprocessed-vs-transformer-lens-unprocessed"] {
            let row = comparisons
                .iter()
                .find(|row| row["name"] == name)
                .unwrap_or_else(|| panic!("{}: no {name} row in {comparisons:?}", prompt["prompt"]));
            let diff = row["max_abs_diff"].as_f64().expect("max_abs_diff");
            assert!(diff <= TOLERANCE, "{}: {name} max |diff| {diff:e}", prompt["prompt"]);
            assert_eq!(row["passed"], Value::Bool(true));
        }
    }
}

/// `compare --transformer-lens` passes each processing switch that is off on to the bundled
/// script, which records them in the reference's `transformer_lens_processing` metadata. The
/// script runs under a Python that stands in for it: it parses the arguments it was given with
/// the script's own parser, writes what the script would record, and stops (so the test needs
/// no TransformerLens).
#[test]
fn switches_turned_off_reach_the_bundled_script_and_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let recorded = dir.path().join("recorded.json");
    let stand_in = dir.path().join("python");
    std::fs::write(
        &stand_in,
        format!(
            "#!/bin/sh\nexec '{}' - \"$@\" <<'EOF'\n\
             import importlib.util, json, sys\n\
             spec = importlib.util.spec_from_file_location('dump_reference', sys.argv[1])\n\
             script = importlib.util.module_from_spec(spec)\n\
             spec.loader.exec_module(script)\n\
             args = script.parse_args(sys.argv[2:])\n\
             json.dump(script.tl_processing(args) if args.transformer_lens else None, open('{}', 'w'))\n\
             sys.exit('stand-in: recorded')\n\
             EOF\n",
            repo_path(".venv/bin/python").display(),
            recorded.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&stand_in, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let all_on = serde_json::to_value(ProcessingOptions::default()).unwrap();
    let cases: [&[&str]; 5] = [
        &[],
        &["--no-fold-ln"],
        &["--no-center-writing-weights"],
        &["--no-fold-value-biases"],
        &["--no-fold-ln", "--no-center-writing-weights", "--no-fold-value-biases"],
    ];
    for flags in cases {
        let _ = std::fs::remove_file(&recorded);
        gpt2_parity()
            .env("GPT2_PARITY_CACHE", dir.path().join("cache"))
            .args(["compare", "Hello World", "--transformer-lens", "--python"])
            .arg(&stand_in)
            .args(flags)
            .arg("--model")
            .arg(fixture_dir())
            .assert()
            .code(2);
        let switches: Value = serde_json::from_slice(&std::fs::read(&recorded).expect("the stand-in ran")).unwrap();
        let mut expected = all_on.clone();
        for flag in flags {
            expected[flag.trim_start_matches("--no-").replace('-', "_")] = false.into();
        }
        assert_eq!(switches, expected, "{flags:?}");
    }
}
