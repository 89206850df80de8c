//! TransformerLens's weight processing (processing.md section 3) as a pure function on
//! [`Weights`]: it takes the unprocessed weights and returns processed ones in the same layout,
//! freeing each replaced tensor as it goes so that one copy of the model is held at a time.
use serde::Serialize;
use tch::{Kind, Tensor};

use super::{Affine, Unembed, Weights};

/// Which of TransformerLens's steps to apply; all on is TransformerLens's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProcessingOptions {
    pub fold_ln: bool,
    pub center_writing_weights: bool,
    pub center_unembed: bool,
    pub fold_value_biases: bool,
}

impl Default for ProcessingOptions {
    fn default() -> Self {
        Self { fold_ln: true, center_writing_weights: true, center_unembed: true, fold_value_biases: true }
    }
}

/// Applies the enabled steps in TransformerLens's order, after untying the unembedding.
pub fn process(weights: Weights, options: ProcessingOptions) -> Weights {
    let _no_grad = tch::no_grad_guard();
    let mut weights = untie_unembed(weights);
    if options.fold_ln {
        weights = fold_layer_norms(weights);
    }
    if options.center_writing_weights {
        weights = center_writing_weights(weights);
    }
    if options.center_unembed {
        weights = center_unembed(weights);
    }
    if options.fold_value_biases {
        weights = fold_value_biases(weights, options.center_writing_weights);
    }
    weights
}

/// TransformerLens keeps W_U = wte^T as its own tensor, with a zero bias b_U.
fn untie_unembed(mut weights: Weights) -> Weights {
    if let Unembed::Tied = weights.unembed {
        let embedding = &weights.token_embedding;
        let vocab = embedding.size()[0];
        weights.unembed =
            Unembed::Untied { weight: embedding.tr().contiguous(), bias: Tensor::zeros([vocab], (Kind::Float, embedding.device())) };
    }
    weights
}

/// Folds a LayerNorm's scale and shift into the matrix that reads its output, then centers the
/// matrix's rows so that the folded read ignores the residual's mean, as LNPre's output has none.
/// The bias is folded with the unscaled matrix: (x*g + b) @ W + c = x @ (g*W) + (b @ W + c).
fn fold_norm_into(affine: Affine, weight: Tensor, bias: Tensor) -> (Tensor, Tensor) {
    let bias = bias + affine.bias.matmul(&weight);
    let scaled = affine.weight.unsqueeze(-1) * weight;
    let centered = &scaled - scaled.mean_dim(0, true, Kind::Float);
    (centered, bias)
}

fn fold_layer_norms(mut weights: Weights) -> Weights {
    for block in &mut weights.blocks {
        if let Some(affine) = block.ln_1.take() {
            (block.qkv_weight, block.qkv_bias) = fold_norm_into(affine, block.qkv_weight.shallow_clone(), block.qkv_bias.shallow_clone());
        }
        if let Some(affine) = block.ln_2.take() {
            (block.mlp_in_weight, block.mlp_in_bias) =
                fold_norm_into(affine, block.mlp_in_weight.shallow_clone(), block.mlp_in_bias.shallow_clone());
        }
    }
    if let (Some(affine), Unembed::Untied { weight, bias }) = (weights.ln_f.take(), &mut weights.unembed) {
        (*weight, *bias) = fold_norm_into(affine, weight.shallow_clone(), bias.shallow_clone());
    }
    weights
}

/// Subtracts each output vector's mean over its last axis.
fn center_last(tensor: &Tensor) -> Tensor {
    tensor - tensor.mean_dim(-1, true, Kind::Float)
}

/// Everything that writes to the residual stream writes mean-free vectors.
fn center_writing_weights(mut weights: Weights) -> Weights {
    weights.token_embedding = center_last(&weights.token_embedding);
    weights.position_embedding = center_last(&weights.position_embedding);
    for block in &mut weights.blocks {
        block.attn_out_weight = center_last(&block.attn_out_weight);
        block.attn_out_bias = center_last(&block.attn_out_bias);
        block.mlp_out_weight = center_last(&block.mlp_out_weight);
        block.mlp_out_bias = center_last(&block.mlp_out_bias);
    }
    weights
}

/// Removes the unembedding's mean over the vocabulary: every position's logits shift by a
/// constant, which softmax ignores.
fn center_unembed(mut weights: Weights) -> Weights {
    if let Unembed::Untied { weight, bias } = &mut weights.unembed {
        *weight = center_last(weight);
        *bias = center_last(bias);
    }
    weights
}

/// Attention patterns sum to one, so the value bias contributes b_V @ W_O at every position:
/// move it into the output bias.
fn fold_value_biases(mut weights: Weights, recenter: bool) -> Weights {
    let d_model = weights.config.n_embd;
    for block in &mut weights.blocks {
        let value_bias = block.qkv_bias.narrow(0, 2 * d_model, d_model);
        let out_bias = &block.attn_out_bias + value_bias.matmul(&block.attn_out_weight);
        // TransformerLens >= 3 re-centers the folded bias when writing weights are centered.
        block.attn_out_bias = if recenter { center_last(&out_bias) } else { out_bias };
        block.qkv_bias = Tensor::cat(&[block.qkv_bias.narrow(0, 0, 2 * d_model), value_bias.zeros_like()], 0);
    }
    weights
}
