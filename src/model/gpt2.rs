//! GPT-2's forward pass with Hugging Face's eager-attention semantics (processing.md section 2).
//! The processed model runs through the same code: its LayerNorms have no affine part and its
//! unembedding is untied with a bias, which the weights themselves say.
use tch::{Kind, Tensor};

use super::{Affine, Block, Unembed, Weights};
use crate::timings::{timed, Phase};

/// What one prompt produces.
pub struct Activations {
    /// [T, V]
    pub logits: Tensor,
    /// [L + 1, T, D]: the embeddings, then each block's output (before ln_f).
    pub resid: Tensor,
}

/// Runs the model on one prompt's token ids (already checked against n_positions).
pub fn forward(weights: &Weights, tokens: &[i64]) -> Activations {
    timed(Phase::Forward, || forward_untimed(weights, tokens))
}

fn forward_untimed(weights: &Weights, tokens: &[i64]) -> Activations {
    let _no_grad = tch::no_grad_guard();
    let device = weights.token_embedding.stored().device();
    let config = &weights.config;
    let positions = tokens.len() as i64;
    let ids = Tensor::from_slice(tokens).to_device(device);
    let position_ids = Tensor::arange(positions, (Kind::Int64, device));
    let mut x = weights.token_embedding.rows(&ids) + weights.position_embedding.index_select(0, &position_ids);
    let future = Tensor::ones([positions, positions], (Kind::Bool, device)).triu(1);
    let mut resid = Vec::with_capacity(weights.blocks.len() + 1);
    resid.push(x.shallow_clone());
    for block in &weights.blocks {
        x = &x + attention(block, &layer_norm(&x, block.ln_1.as_ref(), config.layer_norm_epsilon), &future, config.n_head);
        x = &x + mlp(block, &layer_norm(&x, block.ln_2.as_ref(), config.layer_norm_epsilon));
        resid.push(x.shallow_clone());
    }
    let normalized = layer_norm(&x, weights.ln_f.as_ref(), config.layer_norm_epsilon);
    let logits = match &weights.unembed {
        Unembed::Tied => normalized.matmul(&weights.token_embedding.table().tr()),
        Unembed::Untied { weight, bias } => bias.addmm(&normalized, weight),
    };
    Activations { logits, resid: Tensor::stack(&resid, 0) }
}

/// LayerNorm over d_model with biased variance; without an affine part it is TransformerLens's LNPre.
fn layer_norm(x: &Tensor, affine: Option<&Affine>, epsilon: f64) -> Tensor {
    let d_model = x.size()[1];
    match affine {
        Some(Affine { weight, bias }) => x.layer_norm([d_model], Some(weight), Some(bias), epsilon, false),
        None => x.layer_norm([d_model], None::<Tensor>, None::<Tensor>, epsilon, false),
    }
}

/// Causal multi-head self-attention; `future` marks the keys each query must not see.
fn attention(block: &Block, x: &Tensor, future: &Tensor, heads: i64) -> Tensor {
    let [positions, d_model] = x.size()[..] else { unreachable!("residual stream is [T, D]") };
    let head_dim = d_model / heads;
    // [T, 3D] -> [3, H, T, Dh]: queries, keys, values, each split into heads.
    let qkv = block.qkv_bias.addmm(x, &block.qkv_weight).view([positions, 3, heads, head_dim]).permute([1, 2, 0, 3]);
    let (queries, keys, values) = (qkv.get(0), qkv.get(1), qkv.get(2));
    let scores = queries.matmul(&keys.transpose(-1, -2)) / (head_dim as f64).sqrt();
    let pattern = scores.masked_fill(future, lowest(scores.kind())).softmax(-1, scores.kind());
    let mixed = pattern.matmul(&values).permute([1, 0, 2]).reshape([positions, d_model]);
    block.attn_out_bias.addmm(&mixed, &block.attn_out_weight)
}

/// The dtype's most negative finite value, which Hugging Face's eager attention writes over
/// masked scores (torch.finfo(dtype).min).
fn lowest(kind: Kind) -> f64 {
    match kind {
        Kind::Double => f64::MIN,
        Kind::Half => -65504.0,
        Kind::BFloat16 => -3.389_531_389_251_535_5e38,
        _ => f64::from(f32::MIN),
    }
}

fn mlp(block: &Block, x: &Tensor) -> Tensor {
    let hidden = gelu_new(&block.mlp_in_bias.addmm(x, &block.mlp_in_weight));
    block.mlp_out_bias.addmm(&hidden, &block.mlp_out_weight)
}

/// GPT-2's tanh approximation of GELU, written out as Hugging Face's `gelu_new` computes it.
fn gelu_new(u: &Tensor) -> Tensor {
    let inner = (u + u.pow_tensor_scalar(3.0) * 0.044715) * (2.0 / std::f64::consts::PI).sqrt();
    u * 0.5 * (inner.tanh() + 1.0)
}
