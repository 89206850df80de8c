//! GPT-2's forward pass with Hugging Face's eager-attention semantics (processing.md section 2).
//! The processed model runs through the same code: its LayerNorms have no affine part and its
//! unembedding is untied with a bias, which the weights themselves say. The same code also
//! computes in float64 from float32 weights (the truth the rounding envelope is measured
//! against), and with one of the catalogued port deviations (model::deviation) switched on.
//!
//! Prompts run packed: the tokens of several prompts, one after another, go through every
//! position-wise step (embeddings, LayerNorms, the linear layers, the unembedding) as one matrix,
//! and attention runs on each prompt's own rows, causal within it. A prompt's rows never meet
//! another prompt's, so packing changes no result beyond the rounding of a matrix product's
//! row count (see [`MIN_PACK_ROWS`]); one prompt alone is a pack of one.
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use tch::{Kind, Tensor};

use super::deviation::{Bias, Deviation, DeviationKind};
use super::widened;
use super::{Affine, Block, Unembed, Weights};
use crate::sys::timings::{timed, Phase};
use crate::sys::workers::on_team;
use crate::tokenize::END_OF_TEXT;

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
/// a pack's logits take up to a fifth of the model's weights, between 32 and 96 MiB. GPT-2
/// small gets 96 MiB, 500 rows of GPT-2's vocabulary, where the unembedding's product runs 16%
/// faster than at 166 rows and the blocks' 7% (torch.mm, 2 threads): on 40 prompts of about 55
/// tokens the forward took 8.6-8.7 s against 10.5-11.0 s in 32 MiB packs, for 124 MiB more at
/// the peak. A small model's products gain nothing from more rows, and 96 MiB packs would more
/// than double its memory (200 fixture prompts: 467 against 267 MiB), so it keeps 32 MiB.
/// Either way a pack's memory does not grow with a run's prompts.
const PACK_SHARE_OF_WEIGHTS: u64 = 5;
const PACK_LOGITS_BYTES: std::ops::RangeInclusive<u64> = 32 << 20..=96 << 20;

/// libtorch's CPU matrix product (MKL) takes another path for fewer than 4 rows, which rounds
/// differently: a pack shorter than that is filled up to it, so that on one thread a prompt's
/// results are the same bits alone or among any neighbours (`compare --shard` relies on it).
const MIN_PACK_ROWS: usize = 4;

/// Splits prompts of `lengths` tokens, in order, into packs of consecutive prompts whose logits
/// fit the budget for `weights` ([`PACK_SHARE_OF_WEIGHTS`]); a longer prompt is a pack alone.
pub fn packs(lengths: &[usize], weights: &Weights) -> Vec<Range<usize>> {
    let bytes = (weights.processed_bytes() / PACK_SHARE_OF_WEIGHTS).clamp(*PACK_LOGITS_BYTES.start(), *PACK_LOGITS_BYTES.end());
    let row_bytes = std::mem::size_of::<f32>() as u64 * weights.config.vocab_size.max(1) as u64;
    packs_of_rows(lengths, (bytes / row_bytes).max(1) as usize)
}

/// Splits prompts of `lengths` tokens, in order, into packs of consecutive prompts of at most
/// `budget` rows in all; a longer prompt is a pack alone.
fn packs_of_rows(lengths: &[usize], budget: usize) -> Vec<Range<usize>> {
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
            Some(kind) if self.casts(tensor) => tensor.to_kind(kind),
            _ => tensor.shallow_clone(),
        }
    }

    /// Whether reading `tensor` makes a copy in another dtype.
    fn casts(&self, tensor: &Tensor) -> bool {
        self.kind.is_some_and(|kind| kind != tensor.kind())
    }

    /// Whether `x @ weight` widens the weight inside the product rather than casting it first:
    /// float64 from float32 over a few rows (model::widened).
    fn widens(&self, x: &Tensor, weight: &Tensor) -> bool {
        self.kind == Some(Kind::Double) && widened::applies(x, weight)
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
    forward_packed(weights, &[tokens]).prompt(0)
}

/// Runs the model on several prompts at once, each as it would run alone (see the module's notes).
pub fn forward_packed(weights: &Weights, prompts: &[&[i64]]) -> PackedActivations {
    timed(Phase::Forward, || forward_untimed(weights, prompts, None, &Computation::default()))
}

/// [`forward`], computing as `computation` says.
pub fn forward_with(weights: &Weights, tokens: &[i64], computation: &Computation) -> Activations {
    // A port that prepends <|endoftext|> itself sees one more position, whose outputs it drops.
    if computation.deviation.is_some_and(|deviation| deviation.kind == DeviationKind::BosPrepended) {
        let prepended: Vec<i64> = std::iter::once(END_OF_TEXT).chain(tokens.iter().copied()).collect();
        let all = timed(Phase::Forward, || forward_untimed(weights, &[&prepended], None, computation)).prompt(0);
        let positions = tokens.len() as i64;
        return Activations { logits: all.logits.narrow(0, 1, positions), resid: all.resid.narrow(1, 1, positions) };
    }
    timed(Phase::Forward, || forward_untimed(weights, &[tokens], None, computation)).prompt(0)
}

/// Each block, and ln_f with the unembedding, applied to another implementation's own residual
/// stream `inputs` [L + 1, T, D] rather than to ours: `resid[l]` is block h.{l-1} on
/// `inputs[l-1]` (0 stays the embeddings), the logits are the head on `inputs[L]`. Set against
/// that implementation's outputs, this measures what each of its blocks adds on its own, free of
/// what earlier blocks passed on.
pub fn forward_each_block(weights: &Weights, tokens: &[i64], inputs: &Tensor, computation: &Computation) -> Activations {
    let given = Given { prompts: &[tokens], inputs };
    timed(Phase::Forward, || forward_untimed(weights, &[], Some(given), computation)).prompt(0)
}

/// [`forward_with`] on `tokens`, and [`forward_each_block`] on each of `sides` (residual streams
/// [L + 1, T, D] of the same tokens), in the same matrix products: a weight is read (and cast)
/// once for all of them, and the products have rows enough to run at their full rate. Every
/// result is what its own call computes, up to the rounding of a product's row count.
pub fn forward_with_each_block(
    weights: &Weights,
    tokens: &[i64],
    sides: &[Tensor],
    computation: &Computation,
) -> (Activations, Vec<Activations>) {
    let prompts = vec![tokens; sides.len()];
    let inputs = Tensor::cat(sides, 1);
    let given = (!sides.is_empty()).then_some(Given { prompts: &prompts, inputs: &inputs });
    let packed = timed(Phase::Forward, || forward_untimed(weights, &[tokens], given, computation));
    (packed.prompt(0), (1..=sides.len()).map(|index| packed.prompt(index)).collect())
}

/// Prompts whose residual stream is given rather than computed: each block reads `inputs`
/// ([L + 1, rows, D], the prompts' rows one after another) instead of the block before it.
#[derive(Clone, Copy)]
struct Given<'a> {
    prompts: &'a [&'a [i64]],
    inputs: &'a Tensor,
}

/// The pack of `computed` prompts, then the `given` ones, in one forward.
fn forward_untimed(weights: &Weights, computed: &[&[i64]], given: Option<Given>, computation: &Computation) -> PackedActivations {
    let _no_grad = tch::no_grad_guard();
    let device = weights.token_embedding.stored().device();
    let config = &weights.config;
    // The filler: token 0 at positions 0.., a prompt of its own whose results are dropped, after
    // the computed prompts. Only a computed prompt needs its bits independent of the pack;
    // another implementation's residual stream fixes a given prompt's rows.
    let given_prompts = given.map_or(&[][..], |given| given.prompts);
    let rows: usize = computed.iter().chain(given_prompts).map(|tokens| tokens.len()).sum();
    let filler = if computed.is_empty() { Vec::new() } else { vec![0; MIN_PACK_ROWS.saturating_sub(rows)] };
    let filler_segment = Some(&filler[..]).filter(|filler| !filler.is_empty());
    let segments: Vec<&[i64]> = computed.iter().copied().chain(filler_segment).chain(given_prompts.iter().copied()).collect();
    let all_spans = spans(&segments);
    let computed_rows = (computed.iter().map(|tokens| tokens.len()).sum::<usize>() + filler.len()) as i64;
    let mut kept = all_spans[..computed.len()].to_vec();
    kept.extend_from_slice(&all_spans[all_spans.len() - given_prompts.len()..]);
    let ids = Tensor::from_slice(&segments.concat()).to_device(device);
    let offset = match computation.deviation.map(|deviation| deviation.kind) {
        Some(DeviationKind::PositionOffset { offset }) => offset,
        _ => 0,
    };
    let positions: Vec<i64> = segments
        .iter()
        .flat_map(|tokens| (0..tokens.len() as i64).map(|position| (position + offset).rem_euclid(config.n_positions)))
        .collect();
    let position_ids = Tensor::from_slice(&positions).to_device(device);
    // What block `index` reads: the computed prompts' rows from the block before it, the given
    // prompts' from their inputs.
    let input = |index: usize, ours: &Tensor| match given {
        Some(given) if computed_rows == 0 => computation.read(&given.inputs.get(index as i64)),
        Some(given) => Tensor::cat(&[ours.narrow(0, 0, computed_rows), computation.read(&given.inputs.get(index as i64))], 0),
        None => ours.shallow_clone(),
    };
    let mut x = computation.read(&weights.token_embedding.rows(&ids))
        + computation.read(&weights.position_embedding.index_select(0, &position_ids));
    let mut resid = Vec::with_capacity(weights.blocks.len() + 1);
    resid.push(x.shallow_clone());
    let epsilon = config.layer_norm_epsilon;
    for (index, block) in weights.blocks.iter().enumerate() {
        let deviation = computation.deviates(Some(index));
        let norm = |x: &Tensor, affine: Option<&Affine>| layer_norm(x, affine, epsilon, deviation, computation);
        x = input(index, &x);
        x = &x + attention(block, &norm(&x, block.ln_1.as_ref()), &all_spans, config.n_head, deviation, computation);
        x = &x + mlp(block, &norm(&x, block.ln_2.as_ref()), deviation, computation);
        resid.push(x.shallow_clone());
        weights.done_with(&block.tensors());
    }
    let outside = computation.deviates(None);
    let x = input(weights.blocks.len(), &x);
    let normalized = match outside {
        Some(DeviationKind::NoFinalLayerNorm) => x.shallow_clone(),
        _ => layer_norm(&x, weights.ln_f.as_ref(), epsilon, outside, computation),
    };
    let logits = match &weights.unembed {
        Unembed::Tied => {
            let table = weights.token_embedding.table();
            match outside {
                Some(DeviationKind::UnembeddingReshaped) => {
                    normalized.matmul(&computation.read(&table).reshape([config.n_embd, config.vocab_size]))
                }
                _ if weights.release_after_use => unembed_letting_go(&normalized, &table, weights, computation),
                _ => unembed(&normalized, &table.tr(), None, computation),
            }
        }
        Unembed::Untied { weight, bias } => unembed(&normalized, weight, Some(bias), computation),
    };
    weights.done_with(&[weights.token_embedding.stored()]);
    PackedActivations { logits, resid: Tensor::stack(&resid, 0), spans: kept }
}

/// Vocabulary entries the unembedding reads at a time when it casts the weights (a whole float64
/// copy of GPT-2's [D, V] is 309 MB, made and freed by every float64 forward), and when it lets
/// them go as it goes ([`unembed_letting_go`]).
const VOCAB_SLAB: i64 = 4096;

/// `x @ weight (+ bias)` for the unembedding's `weight` [D, V]. A few rows widen it inside the
/// product (model::widened); otherwise it is cast on use a slab of the vocabulary at a time,
/// each slab into the same buffer. A slab cast into fresh memory would
/// leave a hole that the small product beside it splits (glibc serves small blocks from a large
/// free one), so the next slab would grow the heap: 260-340 MiB of float64 forward on "Hello World".
fn unembed(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, computation: &Computation) -> Tensor {
    if !computation.casts(weight) || computation.widens(x, weight) {
        return product(x, weight, bias, computation);
    }
    let vocab = weight.size()[1];
    // The buffer takes the weight's layout (a transposed view of wte stays one), so each slab is
    // copied in the order it lies in memory.
    let slabs: Vec<Tensor> = {
        let buffer = computation.read(&weight.narrow(1, 0, VOCAB_SLAB.min(vocab)));
        (0..vocab)
            .step_by(VOCAB_SLAB as usize)
            .map(|start| {
                let len = VOCAB_SLAB.min(vocab - start);
                let mut slab = buffer.narrow(1, 0, len);
                if start > 0 {
                    slab.copy_(&weight.narrow(1, start, len));
                }
                product(x, &slab, bias.map(|bias| bias.narrow(0, start, len)).as_ref(), computation)
            })
            .collect()
    };
    Tensor::cat(&slabs, 1)
}

/// The tied unembedding `x @ wte^T` a slab of the vocabulary at a time, each slab's rows of wte
/// let go once its logits are made ([`Weights::released_after_use`]): made beside a processed
/// copy, the unprocessed logits then hold one slab of wte in memory rather than all of it (147
/// MiB for GPT-2 small, the largest part of compare's peak). From 4 rows, MKL gives each slab's
/// logits the same bits as the whole product's (tests/packing.rs).
fn unembed_letting_go(x: &Tensor, table: &Tensor, weights: &Weights, computation: &Computation) -> Tensor {
    let vocab = table.size()[0];
    let logits = Tensor::empty([x.size()[0], vocab], (x.kind(), x.device()));
    for start in (0..vocab).step_by(VOCAB_SLAB as usize) {
        let len = VOCAB_SLAB.min(vocab - start);
        let slab = table.narrow(0, start, len);
        logits.narrow(1, start, len).copy_(&unembed(x, &slab.tr(), None, computation));
        weights.done_with(&[&slab]);
    }
    logits
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
        Some(DeviationKind::MissingBias { bias: missing }) if missing == which => product(x, weight, None, computation),
        _ => product(x, weight, Some(bias), computation),
    }
}

/// `x @ weight (+ bias)`, the weight read as `computation` reads it: widened inside the product
/// where that applies (model::widened), otherwise cast whole first.
fn product(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, computation: &Computation) -> Tensor {
    let widened = computation.widens(x, weight).then(|| widened::product(x, weight)).flatten();
    match (widened, bias) {
        (Some(product), Some(bias)) => product + computation.read(bias),
        (Some(product), None) => product,
        (None, bias) if splits(x, weight, computation) => split_columns(x, weight, bias),
        (None, Some(bias)) => computation.read(bias).addmm(x, &computation.read(weight)),
        (None, None) => x.matmul(&computation.read(weight)),
    }
}

/// A float32 product of at most this many rows splits the weight's columns among libtorch's
/// threads (see [`split_columns`]). MKL runs such a product on one thread, which reads the weight
/// at one core's rate; from about 55 rows it threads the product itself. GPT-2-small shape, 2
/// threads, the forward phase (`--timings`), split against whole: "Hello World" (4 rows, with
/// the envelope) 0.17-0.21 s against 0.24-0.29 s; prompts of 8, 16 and 32 tokens 0.13-0.15,
/// 0.16-0.21 and 0.20-0.23 s against 0.18-0.22, 0.20-0.21 and 0.28-0.31 s; 55 tokens no change;
/// explain "Hello World" 0.49-0.57 s against 0.77-0.79 s.
const SPLIT_MAX_ROWS: i64 = 32;

/// Whether `x @ weight` runs as [`split_columns`]: float32 on the CPU, as the weights hold it, on
/// several threads, from [`MIN_PACK_ROWS`] (fewer rows take another path in MKL, whose slices of
/// columns round differently) to [`SPLIT_MAX_ROWS`] rows.
fn splits(x: &Tensor, weight: &Tensor, computation: &Computation) -> bool {
    let rows = x.size()[0];
    !computation.casts(weight)
        && (x.kind(), weight.kind()) == (Kind::Float, Kind::Float)
        && x.device() == tch::Device::Cpu
        && tch::get_num_threads() > 1
        && (MIN_PACK_ROWS as i64..=SPLIT_MAX_ROWS).contains(&rows)
}

/// `x @ weight (+ bias)` as one product per thread, each on a slice of the weight's columns, on
/// libtorch's own threads (sys::workers::on_team; inside them libtorch and MKL run single-
/// threaded). From 4 rows, MKL's product on a slice of columns gives each column the same bits
/// as the whole product does (GPT-2's shapes at 4 to 500 rows, halves and thirds, torch 2.13), so
/// a split forward is the one-thread forward bit for bit (tests/packing.rs).
fn split_columns(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    let parts = i64::from(tch::get_num_threads().max(1));
    let columns = weight.size()[1];
    // Each part's inputs, handed over whole to the thread that takes it (tensors are Send, not Sync).
    let jobs: Vec<Mutex<Option<(Tensor, Tensor, Option<Tensor>)>>> = (0..parts)
        .map(|part| {
            let (start, end) = (columns * part / parts, columns * (part + 1) / parts);
            let job = (x.shallow_clone(), weight.narrow(1, start, end - start), bias.map(|bias| bias.narrow(0, start, end - start)));
            Mutex::new(Some(job))
        })
        .collect();
    let products: Vec<Mutex<Option<Tensor>>> = (0..parts).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    on_team(&|| loop {
        let part = next.fetch_add(1, Ordering::Relaxed);
        let Some(job) = jobs.get(part) else { break };
        let Some((x, weight, bias)) = job.lock().unwrap_or_else(PoisonError::into_inner).take() else { continue };
        let product = match bias {
            Some(bias) => bias.addmm(&x, &weight),
            None => x.matmul(&weight),
        };
        *products[part].lock().unwrap_or_else(PoisonError::into_inner) = Some(product);
    });
    let products: Vec<Tensor> =
        products.into_iter().map(|product| product.into_inner().unwrap_or_else(PoisonError::into_inner).expect("every part ran")).collect();
    Tensor::cat(&products, 1)
}

/// Multi-head self-attention of each prompt (`spans`: its rows) on itself, causal.
fn attention(
    block: &Block,
    x: &Tensor,
    spans: &[Range<i64>],
    heads: i64,
    deviation: Option<DeviationKind>,
    computation: &Computation,
) -> Tensor {
    let d_model = x.size()[1];
    let qkv = linear(x, &block.qkv_weight, &block.qkv_bias, Bias::Qkv, deviation, computation);
    let mixed: Vec<Tensor> = spans
        .iter()
        .map(|span| causal_self_attention(&qkv.narrow(0, span.start, span.end - span.start), d_model, heads, deviation))
        .collect();
    let mixed = if mixed.len() == 1 { mixed.into_iter().next().expect("one") } else { Tensor::cat(&mixed, 0) };
    linear(&mixed, &block.attn_out_weight, &block.attn_out_bias, Bias::AttentionOut, deviation, computation)
}

/// One prompt's queries, keys and values [T, 3D] mixed into [T, D], heads concatenated.
fn causal_self_attention(qkv: &Tensor, d_model: i64, heads: i64, deviation: Option<DeviationKind>) -> Tensor {
    let positions = qkv.size()[0];
    let head_dim = d_model / heads;
    // [T, 3D] -> [3, H, T, Dh]: queries, keys, values, each split into heads.
    let qkv = qkv.view([positions, 3, heads, head_dim]).permute([1, 2, 0, 3]);
    let (queries, keys, values) = (qkv.get(0), qkv.get(1), qkv.get(2));
    let raw_scores = queries.matmul(&keys.transpose(-1, -2));
    let scores = match deviation {
        Some(DeviationKind::AttentionScaleByModelWidth) => raw_scores / (d_model as f64).sqrt(),
        Some(DeviationKind::NoAttentionScale) => raw_scores,
        _ => raw_scores / (head_dim as f64).sqrt(),
    };
    let masked = match deviation {
        Some(DeviationKind::NoCausalMask) => scores,
        _ => {
            let future = Tensor::ones([positions, positions], (Kind::Bool, qkv.device())).triu(1);
            scores.masked_fill(&future, lowest(scores.kind()))
        }
    };
    let pattern = match deviation {
        Some(DeviationKind::HalfPrecisionSoftmax) => {
            masked.to_kind(Kind::Float).clamp_min(-65504.0).to_kind(Kind::Half).softmax(-1, Kind::Half).to_kind(masked.kind())
        }
        _ => masked.softmax(-1, masked.kind()),
    };
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

#[cfg(test)]
mod tests {
    use super::packs_of_rows;

    #[test]
    fn packs_are_consecutive_prompts_within_the_budget() {
        // A budget of 4 rows: 2 + 2, then 3, 9 and 1 each alone (3 + 9 > 4, 9 > 4), or 1 + 1 + 1 + 1 then 1.
        assert_eq!(packs_of_rows(&[2, 2, 3, 9, 1], 4), vec![0..2, 2..3, 3..4, 4..5]);
        assert_eq!(packs_of_rows(&[1, 1, 1, 1, 1], 4), vec![0..4, 4..5]);
        assert!(packs_of_rows(&[], 4).is_empty());
    }
}
