//! TransformerLens's weight processing (processing.md section 3) as a pure function on
//! [`Weights`]: it takes the unprocessed weights and returns processed ones in the same layout,
//! freeing each replaced tensor as it goes so that one copy of the model is held at a time.
use std::cell::Cell;
use std::marker::PhantomData;

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use super::load::MappedFiles;
use super::process_kernel::{self as kernel, Norm, Value};
pub use super::switches::{ProcessingOptions, Step};
use super::{Affine, Block, BlockParts, Gpt2Config, TokenEmbedding, Unembed, Weights};
use crate::sys::workers::Workers;

/// Applies the enabled steps in TransformerLens's order, after untying the unembedding.
///
/// Every value is computed in float64 and rounded once to the weights' own dtype: rounding after
/// each step stacks float32 errors, and at GPT-2's magnitudes (residual dimensions in the
/// hundreds) that made the processed model's error 2.5x the unprocessed one's. Float64 holds only
/// per-row and per-column accumulations, not whole tensors (model::process_kernel's loops, on
/// as many threads as libtorch's). Each step touches only one block's attention or MLP, or the
/// embeddings, or the unembedding, so the steps run part by part, in the same order as a whole.
pub fn process(weights: Weights, options: ProcessingOptions) -> Weights {
    Part::ALL.into_iter().fold(weights, |weights, part| process_part(weights, options, part))
}

/// The five parts of the weights that processing works on one at a time. Each is shaped by its
/// own steps only ([`ProcessingOptions::restricted_to`]), so that explain's rows can share them.
/// The MLP's reading and writing halves are parts of their own, as no step couples them; the
/// attention's stay one, as fold_value_biases moves the value bias (ln_1's shift folded in) from
/// one half into the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Every block's ln_1, c_attn and attention c_proj, by fold_ln, center_writing_weights,
    /// fold_value_biases and refactor_factored_attn_matrices.
    Attention,
    /// Every block's ln_2 and c_fc, by fold_ln.
    MlpIn,
    /// Every block's MLP c_proj, by center_writing_weights.
    MlpOut,
    /// wte and wpe, by center_writing_weights.
    Embeddings,
    /// ln_f, W_U and b_U, by fold_ln and center_unembed.
    Unembedding,
}

impl Part {
    pub const ALL: [Part; 5] = [Part::Attention, Part::MlpIn, Part::MlpOut, Part::Embeddings, Part::Unembedding];

    /// The block parts this part is made of; none for the embeddings and the unembedding.
    pub fn block_parts(self) -> BlockParts {
        match self {
            Part::Attention => BlockParts { attention_in: true, attention_out: true, ..BlockParts::default() },
            Part::MlpIn => BlockParts { mlp_in: true, ..BlockParts::default() },
            Part::MlpOut => BlockParts { mlp_out: true, ..BlockParts::default() },
            Part::Embeddings | Part::Unembedding => BlockParts::default(),
        }
    }

    /// Whether `step` changes this part (as its doc above says).
    fn shaped_by(self, step: Step) -> bool {
        match self {
            Part::Attention => step != Step::CenterUnembed,
            Part::MlpIn => step == Step::FoldLn,
            Part::MlpOut => step == Step::CenterWritingWeights,
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
        Part::Attention | Part::MlpIn | Part::MlpOut => {
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
/// [`process_part`] makes it. The variants share one pass over W_U: its reading, ln_f's folding
/// and the vocabulary's mean (explain's rows need three variants).
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
    let ln_f = weights.ln_f.as_ref().map(Norm::of);
    // Read and computed in the weights' dtype; float16 and bfloat16 (which float32 holds exactly)
    // are computed into float64 and rounded into their dtype once, when copied there.
    let processed = match weight.kind() {
        Kind::Double => process_unembed::<f64, f64>(weight, bias, ln_f.as_ref(), &steps, &release),
        Kind::Float => process_unembed::<f32, f32>(weight, bias, ln_f.as_ref(), &steps, &release),
        _ => process_unembed::<f32, f64>(weight, bias, ln_f.as_ref(), &steps, &release),
    };
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

/// `half` (attention or MLP) of every block processed, rounded once into one buffer; `release`
/// after each block.
fn process_blocks(
    blocks: Vec<Block>,
    options: ProcessingOptions,
    half: BlockParts,
    (config, kind): (&Gpt2Config, Kind),
    release: &dyn Fn(),
) -> Vec<Block> {
    // A part no enabled step touches is kept as it is: its processing would copy it unchanged,
    // and explain sees it unchanged without comparing values.
    let parts = options.block_parts().intersection(half);
    if parts == BlockParts::default() {
        return blocks;
    }
    let (d_model, heads) = (config.n_embd, config.n_head);
    let workers = Workers::new();
    let arena = Arena::for_block_parts(&blocks, parts, kind, &workers);
    // refactor_factored_attn_matrices works on the other steps' results in float64, on the CPU.
    let refactor = options.refactor_factored_attn_matrices && parts.attention_in;
    let sink = if refactor { Sink::Double } else { Sink::Arena(&arena) };
    blocks
        .into_iter()
        .map(|block| {
            let block = match (kind, sink.kind()) {
                (Kind::Double, _) => process_block::<f64, f64>(block, options, parts, d_model, (&sink, &workers)),
                (_, Kind::Float) => process_block::<f32, f32>(block, options, parts, d_model, (&sink, &workers)),
                _ => process_block::<f32, f64>(block, options, parts, d_model, (&sink, &workers)),
            };
            release();
            if refactor {
                refactor_factored_attn_matrices(block, d_model, heads).map_parts(parts, |tensor| arena.copy_of(&tensor))
            } else {
                block
            }
        })
        .collect()
}

/// One block's `parts` processed by the enabled steps other than refactor_factored_attn_matrices,
/// read as `I` and computed into `O` (the sink's dtype, or float64 to be rounded into it).
fn process_block<I: Value, O: Value>(
    mut block: Block,
    options: ProcessingOptions,
    parts: BlockParts,
    d_model: i64,
    (sink, workers): (&Sink, &Workers),
) -> Block {
    let fold_ln = options.fold_ln;
    let mut qkv_bias = None;
    if parts.attention_in {
        let (ln, weight, bias) = fold_norm::<I, O>(block.ln_1.take(), &block.qkv_weight, &block.qkv_bias, fold_ln, (sink, workers));
        (block.ln_1, block.qkv_weight, qkv_bias) = (ln, weight, Some(bias));
    }
    if parts.mlp_in {
        let (ln, weight, bias) = fold_norm::<I, O>(block.ln_2.take(), &block.mlp_in_weight, &block.mlp_in_bias, fold_ln, (sink, workers));
        (block.ln_2, block.mlp_in_weight, block.mlp_in_bias) = (ln, weight, sink.store_values(&bias));
    }
    if parts.attention_out {
        // Attention patterns sum to one, so the value bias (ln_1's shift folded in) contributes
        // b_V @ W_O at every position: fold_value_biases moves it into the output bias.
        let value_range = (2 * d_model) as usize..(3 * d_model) as usize;
        let value_bias = qkv_bias.as_mut().filter(|_| options.fold_value_biases).map(|bias| {
            let value_bias = bias[value_range.clone()].to_vec();
            bias[value_range].fill(0.0);
            value_bias
        });
        (block.attn_out_weight, block.attn_out_bias) = center_writes::<I, O>(
            &block.attn_out_weight,
            &block.attn_out_bias,
            (options.center_writing_weights, value_bias.as_deref()),
            (sink, workers),
        );
    }
    if let Some(bias) = qkv_bias {
        block.qkv_bias = sink.store_values(&bias);
    }
    if parts.mlp_out {
        (block.mlp_out_weight, block.mlp_out_bias) =
            center_writes::<I, O>(&block.mlp_out_weight, &block.mlp_out_bias, (options.center_writing_weights, None), (sink, workers));
    }
    block
}

/// With `fold_ln` and a LayerNorm there to fold, folds its scale and shift into the matrix that
/// reads its output, then centers the matrix's columns so that the folded read ignores the
/// residual's mean, as LNPre's output has none: (x*g + b) @ W + c = x @ (g*W) + (b @ W + c), the
/// bias folded with the unscaled matrix. Returns the LayerNorm left (none once folded), the
/// matrix, and the bias in float64 (fold_value_biases reads it before it is rounded).
fn fold_norm<I: Value, O: Value>(
    affine: Option<Affine>,
    weight: &Tensor,
    bias: &Tensor,
    fold_ln: bool,
    (sink, workers): (&Sink, &Workers),
) -> (Option<Affine>, Tensor, Vec<f64>) {
    let mut folded_bias = doubles(bias);
    match affine {
        Some(affine) if fold_ln => {
            let norm = Norm::of(&affine);
            let input = Values::<I>::of(weight);
            let mut output = Output::<O>::into(sink.place(&weight.size()), workers);
            let (input, values) = (input.get(), output.values());
            workers.run(|| kernel::fold_norm(input, &norm, &mut folded_bias, values));
            (None, output.finish(), folded_bias)
        }
        affine => (affine.map(|affine| affine.map(|tensor| sink.store(&tensor))), sink.store(weight), folded_bias),
    }
}

/// Everything that writes to the residual stream writes mean-free vectors (the embeddings are
/// centered in [`process_part`]): with `center`, each output vector of a writing matrix and its
/// bias minus its mean. With `value_bias`, fold_value_biases adds b_V @ W_O (W_O as processed) to
/// the bias, then re-centers it when centering, as TransformerLens >= 3 does.
fn center_writes<I: Value, O: Value>(
    weight: &Tensor,
    bias: &Tensor,
    (center, value_bias): (bool, Option<&[f64]>),
    (sink, workers): (&Sink, &Workers),
) -> (Tensor, Tensor) {
    let width = weight.size()[1] as usize;
    let input = Values::<I>::of(weight);
    let mut output = Output::<O>::into(sink.place(&weight.size()), workers);
    let (input, values) = (input.get(), output.values());
    let product = workers.run(|| kernel::center_rows(input, width, center, value_bias, values));
    let mut bias = doubles(bias);
    let center_bias = |bias: &mut Vec<f64>| {
        let mean = bias.iter().sum::<f64>() / bias.len() as f64;
        bias.iter_mut().for_each(|value| *value -= mean);
    };
    if center {
        center_bias(&mut bias);
    }
    if value_bias.is_some() {
        bias.iter_mut().zip(&product).for_each(|(bias, product)| *bias += product);
        if center {
            center_bias(&mut bias);
        }
    }
    (output.finish(), sink.store_values(&bias))
}

/// Where a block's processed tensors go: rounded into the arena, or kept in float64 on the CPU
/// for refactor_factored_attn_matrices, which reads the other steps' results unrounded.
enum Sink<'a> {
    Arena(&'a Arena),
    Double,
}

impl Sink<'_> {
    fn kind(&self) -> Kind {
        match self {
            Sink::Arena(arena) => arena.buffer.kind(),
            Sink::Double => Kind::Double,
        }
    }

    /// Room for a tensor of `size`.
    fn place(&self, size: &[i64]) -> Tensor {
        match self {
            Sink::Arena(arena) => arena.place(size),
            Sink::Double => Tensor::empty(size, (Kind::Double, Device::Cpu)),
        }
    }

    /// `tensor`'s values, as the sink holds them.
    fn store(&self, tensor: &Tensor) -> Tensor {
        match self {
            Sink::Arena(arena) => arena.copy_of(tensor),
            Sink::Double => to_double(tensor.to_device(Device::Cpu)),
        }
    }

    fn store_values(&self, values: &[f64]) -> Tensor {
        self.store(&Tensor::from_slice(values))
    }
}

/// One buffer that the processed blocks' tensors are rounded into, allocated before the first
/// block. Allocated one by one, each block's results would land between the working memory of
/// the blocks before and after it, and the heap would fragment: gpt2-xl's processing (then in
/// whole float64 tensors) peaked anywhere from 7.4 to 9.5 GiB with the same results, depending
/// on the heap's layout. Here the results grow one buffer.
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
    fn for_block_parts(blocks: &[Block], parts: BlockParts, kind: Kind, workers: &Workers) -> Self {
        let unit = (ARENA_ALIGNMENT / kind.elt_size_in_bytes() as i64).max(1);
        let len = Cell::new(0);
        for block in blocks {
            block.shallow_clone().map_parts(parts, |tensor| {
                len.set(len.get() + round_up(tensor.numel() as i64, unit));
                tensor
            });
        }
        let device = blocks.first().map_or(Device::Cpu, |block| block.qkv_weight.device());
        Self { buffer: new_tensor(&[len.get()], (kind, device), workers), unit, used: Cell::new(0) }
    }

    /// The arena's next free place, shaped `size`.
    fn place(&self, size: &[i64]) -> Tensor {
        let (start, len) = (self.used.get(), size.iter().product::<i64>());
        self.used.set(start + round_up(len, self.unit));
        self.buffer.narrow(0, start, len).view(size)
    }

    /// `tensor` rounded to the arena's dtype into its next free place.
    fn copy_of(&self, tensor: &Tensor) -> Tensor {
        let mut place = self.place(&tensor.size());
        place.copy_(tensor);
        place
    }
}

/// `len` rounded up to a multiple of `unit`.
fn round_up(len: i64, unit: i64) -> i64 {
    (len + unit - 1) / unit * unit
}

/// Rows of an embedding or of the unembedding (vocabulary-major) processed at a time: an
/// embedding's float64 copy is made a slab at a time (a whole [V, D] one would add 300 MB for
/// GPT-2 small), and the checkpoint's pages are released after each slab.
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
    let mut rows = to_double(rows);
    rows -= rows.mean_dim(-1, true, Kind::Double);
    rows
}

/// The unembedding's steps for each variant, ln_f folded in then center_unembed, read as `I`,
/// computed into `O`; `None` for a variant with neither step. W_U is worked on vocabulary-major,
/// as wte holds it (W_U's columns are wte's rows, read and written in order). Folding acts on
/// each vocabulary entry alone; center_unembed's mean over the vocabulary is linear in them, so
/// it is the (folded) mean entry, summed first. The vocabulary goes a slab at a time, `release`
/// after each.
fn process_unembed<I: Value, O: Value>(
    weight: &Tensor,
    bias: &Tensor,
    ln_f: Option<&Norm>,
    variants: &[UnembedSteps],
    release: &dyn Fn(),
) -> Vec<Option<(Tensor, Tensor)>> {
    let workers = Workers::new();
    let input = Values::<I>::of(&weight.tr());
    let (vocab, width) = (weight.size()[1], weight.size()[0]);
    let rows = input.get();
    let slab_rows = |(start, length): (i64, i64)| &rows[(start * width) as usize..((start + length) * width) as usize];
    let bias = doubles(bias);
    let mean = variants.iter().any(|steps| steps.center_unembed).then(|| {
        let mut totals = vec![0.0; width as usize];
        for slab in slabs(vocab) {
            let slab_totals = workers.run(|| kernel::column_totals(slab_rows(slab), width as usize));
            totals.iter_mut().zip(slab_totals).for_each(|(total, slab_total)| *total += slab_total);
            release();
        }
        let mean: Vec<f64> = totals.iter().map(|total| total / vocab as f64).collect();
        (mean, bias.iter().sum::<f64>() / vocab as f64)
    });
    let folded_mean = mean.as_ref().zip(ln_f).map(|((mean, mean_bias), norm)| {
        let [scaled, shifted] = kernel::row_dots(mean, [&norm.scale, &norm.shift]);
        let row_mean = scaled / width as f64;
        (mean.iter().zip(&norm.scale).map(|(value, scale)| scale * value - row_mean).collect::<Vec<f64>>(), mean_bias + shifted)
    });
    let no_mean = (vec![0.0; width as usize], 0.0);
    let mut outputs: Vec<Option<VariantOutput<O>>> = variants
        .iter()
        .map(|steps| {
            let mean = match (steps.center_unembed, steps.fold_ln) {
                (false, _) => &no_mean,
                (true, false) => mean.as_ref().expect("summed for a variant that centers"),
                (true, true) => folded_mean.as_ref().expect("folded for a variant that folds and centers"),
            };
            (steps.fold_ln || steps.center_unembed).then(|| VariantOutput {
                norm: ln_f.filter(|_| steps.fold_ln),
                mean: (&mean.0, mean.1),
                weight: Output::into(new_tensor(&[vocab, width], (weight.kind(), weight.device()), &workers), &workers),
                bias: Output::into(new_tensor(&[vocab], (weight.kind(), weight.device()), &workers), &workers),
            })
        })
        .collect();
    for (start, length) in slabs(vocab) {
        let slab = slab_rows((start, length));
        let (start, end) = (start as usize, (start + length) as usize);
        for output in outputs.iter_mut().flatten() {
            let (norm, mean) = (output.norm, output.mean);
            let weight_out = &mut output.weight.values()[start * width as usize..end * width as usize];
            let bias_out = &mut output.bias.values()[start..end];
            workers.run(|| kernel::unembed_rows(slab, &bias[start..end], norm, mean, weight_out, bias_out));
        }
        release();
    }
    // Vocabulary-major, as wte is: W_U is a view.
    outputs.into_iter().map(|output| output.map(|output| (output.weight.finish().tr(), output.bias.finish()))).collect()
}

/// One unembedding variant in the making: the ln_f it folds, the mean entry it subtracts (zero
/// without center_unembed), and where its weight and bias are written.
struct VariantOutput<'a, O> {
    norm: Option<&'a Norm>,
    mean: (&'a [f64], f64),
    weight: Output<O>,
    bias: Output<O>,
}

/// A float64 copy, always a new tensor (also of a float64 one), so that processing never writes
/// into the weights it was given.
fn to_double(tensor: Tensor) -> Tensor {
    tensor.to_dtype(Kind::Double, false, true)
}

/// A tensor's values in float64.
fn doubles(tensor: &Tensor) -> Vec<f64> {
    Values::<f64>::of(tensor).get().to_vec()
}

impl Norm {
    fn of(affine: &Affine) -> Self {
        Norm { scale: doubles(&affine.weight), shift: doubles(&affine.bias) }
    }
}

/// A tensor's values as a slice of `T`, from a contiguous CPU tensor of T's kind: the tensor
/// itself where it is one (a checkpoint's float32 tensors are read in place), else a copy.
struct Values<T> {
    tensor: Tensor,
    value: PhantomData<T>,
}

impl<T: Value> Values<T> {
    fn of(tensor: &Tensor) -> Self {
        Self { tensor: tensor.to_device(Device::Cpu).to_kind(T::KIND).contiguous(), value: PhantomData }
    }

    fn get(&self) -> &[T] {
        let len = self.tensor.numel();
        if len == 0 {
            return &[];
        }
        // SAFETY: a contiguous CPU tensor of T's kind holds `len` values of T from its data
        // pointer; the borrow keeps the tensor, and so its storage, alive. Processing never
        // writes into the weights it reads.
        unsafe { std::slice::from_raw_parts(self.tensor.data_ptr() as *const T, len) }
    }
}

/// Where one processed tensor's values are written as `T`: straight into `place` when it is a
/// contiguous CPU tensor of T's kind, else into a CPU buffer that [`Output::finish`] copies into
/// `place` (rounding to its dtype, onto its device).
struct Output<T> {
    place: Tensor,
    buffer: Option<Tensor>,
    value: PhantomData<T>,
}

impl<T: Value> Output<T> {
    fn into(place: Tensor, workers: &Workers) -> Self {
        let direct = place.device() == Device::Cpu && place.kind() == T::KIND && place.is_contiguous();
        let buffer = (!direct).then(|| new_tensor(&place.size(), (T::KIND, Device::Cpu), workers));
        Self { place, buffer, value: PhantomData }
    }

    fn values(&mut self) -> &mut [T] {
        let tensor = self.buffer.as_ref().unwrap_or(&self.place);
        let len = tensor.numel();
        if len == 0 {
            return &mut [];
        }
        // SAFETY: a contiguous CPU tensor of T's kind holds `len` values of T from its data
        // pointer. It is a new tensor or a place of the arena that no other tensor covers, and
        // the mutable borrow of this Output is the only way to it until `finish`.
        unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr() as *mut T, len) }
    }

    fn finish(mut self) -> Tensor {
        if let Some(buffer) = &self.buffer {
            self.place.copy_(buffer);
        }
        self.place
    }
}

/// A new tensor for processing to write, its pages allocated up front (on the CPU): in batches
/// spread over the workers, rather than on a page fault at each first write, which took a third
/// of processing's time (Linux's MADV_POPULATE_WRITE, 5.14 and later; elsewhere, or where it is
/// refused, the pages fault in as written).
fn new_tensor(size: &[i64], options: (Kind, Device), workers: &Workers) -> Tensor {
    let tensor = Tensor::empty(size, options);
    populate(&tensor, workers);
    tensor
}

fn populate(tensor: &Tensor, workers: &Workers) {
    #[cfg(target_os = "linux")]
    {
        /// From Linux's uapi, the same on every architecture; the libc crate does not have it yet.
        const MADV_POPULATE_WRITE: libc::c_int = 23;
        /// Each worker's batch.
        const BATCH_BYTES: usize = 8 << 20;
        if tensor.device() != Device::Cpu || tensor.numel() == 0 {
            return;
        }
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let start = tensor.data_ptr() as usize;
        let end = start + tensor.numel() * tensor.kind().elt_size_in_bytes();
        // Whole pages only: a page the tensor shares with other memory faults in as it is written.
        let (first, last) = (start.div_ceil(page) * page, end / page * page);
        let batches: Vec<usize> = (first..last).step_by(BATCH_BYTES).collect();
        workers.run(|| {
            batches.into_par_iter().for_each(|batch| {
                // SAFETY: [batch, batch + len) lies in whole pages of the tensor's own allocation,
                // which no other thread reads or writes yet; populating leaves the values as they
                // are (unwritten) and only maps the pages.
                unsafe { libc::madvise(batch as *mut libc::c_void, BATCH_BYTES.min(last - batch), MADV_POPULATE_WRITE) };
            })
        });
    }
}

/// TransformerLens keeps W_U = wte^T as its own tensor, with a zero bias b_U. Here it starts as
/// a transposed view of wte, not a copy: the steps that change W_U write a new tensor, and a
/// copy made up front would hold a third vocabulary-sized matrix (147 MiB for GPT-2 small)
/// through all of processing.
fn untie_unembed(mut weights: Weights) -> Weights {
    if let Unembed::Tied = weights.unembed {
        let embedding = weights.token_embedding.table();
        let vocab = embedding.size()[0];
        weights.unembed = Unembed::Untied { weight: embedding.tr(), bias: Tensor::zeros([vocab], (embedding.kind(), embedding.device())) };
    }
    weights
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
