//! `--refactor-factored-attn-matrices` (TransformerLens's refactor_factored_attn_matrices) on the
//! committed fixture: per head the products W_Q W_K^T (biases included) and W_V W_O are kept,
//! the factors change, and the logits do not.
mod common;

use common::{compare_fixture, json_stdout, load_fixture, max_abs_diff};
use gpt2_parity::model::gpt2::forward;
use gpt2_parity::model::process::{process, ProcessingOptions};
use gpt2_parity::model::{Block, Weights};
use serde_json::Value;
use tch::{Kind, Tensor};

const TOLERANCE: f64 = 1e-5;

fn with_refactor() -> ProcessingOptions {
    ProcessingOptions { refactor_factored_attn_matrices: true, ..ProcessingOptions::default() }
}

/// Per head, [H, D+1, Dh]: W_Q (or W_K) with its bias appended as the last row.
fn augmented(block: &Block, which: i64, d_model: i64, heads: i64) -> Tensor {
    let head_dim = d_model / heads;
    let weight = block.qkv_weight.narrow(1, which * d_model, d_model).reshape([d_model, heads, head_dim]).permute([1, 0, 2]);
    let bias = block.qkv_bias.narrow(0, which * d_model, d_model).reshape([heads, 1, head_dim]);
    Tensor::cat(&[weight, bias], 1)
}

/// Per head W_V [H, D, Dh] and W_O [H, Dh, D].
fn value_out(block: &Block, d_model: i64, heads: i64) -> (Tensor, Tensor) {
    let head_dim = d_model / heads;
    let value = block.qkv_weight.narrow(1, 2 * d_model, d_model).reshape([d_model, heads, head_dim]).permute([1, 0, 2]);
    (value, block.attn_out_weight.reshape([heads, head_dim, d_model]))
}

/// Per head W_Q W_K^T ([H, D+1, D+1], biases included) and W_V W_O ([H, D, D]).
fn products(weights: &Weights, layer: usize) -> (Tensor, Tensor) {
    let (d_model, heads) = (weights.config.n_embd, weights.config.n_head);
    let block = &weights.blocks[layer];
    let qk = augmented(block, 0, d_model, heads).matmul(&augmented(block, 1, d_model, heads).transpose(1, 2));
    let (value, out) = value_out(block, d_model, heads);
    (qk, value.matmul(&out))
}

fn max_abs(tensor: &Tensor) -> f64 {
    tensor.abs().max().double_value(&[])
}

/// The largest off-diagonal entry of each [.., r, r] matrix.
fn max_off_diagonal(gram: &Tensor) -> f64 {
    max_abs(&(gram - gram.diagonal(0, -2, -1).diag_embed(0, -2, -1)))
}

#[test]
fn refactoring_keeps_every_heads_products_and_the_logits() {
    let fixture = load_fixture();
    let plain = process(fixture.weights.shallow_clone(), ProcessingOptions::default());
    let refactored = process(fixture.weights.shallow_clone(), with_refactor());
    let d_model = fixture.config.n_embd;
    let (mut worst_qk, mut worst_ov, mut worst_qk_relative, mut worst_ov_relative) = (0f64, 0f64, 0f64, 0f64);
    for layer in 0..fixture.config.n_layer as usize {
        let (qk_before, ov_before) = products(&plain, layer);
        let (qk_after, ov_after) = products(&refactored, layer);
        let (qk_diff, ov_diff) = (max_abs_diff(&qk_after, &qk_before), max_abs_diff(&ov_after, &ov_before));
        worst_qk = worst_qk.max(qk_diff);
        worst_ov = worst_ov.max(ov_diff);
        worst_qk_relative = worst_qk_relative.max(qk_diff / max_abs(&qk_before));
        worst_ov_relative = worst_ov_relative.max(ov_diff / max_abs(&ov_before));
        assert!(qk_diff <= TOLERANCE, "layer {layer}: W_Q W_K^T max |diff| {qk_diff:e}");
        assert!(ov_diff <= TOLERANCE, "layer {layer}: W_V W_O max |diff| {ov_diff:e}");
        let block = &refactored.blocks[layer];
        assert_eq!(max_abs(&block.qkv_bias.narrow(0, 2 * d_model, d_model)), 0.0, "layer {layer}: b_V is folded away");
        // Everything outside attention is untouched.
        assert_eq!(max_abs_diff(&block.mlp_in_weight, &plain.blocks[layer].mlp_in_weight), 0.0);
        // The factors did change.
        assert!(max_abs_diff(&block.qkv_weight, &plain.blocks[layer].qkv_weight) > 1e-3, "layer {layer}: W_QKV unchanged");
        assert!(max_abs_diff(&block.attn_out_weight, &plain.blocks[layer].attn_out_weight) > 1e-3, "layer {layer}: W_O unchanged");
    }
    eprintln!(
        "products: W_Q W_K^T max |diff| {worst_qk:e} (relative to max |entry| {worst_qk_relative:e}), \
         W_V W_O max |diff| {worst_ov:e} (relative {worst_ov_relative:e})"
    );

    let mut worst_logits = 0f64;
    for index in 0..fixture.reference.meta.prompts.len() {
        let tokens = fixture.reference.tokens(index).unwrap();
        let diff = max_abs_diff(&forward(&refactored, &tokens).logits, &forward(&plain, &tokens).logits);
        worst_logits = worst_logits.max(diff);
        assert!(diff <= TOLERANCE, "prompt {index}: logits max |diff| {diff:e}");
    }
    eprintln!("logits: refactored vs not, max |diff| over every prompt {worst_logits:e}");
}

#[test]
fn refactored_factors_have_transformer_lens_shape() {
    let fixture = load_fixture();
    let plain = process(fixture.weights.shallow_clone(), ProcessingOptions::default());
    let refactored = process(fixture.weights.shallow_clone(), with_refactor());
    let (d_model, heads) = (fixture.config.n_embd, fixture.config.n_head);
    let head_dim = d_model / heads;
    let identity = Tensor::eye(head_dim, (Kind::Float, tch::Device::Cpu));
    let (mut worst_balance, mut worst_off_diagonal) = (0f64, 0f64);
    for (layer, block) in refactored.blocks.iter().enumerate() {
        // QK is balanced: A'^T A' = B'^T B' = diag(S).
        let query = augmented(block, 0, d_model, heads);
        let key = augmented(block, 1, d_model, heads);
        let query_gram = query.transpose(1, 2).matmul(&query);
        let key_gram = key.transpose(1, 2).matmul(&key);
        let scale = max_abs(&query_gram);
        let balance = max_abs_diff(&query_gram, &key_gram) / scale;
        let off_diagonal = max_off_diagonal(&query_gram).max(max_off_diagonal(&key_gram)) / scale;
        worst_balance = worst_balance.max(balance);
        worst_off_diagonal = worst_off_diagonal.max(off_diagonal);
        assert!(balance < 1e-4, "layer {layer}: W_Q^T W_Q != W_K^T W_K (relative {balance:e})");
        assert!(off_diagonal < 1e-4, "layer {layer}: W_Q^T W_Q not diagonal (relative {off_diagonal:e})");
        // Its diagonal, S, is in descending order per head.
        let singular = query_gram.diagonal(0, -2, -1);
        let steps = singular.narrow(1, 0, head_dim - 1) - singular.narrow(1, 1, head_dim - 1);
        assert!(steps.min().double_value(&[]) >= -1e-6 * scale, "layer {layer}: singular values not sorted");
        // Before refactoring the same Gram matrices were far from balanced and diagonal.
        let old = &plain.blocks[layer];
        let old_query = augmented(old, 0, d_model, heads);
        let old_gram = old_query.transpose(1, 2).matmul(&old_query);
        assert!(max_off_diagonal(&old_gram) / max_abs(&old_gram) > 1e-2, "layer {layer}: the fixture's W_Q was already diagonal");

        // OV as TransformerLens does it: W_O has orthonormal rows, W_V orthogonal columns (U S).
        let (value, out) = value_out(block, d_model, heads);
        let out_rows = out.matmul(&out.transpose(1, 2));
        let orthonormal = max_abs_diff(&out_rows, &identity);
        assert!(orthonormal < 1e-5, "layer {layer}: W_O W_O^T != I (max |diff| {orthonormal:e})");
        let value_gram = value.transpose(1, 2).matmul(&value);
        let value_off = max_off_diagonal(&value_gram) / max_abs(&value_gram);
        assert!(value_off < 1e-4, "layer {layer}: W_V^T W_V not diagonal (relative {value_off:e})");
        // Centered writing weights stay centered (W_O's rows span the same mean-free space).
        assert!(block.attn_out_weight.mean_dim(-1, false, Kind::Float).abs().max().double_value(&[]) < 1e-6);
    }
    eprintln!("QK balance: max relative |A'^T A' - B'^T B'| {worst_balance:e}, max relative off-diagonal {worst_off_diagonal:e}");
}

#[test]
fn refactoring_is_off_by_default_and_pure() {
    assert!(!ProcessingOptions::default().refactor_factored_attn_matrices);
    let fixture = load_fixture();
    let before = fixture.weights.blocks[0].qkv_weight.copy();
    let _ = process(fixture.weights.shallow_clone(), with_refactor());
    assert_eq!(max_abs_diff(&fixture.weights.blocks[0].qkv_weight, &before), 0.0, "input weights were written to");
}

#[test]
fn the_cli_flag_is_recorded_in_the_json_report() {
    let output = compare_fixture().args(["--refactor-factored-attn-matrices", "--format", "json"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report = json_stdout(&output);
    assert_eq!(report["processing"]["refactor_factored_attn_matrices"], Value::Bool(true), "{}", report["processing"]);
    assert_eq!(report["passed"], Value::Bool(true));

    let default = compare_fixture().args(["Hello World", "--format", "json"]).output().unwrap();
    let report = json_stdout(&default);
    assert_eq!(report["processing"]["refactor_factored_attn_matrices"], Value::Bool(false));
}
