//! A small hand-built report for the renderers' unit tests: one prompt, a raw comparison that
//! fails on one element and a shift-invariant one that passes only once the shift is removed,
//! with every figure set by hand, so that each renderer's exact output can be written down.
use crate::model::dtype::Dtype;
use crate::model::switches::ProcessingOptions;
use crate::schema::rounding::Gate;
use crate::schema::{
    Comparison, Criteria, Criterion, DiffLocation, ModelInfo, Note, PromptReport, ReferenceInfo, Report, Timing, Tolerance, Tool,
};

/// Two positions over a vocabulary of four; every statistic a round number. Written as the JSON
/// report holds it, which is also how merge reads one back.
fn comparison(name: &str, criterion: Criterion) -> Comparison {
    let the = serde_json::json!({ "position": 1, "token_id": 3, "token": " the" });
    serde_json::from_value(serde_json::json!({
        "name": name, "criterion": criterion,
        "candidate_mean": -1.5, "reference_mean": -1.25, "candidate_std": 2.0, "reference_std": 2.5,
        "max_abs_diff": 0.5, "raw_max_abs_diff_at": the, "max_abs_diff_at": the,
        "worst_abs_diff": 0.5, "worst_is_position_shift": false,
        "mean_abs_diff": 0.0625, "rmse": 0.125, "cosine_similarity": 0.99, "max_rel_diff": 0.25,
        "centered_max_abs_diff": 0.375, "position_shift": [0.0, -0.25],
        "position_max_abs_diff": [0.0, 0.5], "position_centered_max_abs_diff": [0.0, 0.375],
        "violations": 1, "centered_violations": 1, "outside_allclose": 1, "outside_allclose_percent": 12.5,
        "positions_outside": [1], "min_passing_atol": 0.49,
        "log_softmax_max_abs_diff": 0.375, "kl_mean": 0.001, "kl_max": 0.002, "top1_agreement": 1.0, "top5_overlap": 1.0,
        "non_finite": 0, "candidate_non_finite": 0, "reference_non_finite": 0, "first_non_finite_at": null,
        "likely_cause": null, "findings": [], "passed": false
    }))
    .expect("a comparison as the report writes it")
}

/// The report, finished as compare finishes it (with a note per comparison, as prose writes them).
pub fn report() -> Report {
    let failing = comparison("unprocessed-vs-reference", Criterion::Raw);
    let shifted = Comparison {
        max_abs_diff: 60.0,
        worst_abs_diff: 5e-5,
        centered_max_abs_diff: 5e-5,
        centered_violations: 0,
        outside_allclose: 0,
        outside_allclose_percent: 0.0,
        positions_outside: Vec::new(),
        min_passing_atol: 0.0,
        max_abs_diff_at: Some(DiffLocation { position: 0, token_id: 1, token: "<|endoftext|>".to_owned() }),
        passed: true,
        ..comparison("processed-vs-reference", Criterion::ShiftInvariant)
    };
    let note = |comparison: &str, text: &str| Note { comparison: comparison.to_owned(), text: text.to_owned() };
    let prompt = PromptReport {
        prompt: "Hello <World> & \"friends\"".to_owned(),
        tokens: vec![15496, 2159],
        passed: false,
        notes: vec![
            note("unprocessed-vs-reference", "A single element is outside tolerance."),
            note("processed-vs-reference", "Not a bug."),
        ],
        comparisons: vec![failing, shifted],
    };
    let mut report = Report {
        schema_version: 1,
        tool: Tool { name: "gpt2-parity".to_owned(), version: "0.1.0".to_owned(), libtorch: "2.5.1".to_owned() },
        model: ModelInfo {
            source: "fixtures/tiny-gpt2".to_owned(),
            weights: "sha256:0123456789abcdef0123".to_owned(),
            n_layer: 2,
            n_head: 2,
            n_embd: 8,
            vocab_size: 4,
        },
        reference: ReferenceInfo {
            path: "ref.safetensors".to_owned(),
            digest: "sha256:feed".to_owned(),
            bundled: false,
            model: "gpt2".to_owned(),
            weights: "sha256:0123".to_owned(),
            dtype: "float32".to_owned(),
            attn_implementation: "eager".to_owned(),
            producer: serde_json::json!({ "name": "hand" }),
        },
        candidate: None,
        shard: None,
        prompts_digest: "sha256:abcd".to_owned(),
        tolerance: Tolerance { atol: 1e-4, rtol: 1e-5 },
        criteria: Criteria::current(),
        processing: ProcessingOptions::default(),
        repeatability: None,
        prepend_bos: false,
        device: "cpu".to_owned(),
        threads: 1,
        dtype: Dtype::Float32,
        gate: Gate::Tolerance,
        passed: false,
        prompts: vec![prompt],
        worst: Vec::new(),
        attribution: None,
        summary: Vec::new(),
        summary_notes: Vec::new(),
        timing: Timing { started_at: "2026-12-04T15:10:00Z".to_owned(), prompt_seconds: vec![1.25], seconds: 1.25 },
    };
    report.finish();
    report
}
