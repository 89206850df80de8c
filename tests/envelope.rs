//! The rounding envelope at real GPT-2 magnitudes, against independent implementations
//! (tests/support/gpt2_ports.py: numpy and plain torch, float32 and float64, written from the
//! GPT-2 definition): every faithful one passes, every catalogued port deviation fails at the
//! place it starts with its cause named, and a deviation planted in block N is localised to N.
mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::{cached_dir, compare_json, gpt2_parity, make_model, python_with_env};
use serde_json::{json, Value};
use tempfile::TempDir;

const N_LAYER: usize = 4;
/// The logits' place in `first_outside` (after the embeddings and every block's output).
const LOGITS: u64 = N_LAYER as u64 + 1;

/// Every process these tests start computes on one thread: `--threads 1` for ours,
/// OMP_NUM_THREADS for the Python ones (PyTorch's and numpy's threads). The checks here are exact
/// (where a side first leaves the envelope, a faithful side's margin), and twice in CI on the
/// 2-core Xeon VM, under the load of this suite, a float32 forward on two threads came out about
/// 50x further from float64 in block 0 than its rerun (once in the bundled script, in one
/// thread's rows 0-13 of 27; once in ours, which moved exact GELU's first place from block 0 to
/// 1). Never reproduced: 27 runs of the script on that VM; on an AMD EPYC VM, 160 of ours four at
/// once and six runs of this file. One thread is the documented way to the same bits every run.
const ONE_THREAD: [(&str, &str); 1] = [("OMP_NUM_THREADS", "1")];

/// Prompts of 1 to 330 tokens; the first is the generator's calibration text.
fn prompts() -> Vec<String> {
    let words = ["the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from"];
    let long: Vec<&str> = (0..330).map(|index| words[(index * 7 + index / 3) % words.len()]).collect();
    vec![
        "Hello World. The quick brown fox jumps over the lazy dog, and GPT-2 predicts the next token of ordinary English text.".to_owned(),
        "Hello World".to_owned(),
        "  two spaces\tand a tab, digits 12345 and é😀".to_owned(),
        "x".to_owned(),
        long.join(" "),
    ]
}

/// A 4-layer model with GPT-2's magnitudes, room for 400 positions, and Hugging Face references
/// for it: float32, float32 with <|endoftext|> prepended, and float64.
struct Model {
    dir: PathBuf,
    reference: PathBuf,
    reference_bos: PathBuf,
    reference_float64: PathBuf,
}

fn model() -> &'static Model {
    static MODEL: std::sync::OnceLock<Model> = std::sync::OnceLock::new();
    MODEL.get_or_init(|| {
        let root = cached_dir("envelope", |staging| {
            let dir = staging.join("model");
            let shape = ["--gpt2-magnitudes", "--n-layer", "4", "--n-embd", "128", "--n-head", "4", "--n-positions", "400"];
            make_model(&dir, &shape);
            let prompts = prompts();
            for (file, extra) in [
                ("reference.safetensors", &[][..]),
                ("bos.safetensors", &["--prepend-bos"]),
                ("float64.safetensors", &["--dtype", "float64"]),
            ] {
                gpt2_parity()
                    .envs(ONE_THREAD)
                    .arg("reference")
                    .arg("--model")
                    .arg(&dir)
                    .arg("--output")
                    .arg(staging.join(file))
                    .args(extra)
                    .arg("--")
                    .args(&prompts)
                    .assert()
                    .success();
            }
        });
        Model {
            dir: root.join("model"),
            reference: root.join("reference.safetensors"),
            reference_bos: root.join("bos.safetensors"),
            reference_float64: root.join("float64.safetensors"),
        }
    })
}

/// Writes what an independent port computes for every prompt of `reference`.
fn port(dir: &Path, reference: &Path, args: &[&str]) -> PathBuf {
    let output = dir.join(format!("port-{}.safetensors", args.join("_").replace(['-', ' '], "")));
    let paths = [OsStr::new("--model"), model().dir.as_os_str(), OsStr::new("--reference"), reference.as_os_str()];
    python_with_env(
        "tests/support/gpt2_ports.py",
        paths.into_iter().chain([OsStr::new("--output"), output.as_os_str()]).chain(args.iter().map(OsStr::new)),
        &ONE_THREAD,
    );
    output
}

/// `compare --format json` on the model against `reference`, with `extra`; exit status and report.
fn compare(reference: &Path, extra: &[&str]) -> (Option<i32>, Value) {
    let args = [OsStr::new("--model"), model().dir.as_os_str(), OsStr::new("--reference"), reference.as_os_str()];
    let one_thread = ["--threads", "1"].map(OsStr::new);
    compare_json(args.into_iter().chain(one_thread).chain(extra.iter().map(OsStr::new)))
}

fn comparisons(report: &Value) -> impl Iterator<Item = (&Value, &Value)> {
    report["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|prompt| prompt["comparisons"].as_array().unwrap().iter().map(move |c| (prompt, c)))
}

/// The largest multiple of the envelope a side reaches anywhere, either view.
fn worst(side: &Value) -> f64 {
    worst_before_the_head(side).max(side["head"].as_f64().unwrap_or(0.0))
}

/// The same, leaving out the head on its own (ln_f and the unembedding on the side's last
/// residual snapshot, against our float32 head on it).
fn worst_before_the_head(side: &Value) -> f64 {
    ["snapshots", "each_block"]
        .iter()
        .flat_map(|key| side[key].as_array().into_iter().flatten())
        .chain([&side["logits"]])
        .filter_map(Value::as_f64)
        .fold(0.0, f64::max)
}

/// Runs `command` and `check`s its result. Should the check fail, the command runs once more
/// before the failure is reported, and the test's output says whether the rerun gave the same
/// results and whether it passes the check: a failure that does not repeat points at the run
/// (a transient fault), one that does at the code. The test fails either way.
fn checked_with_rerun(command: impl Fn() -> (Option<i32>, Value), check: impl Fn(&(Option<i32>, Value))) {
    let first = command();
    let Err(failure) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&first))) else {
        return;
    };
    let again = command();
    let same = again.1["prompts"] == first.1["prompts"];
    let passes = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&again))).is_ok();
    eprintln!(
        "the same command run again: exit {:?}, its prompts' results {} the first run's, the check {}",
        again.0,
        if same { "equal" } else { "differ from" },
        if passes { "passes" } else { "fails again" }
    );
    std::panic::resume_unwind(failure);
}

/// How the candidate computes its head (ln_f and the unembedding). The envelope's width there is
/// our float32 head's own error through libtorch's MKL; numpy's OpenBLAS adds a product's terms
/// differently and lands several times further from float64, so a numpy port's head is held to
/// the factor only (by `first_outside` and `passed`), every view before it still to 3x. Measured
/// apart on a 2-core Intel Xeon (AVX-512), [2, 768] @ [768, 50257] in float32 against float64:
/// OpenBLAS's largest error 4.2x MKL's, a plain float32 loop adding in order 5.9x; the numpy
/// port's head reached 3.86x on the 2-token prompt there (1.08x in any view at 27 tokens).
#[derive(Clone, Copy)]
enum CandidateHead {
    Libtorch,
    Openblas,
}

/// `compare` on `reference` with `extra` passes: every comparison, both sides within the
/// envelope (the factor is 8) with room to spare (faithful implementations sit at 1.5x or below
/// on this model), except a numpy port's head on its own (`CandidateHead::Openblas`).
fn assert_faithful(what: &str, reference: &Path, extra: &[&str], candidate_head: CandidateHead) {
    let check = |(code, report): &(Option<i32>, Value)| {
        for (prompt, comparison) in comparisons(report) {
            let rounding = &comparison["rounding"];
            for side in ["candidate", "reference"] {
                let judged = &rounding[side];
                eprintln!(
                    "{what}: {} tokens, {} {}: worst {:.2}x",
                    prompt["tokens"].as_array().unwrap().len(),
                    comparison["name"],
                    judged["side"],
                    worst(judged)
                );
                assert!(judged["first_outside"].is_null(), "{what}: {comparison:#}");
                let margin = match (side, candidate_head) {
                    ("candidate", CandidateHead::Openblas) => worst_before_the_head(judged),
                    _ => worst(judged),
                };
                assert!(margin <= 3.0, "{what}: {} at {margin:.2}x: {comparison:#}", judged["side"]);
            }
            assert_eq!(comparison["passed"], true, "{what}: {comparison:#}");
            for snapshot in comparison["resid"].as_array().into_iter().flatten() {
                assert_eq!(snapshot["passed"], true, "{what}: no snapshot fails in a passing report: {snapshot}");
            }
        }
        assert_eq!(*code, Some(0), "{what}");
    };
    checked_with_rerun(|| compare(reference, extra), check);
}

#[test]
fn faithful_implementations_pass_at_real_magnitudes_with_and_without_bos() {
    let dir = TempDir::new().unwrap();
    let model = model();
    for (name, reference) in [("float32", &model.reference), ("<|endoftext|> prepended", &model.reference_bos)] {
        // Ours, unprocessed and processed, against Hugging Face in float32.
        assert_faithful(&format!("ours vs Hugging Face, {name}"), reference, &[], CandidateHead::Libtorch);
        for backend in ["numpy", "torch"] {
            for dtype in ["float32", "float64"] {
                let candidate = port(dir.path(), reference, &["--backend", backend, "--dtype", dtype]);
                let what = format!("{backend} {dtype} port, {name}");
                let head = if backend == "numpy" { CandidateHead::Openblas } else { CandidateHead::Libtorch };
                assert_faithful(&what, reference, &["--candidate", candidate.to_str().unwrap()], head);
            }
        }
    }
    assert_faithful("ours vs Hugging Face in float64", &model.reference_float64, &[], CandidateHead::Libtorch);
}

/// A port with one deviation, on the calibration prompt: it fails, its side first leaves the
/// envelope at `place`, and the tested cause is `cause` (`null`: no catalogued deviation).
fn assert_caught(args: &[&str], place: u64, cause: Value) {
    let dir = TempDir::new().unwrap();
    let candidate = port(dir.path(), &model().reference, args);
    let prompt = &prompts()[0];
    let command = || compare(&model().reference, &["--candidate", candidate.to_str().unwrap(), prompt]);
    let check = |(code, report): &(Option<i32>, Value)| {
        assert_eq!(*code, Some(1), "{args:?}: {report:#}");
        let comparison = &report["prompts"][0]["comparisons"][0];
        let side = &comparison["rounding"]["candidate"];
        eprintln!("{args:?}: first outside {} at {:.0}x, cause {}", side["first_outside"], worst(side), side["cause"]["description"]);
        assert_eq!(side["first_outside"]["index"], place, "{args:?}: {side:#}");
        assert_eq!(side["cause"]["deviation"], cause, "{args:?}: {side:#}");
        // A forward-tested cause matches within the envelope; one recognised by its signature (an
        // untied unembedding) shows the logits owe nothing to wte.
        match side["cause"]["correlation"].as_f64() {
            Some(correlation) => assert!(correlation < 0.1 && side["cause"]["multiple"].is_null(), "{args:?}: {side:#}"),
            None => assert!(side["cause"]["multiple"].as_f64().unwrap() <= 8.0, "{args:?}: {side:#}"),
        }
        assert!(comparison["rounding"]["reference"]["first_outside"].is_null(), "the reference is Hugging Face's: {comparison:#}");
        let notes = report["prompts"][0]["notes"].as_array().unwrap();
        let described = side["cause"]["description"].as_str().unwrap();
        assert!(notes.iter().any(|note| note.as_str().unwrap().contains(described)), "{args:?}: the note names the cause: {notes:#?}");
        assert_eq!(comparison["likely_cause"]["kind"], "leaves_envelope", "{args:?}: {comparison:#}");
    };
    checked_with_rerun(command, check);
}

fn deviation(kind: Value, block: Option<usize>) -> Value {
    json!({ "kind": kind, "block": block })
}

#[test]
fn each_catalogued_deviation_fails_where_it_starts_and_is_named() {
    let every = |kind: Value| deviation(kind, None);
    let kind = |name: &str| json!({ "kind": name });
    let cases: Vec<(&[&str], u64, Value)> = vec![
        (&["--deviation", "exact_gelu"], 1, every(kind("exact_gelu"))),
        (&["--deviation", "no_mask", "--backend", "torch"], 1, every(kind("no_causal_mask"))),
        (&["--deviation", "attn_scale_d_model"], 1, every(kind("attention_scale_by_model_width"))),
        (&["--deviation", "no_attn_scale"], 1, every(kind("no_attention_scale"))),
        (&["--deviation", "no_qkv_bias"], 1, every(json!({ "kind": "missing_bias", "bias": "qkv" }))),
        (&["--deviation", "no_attn_out_bias"], 1, every(json!({ "kind": "missing_bias", "bias": "attention_out" }))),
        (&["--deviation", "no_mlp_in_bias"], 1, every(json!({ "kind": "missing_bias", "bias": "mlp_in" }))),
        (&["--deviation", "no_mlp_out_bias"], 1, every(json!({ "kind": "missing_bias", "bias": "mlp_out" }))),
        (&["--deviation", "half_softmax"], 1, every(kind("half_precision_softmax"))),
        (&["--deviation", "half_layer_norm", "--backend", "torch"], 1, every(kind("half_precision_layer_norm"))),
        (&["--deviation", "positions_plus_1"], 0, every(json!({ "kind": "position_offset", "offset": 1 }))),
        (&["--deviation", "positions_minus_1"], 0, every(json!({ "kind": "position_offset", "offset": -1 }))),
        (&["--deviation", "bos_prepended"], 0, every(kind("bos_prepended"))),
        (&["--deviation", "no_ln_f"], LOGITS, every(kind("no_final_layer_norm"))),
        (&["--deviation", "unembed_reshaped"], LOGITS, every(kind("unembedding_reshaped"))),
        (&["--deviation", "untied_unembedding"], LOGITS, every(kind("unembedding_untied"))),
        // Later blocks' LayerNorms cannot show an epsilon at this model's residual variance:
        // the search names block h.0, where it shows (and says the others may share it).
        (&["--deviation", "ln_eps_1e-12"], 1, deviation(json!({ "kind": "layer_norm_epsilon", "epsilon": 1e-12 }), Some(0))),
        (&["--deviation", "ln_eps_1e-6"], 1, deviation(json!({ "kind": "layer_norm_epsilon", "epsilon": 1e-6 }), Some(0))),
    ];
    for (args, place, cause) in cases {
        assert_caught(args, place, cause);
    }
}

#[test]
fn a_deviation_in_block_n_is_localised_to_n_for_every_n() {
    for block in 0..N_LAYER {
        let n = block.to_string();
        assert_caught(
            &["--deviation", "exact_gelu", "--block", &n],
            block as u64 + 1,
            deviation(json!({ "kind": "exact_gelu" }), Some(block)),
        );
        assert_caught(
            &["--deviation", "no_mask", "--block", &n],
            block as u64 + 1,
            deviation(json!({ "kind": "no_causal_mask" }), Some(block)),
        );
    }
}

#[test]
fn a_cause_found_on_one_prompt_is_tried_first_on_the_next() {
    let dir = TempDir::new().unwrap();
    let candidate = port(dir.path(), &model().reference, &["--deviation", "exact_gelu", "--block", "2"]);
    let prompts = prompts();
    let (code, report) = compare(&model().reference, &["--candidate", candidate.to_str().unwrap(), &prompts[0], &prompts[2]]);
    assert_eq!(code, Some(1), "{report:#}");
    let sides: Vec<&Value> = comparisons(&report).map(|(_, comparison)| &comparison["rounding"]["candidate"]).collect();
    let cause = deviation(json!({ "kind": "exact_gelu" }), Some(2));
    for side in &sides {
        assert_eq!(side["first_outside"]["index"], 3, "{side:#}");
        assert_eq!(side["cause"]["deviation"], cause, "{side:#}");
        assert!(side["cause"]["multiple"].as_f64().unwrap() <= 8.0, "tested on this prompt's data: {side:#}");
    }
    assert!(sides[0]["deviations_tried"].as_u64().unwrap() > 1, "the first prompt searches the catalogue: {:#}", sides[0]);
    assert_eq!(sides[1]["deviations_tried"], 1, "the next tries the cause found first: {:#}", sides[1]);
}

#[test]
fn a_candidate_without_its_residual_stream_gets_a_logits_only_verdict() {
    let dir = TempDir::new().unwrap();
    let reference = &model().reference;
    let faithful = port(dir.path(), reference, &["--no-resid"]);
    assert_faithful("numpy float32 port, logits only", reference, &["--candidate", faithful.to_str().unwrap()], CandidateHead::Openblas);
    let gelu = port(dir.path(), reference, &["--no-resid", "--deviation", "exact_gelu"]);
    let (code, report) = compare(reference, &["--candidate", gelu.to_str().unwrap(), &prompts()[0]]);
    assert_eq!(code, Some(1), "{report:#}");
    let side = &report["prompts"][0]["comparisons"][0]["rounding"]["candidate"];
    assert_eq!(side["first_outside"]["index"], LOGITS, "{side:#}");
    assert!(side["snapshots"].is_null() && side["each_block"].is_null(), "{side:#}");
    assert_eq!(side["cause"]["deviation"], deviation(json!({ "kind": "exact_gelu" }), None), "{side:#}");
    let notes = report["prompts"][0]["notes"].to_string();
    assert!(notes.contains("residual stream"), "the note says localisation needs the residual stream: {notes}");
}

#[test]
fn a_broken_reference_is_caught_on_the_reference_side() {
    // A reference written by a port with exact GELU, as a broken transformers build would.
    let dir = TempDir::new().unwrap();
    let broken = port(dir.path(), &model().reference, &["--deviation", "exact_gelu"]);
    let (code, report) = compare(&broken, &[&prompts()[0]]);
    assert_eq!(code, Some(1), "{report:#}");
    for (_, comparison) in comparisons(&report) {
        let name = comparison["name"].as_str().unwrap();
        let rounding = &comparison["rounding"];
        if name == "processed-vs-unprocessed" {
            assert_eq!(comparison["passed"], true, "our two models agree: {comparison:#}");
            continue;
        }
        assert_eq!(comparison["passed"], false, "{comparison:#}");
        assert!(rounding["candidate"]["first_outside"].is_null(), "our side is faithful: {comparison:#}");
        assert_eq!(rounding["reference"]["first_outside"]["index"], 1, "{comparison:#}");
        assert_eq!(rounding["reference"]["cause"]["deviation"], deviation(json!({ "kind": "exact_gelu" }), None));
    }
}

#[test]
fn criterion_tolerance_keeps_the_tolerance_only_gate_and_skips_the_float64_forward() {
    let dir = TempDir::new().unwrap();
    let reference = &model().reference;
    let gelu = port(dir.path(), reference, &["--deviation", "exact_gelu", "--block", "2"]);
    let candidate = gelu.to_str().unwrap();
    let (code, report) = compare(reference, &["--candidate", candidate, "--criterion", "tolerance", &prompts()[0]]);
    // Exact GELU in block h.2 moves the logits by about 1.4e-4, inside atol 1e-4 + rtol 1e-5 x
    // |logit| at these magnitudes: the tolerance gate passes it, which is why the envelope is
    // the default.
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["gate"], "tolerance");
    let comparison = &report["prompts"][0]["comparisons"][0];
    assert!(comparison.get("rounding").is_none(), "{comparison:#}");
    for snapshot in comparison["resid"].as_array().unwrap() {
        assert!(snapshot["passed"].is_null(), "not judged under --criterion tolerance: {snapshot}");
    }
    let (code, report) = compare(reference, &["--candidate", candidate, &prompts()[0]]);
    assert_eq!((code, &report["gate"]), (Some(1), &json!("envelope")), "{report:#}");
}
