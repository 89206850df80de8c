//! The binary as CI jobs and scripts use it: exit codes, one-line errors, the JSON report.
mod common;

use common::{
    compare_fixture, fixture_bos_reference, fixture_dir, fixture_reference, gpt2_parity, json_report_file, json_stdout, without_timing,
    EditableSafetensors,
};
use predicates::prelude::*;

#[test]
fn the_fixture_passes_with_exit_0_and_shows_every_comparison() {
    compare_fixture()
        .assert()
        .code(0)
        // Each name as a word of its own: "processed-vs-reference" is also inside "unprocessed-vs-reference".
        .stdout(predicate::function(|stdout: &str| {
            let words: Vec<&str> = stdout.split_whitespace().collect();
            ["unprocessed-vs-reference", "processed-vs-reference", "processed-vs-unprocessed"].iter().all(|name| words.contains(name))
        }))
        .stdout(predicate::str::contains("center_unembed"))
        .stdout(predicate::str::contains("PASS"));
}

#[test]
fn json_report_is_one_document_with_the_contract_fields() {
    let output = compare_fixture().args(["--format", "json"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report = json_stdout(&output);
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["tool"]["name"], "gpt2-parity");
    assert!(report["model"]["weights"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(report["tolerance"]["atol"], 1e-4);
    assert_eq!(report["tolerance"]["rtol"], 1e-5);
    assert_eq!(report["passed"], true);
    assert_eq!(report["processing"]["fold_ln"], true);
    let prompts = report["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 8);
    assert_eq!(prompts[0]["prompt"], "Hello World");
    assert_eq!(prompts[0]["tokens"], serde_json::json!([15496, 2159]));
    for prompt in prompts {
        let comparisons = prompt["comparisons"].as_array().unwrap();
        let names: Vec<&str> = comparisons.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["unprocessed-vs-reference", "processed-vs-reference", "processed-vs-unprocessed"]);
        for comparison in comparisons {
            for field in [
                "candidate_mean",
                "reference_mean",
                "candidate_std",
                "reference_std",
                "max_abs_diff",
                "mean_abs_diff",
                "centered_max_abs_diff",
            ] {
                assert!(comparison[field].is_f64(), "{field} in {comparison}");
            }
            assert_eq!(comparison["non_finite"], 0);
            assert_eq!(comparison["passed"], true);
            assert!(comparison["max_abs_diff_at"]["position"].is_u64());
            assert!(comparison["max_abs_diff_at"]["token"].is_string());
        }
        assert!(comparisons[0]["max_abs_diff"].as_f64().unwrap() <= 1e-5);
        assert!(comparisons[1]["centered_max_abs_diff"].as_f64().unwrap() <= 1e-5);
        assert!(comparisons[1]["max_abs_diff"].as_f64().unwrap() > 1e-4, "the shift is visible raw");
    }
}

#[test]
fn selected_prompts_are_checked_alone() {
    let output = compare_fixture().args(["Hello World", "--format", "json"]).output().unwrap();
    let report = json_stdout(&output);
    assert_eq!(report["prompts"].as_array().unwrap().len(), 1);
}

#[test]
fn a_perturbed_reference_fails_with_exit_1_and_still_reports() {
    let dir = tempfile::tempdir().unwrap();
    let perturbed = dir.path().join("perturbed.safetensors");
    let mut reference = EditableSafetensors::read(&fixture_reference());
    reference.map_f32("prompt.0.logits", |index, value| if index == 7 { value + 0.5 } else { value });
    reference.write(&perturbed);
    let report_path = dir.path().join("report.json");
    let output = gpt2_parity()
        .arg("compare")
        .arg("--model")
        .arg(fixture_dir())
        .arg("--reference")
        .arg(&perturbed)
        .args(["--format", "json", "--output"])
        .arg(&report_path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
    let report = json_report_file(&report_path);
    assert_eq!(report["passed"], false);
    let first = &report["prompts"][0]["comparisons"][0];
    assert_eq!(first["passed"], false);
    assert_eq!(first["max_abs_diff_at"]["position"], 0);
    assert_eq!(first["max_abs_diff_at"]["token_id"], 7);
    assert!((first["max_abs_diff"].as_f64().unwrap() - 0.5).abs() < 1e-3);
    assert_eq!(report["prompts"][1]["passed"], true, "other prompts are unaffected");
}

#[test]
fn zero_tolerance_fails_with_exit_1_when_diffs_are_not_zero() {
    let output = compare_fixture().args(["--atol", "0", "--rtol", "0", "--format", "json"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report = json_stdout(&output);
    assert_eq!(report["passed"], false);
    let worst = report["prompts"][0]["comparisons"][0]["max_abs_diff"].as_f64().unwrap();
    assert!(worst > 0.0, "a zero tolerance fails only when some diff is non-zero");
}

#[test]
fn a_missing_model_directory_is_exit_2_with_one_line() {
    gpt2_parity()
        .args(["compare", "Hello World", "--model", "./no/such/model", "--reference"])
        .arg(fixture_reference())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no/such/model").and(predicate::str::contains("does not exist")))
        .stderr(predicate::function(|stderr: &str| stderr.trim_end().lines().count() == 1));
}

#[test]
fn a_reference_for_other_tokens_is_exit_2_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other-tokens.safetensors");
    let mut reference = EditableSafetensors::read(&fixture_reference());
    reference.set_i64("prompt.0.tokens", &[15496, 2160]);
    reference.write(&path);
    gpt2_parity()
        .arg("compare")
        .arg("--model")
        .arg(fixture_dir())
        .arg("--reference")
        .arg(&path)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("[15496, 2160]").and(predicate::str::contains("[15496, 2159]")));
}

#[test]
fn a_bos_reference_is_compared_with_bos() {
    let output = gpt2_parity()
        .arg("compare")
        .arg("--model")
        .arg(fixture_dir())
        .arg("--reference")
        .arg(fixture_bos_reference())
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report = json_stdout(&output);
    assert_eq!(report["prepend_bos"], true);
    assert_eq!(report["prompts"][0]["tokens"], serde_json::json!([50256, 15496, 2159]));
}

#[test]
fn without_a_reference_the_bundled_script_makes_and_caches_one() {
    let cache = tempfile::tempdir().unwrap();
    let run = || {
        gpt2_parity()
            .env("GPT2_PARITY_CACHE", cache.path())
            .arg("compare")
            .arg("Hello World")
            .arg("tab\there")
            .arg("--prepend-bos")
            .arg("--model")
            .arg(fixture_dir())
            .args(["--format", "json"])
            .output()
            .unwrap()
    };
    let first = run();
    assert_eq!(first.status.code(), Some(0), "{}", String::from_utf8_lossy(&first.stderr));
    let report = json_stdout(&first);
    assert_eq!(report["reference"]["bundled"], true);
    assert_eq!(report["prompts"][0]["tokens"][0], 50256);
    let second = run();
    assert!(!String::from_utf8_lossy(&second.stderr).contains("making the reference"), "the second run uses the cache");
    assert_eq!(json_stdout(&second)["prompts"], report["prompts"]);
}

#[test]
fn no_usable_python_is_exit_2_naming_the_setup_command() {
    gpt2_parity()
        .env("GPT2_PARITY_PYTHON", "/nonexistent/python")
        .env("GPT2_PARITY_CACHE", tempfile::tempdir().unwrap().path())
        .arg("compare")
        .arg("Hello World")
        .arg("--model")
        .arg(fixture_dir())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("make setup"));
}

#[test]
fn help_documents_the_exit_codes() {
    gpt2_parity()
        .args(["compare", "--help"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("Exit status").and(predicate::str::contains("tolerance was breached")));
}

#[test]
fn invalid_tolerances_and_unknown_flags_are_exit_2() {
    for bad in [["--atol", "-1"], ["--rtol", "NaN"], ["--atol", "abc"], ["--no-such-flag", "x"]] {
        compare_fixture().args(bad).assert().code(2);
    }
}

#[test]
fn transformer_lens_logits_without_transformer_lens_installed_is_exit_2_naming_the_requirements() {
    gpt2_parity()
        .env("GPT2_PARITY_CACHE", tempfile::tempdir().unwrap().path())
        .args(["compare", "Hello World", "--transformer-lens", "--model"])
        .arg(fixture_dir())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("transformer_lens is not installed").and(predicate::str::contains("requirements-tl.txt")));
}

#[test]
fn reference_writes_a_file_that_compare_reads_and_can_write_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("made.safetensors");
    gpt2_parity().args(["reference", "Hello World", "tab\there", "--model"]).arg(fixture_dir()).arg("--output").arg(&file).assert().code(0);
    let to_stdout =
        gpt2_parity().args(["reference", "Hello World", "tab\there", "--output", "-", "--model"]).arg(fixture_dir()).output().unwrap();
    assert_eq!(to_stdout.status.code(), Some(0));
    assert_eq!(to_stdout.stdout, std::fs::read(&file).unwrap(), "the same bytes either way");
    gpt2_parity().arg("compare").arg("--model").arg(fixture_dir()).arg("--reference").arg(&file).assert().code(0);
}

#[test]
fn timings_go_to_stderr_and_leave_the_report_unchanged() {
    let plain = compare_fixture().args(["--format", "json", "--threads", "1"]).output().unwrap();
    let timed = compare_fixture().args(["--format", "json", "--threads", "1", "--timings"]).output().unwrap();
    assert_eq!(timed.status.code(), Some(0), "{}", String::from_utf8_lossy(&timed.stderr));
    assert_eq!(without_timing(json_stdout(&timed)), without_timing(json_stdout(&plain)), "the report is the same with --timings");
    let stderr = String::from_utf8_lossy(&timed.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    // Every phase, in the order a run goes through them, then what none covers, then the total;
    // each with its wall and CPU seconds.
    let rows =
        ["libtorch start", "tokenizer", "model load", "digest", "reference", "processing", "forward", "statistics", "render", "other"];
    let wall_of = |label: &str| -> (usize, f64) {
        let index =
            lines.iter().position(|line| line.trim_start().starts_with(label)).unwrap_or_else(|| panic!("no {label} line: {stderr}"));
        let seconds: Vec<f64> = lines[index][2 + label.len()..].split_whitespace().map(|field| field.parse().unwrap()).collect();
        assert_eq!(seconds.len(), 2, "wall and CPU seconds: {}", lines[index]);
        (index, seconds[0])
    };
    let walls: Vec<(usize, f64)> = rows.iter().map(|label| wall_of(label)).collect();
    let (total_index, total) = wall_of("total");
    assert!(walls.windows(2).all(|pair| pair[0].0 < pair[1].0) && walls.last().unwrap().0 < total_index, "out of order: {stderr}");
    // Phases never overlap, so they and "other" add up to the total, up to each figure's rounding
    // and the 10 ms clock that both the process start and the total are read from (/proc).
    let sum: f64 = walls.iter().map(|(_, wall)| wall).sum();
    assert!(
        (sum - total).abs() <= 0.02 + 0.0005 * (rows.len() + 1) as f64,
        "the wall times add up to {sum}, not the total {total}: {stderr}"
    );
    assert!(stderr.contains("peak RSS"), "{stderr}");
    assert!(plain.stderr.is_empty() || !String::from_utf8_lossy(&plain.stderr).contains("timings"), "timings only when asked");
}

/// The schema every test validates reports against (tests/common) refuses what it does not
/// describe, so a report that drifts from docs/report.schema.json fails the suite.
#[test]
fn the_report_schema_refuses_what_it_does_not_describe() {
    let report = json_stdout(&compare_fixture().args(["--format", "json", "Hello"]).output().unwrap());
    type Edit = fn(&mut serde_json::Value);
    let edits: [(&str, Edit); 4] = [
        ("a number where a count belongs", |report| report["prompts"][0]["comparisons"][0]["violations"] = (-1).into()),
        ("an undescribed field on a comparison", |report| report["prompts"][0]["comparisons"][0]["surprise"] = true.into()),
        ("a missing run identity", |report| drop(report.as_object_mut().unwrap().remove("prompts_digest"))),
        ("a reference digest that is no digest", |report| report["reference"]["digest"] = "md5:1234".into()),
    ];
    for (what, edit) in edits {
        let mut broken = report.clone();
        edit(&mut broken);
        let bytes = serde_json::to_vec(&broken).unwrap();
        assert!(std::panic::catch_unwind(|| common::json_report(&bytes)).is_err(), "the schema accepts {what}");
    }
}
