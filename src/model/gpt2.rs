//! GPT-2's forward pass with Hugging Face's eager-attention semantics (processing.md section 2).
//! The processed model runs through the same code: its LayerNorms have no affine part and its
//! unembedding is untied with a bias, which the weights themselves say. The same code also
//! computes in float64 from float32 weights (the truth the rounding envelope is measured
//! against), and with one of the catalogued port deviations (model::deviation) switched on.
use tch::{Kind, Tensor};

use super::deviation::{Bias, Deviation, DeviationKind};
use super::{Affine, Block, Unembed, Weights};
use crate::timings::{timed, Phase};
use crate::tokenize::END_OF_TEXT;

/// What one prompt produces.
pub struct Activations {
    /// [T, V]
    pub logits: Tensor,
    /// [L + 1, T, D]: the embeddings, then each block's output (before ln_f).
    pub resid: Tensor,
}

/// How a forward computes: GPT-2 exactly, in the weights' own dtype, unless told otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct Computation {
    /// The dtype to compute in, each weight cast on use (so a float64 forward needs no float64
    /// copy of the model); `None` computes in the weights' dtype.
    pub kind: Option<Kind>,
    /// A port's deviation from GPT-2 to reproduce.
    pub deviation: Option<Deviation>,
}

impl Computation {
    /// GPT-2 in float64: the closest this tool gets to the exact values.
    pub const FLOAT64: Self = Self { kind: Some(Kind::Double), deviation: None };

    /// A weight (or another implementation's values) as this computation reads it.
    fn read(&self, tensor: &Tensor) -> Tensor {
        match self.kind {
            Some(kind) if kind != tensor.kind() => tensor.to_kind(kind),
            _ => tensor.shallow_clone(),
        }
    }

    /// The deviation's kind, when it applies in block `block` (`None` asks about what lies
    /// outside the blocks: ln_f and the unembedding).
    fn deviates(&self, block: Option<usize>) -> Option<DeviationKind> {
        let deviation = self.deviation?;
        match block {
            Some(block) => deviation.in_block(block).then_some(deviation.kind),
            None => deviation.block.is_none().then_some(deviation.kind),
        }
    }
}

/// Runs the model on one prompt's token ids (already checked against n_positions).
pub fn forward(weights: &Weights, tokens: &[i64]) -> Activations {
    forward_with(weights, tokens, &Computation::default())
}

/// [`forward`], computing as `computation` says.
pub fn forward_with(weights: &Weights, tokens: &[i64], computation: &Computation) -> Activations {
    timed(Phase::Forward, || forward_untimed(weights, tokens, computation, None))
}

/// Each block, and ln_f with the unembedding, applied to another implementation's own residual
/// stream `inputs` [L + 1, T, D] rather than to ours: `resid[l]` is block h.{l-1} on
/// `inputs[l-1]` (0 stays the embeddings), the logits are the head on `inputs[L]`. Set against
/// that implementation's outputs, this measures what each of its blocks adds on its own, free of
/// what earlier blocks passed on.
pub fn forward_each_block(weights: &Weights, tokens: &[i64], inputs: &Tensor, computation: &Computation) -> Activations {
    timed(Phase::Forward, || forward_untimed(weights, tokens, computation, Some(inputs)))
}

fn forward_untimed(weights: &Weights, tokens: &[i64], computation: &Computation, inputs: Option<&Tensor>) -> Activations {
    let _no_grad = tch::no_grad_guard();
    let device = weights.token_embedding.stored().device();
    let config = &weights.config;
    let deviation = computation.deviation.map(|deviation| deviation.kind);
    // A port that prepends <|endoftext|> itself sees one more position, whose outputs it drops
    // (given another implementation's residual stream, the positions are its own).
    let prepended = deviation == Some(DeviationKind::BosPrepended) && inputs.is_none();
    let input = |index: usize, ours: &Tensor| match inputs {
        Some(inputs) => computation.read(&inputs.get(index as i64)),
        None => ours.shallow_clone(),
    };
    let tokens: Vec<i64> = if prepended { std::iter::once(END_OF_TEXT).chain(tokens.iter().copied()).collect() } else { tokens.to_vec() };
    let positions = tokens.len() as i64;
    let ids = Tensor::from_slice(&tokens).to_device(device);
    let position_ids = match deviation {
        Some(DeviationKind::PositionOffset { offset }) => {
            (Tensor::arange(positions, (Kind::Int64, device)) + offset).remainder(config.n_positions)
        }
        _ => Tensor::arange(positions, (Kind::Int64, device)),
    };
    let mut x = computation.read(&weights.token_embedding.rows(&ids))
        + computation.read(&weights.position_embedding.index_select(0, &position_ids));
    let future = Tensor::ones([positions, positions], (Kind::Bool, device)).triu(1);
    let mut resid = Vec::with_capacity(weights.blocks.len() + 1);
    resid.push(x.shallow_clone());
    let epsilon = config.layer_norm_epsilon;
    for (index, block) in weights.blocks.iter().enumerate() {
        let deviation = computation.deviates(Some(index));
        let norm = |x: &Tensor, affine: Option<&Affine>| layer_norm(x, affine, epsilon, deviation, computation);
        x = input(index, &x);
        x = &x + attention(block, &norm(&x, block.ln_1.as_ref()), &future, config.n_head, deviation, computation);
        x = &x + mlp(block, &norm(&x, block.ln_2.as_ref()), deviation, computation);
        resid.push(x.shallow_clone());
    }
    let outside = computation.deviates(None);
    let x = input(weights.blocks.len(), &x);
    let normalized = match outside {
        Some(DeviationKind::NoFinalLayerNorm) => x.shallow_clone(),
        _ => layer_norm(&x, weights.ln_f.as_ref(), epsilon, outside, computation),
    };
    let logits = match &weights.unembed {
        Unembed::Tied => {
            let table = computation.read(&weights.token_embedding.table());
            match outside {
                Some(DeviationKind::UnembeddingReshaped) => normalized.matmul(&table.reshape([config.n_embd, config.vocab_size])),
                _ => normalized.matmul(&table.tr()),
            }
        }
        Unembed::Untied { weight, bias } => computation.read(bias).addmm(&normalized, &computation.read(weight)),
    };
    let resid = Tensor::stack(&resid, 0);
    if prepended {
        return Activations { logits: logits.narrow(0, 1, positions - 1), resid: resid.narrow(1, 1, positions - 1) };
    }
    Activations { logits, resid }
}

/// LayerNorm over d_model with biased variance; without an affine part it is TransformerLens's LNPre.
fn layer_norm(x: &Tensor, affine: Option<&Affine>, epsilon: f64, deviation: Option<DeviationKind>, computation: &Computation) -> Tensor {
    let d_model = x.size()[1];
    let (input, epsilon) = match deviation {
        Some(DeviationKind::LayerNormEpsilon { epsilon }) => (x.shallow_clone(), epsilon),
        Some(DeviationKind::HalfPrecisionLayerNorm) => (x.to_kind(Kind::Half), epsilon),
        _ => (x.shallow_clone(), epsilon),
    };
    let affine = affine
        .map(|Affine { weight, bias }| (computation.read(weight).to_kind(input.kind()), computation.read(bias).to_kind(input.kind())));
    let normalized = match &affine {
        Some((weight, bias)) => input.layer_norm([d_model], Some(weight), Some(bias), epsilon, false),
        None => input.layer_norm([d_model], None::<Tensor>, None::<Tensor>, epsilon, false),
    };
    normalized.to_kind(x.kind())
}

/// `bias + x @ weight`, or `x @ weight` where the deviation leaves this bias out.
fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor, which: Bias, deviation: Option<DeviationKind>, computation: &Computation) -> Tensor {
    match deviation {
        Some(DeviationKind::MissingBias { bias: missing }) if missing == which => x.matmul(&computation.read(weight)),
        _ => computation.read(bias).addmm(x, &computation.read(weight)),
    }
}

/// Causal multi-head self-attention; `future` marks the keys each query must not see.
fn attention(
    block: &Block,
    x: &Tensor,
    future: &Tensor,
    heads: i64,
    deviation: Option<DeviationKind>,
    computation: &Computation,
) -> Tensor {
    let [positions, d_model] = x.size()[..] else { unreachable!("residual stream is [T, D]") };
    let head_dim = d_model / heads;
    // [T, 3D] -> [3, H, T, Dh]: queries, keys, values, each split into heads.
    let qkv = linear(x, &block.qkv_weight, &block.qkv_bias, Bias::Qkv, deviation, computation)
        .view([positions, 3, heads, head_dim])
        .permute([1, 2, 0, 3]);
    let (queries, keys, values) = (qkv.get(0), qkv.get(1), qkv.get(2));
    let raw_scores = queries.matmul(&keys.transpose(-1, -2));
    let scores = match deviation {
        Some(DeviationKind::AttentionScaleByModelWidth) => raw_scores / (d_model as f64).sqrt(),
        Some(DeviationKind::NoAttentionScale) => raw_scores,
        _ => raw_scores / (head_dim as f64).sqrt(),
    };
    let masked = match deviation {
        Some(DeviationKind::NoCausalMask) => scores,
        _ => scores.masked_fill(future, lowest(scores.kind())),
    };
    let pattern = match deviation {
        Some(DeviationKind::HalfPrecisionSoftmax) => {
            masked.to_kind(Kind::Float).clamp_min(-65504.0).to_kind(Kind::Half).softmax(-1, Kind::Half).to_kind(masked.kind())
        }
        _ => masked.softmax(-1, masked.kind()),
    };
    let mixed = pattern.matmul(&values).permute([1, 0, 2]).reshape([positions, d_model]);
    linear(&mixed, &block.attn_out_weight, &block.attn_out_bias, Bias::AttentionOut, deviation, computation)
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

fn mlp(block: &Block, x: &Tensor, deviation: Option<DeviationKind>, computation: &Computation) -> Tensor {
    let pre = linear(x, &block.mlp_in_weight, &block.mlp_in_bias, Bias::MlpIn, deviation, computation);
    let hidden = match deviation {
        Some(DeviationKind::ExactGelu) => pre.gelu("none"),
        _ => gelu_new(&pre),
    };
    linear(&hidden, &block.mlp_out_weight, &block.mlp_out_bias, Bias::MlpOut, deviation, computation)
}

/// GPT-2's tanh approximation of GELU, written out as Hugging Face's `gelu_new` computes it.
fn gelu_new(u: &Tensor) -> Tensor {
    let inner = (u + u.pow_tensor_scalar(3.0) * 0.044715) * (2.0 / std::f64::consts::PI).sqrt();
    u * 0.5 * (inner.tanh() + 1.0)
}
