//! The one table of GPT-2's checkpoint tensors: each one's name, its shape as config.json
//! implies it, and which field of [`Weights`] holds it. Loading, the audit before any work,
//! layout detection and the by-name view of processed weights all read it.
use tch::Tensor;

use super::{Affine, Block, Gpt2Config};

/// What `save_pretrained` puts before every name but the LM head's; the Hub's own GPT-2 files
/// have no prefix. A checkpoint holding [`layout_probe`] uses it.
pub const SAVE_PRETRAINED_PREFIX: &str = "transformer.";

/// The LM head, tied to wte: never read, but its shape is checked when a checkpoint has it.
pub const LM_HEAD: &str = "lm_head.weight";

/// The name whose presence with [`SAVE_PRETRAINED_PREFIX`] marks that layout.
pub fn layout_probe() -> String {
    format!("{SAVE_PRETRAINED_PREFIX}{}", Whole::TokenEmbedding.name())
}

/// Tensors a checkpoint may hold and GPT-2 does not need (name without the layout's prefix):
/// the causal-mask buffers and a tied LM head.
pub fn ignorable(name: &str) -> bool {
    name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") || name == LM_HEAD
}

/// A tensor outside the blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whole {
    TokenEmbedding,
    PositionEmbedding,
    FinalNormWeight,
    FinalNormBias,
}

impl Whole {
    pub fn name(self) -> &'static str {
        match self {
            Whole::TokenEmbedding => "wte.weight",
            Whole::PositionEmbedding => "wpe.weight",
            Whole::FinalNormWeight => "ln_f.weight",
            Whole::FinalNormBias => "ln_f.bias",
        }
    }

    pub fn shape(self, config: &Gpt2Config) -> Vec<i64> {
        let (v, p, d) = (config.vocab_size, config.n_positions, config.n_embd);
        match self {
            Whole::TokenEmbedding => vec![v, d],
            Whole::PositionEmbedding => vec![p, d],
            Whole::FinalNormWeight | Whole::FinalNormBias => vec![d],
        }
    }
}

/// A tensor of every block, named inside `h.{layer}.`, in the checkpoint's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerBlock {
    Norm1Weight,
    Norm1Bias,
    QkvWeight,
    QkvBias,
    AttnOutWeight,
    AttnOutBias,
    Norm2Weight,
    Norm2Bias,
    MlpInWeight,
    MlpInBias,
    MlpOutWeight,
    MlpOutBias,
}

impl PerBlock {
    pub const ALL: [PerBlock; 12] = [
        PerBlock::Norm1Weight,
        PerBlock::Norm1Bias,
        PerBlock::QkvWeight,
        PerBlock::QkvBias,
        PerBlock::AttnOutWeight,
        PerBlock::AttnOutBias,
        PerBlock::Norm2Weight,
        PerBlock::Norm2Bias,
        PerBlock::MlpInWeight,
        PerBlock::MlpInBias,
        PerBlock::MlpOutWeight,
        PerBlock::MlpOutBias,
    ];

    fn suffix(self) -> &'static str {
        match self {
            PerBlock::Norm1Weight => "ln_1.weight",
            PerBlock::Norm1Bias => "ln_1.bias",
            PerBlock::QkvWeight => "attn.c_attn.weight",
            PerBlock::QkvBias => "attn.c_attn.bias",
            PerBlock::AttnOutWeight => "attn.c_proj.weight",
            PerBlock::AttnOutBias => "attn.c_proj.bias",
            PerBlock::Norm2Weight => "ln_2.weight",
            PerBlock::Norm2Bias => "ln_2.bias",
            PerBlock::MlpInWeight => "mlp.c_fc.weight",
            PerBlock::MlpInBias => "mlp.c_fc.bias",
            PerBlock::MlpOutWeight => "mlp.c_proj.weight",
            PerBlock::MlpOutBias => "mlp.c_proj.bias",
        }
    }

    /// The checkpoint name in block `layer`: `h.3.attn.c_attn.weight`.
    pub fn name(self, layer: i64) -> String {
        format!("h.{layer}.{}", self.suffix())
    }

    pub fn shape(self, config: &Gpt2Config) -> Vec<i64> {
        let (d, m) = (config.n_embd, config.mlp_width());
        match self {
            PerBlock::Norm1Weight | PerBlock::Norm1Bias | PerBlock::AttnOutBias | PerBlock::Norm2Weight | PerBlock::Norm2Bias => vec![d],
            PerBlock::MlpOutBias => vec![d],
            PerBlock::QkvWeight => vec![d, 3 * d],
            PerBlock::QkvBias => vec![3 * d],
            PerBlock::AttnOutWeight => vec![d, d],
            PerBlock::MlpInWeight => vec![d, m],
            PerBlock::MlpInBias => vec![m],
            PerBlock::MlpOutWeight => vec![m, d],
        }
    }

    /// The tensor as `block` holds it; a folded LayerNorm's as the identity it now is:
    /// `identity` is (weight, bias) = (ones, zeros) [D].
    pub fn of(self, block: &Block, identity: (&Tensor, &Tensor)) -> Tensor {
        let norm = |affine: &Option<Affine>, weight: bool| match (affine, weight) {
            (Some(affine), true) => affine.weight.shallow_clone(),
            (Some(affine), false) => affine.bias.shallow_clone(),
            (None, true) => identity.0.shallow_clone(),
            (None, false) => identity.1.shallow_clone(),
        };
        match self {
            PerBlock::Norm1Weight => norm(&block.ln_1, true),
            PerBlock::Norm1Bias => norm(&block.ln_1, false),
            PerBlock::QkvWeight => block.qkv_weight.shallow_clone(),
            PerBlock::QkvBias => block.qkv_bias.shallow_clone(),
            PerBlock::AttnOutWeight => block.attn_out_weight.shallow_clone(),
            PerBlock::AttnOutBias => block.attn_out_bias.shallow_clone(),
            PerBlock::Norm2Weight => norm(&block.ln_2, true),
            PerBlock::Norm2Bias => norm(&block.ln_2, false),
            PerBlock::MlpInWeight => block.mlp_in_weight.shallow_clone(),
            PerBlock::MlpInBias => block.mlp_in_bias.shallow_clone(),
            PerBlock::MlpOutWeight => block.mlp_out_weight.shallow_clone(),
            PerBlock::MlpOutBias => block.mlp_out_bias.shallow_clone(),
        }
    }
}

impl Block {
    /// A block from its checkpoint tensors, each taken by `take`.
    pub fn from_checkpoint<E>(mut take: impl FnMut(PerBlock) -> Result<Tensor, E>) -> Result<Block, E> {
        Ok(Block {
            ln_1: Some(Affine { weight: take(PerBlock::Norm1Weight)?, bias: take(PerBlock::Norm1Bias)? }),
            qkv_weight: take(PerBlock::QkvWeight)?,
            qkv_bias: take(PerBlock::QkvBias)?,
            attn_out_weight: take(PerBlock::AttnOutWeight)?,
            attn_out_bias: take(PerBlock::AttnOutBias)?,
            ln_2: Some(Affine { weight: take(PerBlock::Norm2Weight)?, bias: take(PerBlock::Norm2Bias)? }),
            mlp_in_weight: take(PerBlock::MlpInWeight)?,
            mlp_in_bias: take(PerBlock::MlpInBias)?,
            mlp_out_weight: take(PerBlock::MlpOutWeight)?,
            mlp_out_bias: take(PerBlock::MlpOutBias)?,
        })
    }
}

/// Every tensor GPT-2 needs, by its layout-independent name, with the shape `config` implies,
/// in the checkpoint's order.
pub fn expected(config: &Gpt2Config) -> Vec<(String, Vec<i64>)> {
    let named = |tensor: Whole| (tensor.name().to_owned(), tensor.shape(config));
    let blocks = (0..config.n_layer).flat_map(|layer| PerBlock::ALL.map(|tensor| (tensor.name(layer), tensor.shape(config))));
    [Whole::TokenEmbedding, Whole::PositionEmbedding]
        .map(named)
        .into_iter()
        .chain(blocks)
        .chain([Whole::FinalNormWeight, Whole::FinalNormBias].map(named))
        .collect()
}
