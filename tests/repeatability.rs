//! Same answer every run, and well-behaved in pipes.
mod common;

use common::{
    compare_fixture, compare_fixture_json, compare_fixture_process, fixture_dir, fixture_reference, gpt2_parity, json_report, prompts_file,
    report_json, without_timing,
};

/// On one thread (`--threads 1`), as on any machine; the default, every core, repeats on one.
#[test]
fn two_runs_give_identical_reports_but_for_the_timing() {
    let (first_code, first) = compare_fixture_json(["--threads", "1"]);
    let (second_code, second) = compare_fixture_json(["--threads", "1"]);
    assert_eq!((first_code, second_code), (Some(0), Some(0)));
    assert_eq!(without_timing(first), without_timing(second), "every number in the JSON report is the same on a second run");
}

#[test]
fn repeat_runs_every_forward_n_times_and_records_that_they_agree() {
    let (code, report) = compare_fixture_json(["--repeat", "3", "Hello World", "Hello"]);
    assert_eq!(code, Some(0));
    assert_eq!(report["repeatability"]["runs"], 3);
    assert_eq!(report["repeatability"]["identical"], true);
    assert_eq!(report["repeatability"]["max_abs_diff"], 0.0);
}

/// Spilled to a temporary file (one weight set at a time) or held in memory (both weight sets,
/// each prompt through both models in turn), the unprocessed logits are the same, and so is
/// every number, with TransformerLens's rows, the noise floor and the attribution.
#[test]
fn spilling_or_not_gives_identical_reports() {
    let tl_reference = fixture_reference().with_file_name("tiny-gpt2-tl.safetensors");
    let report = |spill: &str| {
        let output = gpt2_parity()
            .args(["compare", "--format", "json", "--threads", "1", "--noise-floor", "--attribution", "--spill", spill, "--model"])
            .arg(fixture_dir())
            .arg("--reference")
            .arg(&tl_reference)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
        without_timing(json_report(&output.stdout))
    };
    let spilled = report("always");
    let prompts = spilled["prompts"].as_array().unwrap();
    assert!(prompts.len() > 1 && prompts.iter().all(|prompt| prompt["comparisons"].as_array().unwrap().len() == 5));
    assert!(spilled["attribution"].as_array().is_some_and(|rows| !rows.is_empty()));
    assert_eq!(spilled, report("never"));
}

/// Spilling a run of several packs, the first pack waits in the file while the weights are
/// processed, and every later pack runs through both models in turn, the unprocessed one read
/// back from the checkpoint block by block: the same report as holding both weight sets, with
/// the tolerance gate and with the envelope (which keeps every prompt's logits in the file).
#[test]
fn spilling_a_run_of_several_packs_gives_the_held_report() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = prompts_file(dir.path(), 80);
    let reference = dir.path().join("reference.safetensors");
    gpt2_parity()
        .arg("reference")
        .arg("--prompts-file")
        .arg(&prompts)
        .arg("--model")
        .arg(fixture_dir())
        .arg("--output")
        .arg(&reference)
        .assert()
        .success();
    let report = |spill: &str, gate: &[&str]| {
        let output = gpt2_parity()
            .args(["compare", "--format", "json", "--threads", "1", "--spill", spill, "--model"])
            .arg(fixture_dir())
            .arg("--reference")
            .arg(&reference)
            .args(gate)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
        without_timing(json_report(&output.stdout))
    };
    for gate in [&["--criterion", "tolerance"][..], &[]] {
        let spilled = report("always", gate);
        let rows: u64 = spilled["prompts"].as_array().unwrap().iter().map(|prompt| prompt["tokens"].as_array().unwrap().len() as u64).sum();
        assert!(rows > 2 * 166, "{rows} rows make three packs of the fixture's 166 at least");
        assert_eq!(spilled, report("never", gate), "{gate:?}");
    }
}

#[test]
fn more_threads_still_repeat_exactly() {
    let (code, report) = compare_fixture_json(["--repeat", "2", "--threads", "2", "Hello World"]);
    assert_eq!(code, Some(0));
    assert_eq!(report["repeatability"]["identical"], true);
    assert_eq!(report["threads"], 2);
}

/// The report records the thread count: `--threads N`, else libtorch's own default, the physical
/// cores, which OMP_NUM_THREADS lowers as it does in PyTorch.
#[test]
fn the_report_records_the_thread_count_every_core_by_default() {
    let threads = |omp: Option<&str>, extra: &[&str]| {
        let mut command = compare_fixture();
        command.env_remove("OMP_NUM_THREADS").env_remove("MKL_NUM_THREADS");
        if let Some(omp) = omp {
            command.env("OMP_NUM_THREADS", omp);
        }
        let (code, report) = report_json(command.args(["--format", "json"]).args(extra).arg("Hello"));
        assert_eq!(code, Some(0));
        report["threads"].as_i64().unwrap()
    };
    assert_eq!(threads(Some("1"), &[]), 1);
    assert_eq!(threads(Some("1"), &["--threads", "3"]), 3);
    let cores = std::thread::available_parallelism().unwrap().get() as i64;
    let default = threads(None, &[]);
    assert!((1..=cores).contains(&default), "the physical cores ({default}) are at most the {cores} logical ones");
}

#[test]
fn a_closed_pipe_ends_the_run_quietly() {
    use std::process::Stdio;
    let mut run = compare_fixture_process().stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let head = std::process::Command::new("head").arg("-1").stdin(run.stdout.take().unwrap()).output().unwrap();
    let run = run.wait_with_output().unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.stderr.is_empty(), "nothing on stderr: {}", String::from_utf8_lossy(&run.stderr));
    let output = head;
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 1);
}

/// The statistics run on every core (RAYON_NUM_THREADS limits them); each position is computed
/// whole by one thread and positions combine in order, so the count changes no bit of the report.
#[test]
fn the_report_is_the_same_whatever_the_statistics_thread_count() {
    let report = |threads: &str| {
        let output = gpt2_parity()
            .env("RAYON_NUM_THREADS", threads)
            .args(["compare", "--format", "json", "--threads", "1", "--model"])
            .arg(fixture_dir())
            .arg("--reference")
            .arg(fixture_reference())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
        without_timing(json_report(&output.stdout))
    };
    let one = report("1");
    assert_eq!(report("3"), one, "1 and 3 statistics threads give the same figures");
}
