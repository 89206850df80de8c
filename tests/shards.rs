//! `compare --shard I/N` and `merge`: three shards merged give the single run's report (with
//! explain's attribution), verdict and exit code; merge refuses an incomplete or mixed set:
//! shards of another reference, prompt order or processing, and a shard edited to pass.
mod common;

use std::path::PathBuf;

use common::{fixture_dir, fixture_reference, gpt2_parity, json_report, json_report_file, without_timing, EditableSafetensors};
use serde_json::Value;
use tempfile::TempDir;

/// The fixture reference with prompt 4's logits nudged and a NaN in prompt 2's (written `null`
/// in JSON, read back as NaN), so that one shard passes and two fail.
fn reference_with_two_bad_prompts(dir: &TempDir) -> PathBuf {
    let path = dir.path().join("reference.safetensors");
    let mut reference = EditableSafetensors::read(&fixture_reference());
    reference.map_f32("prompt.4.logits", |index, value| if index == 7 { value + 0.5 } else { value });
    reference.map_f32("prompt.2.logits", |index, value| if index == 3 { f32::NAN } else { value });
    reference.write(&path);
    path
}

/// One thread: a report's bits then depend on no thread count (merge compares the shards' and the
/// single run's numbers bit for bit).
fn compare(reference: &PathBuf, extra: &[&str]) -> std::process::Output {
    gpt2_parity()
        .args(["compare", "--format", "json", "--threads", "1", "--model"])
        .arg(fixture_dir())
        .arg("--reference")
        .arg(reference)
        .args(extra)
        .output()
        .unwrap()
}

/// Writes shard `index`/`count` of a compare run with `args` to `dir`, and returns its path.
fn shard(dir: &TempDir, name: &str, reference: &PathBuf, (index, count): (usize, usize), args: &[&str]) -> PathBuf {
    let file = dir.path().join(format!("{name}-{index}.json"));
    let shard = format!("{index}/{count}");
    let output = compare(reference, &[args, &["--shard", &shard, "--output", file.to_str().unwrap()]].concat());
    assert!(matches!(output.status.code(), Some(0 | 1)), "{}", String::from_utf8_lossy(&output.stderr));
    file
}

/// merge of `files`: exit 2 and one line on stderr, which is returned.
fn refused(files: &[&PathBuf]) -> String {
    let output = gpt2_parity().arg("merge").args(files).output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn merge_refuses_shards_of_another_reference_prompt_order_or_processing() {
    let dir = TempDir::new().unwrap();
    let failing = reference_with_two_bad_prompts(&dir);
    let passing = fixture_reference();
    // Shards 1-2 against the failing reference, shard 3 against one with the same prompts and
    // metadata: merged, they would pass where a single run against either fails or passes.
    let bad = [1, 2].map(|index| shard(&dir, "failing", &failing, (index, 3), &[]));
    let good = shard(&dir, "passing", &passing, (3, 3), &[]);
    let stderr = refused(&[&bad[0], &bad[1], &good]);
    assert!(stderr.contains("in reference.digest") && stderr.contains("checked against another reference"), "{stderr}");

    // The same prompts in another order: a single run of either order checks each prompt once.
    let prompts = ["Hello", "Hello World", "   leading spaces"];
    let reversed: Vec<&str> = prompts.iter().rev().copied().collect();
    let forward = shard(&dir, "forward", &passing, (1, 2), &prompts);
    let backward = shard(&dir, "backward", &passing, (2, 2), &reversed);
    let stderr = refused(&[&forward, &backward]);
    assert!(stderr.contains("in prompts_digest"), "{stderr}");

    let third = shard(&dir, "third", &passing, (2, 3), &prompts);
    let stderr = refused(&[&forward, &third]);
    assert!(stderr.contains("is shard 2/3 of 3 prompts, the first report is shard 1/2 of 3 prompts"), "{stderr}");

    let switched = shard(&dir, "switched", &passing, (2, 2), &[&prompts[..], &["--no-center-unembed"]].concat());
    let stderr = refused(&[&forward, &switched]);
    assert!(stderr.contains("in processing.center_unembed, false against true"), "{stderr}");
}

#[test]
fn merge_refuses_a_shard_edited_to_say_it_passed() {
    let dir = TempDir::new().unwrap();
    let failing = reference_with_two_bad_prompts(&dir);
    let files: Vec<PathBuf> = (1..=3).map(|index| shard(&dir, "shard", &failing, (index, 3), &[])).collect();
    let original = json_report_file(&files[2]);
    assert_eq!(original["passed"], false, "shard 3/3 holds prompt 2, whose reference has a NaN");
    // Edited at the report level only, then every verdict in it, consistently.
    let mut report_only = original.clone();
    report_only["passed"] = true.into();
    let mut every_verdict = report_only.clone();
    for prompt in every_verdict["prompts"].as_array_mut().unwrap() {
        prompt["passed"] = true.into();
        for comparison in prompt["comparisons"].as_array_mut().unwrap() {
            comparison["passed"] = true.into();
        }
    }
    for (edit, expected) in
        [(report_only, "says the run passed, but its prompts say it failed"), (every_verdict, "passed, but its figures")]
    {
        std::fs::write(&files[2], serde_json::to_vec_pretty(&edit).unwrap()).unwrap();
        let stderr = refused(&[&files[0], &files[1], &files[2]]);
        assert!(stderr.contains(expected) && stderr.contains("was it edited?"), "{stderr}");
    }
}

#[test]
fn three_shards_merged_equal_a_single_run() {
    let dir = TempDir::new().unwrap();
    let reference = reference_with_two_bad_prompts(&dir);
    let single = compare(&reference, &["--attribution"]);
    assert_eq!(single.status.code(), Some(1));
    let single = json_report(&single.stdout);

    let mut shard_files = Vec::new();
    let mut shard_codes = Vec::new();
    for index in [3, 1, 2] {
        let file = dir.path().join(format!("shard-{index}.json"));
        let output = compare(&reference, &["--attribution", "--shard", &format!("{index}/3"), "--output", file.to_str().unwrap()]);
        let report = json_report_file(&file);
        assert_eq!(report["shard"], serde_json::json!({"index": index, "count": 3, "total_prompts": 8}));
        let expected: Vec<&Value> = single["prompts"].as_array().unwrap().iter().skip(index - 1).step_by(3).collect();
        assert_eq!(report["prompts"].as_array().unwrap().iter().collect::<Vec<_>>(), expected, "shard {index}/3 holds every third prompt");
        shard_codes.push(output.status.code());
        shard_files.push(file);
    }
    // Prompt 2 is in shard 3/3, prompt 4 in shard 2/3.
    assert_eq!(shard_codes, [Some(1), Some(0), Some(1)]);

    let html = dir.path().join("report.html");
    let merged = gpt2_parity().args(["merge", "--format", "json", "--html"]).arg(&html).args(&shard_files).output().unwrap();
    assert_eq!(merged.status.code(), Some(1), "{}", String::from_utf8_lossy(&merged.stderr));
    let merged = json_report(&merged.stdout);
    assert!(merged.get("shard").is_none());
    assert_eq!(merged["passed"], single["passed"]);
    assert_eq!(merged["prompts"], single["prompts"]);
    assert_eq!(merged["worst"], single["worst"]);
    assert_eq!(merged["attribution"], single["attribution"], "rows recomputed from every prompt's effects");
    let timing = merged["timing"].clone();
    assert_eq!(timing["prompt_seconds"].as_array().map(Vec::len), Some(8), "{timing}");
    assert!(timing["prompt_seconds"].as_array().unwrap().iter().all(|seconds| seconds.as_f64().unwrap() > 0.0), "{timing}");
    assert_eq!(without_timing(merged.clone()), without_timing(single), "only the timing differs from a single run");
    check_attribution_chart(&std::fs::read_to_string(html).unwrap(), &merged);
}

/// The page charts each processing step's share of the raw difference, with its figures.
fn check_attribution_chart(html: &str, report: &Value) {
    let options = roxmltree::ParsingOptions { allow_dtd: true, ..roxmltree::ParsingOptions::default() };
    let document = roxmltree::Document::parse_with_options(html, options).unwrap_or_else(|error| panic!("not well-formed: {error}"));
    let text: String = document.descendants().filter_map(|node| node.text()).collect();
    assert!(text.contains("Where the processed-vs-unprocessed difference comes from"));
    let rows = report["attribution"].as_array().unwrap();
    assert!(rows.len() >= 5, "baseline, four steps alone, accumulations");
    for row in rows {
        let share = 100.0 * row["min_share_of_raw_difference"].as_f64().unwrap();
        let log_softmax = row["log_softmax_max_abs_diff"].as_f64().unwrap();
        let figures = format!("{share:.2}% · ");
        assert!(text.contains(row["name"].as_str().unwrap()) && text.contains(&figures), "the page lacks row {row}");
        assert!(text.contains(&format!("{log_softmax:.2e}")), "the page lacks {log_softmax:.2e}");
    }
}

#[test]
fn merge_refuses_a_missing_or_repeated_shard_and_non_shard_reports() {
    let dir = TempDir::new().unwrap();
    let reference = fixture_reference();
    let files: Vec<PathBuf> = (1..=2)
        .map(|index| {
            let file = dir.path().join(format!("shard-{index}.json"));
            let output =
                compare(&reference, &["Hello", "Hello World", "--shard", &format!("{index}/2"), "--output", file.to_str().unwrap()]);
            assert_eq!(output.status.code(), Some(0));
            file
        })
        .collect();
    let merge = |files: &[&PathBuf]| gpt2_parity().arg("merge").args(files).output().unwrap();

    let output = merge(&[&files[0]]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("shards 2/2 are missing"));

    let output = merge(&[&files[0], &files[0]]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("given twice"));

    let whole = dir.path().join("whole.json");
    assert_eq!(compare(&reference, &["Hello", "--output", whole.to_str().unwrap()]).status.code(), Some(0));
    let output = merge(&[&whole]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a shard"));

    let merged = merge(&[&files[1], &files[0]]);
    assert_eq!(merged.status.code(), Some(0));
    let table = String::from_utf8_lossy(&merged.stdout);
    assert!(table.contains("PASS: 6 comparisons on 2 prompts"), "{table}");
}
