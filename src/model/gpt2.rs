//! GPT-2's forward pass with Hugging Face's eager-attention semantics (processing.md section 2).
//! The processed model runs through the same code: its LayerNorms have no affine part and its
//! unembedding is untied with a bias, which the weights themselves say.
//!
//! Prompts run packed: the tokens of several prompts, one after another, go through every
//! position-wise step (embeddings, LayerNorms, the linear layers, the unembedding) as one matrix,
//! and attention runs on each prompt's own rows, causal within it. A prompt's rows never meet
//! another prompt's, so packing changes no result beyond the rounding of a matrix product's
//! row count (see [`MIN_PACK_ROWS`]); one prompt alone is a pack of one.
use std::ops::Range;

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

/// What one pack of prompts produces: every prompt's rows, in order, in one tensor each.
pub struct PackedActivations {
    /// [N, V], N the pack's rows (its prompts' tokens, then any filler).
    pub logits: Tensor,
    /// [L + 1, N, D]
    pub resid: Tensor,
    /// Each prompt's rows.
    spans: Vec<Range<i64>>,
}

impl PackedActivations {
    /// Prompt `index`'s activations, as views of the pack's tensors.
    pub fn prompt(&self, index: usize) -> Activations {
        let Range { start, end } = self.spans[index];
        Activations { logits: self.logits.narrow(0, start, end - start), resid: self.resid.narrow(1, start, end - start) }
    }
}

/// A pack's logits are the largest tensor a forward makes ([rows, vocabulary], float32), and
/// compare holds two packs' at once (the unprocessed pass's, waiting for the processed one's):
/// 32 MiB each keeps that under an eighth of GPT-2 small's weights, at 166 rows of GPT-2's
/// vocabulary, where a matrix product already runs at most of the rate of much larger ones
/// (55 rows, one prompt of a typical suite, reach about three quarters of it).
const PACK_LOGITS_ELEMENTS: usize = 1 << 23;

/// libtorch's CPU matrix product (MKL) takes another path for fewer than 4 rows, which rounds
/// differently: a pack shorter than that is filled up to it, so that on one thread a prompt's
/// results are the same bits alone or among any neighbours (`compare --shard` relies on it).
const MIN_PACK_ROWS: usize = 4;

/// Splits prompts of `lengths` tokens, in order, into packs of consecutive prompts whose logits
/// fit [`PACK_LOGITS_ELEMENTS`] for a vocabulary of `vocab`; a longer prompt is a pack alone.
pub fn packs(lengths: &[usize], vocab: usize) -> Vec<Range<usize>> {
    let budget = (PACK_LOGITS_ELEMENTS / vocab.max(1)).max(1);
    let mut packs: Vec<Range<usize>> = Vec::new();
    let mut rows = 0;
    for (index, &length) in lengths.iter().enumerate() {
        match packs.last_mut() {
            Some(pack) if rows + length <= budget => {
                pack.end = index + 1;
                rows += length;
            }
            _ => {
                packs.push(index..index + 1);
                rows = length;
            }
        }
    }
    packs
}

/// Runs the model on one prompt's token ids (already checked against n_positions).
pub fn forward(weights: &Weights, tokens: &[i64]) -> Activations {
    forward_packed(weights, &[tokens]).prompt(0)
}

/// Runs the model on several prompts at once, each as it would run alone (see the module's notes).
pub fn forward_packed(weights: &Weights, prompts: &[&[i64]]) -> PackedActivations {
    timed(Phase::Forward, || forward_untimed(weights, prompts))
}

fn forward_untimed(weights: &Weights, prompts: &[&[i64]]) -> PackedActivations {
    let _no_grad = tch::no_grad_guard();
    let device = weights.token_embedding.stored().device();
    let config = &weights.config;
    // The filler: token 0 at positions 0.., a prompt of its own whose results are dropped.
    let filler = vec![0; MIN_PACK_ROWS.saturating_sub(prompts.iter().map(|tokens| tokens.len()).sum())];
    let segments: Vec<&[i64]> = prompts.iter().copied().chain(Some(&filler[..]).filter(|filler| !filler.is_empty())).collect();
    let all_spans = spans(&segments);
    let ids = Tensor::from_slice(&segments.concat()).to_device(device);
    let positions: Vec<i64> = segments.iter().flat_map(|tokens| 0..tokens.len() as i64).collect();
    let position_ids = Tensor::from_slice(&positions).to_device(device);
    let mut x = weights.token_embedding.rows(&ids) + weights.position_embedding.index_select(0, &position_ids);
    let mut resid = Vec::with_capacity(weights.blocks.len() + 1);
    resid.push(x.shallow_clone());
    for block in &weights.blocks {
        x = &x + attention(block, &layer_norm(&x, block.ln_1.as_ref(), config.layer_norm_epsilon), &all_spans, config.n_head);
        x = &x + mlp(block, &layer_norm(&x, block.ln_2.as_ref(), config.layer_norm_epsilon));
        resid.push(x.shallow_clone());
    }
    let normalized = layer_norm(&x, weights.ln_f.as_ref(), config.layer_norm_epsilon);
    let logits = match &weights.unembed {
        Unembed::Tied => normalized.matmul(&weights.token_embedding.table().tr()),
        Unembed::Untied { weight, bias } => bias.addmm(&normalized, weight),
    };
    PackedActivations { logits, resid: Tensor::stack(&resid, 0), spans: all_spans[..prompts.len()].to_vec() }
}

/// Each segment's rows in the pack.
fn spans(segments: &[&[i64]]) -> Vec<Range<i64>> {
    let mut start = 0;
    segments
        .iter()
        .map(|tokens| {
            let span = start..start + tokens.len() as i64;
            start = span.end;
            span
        })
        .collect()
}

/// LayerNorm over d_model with biased variance; without an affine part it is TransformerLens's LNPre.
fn layer_norm(x: &Tensor, affine: Option<&Affine>, epsilon: f64) -> Tensor {
    let d_model = x.size()[1];
    match affine {
        Some(Affine { weight, bias }) => x.layer_norm([d_model], Some(weight), Some(bias), epsilon, false),
        None => x.layer_norm([d_model], None::<Tensor>, None::<Tensor>, epsilon, false),
    }
}

/// Multi-head self-attention of each prompt (`spans`: its rows) on itself, causal.
fn attention(block: &Block, x: &Tensor, spans: &[Range<i64>], heads: i64) -> Tensor {
    let d_model = x.size()[1];
    let qkv = block.qkv_bias.addmm(x, &block.qkv_weight);
    let mixed: Vec<Tensor> =
        spans.iter().map(|span| causal_self_attention(&qkv.narrow(0, span.start, span.end - span.start), d_model, heads)).collect();
    let mixed = if mixed.len() == 1 { mixed.into_iter().next().expect("one") } else { Tensor::cat(&mixed, 0) };
    block.attn_out_bias.addmm(&mixed, &block.attn_out_weight)
}

/// One prompt's queries, keys and values [T, 3D] mixed into [T, D], heads concatenated.
fn causal_self_attention(qkv: &Tensor, d_model: i64, heads: i64) -> Tensor {
    let positions = qkv.size()[0];
    let head_dim = d_model / heads;
    // [T, 3D] -> [3, H, T, Dh]: queries, keys, values, each split into heads.
    let qkv = qkv.view([positions, 3, heads, head_dim]).permute([1, 2, 0, 3]);
    let (queries, keys, values) = (qkv.get(0), qkv.get(1), qkv.get(2));
    let scores = queries.matmul(&keys.transpose(-1, -2)) / (head_dim as f64).sqrt();
    let future = Tensor::ones([positions, positions], (Kind::Bool, qkv.device())).triu(1);
    let pattern = scores.masked_fill(&future, lowest(scores.kind())).softmax(-1, scores.kind());
    pattern.matmul(&values).permute([1, 0, 2]).reshape([positions, d_model])
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

#[cfg(test)]
mod tests {
    use super::packs;

    #[test]
    fn packs_are_consecutive_prompts_within_the_budget() {
        // A budget of 4 rows: 2 + 2, then 3, 9 and 1 each alone (3 + 9 > 4, 9 > 4), or 1 + 1 + 1 + 1 then 1.
        let vocab = super::PACK_LOGITS_ELEMENTS / 4;
        assert_eq!(packs(&[2, 2, 3, 9, 1], vocab), vec![0..2, 2..3, 3..4, 4..5]);
        assert_eq!(packs(&[1, 1, 1, 1, 1], vocab), vec![0..4, 4..5]);
        assert!(packs(&[], vocab).is_empty());
    }
}
