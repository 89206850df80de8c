//! `--device` without a GPU (the machines these tests run on need none) and `--dtype` for every
//! dtype on the fixture: the report records what ran, and each dtype's default tolerance
//! passes a correct model.
mod common;

use common::{compare_fixture, compare_fixture_json, fixture_dir, gpt2_parity, report_json};
use tempfile::TempDir;

#[test]
fn auto_runs_on_the_cpu_without_a_gpu_and_cuda_is_one_line_naming_the_fix() {
    let (code, report) = compare_fixture_json(["--device", "auto"]);
    assert_eq!(code, Some(0), "{report:#}");
    if report["device"] != "cpu" {
        assert_eq!(report["device"], "cuda:0", "auto picks CUDA device 0 when there is one");
        return; // a GPU machine: `--device cuda` is legitimate there
    }
    let output = compare_fixture().args(["--device", "cuda"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for part in ["error: --device cuda:0", "no CUDA device", "--device cpu", "--device auto"] {
        assert!(stderr.contains(part), "{part:?} not in {stderr}");
    }
    assert!(output.stdout.is_empty());
}

#[test]
fn the_report_records_dtype_device_and_libtorch() {
    let (code, report) = compare_fixture_json::<&str>([]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["dtype"], "float32");
    assert_eq!(report["device"], "cpu");
    assert_eq!(report["reference"]["dtype"], "float32");
    let libtorch = report["tool"]["libtorch"].as_str().unwrap();
    assert!(libtorch.starts_with("2."), "libtorch version {libtorch}");
}

#[test]
fn half_precision_passes_against_the_float32_reference_at_its_default_tolerance() {
    for (dtype, atol, rtol) in [("float16", 0.25, 1e-3), ("bfloat16", 2.0, 1.6e-2)] {
        let (code, report) = compare_fixture_json(["--dtype", dtype]);
        assert_eq!(code, Some(0), "{dtype}: {report:#}");
        assert_eq!(report["dtype"], dtype);
        assert_eq!(report["tolerance"]["atol"], atol, "{dtype}");
        assert_eq!(report["tolerance"]["rtol"], rtol, "{dtype}");
        // Half precision really ran: its rounding is far above float32's (~2e-6 here).
        let worst = report["prompts"].as_array().unwrap().iter().map(|prompt| prompt["comparisons"][0]["max_abs_diff"].as_f64().unwrap());
        assert!(worst.fold(0.0, f64::max) > 1e-3, "{dtype}: {report:#}");
    }
    // --atol/--rtol override the dtype's defaults.
    let (code, report) = compare_fixture_json(["--dtype", "float16", "--atol", "1e-5", "--rtol", "1e-3"]);
    assert_eq!(code, Some(1), "assert_close's float16 pair fails a whole network's float16 rounding: {report:#}");
    assert_eq!(report["tolerance"]["atol"], 1e-5);
}

#[test]
fn float64_passes_against_a_float64_reference_and_sees_a_float32_ones_rounding() {
    let dir = TempDir::new().unwrap();
    let reference = dir.path().join("float64.safetensors");
    gpt2_parity()
        .args(["reference", "--dtype", "float64", "--model"])
        .arg(fixture_dir())
        .arg("--output")
        .arg(&reference)
        .args(["Hello World", "GPT-2 in float64"])
        .assert()
        .success();
    let (code, report) = report_json(
        gpt2_parity()
            .args(["compare", "--format", "json", "--dtype", "float64", "--model"])
            .arg(fixture_dir())
            .arg("--reference")
            .arg(&reference),
    );
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!((&report["dtype"], &report["reference"]["dtype"]), (&"float64".into(), &"float64".into()));
    // Against the float32 reference, float64's tolerance sees that reference's own rounding.
    let (code, report) = compare_fixture_json(["--dtype", "float64"]);
    assert_eq!(code, Some(1), "{report:#}");
}

#[test]
fn the_noise_floor_shows_in_table_and_markdown() {
    // atol = rtol = 0: every row breaches, and each breach gets its label.
    for format in ["table", "markdown"] {
        let output = compare_fixture().args(["--noise-floor", "--atol", "0", "--rtol", "0", "--format", format]).output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{text}");
        // Headers and verdicts take two lines: a line break in the table, <br> in markdown.
        let break_ = if format == "table" { "" } else { "<br>" };
        assert!(text.contains("from float64:") && text.contains(&format!("{break_}cand / ref")), "{format}: {text}");
        assert!(text.contains(&format!("{break_}rounding noise")), "{format}: {text}");
    }
}
