//! TransformerLens's weight processing (processing.md section 3) as a pure function on
//! [`Weights`]: it takes the unprocessed weights and returns processed ones in the same layout,
//! freeing each replaced tensor as it goes so that one copy of the model is held at a time.
use std::cell::Cell;

use tch::{Kind, Tensor};

use super::load::MappedFiles;
pub use super::switches::{ProcessingOptions, Step};
use super::{Affine, Block, BlockParts, Gpt2Config, TokenEmbedding, Unembed, Weights};

/// Applies the enabled steps in TransformerLens's order, after untying the unembedding.
///
/// Every step computes in float64 and the result is rounded once to the weights' own dtype:
/// rounding after each step stacks float32 errors, and at GPT-2's magnitudes (residual
/// dimensions in the hundreds) that made the processed model's error 2.5x the unprocessed one's.
/// Each step touches only one block's attention or MLP, or the embeddings, or the unembedding,
/// so the steps run part by part, in float64 one part at a time, in the same order as a whole.
pub fn process(weights: Weights, options: ProcessingOptions) -> Weights {
    Part::ALL.into_iter().fold(weights, |weights, part| process_part(weights, options, part))
}

/// The four parts of the weights that processing works on one at a time. Each is shaped by its
/// own steps only ([`ProcessingOptions::restricted_to`]), so that explain's rows can share them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Every block's ln_1, c_attn and attention c_proj, by fold_ln, center_writing_weights,
    /// fold_value_biases and refactor_factored_attn_matrices.
    Attention,
    /// Every block's ln_2, c_fc and MLP c_proj, by fold_ln and center_writing_weights.
    Mlp,
    /// wte and wpe, by center_writing_weights.
    Embeddings,
    /// ln_f, W_U and b_U, by fold_ln and center_unembed.
    Unembedding,
}

impl Part {
    pub const ALL: [Part; 4] = [Part::Attention, Part::Mlp, Part::Embeddings, Part::Unembedding];

    /// The block parts this part is made of; none for the embeddings and the unembedding.
    pub fn block_parts(self) -> BlockParts {
        match self {
            Part::Attention => BlockParts { attention_in: true, attention_out: true, ..BlockParts::default() },
            Part::Mlp => BlockParts { mlp_in: true, mlp_out: true, ..BlockParts::default() },
            Part::Embeddings | Part::Unembedding => BlockParts::default(),
        }
    }

    /// Whether `step` changes this part (as its doc above says).
    fn shaped_by(self, step: Step) -> bool {
        match self {
            Part::Attention => step != Step::CenterUnembed,
            Part::Mlp => matches!(step, Step::FoldLn | Step::CenterWritingWeights),
            Part::Embeddings => step == Step::CenterWritingWeights,
            Part::Unembedding => matches!(step, Step::FoldLn | Step::CenterUnembed),
        }
    }
}

/// `weights`, untied, with `part` processed by the enabled steps and the other parts as given.
pub fn process_part(weights: Weights, options: ProcessingOptions, part: Part) -> Weights {
    let _no_grad = tch::no_grad_guard();
    let kind = weights.token_embedding.stored().kind();
    let mut weights = untie_unembed(weights);
    // The checkpoint's pages leave memory part by part; a part still to come is read back.
    MappedFiles::release(&weights.mapped);
    let release = || MappedFiles::release(&weights.mapped);
    match part {
        Part::Attention | Part::Mlp => {
            weights.blocks =
                process_blocks(std::mem::take(&mut weights.blocks), options, part.block_parts(), (&weights.config, kind), &release);
        }
        Part::Embeddings if options.center_writing_weights => {
            weights.token_embedding = TokenEmbedding::CenteredOnLookup(weights.token_embedding.table());
            weights.position_embedding = center_rows_in_float64(&weights.position_embedding, &release);
        }
        Part::Embeddings => {}
        Part::Unembedding => return process_unembedding_variants(weights, &[options]).pop().expect("one variant asked, one made"),
    }
    weights
}

/// `weights`, untied, with the unembedding processed under each of `variants`, each as
/// [`process_part`] makes it. The variants share one pass over W_U: its reading and float64
/// layout, ln_f's folding and the vocabulary's mean (explain's rows need three variants).
pub fn process_unembedding_variants(weights: Weights, variants: &[ProcessingOptions]) -> Vec<Weights> {
    let _no_grad = tch::no_grad_guard();
    let weights = untie_unembed(weights);
    MappedFiles::release(&weights.mapped);
    let release = || MappedFiles::release(&weights.mapped);
    let Unembed::Untied { weight, bias } = &weights.unembed else { unreachable!("untie_unembed unties") };
    let steps: Vec<UnembedSteps> = variants
        .iter()
        .map(|options| UnembedSteps { fold_ln: options.fold_ln && weights.ln_f.is_some(), center_unembed: options.center_unembed })
        .collect();
    let ln_f = weights.ln_f.as_ref().map(|affine| affine.shallow_clone().map(to_double));
    let processed = process_unembed(weight, bias, ln_f.as_ref(), &steps, &release);
    processed
        .into_iter()
        .zip(&steps)
        .map(|(unembed, steps)| {
            let mut variant = weights.shallow_clone();
            if let Some((weight, bias)) = unembed {
                variant.unembed = Unembed::Untied { weight, bias };
            }
            if steps.fold_ln {
                variant.ln_f = None;
            }
            variant
        })
        .collect()
}

/// The steps that shape the unembedding, as one variant applies them.
struct UnembedSteps {
    /// Fold ln_f in (the weights have one to fold).
    fold_ln: bool,
    center_unembed: bool,
}

/// `half` (attention or MLP) of every block processed in float64, rounded once into one buffer;
/// `release` after each block's float64 copy is made.
fn process_blocks(
    blocks: Vec<Block>,
    options: ProcessingOptions,
    half: BlockParts,
    (config, kind): (&Gpt2Config, Kind),
    release: &dyn Fn(),
) -> Vec<Block> {
    // A part no enabled step touches is kept as it is: its float64 round trip is exact, and
    // explain sees it unchanged without comparing values.
    let parts = options.block_parts().intersection(half);
    if parts == BlockParts::default() {
        return blocks;
    }
    let (d_model, heads) = (config.n_embd, config.n_head);
    let arena = Arena::for_block_parts(&blocks, parts, kind);
    blocks
        .into_iter()
        .map(|block| {
            let mut block = block.map_parts(parts, to_double);
            release();
            if options.fold_ln {
                block = fold_block_norms(block, parts);
            }
            if options.center_writing_weights {
                block = center_block_writes(block, parts);
            }
            // Both read and write the attention half only.
            let attention = parts.attention_in;
            if options.fold_value_biases && attention {
                block = fold_value_biases(block, d_model, options.center_writing_weights);
            }
            if options.refactor_factored_attn_matrices && attention {
                block = refactor_factored_attn_matrices(block, d_model, heads);
            }
            block.map_parts(parts, |tensor| arena.copy_of(&tensor))
        })
        .collect()
}

/// One buffer that the processed blocks' tensors are rounded into, allocated before the first
/// block. Allocated one by one, each block's results would land between the float64 working
/// memory of the blocks before and after it, and the heap would fragment: gpt2-xl's processing
/// peaked anywhere from 7.4 to 9.5 GiB with the same results, depending on the heap's layout.
/// Here the working memory of one block is reused by the next, and the results grow one buffer.
struct Arena {
    buffer: Tensor,
    /// The alignment in elements.
    unit: i64,
    used: Cell<i64>,
}

/// Each tensor in the arena starts on a 64-byte boundary, as libtorch aligns its own allocations.
const ARENA_ALIGNMENT: i64 = 64;

impl Arena {
    /// Room for every tensor of `parts` in every block, in `kind` on the blocks' device.
    fn for_block_parts(blocks: &[Block], parts: BlockParts, kind: Kind) -> Self {
        let unit = (ARENA_ALIGNMENT / kind.elt_size_in_bytes() as i64).max(1);
        let len = Cell::new(0);
        for block in blocks {
            block.shallow_clone().map_parts(parts, |tensor| {
                len.set(len.get() + round_up(tensor.numel() as i64, unit));
                tensor
            });
        }
        let device = blocks.first().map_or(tch::Device::Cpu, |block| block.qkv_weight.device());
        Self { buffer: Tensor::empty([len.get()], (kind, device)), unit, used: Cell::new(0) }
    }

    /// `tensor` rounded to the arena's dtype into its next free place.
    fn copy_of(&self, tensor: &Tensor) -> Tensor {
        let (start, len) = (self.used.get(), tensor.numel() as i64);
        self.used.set(start + round_up(len, self.unit));
        let mut place = self.buffer.narrow(0, start, len).view(tensor.size().as_slice());
        place.copy_(tensor);
        place
    }
}

/// `len` rounded up to a multiple of `unit`.
fn round_up(len: i64, unit: i64) -> i64 {
    (len + unit - 1) / unit * unit
}

/// Rows of an embedding, or columns of the unembedding, processed in float64 at a time: a
/// float64 copy of a whole [V, D] matrix would add 300 MB for GPT-2 small, twice over.
const SLAB: i64 = 4096;

/// `(start, length)` of each slab of `size` entries.
fn slabs(size: i64) -> impl Iterator<Item = (i64, i64)> {
    (0..size).step_by(SLAB as usize).map(move |start| (start, SLAB.min(size - start)))
}

/// Each row minus its mean, in float64 one slab of rows at a time, rounded once; `release`
/// after each slab.
pub(super) fn center_rows_in_float64(embedding: &Tensor, release: &dyn Fn()) -> Tensor {
    let centered = embedding.empty_like();
    for (start, length) in slabs(embedding.size()[0]) {
        centered.narrow(0, start, length).copy_(&center_in_float64(embedding.narrow(0, start, length)));
        release();
    }
    centered
}

/// `rows` [N, D] centered as [`center_rows_in_float64`] centers them within a whole table: a
/// row's mean over D is computed the same way whichever rows are beside it.
pub(super) fn centered_rows(rows: &Tensor) -> Tensor {
    center_in_float64(rows.shallow_clone()).to_kind(rows.kind())
}

fn center_in_float64(rows: Tensor) -> Tensor {
    center_last(to_double(rows))
}

/// The unembedding's steps for each variant, ln_f (float64) folded in then center_unembed, in
/// float64 one slab of the vocabulary at a time, rounded once; `None` for a variant with
/// neither step. Folding acts column by column; center_unembed's mean over the vocabulary is
/// linear in the columns, so it is the (folded) mean column, computed first. `release` after
/// each slab.
fn process_unembed(
    weight: &Tensor,
    bias: &Tensor,
    ln_f: Option<&Affine>,
    variants: &[UnembedSteps],
    release: &dyn Fn(),
) -> Vec<Option<(Tensor, Tensor)>> {
    // Folding works in place: on the slab itself, unless a variant that does not fold reads it too.
    let unfolded_read = variants.iter().any(|steps| !steps.fold_ln);
    let fold = |(weight, bias): (&Tensor, &Tensor)| {
        let weight = if unfolded_read { weight.copy() } else { weight.shallow_clone() };
        fold_norm_into(ln_f.expect("a variant folds only an ln_f that is there"), weight, bias.shallow_clone())
    };
    let folds = variants.iter().any(|steps| steps.fold_ln);
    let vocab = weight.size()[1];
    let buffer = Tensor::empty([weight.size()[0] * SLAB.min(vocab)], (Kind::Double, weight.device()));
    let mean = variants.iter().any(|steps| steps.center_unembed).then(|| {
        let mut weight_sum = Tensor::zeros([weight.size()[0], 1], (Kind::Double, weight.device()));
        let mut bias_sum = Tensor::zeros([1], (Kind::Double, weight.device()));
        for (start, length) in slabs(vocab) {
            weight_sum += unembed_slab(weight, start, length, &buffer).sum_dim_intlist(1, true, Kind::Double);
            bias_sum += to_double(bias.narrow(0, start, length)).sum(Kind::Double);
            release();
        }
        (weight_sum / vocab as f64, bias_sum / vocab as f64)
    });
    let folded_mean = mean.as_ref().filter(|_| folds).map(|(weight, bias)| fold((weight, bias)));
    let mean_of = |steps: &UnembedSteps| {
        let mean = if steps.fold_ln { &folded_mean } else { &mean };
        mean.as_ref().filter(|_| steps.center_unembed)
    };
    let outputs: Vec<Option<VariantOutput>> = variants
        .iter()
        .map(|steps| {
            (steps.fold_ln || steps.center_unembed).then(|| VariantOutput {
                mean: mean_of(steps),
                // Vocabulary-major, as wte is and as the slabs are worked on: W_U is a view.
                weight: Tensor::empty(weight.tr().size(), (weight.kind(), weight.device())).tr(),
                bias: bias.empty_like(),
            })
        })
        .collect();
    for (start, length) in slabs(vocab) {
        let slab = (unembed_slab(weight, start, length, &buffer), to_double(bias.narrow(0, start, length)));
        let folded = folds.then(|| fold((&slab.0, &slab.1)));
        for (steps, output) in variants.iter().zip(&outputs) {
            let Some(output) = output else { continue };
            let (slab_weight, slab_bias) = match &folded {
                Some(folded) if steps.fold_ln => folded,
                _ => &slab,
            };
            let (slab_weight, slab_bias) = match output.mean {
                Some((mean_weight, mean_bias)) => (slab_weight - mean_weight, slab_bias - mean_bias),
                None => (slab_weight.shallow_clone(), slab_bias.shallow_clone()),
            };
            output.weight.narrow(1, start, length).copy_(&slab_weight);
            output.bias.narrow(0, start, length).copy_(&slab_bias);
        }
        release();
    }
    outputs.into_iter().map(|output| output.map(|output| (output.weight, output.bias))).collect()
}

/// One unembedding variant in the making: the mean column it subtracts (with center_unembed),
/// and the processed weight and bias its slabs are written into.
struct VariantOutput<'a> {
    mean: Option<&'a (Tensor, Tensor)>,
    weight: Tensor,
    bias: Tensor,
}

/// A float64 copy, always a new tensor (also of a float64 one): processing then works on it in
/// place, one pass over memory less per step, and never writes into the weights it was given.
fn to_double(tensor: Tensor) -> Tensor {
    tensor.to_dtype(Kind::Double, false, true)
}

/// Columns `start..start + length` of W_U in float64, laid out vocabulary-major (each column
/// contiguous) whether W_U is its own tensor or a view of wte, so that sums over them add in one
/// order. wte's rows are W_U's columns: read and worked on in that layout, they are read and
/// written in order, where W_U's own layout would gather and scatter a strided slab (which took
/// most of processing's time). Written over the start of `buffer` (room for a whole slab), which
/// every slab reuses: new memory for each would leave holes in the heap that the next slab's
/// allocations do not always fit.
fn unembed_slab(weight: &Tensor, start: i64, length: i64, buffer: &Tensor) -> Tensor {
    let rows = weight.tr().narrow(0, start, length);
    let mut slab = buffer.narrow(0, 0, rows.numel() as i64).view(rows.size().as_slice());
    slab.copy_(&rows);
    slab.tr()
}

/// TransformerLens keeps W_U = wte^T as its own tensor, with a zero bias b_U. Here it starts as
/// a transposed view of wte, not a copy: the steps that change W_U write a new tensor slab by
/// slab, and a copy made up front would hold a third vocabulary-sized matrix (147 MiB for GPT-2
/// small) through all of processing.
fn untie_unembed(mut weights: Weights) -> Weights {
    if let Unembed::Tied = weights.unembed {
        let embedding = weights.token_embedding.table();
        let vocab = embedding.size()[0];
        weights.unembed = Unembed::Untied { weight: embedding.tr(), bias: Tensor::zeros([vocab], (embedding.kind(), embedding.device())) };
    }
    weights
}

/// Folds a LayerNorm's scale and shift into the matrix that reads its output, then centers the
/// matrix's rows so that the folded read ignores the residual's mean, as LNPre's output has none.
/// The bias is folded with the unscaled matrix: (x*g + b) @ W + c = x @ (g*W) + (b @ W + c).
/// `weight` is scaled and centered in place: it is processing's own.
fn fold_norm_into(affine: &Affine, mut weight: Tensor, bias: Tensor) -> (Tensor, Tensor) {
    let bias = bias + affine.bias.matmul(&weight);
    weight *= affine.weight.unsqueeze(-1);
    weight -= weight.mean_dim(0, true, weight.kind());
    (weight, bias)
}

/// Folds the LayerNorms of the readers among `parts`.
fn fold_block_norms(mut block: Block, parts: BlockParts) -> Block {
    if let Some(affine) = block.ln_1.take_if(|_| parts.attention_in) {
        (block.qkv_weight, block.qkv_bias) = fold_norm_into(&affine, block.qkv_weight, block.qkv_bias);
    }
    if let Some(affine) = block.ln_2.take_if(|_| parts.mlp_in) {
        (block.mlp_in_weight, block.mlp_in_bias) = fold_norm_into(&affine, block.mlp_in_weight, block.mlp_in_bias);
    }
    block
}

/// Subtracts each output vector's mean over its last axis, in place: `tensor` is processing's own.
fn center_last(mut tensor: Tensor) -> Tensor {
    tensor -= tensor.mean_dim(-1, true, tensor.kind());
    tensor
}

/// Everything that writes to the residual stream writes mean-free vectors (the embeddings are
/// centered in [`process`]): here the writers among `parts`.
fn center_block_writes(mut block: Block, parts: BlockParts) -> Block {
    if parts.attention_out {
        block.attn_out_weight = center_last(block.attn_out_weight);
        block.attn_out_bias = center_last(block.attn_out_bias);
    }
    if parts.mlp_out {
        block.mlp_out_weight = center_last(block.mlp_out_weight);
        block.mlp_out_bias = center_last(block.mlp_out_bias);
    }
    block
}

/// Attention patterns sum to one, so the value bias contributes b_V @ W_O at every position:
/// move it into the output bias.
fn fold_value_biases(mut block: Block, d_model: i64, recenter: bool) -> Block {
    let value_bias = block.qkv_bias.narrow(0, 2 * d_model, d_model);
    let out_bias = &block.attn_out_bias + value_bias.matmul(&block.attn_out_weight);
    // TransformerLens >= 3 re-centers the folded bias when writing weights are centered.
    block.attn_out_bias = if recenter { center_last(out_bias) } else { out_bias };
    block.qkv_bias = Tensor::cat(&[block.qkv_bias.narrow(0, 0, 2 * d_model), value_bias.zeros_like()], 0);
    block
}

/// TransformerLens's refactor_factored_attn_matrices. What a head computes depends on its weights
/// only through two products: W_Q W_K^T, with each bias appended to its matrix as one more input
/// row (the residual's constant 1), and W_V W_O. Each pair of factors is replaced by a pair made
/// from the product's SVD U diag(S) V^T:
/// - QK: W_Q = U sqrt(S), W_K = V sqrt(S) (balanced: W_Q^T W_Q = W_K^T W_K = diag(S));
/// - OV: b_V first moves into b_O (attention patterns sum to one), then W_V = U S and W_O = V^T.
///   This follows TransformerLens's source, which does not balance OV: W_O gets orthonormal rows.
///
/// The products, and so the logits, are unchanged up to rounding; the factors themselves are
/// defined only up to the signs of singular vectors. Like TransformerLens, nothing is re-centered
/// afterwards (centered weights stay centered, as the new factors span the same row/column spaces).
fn refactor_factored_attn_matrices(mut block: Block, d_model: i64, heads: i64) -> Block {
    let head_dim = d_model / heads;
    // [D, 3D] columns (block, head, d_head) <-> per head [H, D, Dh]; bias [3D] <-> [H, 1, Dh].
    let split_weight = |qkv: &Tensor, start: i64| qkv.narrow(1, start, d_model).reshape([d_model, heads, head_dim]).permute([1, 0, 2]);
    let split_bias = |qkv: &Tensor, start: i64| qkv.narrow(0, start, d_model).reshape([heads, 1, head_dim]);
    let merge_weight = |per_head: &Tensor| per_head.permute([1, 0, 2]).reshape([d_model, d_model]);
    // QK, with the biases as row D of [H, D+1, Dh].
    let query = Tensor::cat(&[split_weight(&block.qkv_weight, 0), split_bias(&block.qkv_bias, 0)], 1);
    let key = Tensor::cat(&[split_weight(&block.qkv_weight, d_model), split_bias(&block.qkv_bias, d_model)], 1);
    let (left, singular, right) = factored_svd(&query, &key);
    let root = singular.sqrt().unsqueeze(1);
    let (query, key) = (left * &root, right * &root);

    // OV: W_V [H, D, Dh], W_O [H, Dh, D]; A = W_V, B = W_O^T.
    let value_bias = block.qkv_bias.narrow(0, 2 * d_model, d_model);
    let out_bias = &block.attn_out_bias + value_bias.matmul(&block.attn_out_weight);
    let value = split_weight(&block.qkv_weight, 2 * d_model);
    let out = block.attn_out_weight.reshape([heads, head_dim, d_model]);
    let (left, singular, right) = factored_svd(&value, &out.transpose(1, 2));
    let value = left * singular.unsqueeze(1);
    let out = right.transpose(1, 2);

    block.qkv_weight =
        Tensor::cat(&[merge_weight(&query.narrow(1, 0, d_model)), merge_weight(&key.narrow(1, 0, d_model)), merge_weight(&value)], 1);
    block.qkv_bias =
        Tensor::cat(&[query.select(1, d_model).reshape([d_model]), key.select(1, d_model).reshape([d_model]), value_bias.zeros_like()], 0);
    block.attn_out_weight = out.reshape([d_model, d_model]);
    block.attn_out_bias = out_bias;
    block
}

/// The thin SVD of A B^T, batched over leading axes, from the factors A [.., m, r] and B [.., n, r]
/// (r <= m, n) without forming the product: with A = Q_a R_a and B = Q_b R_b (reduced QR) and
/// R_a R_b^T = u diag(s) w^T, A B^T = (Q_a u) diag(s) (Q_b w)^T. Returns (Q_a u, s, Q_b w), s descending.
fn factored_svd(a: &Tensor, b: &Tensor) -> (Tensor, Tensor, Tensor) {
    let (q_a, r_a) = Tensor::linalg_qr(a, "reduced");
    let (q_b, r_b) = Tensor::linalg_qr(b, "reduced");
    // Tensor::svd, not linalg_svd: tch's linalg_svd always passes a driver, which CPU tensors refuse.
    let (u, s, w) = r_a.matmul(&r_b.transpose(-1, -2)).svd(true, true);
    (q_a.matmul(&u), s, q_b.matmul(&w))
}

impl ProcessingOptions {
    /// Only the enabled steps that shape `part`: two option sets with the same restriction
    /// process that part identically.
    pub fn restricted_to(&self, part: Part) -> Self {
        self.with(|step| self.enables(step) && part.shaped_by(step))
    }

    /// The block parts the enabled steps read or write.
    fn block_parts(&self) -> BlockParts {
        let reads = |attention_in, attention_out, mlp_in, mlp_out| BlockParts { attention_in, attention_out, mlp_in, mlp_out };
        let step_parts = |step: Step| match step {
            Step::FoldLn => reads(true, false, true, false),
            Step::CenterWritingWeights => reads(false, true, false, true),
            Step::CenterUnembed => BlockParts::default(),
            Step::FoldValueBiases | Step::RefactorFactoredAttnMatrices => reads(true, true, false, false),
        };
        self.steps().into_iter().map(step_parts).fold(BlockParts::default(), BlockParts::union)
    }
}
