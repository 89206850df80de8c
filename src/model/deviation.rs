//! The ways GPT-2 ports commonly go wrong, as changes our forward can make to itself. When a side
//! of a comparison leaves the rounding envelope, the tool reruns its float64 forward with each
//! deviation that could explain where the side first diverges, and names the one that
//! reproduces it: a cause tested against the data rather than guessed from it.
use serde::{Deserialize, Serialize};

/// One deviation from GPT-2's definition, and where in the model it applies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Deviation {
    pub kind: DeviationKind,
    /// `None`: in every block (and ln_f where the kind concerns LayerNorm); `Some(n)`: only in
    /// block h.n.
    pub block: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeviationKind {
    /// The MLP uses the exact (erf) GELU instead of GPT-2's tanh approximation `gelu_new`.
    ExactGelu,
    /// LayerNorm with another epsilon than GPT-2's 1e-5.
    LayerNormEpsilon { epsilon: f64 },
    /// No final LayerNorm before the unembedding.
    NoFinalLayerNorm,
    /// Attention scores divided by sqrt(d_model) instead of sqrt(d_head).
    AttentionScaleByModelWidth,
    /// Attention scores not scaled at all.
    NoAttentionScale,
    /// No causal mask: every position attends to later ones too.
    NoCausalMask,
    /// One of the linear layers' biases left out.
    MissingBias { bias: Bias },
    /// Attention's softmax computed in half precision.
    HalfPrecisionSoftmax,
    /// LayerNorm computed in half precision.
    HalfPrecisionLayerNorm,
    /// Position ids shifted by `offset` (a negative id wraps around, as numpy indexing does).
    PositionOffset { offset: i64 },
    /// <|endoftext|> prepended inside the port, and its position's output dropped.
    BosPrepended,
    /// The unembedding reads wte's memory as a [D, V] matrix (a transpose done as a reshape).
    UnembeddingReshaped,
    /// The unembedding is not wte at all: an lm_head loaded separately, or left at its initial
    /// values. No forward can reproduce an unknown matrix, so this one is recognised by its
    /// signature instead ([`Deviation::candidates`] never offers it to the forward).
    UnembeddingUntied,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bias {
    /// c_attn's bias (queries, keys, values).
    Qkv,
    /// Attention's c_proj bias.
    AttentionOut,
    /// The MLP's c_fc bias.
    MlpIn,
    /// The MLP's c_proj bias.
    MlpOut,
}

impl Bias {
    const ALL: [Bias; 4] = [Bias::Qkv, Bias::AttentionOut, Bias::MlpIn, Bias::MlpOut];

    fn name(self) -> &'static str {
        match self {
            Bias::Qkv => "c_attn (qkv) bias",
            Bias::AttentionOut => "attention c_proj bias",
            Bias::MlpIn => "MLP c_fc bias",
            Bias::MlpOut => "MLP c_proj bias",
        }
    }
}

/// What can go wrong inside a block: each is tried in the block where a side first diverges,
/// and in every block.
fn block_kinds() -> Vec<DeviationKind> {
    let mut kinds = vec![
        DeviationKind::ExactGelu,
        DeviationKind::LayerNormEpsilon { epsilon: 1e-12 },
        DeviationKind::LayerNormEpsilon { epsilon: 1e-6 },
        DeviationKind::AttentionScaleByModelWidth,
        DeviationKind::NoAttentionScale,
        DeviationKind::NoCausalMask,
        DeviationKind::HalfPrecisionSoftmax,
        DeviationKind::HalfPrecisionLayerNorm,
    ];
    kinds.extend(Bias::ALL.map(|bias| DeviationKind::MissingBias { bias }));
    kinds
}

impl Deviation {
    /// The deviations that could make a side first leave the envelope at residual snapshot
    /// `snapshot` (0 = embeddings, n = output of block h.{n-1}, `n_layer + 1` = the logits, the
    /// residual stream agreeing or absent). `localised` is false when the side has no residual
    /// stream, so that the logits are the first place anything can be seen.
    pub fn candidates(snapshot: usize, n_layer: usize, localised: bool) -> Vec<Deviation> {
        let everywhere = |kind| Deviation { kind, block: None };
        let embedding =
            [DeviationKind::PositionOffset { offset: 1 }, DeviationKind::PositionOffset { offset: -1 }, DeviationKind::BosPrepended]
                .map(everywhere);
        let after_the_blocks = [
            DeviationKind::NoFinalLayerNorm,
            DeviationKind::LayerNormEpsilon { epsilon: 1e-12 },
            DeviationKind::LayerNormEpsilon { epsilon: 1e-6 },
            DeviationKind::HalfPrecisionLayerNorm,
            DeviationKind::UnembeddingReshaped,
        ]
        .map(everywhere);
        if !localised {
            let mut all: Vec<Deviation> = embedding.to_vec();
            all.extend(block_kinds().into_iter().map(everywhere));
            let new: Vec<Deviation> = after_the_blocks.into_iter().filter(|deviation| !all.contains(deviation)).collect();
            all.extend(new);
            return all;
        }
        match snapshot {
            0 => embedding.to_vec(),
            block if block <= n_layer => {
                let mut found: Vec<Deviation> = block_kinds().into_iter().map(|kind| Deviation { kind, block: Some(block - 1) }).collect();
                found.extend(block_kinds().into_iter().map(everywhere));
                found
            }
            _ => after_the_blocks.to_vec(),
        }
    }

    /// Whether the deviation changes block `block`.
    pub fn in_block(&self, block: usize) -> bool {
        self.block.is_none_or(|only| only == block)
    }

    /// Whether the deviation rounds values to float16: two computations of it then disagree
    /// by float16's rounding wherever a value sits near a rounding boundary, which is far more
    /// than float32 rounding, so matching one needs that much room.
    pub fn rounds_to_half(&self) -> bool {
        matches!(self.kind, DeviationKind::HalfPrecisionSoftmax | DeviationKind::HalfPrecisionLayerNorm)
    }

    /// Whether each block can be checked on the side's own input with the deviation on: not when
    /// the side saw positions the comparison does not hold (a prepended <|endoftext|>).
    pub fn keeps_positions(&self) -> bool {
        self.kind != DeviationKind::BosPrepended
    }

    /// In words, as a note names it: "exact (erf) GELU instead of gelu_new in block h.3".
    pub fn describe(&self) -> String {
        let what = match self.kind {
            DeviationKind::ExactGelu => "exact (erf) GELU instead of gelu_new".to_owned(),
            DeviationKind::LayerNormEpsilon { epsilon } => format!("LayerNorm epsilon {epsilon:e} instead of 1e-5"),
            DeviationKind::NoFinalLayerNorm => "no final LayerNorm (ln_f) before the unembedding".to_owned(),
            DeviationKind::AttentionScaleByModelWidth => "attention scores scaled by sqrt(d_model) instead of sqrt(d_head)".to_owned(),
            DeviationKind::NoAttentionScale => "attention scores not scaled by 1/sqrt(d_head)".to_owned(),
            DeviationKind::NoCausalMask => "no causal mask in attention".to_owned(),
            DeviationKind::MissingBias { bias } => format!("the {} left out", bias.name()),
            DeviationKind::HalfPrecisionSoftmax => "attention softmax in half precision".to_owned(),
            DeviationKind::HalfPrecisionLayerNorm => "LayerNorm in half precision".to_owned(),
            DeviationKind::PositionOffset { offset } => format!("position ids off by {offset:+}"),
            DeviationKind::BosPrepended => "<|endoftext|> prepended on the port's side only".to_owned(),
            DeviationKind::UnembeddingReshaped => "the unembedding reads wte reshaped to [d_model, vocab] instead of transposed".to_owned(),
            DeviationKind::UnembeddingUntied => {
                "an unembedding untied from wte (an lm_head loaded separately, or left at its initial values)".to_owned()
            }
        };
        match self.block {
            Some(block) => format!("{what} in block h.{block}"),
            None if self.is_block_kind() => format!("{what} in every block"),
            None => what,
        }
    }

    /// For a deviation found in block `block` that the same deviation in every block matches
    /// too: the blocks after it stay within the envelope either way, so the data cannot tell.
    pub fn describe_from_block_on(&self, block: usize) -> String {
        let one = Deviation { block: Some(block), ..*self }.describe();
        format!("{one} (perhaps in every block: the other blocks cannot show it)")
    }

    fn is_block_kind(&self) -> bool {
        block_kinds().contains(&self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_snapshot_gets_only_the_deviations_that_can_start_there() {
        let at_embeddings = Deviation::candidates(0, 4, true);
        assert!(at_embeddings
            .iter()
            .all(|deviation| matches!(deviation.kind, DeviationKind::PositionOffset { .. } | DeviationKind::BosPrepended)));
        let at_block_2 = Deviation::candidates(3, 4, true);
        assert!(at_block_2.contains(&Deviation { kind: DeviationKind::ExactGelu, block: Some(2) }));
        assert!(at_block_2.contains(&Deviation { kind: DeviationKind::NoCausalMask, block: None }));
        assert!(!at_block_2.iter().any(|deviation| deviation.kind == DeviationKind::BosPrepended));
        let at_logits = Deviation::candidates(5, 4, true);
        assert!(at_logits.contains(&Deviation { kind: DeviationKind::NoFinalLayerNorm, block: None }));
        assert!(!at_logits.iter().any(|deviation| deviation.block.is_some()));
        let unlocalised = Deviation::candidates(5, 4, false);
        assert!(unlocalised.iter().all(|deviation| deviation.block.is_none()));
        assert!(unlocalised.len() > at_logits.len() + at_embeddings.len());
    }

    #[test]
    fn descriptions_name_the_block() {
        let gelu = Deviation { kind: DeviationKind::ExactGelu, block: Some(3) };
        assert_eq!(gelu.describe(), "exact (erf) GELU instead of gelu_new in block h.3");
        let mask = Deviation { kind: DeviationKind::NoCausalMask, block: None };
        assert_eq!(mask.describe(), "no causal mask in attention in every block");
        assert!(gelu.in_block(3) && !gelu.in_block(2) && mask.in_block(0));
    }
}
