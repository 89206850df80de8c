//! Processing's arithmetic (processing.md section 3) as plain loops over the weights' values, so
//! that processing runs at memory speed: each output value is computed in float64 from the input
//! values and rounded once; float64 holds only the per-row and per-column accumulations (the
//! means that folding and centering subtract, the folded biases), never a whole tensor.
//!
//! Every value depends on the data alone, never on the thread count or the machine's vector
//! width: rows are split into chunks of a fixed size whatever the threads, a chunk's column sums
//! run over its rows in order and the chunks' sums add in chunk order, a row's sums run in eight
//! lanes added in a fixed order, and nothing is fused (Rust does not contract a * b + c). The
//! loops are compiled once more for AVX2 and AVX-512, as the comparison kernel's are.
use rayon::prelude::*;

use crate::sys::vector::{widest, Kernel};

/// Lanes of a row's sums: as many float64 as the widest vectors hold (AVX-512), so that every
/// machine adds them in the same order.
const LANES: usize = 8;

/// A value type processing reads and writes: float32 (which holds float16 and bfloat16 exactly)
/// or float64.
pub(super) trait Value: tch::kind::Element + Copy + Send + Sync + Into<f64> {
    /// `value` rounded to this type, once.
    fn rounded(value: f64) -> Self;
}

impl Value for f32 {
    fn rounded(value: f64) -> Self {
        value as f32
    }
}

impl Value for f64 {
    fn rounded(value: f64) -> Self {
        value
    }
}

/// Rows per task. Fixed, whatever the thread count, since column sums add chunk by chunk: 64
/// rows of GPT-2's widest matrices (3072 columns) are 768 KiB of float32, in a core's L2.
const CHUNK_ROWS: usize = 64;

/// A LayerNorm's scale and shift, in float64, for folding into the matrix that reads its output.
pub(super) struct Norm {
    pub scale: Vec<f64>,
    pub shift: Vec<f64>,
}

/// fold_ln on a reading matrix W [rows, width] (input-major) and its bias, as
/// `x @ W + c` reads LN's output `x * scale + shift`: `bias += shift @ W` (the unscaled W), and
/// `out = scale[:, None] * W` minus each column's mean over the rows, rounded once. Two passes
/// over W: the column sums, then the output.
pub(super) fn fold_norm<I: Value, O: Value>(weight: &[I], norm: &Norm, bias: &mut [f64], out: &mut [O]) {
    let (rows, width) = (norm.scale.len(), bias.len());
    let [scaled, shifted] = column_sums(weight, width, [&norm.scale, &norm.shift]);
    for (bias, shifted) in bias.iter_mut().zip(&shifted) {
        *bias += shifted;
    }
    let means: Vec<f64> = scaled.iter().map(|sum| sum / rows as f64).collect();
    let means = &means[..];
    out.par_chunks_mut(CHUNK_ROWS * width).zip(weight.par_chunks(CHUNK_ROWS * width)).enumerate().for_each(|(chunk, (out, rows))| {
        widest(FoldRows { rows, scale: &norm.scale[chunk * CHUNK_ROWS..], means, out });
    });
}

/// center_writing_weights on a writing matrix W [rows, width]: each row minus its mean over the
/// row (with `center`; else copied), rounded once into `out`. With `product`, a vector with one
/// entry per row, also returns `product @ W'` of the float64 values W' rounded into `out`
/// (fold_value_biases's b_V @ W_O, on W_O centered or not).
pub(super) fn center_rows<I: Value, O: Value>(
    weight: &[I],
    width: usize,
    center: bool,
    product: Option<&[f64]>,
    out: &mut [O],
) -> Vec<f64> {
    let partials: Vec<Vec<f64>> = out
        .par_chunks_mut(CHUNK_ROWS * width)
        .zip(weight.par_chunks(CHUNK_ROWS * width))
        .enumerate()
        .map(|(chunk, (out, rows))| {
            let product = product.map(|coefficients| &coefficients[chunk * CHUNK_ROWS..]);
            widest(CenterRows { rows, width, center, product, out })
        })
        .collect();
    add_in_order(partials.into_iter().map(|partial| [partial]), if product.is_some() { width } else { 0 })
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// Each column's plain sum over the rows of W [rows, width], as [`fold_norm`] sums its columns.
pub(super) fn column_totals<I: Value>(weight: &[I], width: usize) -> Vec<f64> {
    let ones = vec![1.0; weight.len() / width.max(1)];
    let [totals] = column_sums(weight, width, [&ones]);
    totals
}

/// Σ_i coefficients_i[k] * row_k over a row of `width` values, one sum per coefficient vector,
/// each in eight lanes added in a fixed order; the same for a row wherever it lies.
pub(super) fn row_dots<I: Value, const N: usize>(row: &[I], coefficients: [&[f64]; N]) -> [f64; N] {
    widest(RowDots { row, coefficients })
}

/// The unembedding's steps on W_U laid out vocabulary-major (`weight` [V, D], row v being W_U's
/// column v) with its bias b_U [V]: with `norm` (ln_f), each row is folded (`bias_v += shift .
/// row`, `row = scale * row - mean(scale * row)`); then the centering `mean` (a row and a bias
/// value: center_unembed's mean over the vocabulary, zeros without it) is subtracted; rounded
/// once into `out` and `bias_out`.
pub(super) fn unembed_rows<I: Value, O: Value>(
    weight: &[I],
    bias: &[f64],
    norm: Option<&Norm>,
    mean: (&[f64], f64),
    out: &mut [O],
    bias_out: &mut [O],
) {
    let width = mean.0.len();
    out.par_chunks_mut(CHUNK_ROWS * width)
        .zip(bias_out.par_chunks_mut(CHUNK_ROWS))
        .zip(weight.par_chunks(CHUNK_ROWS * width).zip(bias.par_chunks(CHUNK_ROWS)))
        .for_each(|((out, bias_out), (rows, bias))| widest(UnembedRows { rows, bias, norm, mean, out, bias_out }));
}

/// Each column's sums Σ_i c_i W_i over the rows of W [rows, width], one for each coefficient
/// vector c (one entry per row): per chunk of rows in row order, the chunks added in order.
fn column_sums<I: Value, const N: usize>(weight: &[I], width: usize, coefficients: [&[f64]; N]) -> [Vec<f64>; N] {
    let partials: Vec<[Vec<f64>; N]> = weight
        .par_chunks(CHUNK_ROWS * width)
        .enumerate()
        .map(|(chunk, rows)| widest(ColumnSums { rows, width, coefficients: coefficients.map(|c| &c[chunk * CHUNK_ROWS..]) }))
        .collect();
    add_in_order(partials, width)
}

/// The chunks' column vectors added in chunk order.
fn add_in_order<const N: usize>(partials: impl IntoIterator<Item = [Vec<f64>; N]>, width: usize) -> [Vec<f64>; N] {
    partials.into_iter().fold(std::array::from_fn(|_| vec![0.0; width]), |mut totals, partial| {
        for (total, partial) in totals.iter_mut().zip(partial) {
            for (total, value) in total.iter_mut().zip(partial) {
                *total += value;
            }
        }
        totals
    })
}

struct ColumnSums<'a, I, const N: usize> {
    rows: &'a [I],
    width: usize,
    coefficients: [&'a [f64]; N],
}

impl<I: Value, const N: usize> Kernel for ColumnSums<'_, I, N> {
    type Output = [Vec<f64>; N];

    #[inline(always)]
    fn run(self) -> Self::Output {
        let mut sums: [Vec<f64>; N] = std::array::from_fn(|_| vec![0.0; self.width]);
        for (index, row) in self.rows.chunks_exact(self.width).enumerate() {
            for (sums, coefficients) in sums.iter_mut().zip(self.coefficients) {
                let coefficient = coefficients[index];
                for (sum, &value) in sums.iter_mut().zip(row) {
                    *sum += coefficient * value.into();
                }
            }
        }
        sums
    }
}

struct FoldRows<'a, I, O> {
    rows: &'a [I],
    scale: &'a [f64],
    means: &'a [f64],
    out: &'a mut [O],
}

impl<I: Value, O: Value> Kernel for FoldRows<'_, I, O> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let width = self.means.len();
        for ((row, out), &scale) in self.rows.chunks_exact(width).zip(self.out.chunks_exact_mut(width)).zip(self.scale) {
            for ((out, &value), &mean) in out.iter_mut().zip(row).zip(self.means) {
                *out = O::rounded(scale * value.into() - mean);
            }
        }
    }
}

struct CenterRows<'a, I, O> {
    rows: &'a [I],
    width: usize,
    center: bool,
    product: Option<&'a [f64]>,
    out: &'a mut [O],
}

impl<I: Value, O: Value> Kernel for CenterRows<'_, I, O> {
    type Output = Vec<f64>;

    #[inline(always)]
    fn run(self) -> Vec<f64> {
        let width = self.width;
        let ones = vec![1.0; if self.center { width } else { 0 }];
        let mut product = vec![0.0; if self.product.is_some() { width } else { 0 }];
        for (index, (row, out)) in self.rows.chunks_exact(width).zip(self.out.chunks_exact_mut(width)).enumerate() {
            let mean = if self.center { RowDots { row, coefficients: [&ones[..]] }.run()[0] / width as f64 } else { 0.0 };
            for (out, &value) in out.iter_mut().zip(row) {
                *out = O::rounded(value.into() - mean);
            }
            if let Some(coefficients) = self.product {
                let coefficient = coefficients[index];
                for (sum, &value) in product.iter_mut().zip(row) {
                    *sum += coefficient * (value.into() - mean);
                }
            }
        }
        product
    }
}

struct RowDots<'a, I, const N: usize> {
    row: &'a [I],
    coefficients: [&'a [f64]; N],
}

impl<I: Value, const N: usize> Kernel for RowDots<'_, I, N> {
    type Output = [f64; N];

    #[inline(always)]
    fn run(self) -> [f64; N] {
        let mut sums = [0.0; N];
        let (values, len) = (self.row.chunks_exact(LANES), self.row.len());
        let rest = values.remainder();
        // Plain loops, not closures: a closure is compiled apart from [`widest`]'s vector code.
        for (sum, coefficients) in sums.iter_mut().zip(self.coefficients) {
            let mut lanes = [0.0f64; LANES];
            for (values, coefficients) in values.clone().zip(coefficients[..len].chunks_exact(LANES)) {
                for lane in 0..LANES {
                    lanes[lane] += coefficients[lane] * values[lane].into();
                }
            }
            for (lane, (&value, coefficient)) in rest.iter().zip(&coefficients[len - rest.len()..len]).enumerate() {
                lanes[lane] += coefficient * value.into();
            }
            for lane in lanes {
                *sum += lane;
            }
        }
        sums
    }
}

struct UnembedRows<'a, I, O> {
    rows: &'a [I],
    bias: &'a [f64],
    norm: Option<&'a Norm>,
    mean: (&'a [f64], f64),
    out: &'a mut [O],
    bias_out: &'a mut [O],
}

impl<I: Value, O: Value> Kernel for UnembedRows<'_, I, O> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let (mean, mean_bias) = self.mean;
        let width = mean.len();
        let rows = self.rows.chunks_exact(width).zip(self.out.chunks_exact_mut(width));
        for ((row, out), (&bias, bias_out)) in rows.zip(self.bias.iter().zip(self.bias_out.iter_mut())) {
            match self.norm {
                Some(norm) => {
                    let [scaled, shifted] = RowDots { row, coefficients: [&norm.scale, &norm.shift] }.run();
                    let row_mean = scaled / width as f64;
                    for (((out, &value), &scale), &mean) in out.iter_mut().zip(row).zip(&norm.scale).zip(mean) {
                        *out = O::rounded((scale * value.into() - row_mean) - mean);
                    }
                    *bias_out = O::rounded((bias + shifted) - mean_bias);
                }
                None => {
                    for ((out, &value), &mean) in out.iter_mut().zip(row).zip(mean) {
                        *out = O::rounded(value.into() - mean);
                    }
                    *bias_out = O::rounded(bias - mean_bias);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor};

    use crate::model::gpt2::forward;
    use crate::model::process::{process, ProcessingOptions};
    use crate::model::{Affine, Block, Gpt2Config, TokenEmbedding, Unembed, Weights};

    /// A small GPT-2 with GPT-2's numeric character where processing feels it: LayerNorm gains
    /// far from 1, biases, embedding rows and writing matrices far from mean-free, a residual
    /// dimension much larger than the rest.
    fn generated_model() -> Weights {
        // libtorch's generator is one per process and the tests run at once: without the lock,
        // two models drawn together interleave their draws and each test sees another model.
        static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _drawing = GENERATOR.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tch::manual_seed(19);
        let config: Gpt2Config =
            serde_json::from_str(r#"{"vocab_size": 1000, "n_positions": 64, "n_embd": 96, "n_layer": 2, "n_head": 4, "n_inner": 200}"#)
                .unwrap();
        let (d, m, v) = (config.n_embd, config.mlp_width(), config.vocab_size);
        let randn = |size: &[i64], scale: f64| Tensor::randn(size, (Kind::Float, Device::Cpu)) * scale;
        let offset_rows = |size: &[i64], scale: f64| randn(size, scale) + randn(&[size[0], 1], scale);
        let affine = || Affine { weight: randn(&[d], 0.3) + 1.0, bias: randn(&[d], 0.2) };
        let block = || Block {
            ln_1: Some(affine()),
            qkv_weight: randn(&[d, 3 * d], 0.2),
            qkv_bias: randn(&[3 * d], 0.3),
            attn_out_weight: offset_rows(&[d, d], 0.1),
            attn_out_bias: randn(&[d], 0.3) + 0.5,
            ln_2: Some(affine()),
            mlp_in_weight: randn(&[d, m], 0.15),
            mlp_in_bias: randn(&[m], 0.1),
            mlp_out_weight: offset_rows(&[m, d], 0.1),
            mlp_out_bias: randn(&[d], 0.3) - 0.5,
        };
        let wte = offset_rows(&[v, d], 0.12);
        // One residual dimension runs large, as three of GPT-2's do.
        let _ = wte.narrow(1, 7, 1).g_mul_scalar_(40.0);
        Weights {
            token_embedding: TokenEmbedding::Table(wte),
            position_embedding: offset_rows(&[config.n_positions, d], 0.05),
            blocks: (0..config.n_layer).map(|_| block()).collect(),
            ln_f: Some(Affine { weight: randn(&[d], 0.5) + 1.5, bias: randn(&[d], 0.5) }),
            unembed: Unembed::Tied,
            release_after_use: false,
            mapped: None,
            config,
        }
    }

    /// processing.md section 3 written directly, on whole float64 tensors (as processing was
    /// computed before its fused loops): every tensor by name, in float64.
    fn processed_in_float64(weights: &Weights) -> Vec<(String, Tensor)> {
        let double = |tensor: &Tensor| tensor.to_kind(Kind::Double);
        let fold = |affine: &Affine, weight: &Tensor, bias: &Tensor| {
            let bias = double(bias) + double(&affine.bias).matmul(&double(weight));
            let weight = double(weight) * double(&affine.weight).unsqueeze(-1);
            (&weight - weight.mean_dim(0, true, Kind::Double), bias)
        };
        let center = |tensor: &Tensor| tensor - tensor.mean_dim(-1, true, Kind::Double);
        let d = weights.config.n_embd;
        let mut named = vec![
            ("wte.weight".to_owned(), center(&double(&weights.token_embedding.table()))),
            ("wpe.weight".to_owned(), center(&double(&weights.position_embedding))),
        ];
        for (layer, block) in weights.blocks.iter().enumerate() {
            let (qkv_weight, qkv_bias) = fold(block.ln_1.as_ref().unwrap(), &block.qkv_weight, &block.qkv_bias);
            let (mlp_in_weight, mlp_in_bias) = fold(block.ln_2.as_ref().unwrap(), &block.mlp_in_weight, &block.mlp_in_bias);
            let attn_out_weight = center(&double(&block.attn_out_weight));
            let attn_out_bias = center(&double(&block.attn_out_bias));
            let attn_out_bias = center(&(attn_out_bias + qkv_bias.narrow(0, 2 * d, d).matmul(&attn_out_weight)));
            let qkv_bias = Tensor::cat(&[qkv_bias.narrow(0, 0, 2 * d), qkv_bias.narrow(0, 2 * d, d).zeros_like()], 0);
            for (name, tensor) in [
                ("attn.c_attn.weight", qkv_weight),
                ("attn.c_attn.bias", qkv_bias),
                ("attn.c_proj.weight", attn_out_weight),
                ("attn.c_proj.bias", attn_out_bias),
                ("mlp.c_fc.weight", mlp_in_weight),
                ("mlp.c_fc.bias", mlp_in_bias),
                ("mlp.c_proj.weight", center(&double(&block.mlp_out_weight))),
                ("mlp.c_proj.bias", center(&double(&block.mlp_out_bias))),
            ] {
                named.push((format!("h.{layer}.{name}"), tensor));
            }
        }
        let wte = weights.token_embedding.table();
        let (unembed_weight, unembed_bias) = fold(weights.ln_f.as_ref().unwrap(), &wte.tr(), &wte.zeros_like().select(1, 0));
        named.push(("unembed.weight".to_owned(), &unembed_weight - unembed_weight.mean_dim(-1, true, Kind::Double)));
        named.push(("unembed.bias".to_owned(), &unembed_bias - unembed_bias.mean(Kind::Double)));
        named
    }

    /// Every processed float32 value is the float64 result rounded once: within half a float32
    /// ulp of it, plus what float64's own evaluation order can move it (far below one float32
    /// ulp). A step rounded to float32 on the way (a scaled matrix before its centering, a
    /// centered matrix before the value bias is folded through it) lands up to a whole ulp off.
    #[test]
    fn processing_rounds_the_float64_result_once() {
        let weights = generated_model();
        let exact = processed_in_float64(&weights);
        for threads in [1, 3] {
            tch::set_num_threads(threads);
            let processed = process(weights.shallow_clone(), ProcessingOptions::default()).named_tensors();
            let compared: Vec<_> = processed.iter().filter(|(name, _)| exact.iter().any(|(exact_name, _)| exact_name == name)).collect();
            assert_eq!(compared.len(), exact.len(), "every tensor of the float64 processing is compared");
            for (name, ours) in compared {
                let exact = &exact.iter().find(|(exact_name, _)| exact_name == name).unwrap().1;
                let ours = ours.to_kind(Kind::Double);
                // Half an ulp of float32 at the exact value's magnitude, 2^-24 relative.
                let half_ulp = exact.abs() * 2f64.powi(-24) + 1e-12;
                let excess = ((&ours - exact).abs() - half_ulp).max().double_value(&[]);
                assert!(excess <= 0.0, "{name}, {threads} thread(s): {excess:e} beyond one rounding of the float64 result");
            }
        }
    }

    /// Issue 7's bound: against the float64 forward of the float64 processing, the processed
    /// model's logits err at most 1.5x the unprocessed model's against the float64 forward.
    #[test]
    fn processing_adds_little_to_the_rounding_error_of_the_logits() {
        let weights = generated_model();
        let double = weights.shallow_clone().map(|tensor| tensor.to_kind(Kind::Double));
        let processed = process(weights.shallow_clone(), ProcessingOptions::default());
        let processed_double = process(double.shallow_clone(), ProcessingOptions::default());
        let tokens: Vec<i64> = (0..48).map(|index| (index * 37 + 11) % 1000).collect();
        let error = |ours: &Weights, truth: &Weights| {
            let (ours, truth) = (forward(ours, &tokens).logits.to_kind(Kind::Double), forward(truth, &tokens).logits);
            (ours - truth).abs().max().double_value(&[])
        };
        let (unprocessed_error, processed_error) = (error(&weights, &double), error(&processed, &processed_double));
        assert!(unprocessed_error > 0.0, "float32 rounds");
        assert!(
            processed_error <= 1.5 * unprocessed_error,
            "processed {processed_error:e} vs unprocessed {unprocessed_error:e} against float64"
        );
    }
}
