//! GPT-2 as this tool holds it: one set of tensors (float32 unless `--dtype` says otherwise) in
//! Hugging Face's layout, which both the unprocessed and the processed model use; only the
//! weights differ between them.
pub mod config;
pub mod convert;
pub mod deviation;
pub mod dtype;
pub mod gpt2;
pub mod hub;
pub mod inputs;
pub mod load;
pub mod process;
mod process_kernel;
pub mod switches;
pub mod tensor_names;
mod widened;

use std::sync::Arc;

use tch::Tensor;

pub use config::Gpt2Config;
use load::MappedFiles;
use tensor_names::{PerBlock, Whole};

/// A LayerNorm's learned scale and shift. `None` where the norm has been folded away
/// (TransformerLens's LNPre: normalise only).
pub struct Affine {
    pub weight: Tensor,
    pub bias: Tensor,
}

/// One transformer block. Weight matrices are stored input-major ([in, out]) as in the
/// checkpoint's Conv1D layout, so `x @ W + b` applies them.
pub struct Block {
    pub ln_1: Option<Affine>,
    /// [D, 3D]: queries, keys and values side by side.
    pub qkv_weight: Tensor,
    pub qkv_bias: Tensor,
    /// [D, D]: input rows are (head, d_head) flattened.
    pub attn_out_weight: Tensor,
    pub attn_out_bias: Tensor,
    pub ln_2: Option<Affine>,
    /// [D, M]
    pub mlp_in_weight: Tensor,
    pub mlp_in_bias: Tensor,
    /// [M, D]
    pub mlp_out_weight: Tensor,
    pub mlp_out_bias: Tensor,
}

/// The map from the final residual to logits.
pub enum Unembed {
    /// GPT-2's LM head: `wte^T`, no bias.
    Tied,
    /// TransformerLens's untied W_U [D, V] and b_U [V].
    Untied { weight: Tensor, bias: Tensor },
}

/// wte [V, D] as the forward reads it.
pub enum TokenEmbedding {
    Table(Tensor),
    /// The table before center_writing_weights, each row centered as it is looked up (in float64,
    /// rounded once, as centering the whole table does). A prompt reads a handful of the 50257
    /// rows, and a centered copy of the whole table would hold another vocabulary-sized matrix
    /// (147 MiB for GPT-2 small) for them.
    CenteredOnLookup(Tensor),
}

pub struct Weights {
    pub config: Gpt2Config,
    pub token_embedding: TokenEmbedding,
    /// wpe [P, D]
    pub position_embedding: Tensor,
    pub blocks: Vec<Block>,
    pub ln_f: Option<Affine>,
    pub unembed: Unembed,
    /// Whether forwards drop each block's checkpoint pages from memory once done with it, and
    /// the tied unembedding's (see [`Weights::released_after_use`]).
    pub release_after_use: bool,
    /// The checkpoint files that loaded tensors view in place (see model::load); last, so that
    /// it is dropped after every tensor.
    pub mapped: Option<Arc<MappedFiles>>,
}

impl Affine {
    fn shallow_clone(&self) -> Self {
        Self { weight: self.weight.shallow_clone(), bias: self.bias.shallow_clone() }
    }

    /// The same parameters, each passed through `f` (a dtype or device change).
    pub fn map(self, f: impl Fn(Tensor) -> Tensor) -> Self {
        Self { weight: f(self.weight), bias: f(self.bias) }
    }
}

/// The four parts of a block that a processing step reads or writes together: what reads the
/// residual for attention (ln_1, c_attn) and for the MLP (ln_2, c_fc), and what writes to it
/// (attention's c_proj, the MLP's c_proj).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockParts {
    pub attention_in: bool,
    pub attention_out: bool,
    pub mlp_in: bool,
    pub mlp_out: bool,
}

impl BlockParts {
    pub const ALL: Self = Self { attention_in: true, attention_out: true, mlp_in: true, mlp_out: true };

    pub fn intersection(self, other: Self) -> Self {
        Self {
            attention_in: self.attention_in && other.attention_in,
            attention_out: self.attention_out && other.attention_out,
            mlp_in: self.mlp_in && other.mlp_in,
            mlp_out: self.mlp_out && other.mlp_out,
        }
    }

    pub fn union(self, other: Self) -> Self {
        Self {
            attention_in: self.attention_in || other.attention_in,
            attention_out: self.attention_out || other.attention_out,
            mlp_in: self.mlp_in || other.mlp_in,
            mlp_out: self.mlp_out || other.mlp_out,
        }
    }
}

impl Block {
    /// The same parameters, each passed through `f` (a dtype or device change).
    pub fn map(self, f: impl Fn(Tensor) -> Tensor) -> Self {
        self.map_parts(BlockParts::ALL, f)
    }

    /// The parameters of `parts` passed through `f`, the others kept as they are.
    pub fn map_parts(self, parts: BlockParts, f: impl Fn(Tensor) -> Tensor) -> Self {
        let f = |selected: bool, tensor: Tensor| if selected { f(tensor) } else { tensor };
        let affine = |selected: bool, affine: Option<Affine>| {
            affine.map(|affine| Affine { weight: f(selected, affine.weight), bias: f(selected, affine.bias) })
        };
        Self {
            ln_1: affine(parts.attention_in, self.ln_1),
            qkv_weight: f(parts.attention_in, self.qkv_weight),
            qkv_bias: f(parts.attention_in, self.qkv_bias),
            attn_out_weight: f(parts.attention_out, self.attn_out_weight),
            attn_out_bias: f(parts.attention_out, self.attn_out_bias),
            ln_2: affine(parts.mlp_in, self.ln_2),
            mlp_in_weight: f(parts.mlp_in, self.mlp_in_weight),
            mlp_in_bias: f(parts.mlp_in, self.mlp_in_bias),
            mlp_out_weight: f(parts.mlp_out, self.mlp_out_weight),
            mlp_out_bias: f(parts.mlp_out, self.mlp_out_bias),
        }
    }

    /// This block with the tensors of `parts` replaced by second handles on `other`'s.
    fn with_parts_of(self, parts: BlockParts, other: &Block) -> Self {
        let other = other.shallow_clone();
        fn pick<T>(selected: bool, mine: T, theirs: T) -> T {
            if selected {
                theirs
            } else {
                mine
            }
        }
        Self {
            ln_1: pick(parts.attention_in, self.ln_1, other.ln_1),
            qkv_weight: pick(parts.attention_in, self.qkv_weight, other.qkv_weight),
            qkv_bias: pick(parts.attention_in, self.qkv_bias, other.qkv_bias),
            attn_out_weight: pick(parts.attention_out, self.attn_out_weight, other.attn_out_weight),
            attn_out_bias: pick(parts.attention_out, self.attn_out_bias, other.attn_out_bias),
            ln_2: pick(parts.mlp_in, self.ln_2, other.ln_2),
            mlp_in_weight: pick(parts.mlp_in, self.mlp_in_weight, other.mlp_in_weight),
            mlp_in_bias: pick(parts.mlp_in, self.mlp_in_bias, other.mlp_in_bias),
            mlp_out_weight: pick(parts.mlp_out, self.mlp_out_weight, other.mlp_out_weight),
            mlp_out_bias: pick(parts.mlp_out, self.mlp_out_bias, other.mlp_out_bias),
        }
    }

    /// Every parameter.
    fn tensors(&self) -> Vec<&Tensor> {
        let norms = [&self.ln_1, &self.ln_2].into_iter().flatten();
        let mut tensors: Vec<&Tensor> = norms.flat_map(|Affine { weight, bias }| [weight, bias]).collect();
        tensors.extend([
            &self.qkv_weight,
            &self.qkv_bias,
            &self.attn_out_weight,
            &self.attn_out_bias,
            &self.mlp_in_weight,
            &self.mlp_in_bias,
            &self.mlp_out_weight,
            &self.mlp_out_bias,
        ]);
        tensors
    }

    fn shallow_clone(&self) -> Self {
        Self {
            ln_1: self.ln_1.as_ref().map(Affine::shallow_clone),
            qkv_weight: self.qkv_weight.shallow_clone(),
            qkv_bias: self.qkv_bias.shallow_clone(),
            attn_out_weight: self.attn_out_weight.shallow_clone(),
            attn_out_bias: self.attn_out_bias.shallow_clone(),
            ln_2: self.ln_2.as_ref().map(Affine::shallow_clone),
            mlp_in_weight: self.mlp_in_weight.shallow_clone(),
            mlp_in_bias: self.mlp_in_bias.shallow_clone(),
            mlp_out_weight: self.mlp_out_weight.shallow_clone(),
            mlp_out_bias: self.mlp_out_bias.shallow_clone(),
        }
    }
}

impl TokenEmbedding {
    /// The rows of `ids` [T], as [T, D].
    pub fn rows(&self, ids: &Tensor) -> Tensor {
        match self {
            TokenEmbedding::Table(table) => table.index_select(0, ids),
            TokenEmbedding::CenteredOnLookup(uncentered) => process::centered_rows(&uncentered.index_select(0, ids)),
        }
    }

    /// The whole table, centered in full where it is centered on lookup.
    pub fn table(&self) -> Tensor {
        match self {
            TokenEmbedding::Table(table) => table.shallow_clone(),
            TokenEmbedding::CenteredOnLookup(uncentered) => process::center_rows_in_float64(uncentered, &|| {}),
        }
    }

    /// The tensor the table is read from, for its dtype, device and shape.
    pub fn stored(&self) -> &Tensor {
        match self {
            TokenEmbedding::Table(tensor) | TokenEmbedding::CenteredOnLookup(tensor) => tensor,
        }
    }

    /// The same table with the stored tensor passed through `f` (a dtype or device change).
    pub fn map(self, f: impl Fn(Tensor) -> Tensor) -> Self {
        match self {
            TokenEmbedding::Table(table) => TokenEmbedding::Table(f(table)),
            TokenEmbedding::CenteredOnLookup(uncentered) => TokenEmbedding::CenteredOnLookup(f(uncentered)),
        }
    }

    fn shallow_clone(&self) -> Self {
        match self {
            TokenEmbedding::Table(table) => TokenEmbedding::Table(table.shallow_clone()),
            TokenEmbedding::CenteredOnLookup(uncentered) => TokenEmbedding::CenteredOnLookup(uncentered.shallow_clone()),
        }
    }
}

impl Unembed {
    fn shallow_clone(&self) -> Self {
        match self {
            Unembed::Tied => Unembed::Tied,
            Unembed::Untied { weight, bias } => Unembed::Untied { weight: weight.shallow_clone(), bias: bias.shallow_clone() },
        }
    }
}

impl Weights {
    /// Every parameter passed through `f` (a dtype or device change), consuming these.
    pub fn map(self, f: impl Fn(Tensor) -> Tensor) -> Self {
        Self {
            config: self.config,
            token_embedding: self.token_embedding.map(&f),
            position_embedding: f(self.position_embedding),
            blocks: self.blocks.into_iter().map(|block| block.map(&f)).collect(),
            ln_f: self.ln_f.map(|affine| affine.map(&f)),
            unembed: match self.unembed {
                Unembed::Tied => Unembed::Tied,
                Unembed::Untied { weight, bias } => Unembed::Untied { weight: f(weight), bias: f(bias) },
            },
            release_after_use: self.release_after_use,
            mapped: self.mapped,
        }
    }

    /// `part`'s tensors replaced by second handles on `from`'s.
    pub fn take_part(&mut self, part: process::Part, from: &Weights) {
        match part {
            process::Part::Attention | process::Part::MlpIn | process::Part::MlpOut => {
                let blocks = std::mem::take(&mut self.blocks);
                self.blocks =
                    blocks.into_iter().zip(&from.blocks).map(|(mine, theirs)| mine.with_parts_of(part.block_parts(), theirs)).collect();
            }
            process::Part::Embeddings => {
                self.token_embedding = from.token_embedding.shallow_clone();
                self.position_embedding = from.position_embedding.shallow_clone();
            }
            process::Part::Unembedding => {
                self.ln_f = from.ln_f.as_ref().map(Affine::shallow_clone);
                self.unembed = from.unembed.shallow_clone();
            }
        }
    }

    /// A second handle on the same storage. Safe to hand to [`process::process`], which never
    /// writes into a tensor in place.
    pub fn shallow_clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            token_embedding: self.token_embedding.shallow_clone(),
            position_embedding: self.position_embedding.shallow_clone(),
            blocks: self.blocks.iter().map(Block::shallow_clone).collect(),
            ln_f: self.ln_f.as_ref().map(Affine::shallow_clone),
            unembed: self.unembed.shallow_clone(),
            release_after_use: self.release_after_use,
            mapped: self.mapped.clone(),
        }
    }

    /// A second handle on the same storage whose forwards drop each block's pages from memory
    /// once done with it, and the tied unembedding's after the logits, where they view the
    /// checkpoint: a later forward reads them back from the page cache (minor faults, about
    /// 0.05 s for GPT-2 small's 522 MB). Beside a processed copy, the unprocessed model then
    /// holds one block at a time in memory rather than a second model.
    pub fn released_after_use(&self) -> Self {
        Self { release_after_use: true, ..self.shallow_clone() }
    }

    /// Whether every parameter views the checkpoint's mapped files (float32 weights on the CPU),
    /// so that their pages can leave memory and be read back.
    pub fn views_checkpoint(&self) -> bool {
        let Some(mapped) = &self.mapped else { return false };
        let mut tensors = vec![self.token_embedding.stored(), &self.position_embedding];
        tensors.extend(self.blocks.iter().flat_map(Block::tensors));
        tensors.extend(self.ln_f.iter().flat_map(|Affine { weight, bias }| [weight, bias]));
        if let Unembed::Untied { weight, bias } = &self.unembed {
            tensors.extend([weight, bias]);
        }
        tensors.iter().all(|tensor| mapped.holds(tensor))
    }

    /// Drops `tensors`' checkpoint pages from memory, when these weights release after use.
    pub(crate) fn done_with(&self, tensors: &[&Tensor]) {
        if let Some(mapped) = self.mapped.as_ref().filter(|_| self.release_after_use) {
            mapped.release_tensors(tensors);
        }
    }
}

impl Weights {
    /// Every parameter under its checkpoint name, in one shape whatever the processing: a folded
    /// LayerNorm appears as the identity (weight 1, bias 0) and a tied unembedding as
    /// `unembed.weight` = wte^T [D, V] with `unembed.bias` = 0, so that two weight sets can be
    /// compared name by name.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let d_model = self.config.n_embd;
        let options = (self.token_embedding.stored().kind(), self.token_embedding.stored().device());
        let identity = (Tensor::ones([d_model], options), Tensor::zeros([d_model], options));
        let identity = (&identity.0, &identity.1);
        let mut named = vec![
            (Whole::TokenEmbedding.name().to_owned(), self.token_embedding.table()),
            (Whole::PositionEmbedding.name().to_owned(), self.position_embedding.shallow_clone()),
        ];
        for (layer, block) in self.blocks.iter().enumerate() {
            named.extend(PerBlock::ALL.map(|tensor| (tensor.name(layer as i64), tensor.of(block, identity))));
        }
        let (ln_f_weight, ln_f_bias) = match &self.ln_f {
            Some(Affine { weight, bias }) => (weight.shallow_clone(), bias.shallow_clone()),
            None => (identity.0.shallow_clone(), identity.1.shallow_clone()),
        };
        named.extend([(Whole::FinalNormWeight.name().to_owned(), ln_f_weight), (Whole::FinalNormBias.name().to_owned(), ln_f_bias)]);
        let (unembed_weight, unembed_bias) = match &self.unembed {
            Unembed::Tied => (self.token_embedding.table().tr(), Tensor::zeros([self.config.vocab_size], options)),
            Unembed::Untied { weight, bias } => (weight.shallow_clone(), bias.shallow_clone()),
        };
        named.extend([("unembed.weight".to_owned(), unembed_weight), ("unembed.bias".to_owned(), unembed_bias)]);
        named
    }

    /// The bytes a processed copy of these weights holds: every parameter, the unembedding untied.
    pub fn processed_bytes(&self) -> u64 {
        self.named_tensors().iter().map(|(_, tensor)| tensor.numel() as u64 * tensor.kind().elt_size_in_bytes() as u64).sum()
    }
}
