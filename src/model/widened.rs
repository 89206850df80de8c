//! The float64 forward's matrix products over a few rows, reading the float32 weights as they
//! are and widening each value inside the product. libtorch would first cast every weight to a
//! float64 copy (twice its bytes, written to fresh memory) and then pack that copy: on a short
//! prompt the product itself is a sliver of that work, and the cast was most of the rounding
//! envelope's float64 pass. Here each weight is read once, in long runs along its rows of
//! memory (on checkpoint pages mapped from the page cache, reading 128 bytes of each row at a
//! time ran at half the rate).
//!
//! Every output value is its dot product added in order of the inner index, each term rounded
//! before it is added (no fused multiply-add): the same bits whatever the threads, the vector
//! width or the other rows, as a plain triple loop computes them.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tch::{Device, Kind, Tensor};

use crate::sys::memory::written_zeros;
use crate::sys::vector::{widest, Kernel};
use crate::sys::workers::on_team;

/// Rows up to which the widened product runs: past it the product's arithmetic outweighs the
/// cast it saves, and libtorch's float64 product wins. compare's forward phase on a
/// GPT-2-small-shaped model, 2 threads, medians of 7 (AMD EPYC, 2026-12-07; the float64 pass has
/// three rows per token, and a prompt under 4 tokens is filled to 4): 2 tokens 0.26 s widened
/// against 0.39 s casting, 3 tokens 0.33 against 0.42, 4 tokens 0.29 against 0.33, 5 tokens 0.35
/// against 0.41, 6 tokens (18 rows) 0.34 against 0.42; 8 tokens (24 rows) 0.36 against 0.34 and
/// 10 tokens 0.42 against 0.40.
pub const MAX_ROWS: i64 = 20;

/// A row-major weight is read a block of this many rows at a time, each row along the task's
/// columns in order (as many streams of memory), each output's sum kept in a register across
/// the block.
const ROW_BLOCK: usize = 8;

/// Output columns per vector of float64 sums (AVX-512).
const VECTOR: usize = 8;

/// Rows of `x` a row-major stripe carries together, one vector of sums each.
const GROUP_ROWS: usize = 4;

/// Rows of `x` side by side in one vector for a transposed weight, whose columns are rows of
/// memory: each lane sums one row of `x` against a column read in order.
const LANE_ROWS: usize = 8;

/// Columns of a transposed weight one block reads at once (four streams of memory), and blocks
/// per task.
const BLOCK_COLUMNS: usize = 4;
const TASK_BLOCKS: usize = 16;

/// How a float32 weight [K, N] lies in memory.
#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// Row-major [K, N] (the blocks' Conv1D weights).
    RowMajor,
    /// A transposed view of a row-major [N, K] (the tied unembedding, wte^T).
    Transposed,
}

/// Whether [`product`] computes `x @ weight`: float64 `x` [M, K] with at most [`MAX_ROWS`] rows
/// and a float32 `weight` [K, N] in either layout, on the CPU.
pub fn applies(x: &Tensor, weight: &Tensor) -> bool {
    layout(x, weight).is_some()
}

fn layout(x: &Tensor, weight: &Tensor) -> Option<Layout> {
    let on_cpu = x.device() == Device::Cpu && weight.device() == Device::Cpu;
    if !on_cpu || x.kind() != Kind::Double || weight.kind() != Kind::Float || x.dim() != 2 || weight.dim() != 2 {
        return None;
    }
    let (rows, inner, columns) = (x.size()[0], weight.size()[0], weight.size()[1]);
    if rows == 0 || rows > MAX_ROWS || x.size()[1] != inner || inner == 0 || columns == 0 {
        return None;
    }
    match weight.stride()[..] {
        [row, 1] if row == columns => Some(Layout::RowMajor),
        [1, column] if column == inner => Some(Layout::Transposed),
        _ => None,
    }
}

/// `x @ weight` where [`applies`] holds; `None` elsewhere (the caller casts the weight and uses
/// libtorch's product).
pub fn product(x: &Tensor, weight: &Tensor) -> Option<Tensor> {
    let layout = layout(x, weight)?;
    let x = x.contiguous();
    let (rows, inner, columns) = (x.size()[0] as usize, weight.size()[0] as usize, weight.size()[1] as usize);
    // SAFETY: a contiguous CPU float64 tensor of [rows, inner] holds rows * inner values from its
    // data pointer, and `x` keeps it alive for this function.
    let x_values = unsafe { std::slice::from_raw_parts(x.data_ptr() as *const f64, rows * inner) };
    // SAFETY: a CPU float32 tensor whose strides were just found to be those of a dense [K, N]
    // or [N, K] holds inner * columns values from its data pointer; the caller's borrow keeps it.
    let weight_values = unsafe { std::slice::from_raw_parts(weight.data_ptr() as *const f32, inner * columns) };
    let shape = Shape { rows, inner, columns };
    let stripe = stripe_width(columns);
    let (stripes, groups) = (columns.div_ceil(stripe) as i64, rows.div_ceil(LANE_ROWS) as i64);
    let (rows, columns) = (rows as i64, columns as i64);
    Some(match layout {
        Layout::RowMajor => {
            // [stripes, rows, stripe] -> [rows, stripes * stripe], cut to the real columns.
            Tensor::from_slice(&row_major(x_values, weight_values, shape, stripe))
                .view([stripes, rows, stripe as i64])
                .permute([1, 0, 2])
                .reshape([rows, stripes * stripe as i64])
                .narrow(1, 0, columns)
                .contiguous()
        }
        Layout::Transposed => {
            // [groups, N, LANE_ROWS] -> [groups * LANE_ROWS, N], cut to the real rows.
            Tensor::from_slice(&transposed(x_values, weight_values, shape))
                .view([groups, columns, LANE_ROWS as i64])
                .permute([0, 2, 1])
                .reshape([groups * LANE_ROWS as i64, columns])
                .narrow(0, 0, rows)
                .contiguous()
        }
    })
}

#[derive(Clone, Copy)]
struct Shape {
    rows: usize,
    inner: usize,
    columns: usize,
}

/// `x` by groups of `group` rows, each group transposed: [groups][inner][group], rows past M zero.
fn grouped(x: &[f64], inner: usize, group: usize) -> Vec<f64> {
    let groups = (x.len() / inner).div_ceil(group);
    let mut out = vec![0.0; groups * inner * group];
    for (row, values) in x.chunks_exact(inner).enumerate() {
        let (index, lane) = (row / group, row % group);
        for (position, &value) in values.iter().enumerate() {
            out[(index * inner + position) * group + lane] = value;
        }
    }
    out
}

/// Runs `task` on each of `outputs` (its index and its place), on libtorch's threads, each
/// taken by whichever thread comes next.
fn each_task(outputs: Vec<&mut [f64]>, task: impl Fn(usize, &mut [f64]) + Sync) {
    let outputs: Vec<Mutex<&mut [f64]>> = outputs.into_iter().map(Mutex::new).collect();
    let next = AtomicUsize::new(0);
    on_team(&|| loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        let Some(output) = outputs.get(index) else { break };
        task(index, &mut output.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    });
}

/// Columns of a row-major weight one task computes: two tasks per thread, so that a thread held
/// up by another process leaves its second to the others, each reading long runs of every row.
fn stripe_width(columns: usize) -> usize {
    let tasks = 2 * tch::get_num_threads().max(1) as usize;
    columns.div_ceil(tasks).next_multiple_of(VECTOR)
}

/// A row-major weight's product, stripe by stripe of `stripe` output columns: each stripe's
/// [rows, stripe] block (columns past N zero), stripes one after another.
fn row_major(x: &[f64], weight: &[f32], Shape { rows, inner, columns }: Shape, stripe: usize) -> Vec<f64> {
    let x_groups = grouped(x, inner, GROUP_ROWS);
    let mut stripes = written_zeros(columns.div_ceil(stripe) * rows * stripe);
    each_task(stripes.chunks_mut(rows * stripe).collect(), |index, out| {
        let first = index * stripe;
        let width = stripe.min(columns - first);
        widest(Stripe { x_groups: &x_groups, rows, inner, weight: &weight[first..], stride: columns, width, out, out_width: stripe });
    });
    stripes
}

/// A transposed weight's product (its columns lie as rows of memory), [`LANE_ROWS`] rows of `x`
/// at a time: [groups][N][LANE_ROWS].
fn transposed(x: &[f64], weight: &[f32], Shape { rows, inner, columns }: Shape) -> Vec<f64> {
    let x_groups = grouped(x, inner, LANE_ROWS);
    let groups = rows.div_ceil(LANE_ROWS);
    let task_columns = BLOCK_COLUMNS * TASK_BLOCKS;
    let mut out = written_zeros(groups * columns * LANE_ROWS);
    // Tasks by group, then by columns within it.
    let places: Vec<&mut [f64]> =
        out.chunks_mut(columns * LANE_ROWS).flat_map(|group| group.chunks_mut(task_columns * LANE_ROWS)).collect();
    let tasks_per_group = columns.div_ceil(task_columns);
    each_task(places, |task, out| {
        let (group, first) = (task / tasks_per_group, task % tasks_per_group * task_columns);
        let x_group = &x_groups[group * inner * LANE_ROWS..][..inner * LANE_ROWS];
        widest(Columns { x_group, weight: &weight[first * inner..], inner, out });
    });
    out
}

/// A stripe of a row-major weight's columns, every row's sums.
struct Stripe<'a> {
    /// `x` by groups of [`GROUP_ROWS`] rows (see [`grouped`]).
    x_groups: &'a [f64],
    rows: usize,
    inner: usize,
    /// From the stripe's first column, each row `stride` values after the one before.
    weight: &'a [f32],
    stride: usize,
    /// The stripe's real columns.
    width: usize,
    /// [rows][out_width], zero to start with.
    out: &'a mut [f64],
    out_width: usize,
}

/// A task's columns of a transposed weight, `out.len() / LANE_ROWS` of them from `weight`'s start.
struct Columns<'a> {
    x_group: &'a [f64],
    weight: &'a [f32],
    inner: usize,
    /// [columns][LANE_ROWS]
    out: &'a mut [f64],
}

impl Kernel for Stripe<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Stripe { x_groups, rows, inner, weight, stride, width, out, out_width } = self;
        let vectors_end = width / VECTOR * VECTOR;
        for block in (0..inner).step_by(ROW_BLOCK) {
            let block_rows = ROW_BLOCK.min(inner - block);
            for column in (0..vectors_end).step_by(VECTOR) {
                let mut wide = [[0.0_f64; VECTOR]; ROW_BLOCK];
                for (wide, index) in wide.iter_mut().zip(block..block + block_rows) {
                    for (wide, &value) in wide.iter_mut().zip(&weight[index * stride + column..][..VECTOR]) {
                        *wide = f64::from(value);
                    }
                }
                // GROUP_ROWS rows at once: their sums are independent chains of additions, which
                // the CPU runs side by side.
                for (group, x_group) in x_groups.chunks_exact(inner * GROUP_ROWS).enumerate() {
                    let first_row = group * GROUP_ROWS;
                    let group_rows = GROUP_ROWS.min(rows - first_row);
                    let mut carried = [[0.0_f64; VECTOR]; GROUP_ROWS];
                    for (row, carried) in carried.iter_mut().enumerate().take(group_rows) {
                        carried.copy_from_slice(&out[(first_row + row) * out_width + column..][..VECTOR]);
                    }
                    let x_block = &x_group[block * GROUP_ROWS..][..block_rows * GROUP_ROWS];
                    for (x_values, wide) in x_block.chunks_exact(GROUP_ROWS).zip(&wide) {
                        for (carried, &x_value) in carried.iter_mut().zip(x_values) {
                            for (sum, &value) in carried.iter_mut().zip(wide) {
                                *sum += x_value * value;
                            }
                        }
                    }
                    for (row, carried) in carried.iter().enumerate().take(group_rows) {
                        out[(first_row + row) * out_width + column..][..VECTOR].copy_from_slice(carried);
                    }
                }
            }
            // Columns past the last whole vector, one at a time.
            for column in vectors_end..width {
                for row in 0..rows {
                    let (group, lane) = (row / GROUP_ROWS, row % GROUP_ROWS);
                    let sum = &mut out[row * out_width + column];
                    for index in block..block + block_rows {
                        *sum += x_groups[(group * inner + index) * GROUP_ROWS + lane] * f64::from(weight[index * stride + column]);
                    }
                }
            }
        }
    }
}

impl Kernel for Columns<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Columns { x_group, weight, inner, out } = self;
        let done = (out.len() / LANE_ROWS) / BLOCK_COLUMNS * BLOCK_COLUMNS;
        let mut blocks = out.chunks_exact_mut(BLOCK_COLUMNS * LANE_ROWS);
        for (block, out) in (&mut blocks).enumerate() {
            let columns: [&[f32]; BLOCK_COLUMNS] =
                std::array::from_fn(|column| &weight[(block * BLOCK_COLUMNS + column) * inner..][..inner]);
            out.copy_from_slice(columns_sums(x_group, columns).as_flattened());
        }
        // The last columns of the weight, fewer than a block: one at a time.
        for (column, out) in blocks.into_remainder().chunks_exact_mut(LANE_ROWS).enumerate() {
            out.copy_from_slice(&columns_sums(x_group, [&weight[(done + column) * inner..][..inner]])[0]);
        }
    }
}

/// Each column's sums against the group's rows, one lane per row, added in order of the inner
/// index.
#[inline(always)]
fn columns_sums<const C: usize>(x_group: &[f64], columns: [&[f32]; C]) -> [[f64; LANE_ROWS]; C] {
    let mut sums = [[0.0_f64; LANE_ROWS]; C];
    for (index, x_values) in x_group.chunks_exact(LANE_ROWS).enumerate() {
        for (column_sums, column) in sums.iter_mut().zip(&columns) {
            let value = f64::from(column[index]);
            for (sum, &x_value) in column_sums.iter_mut().zip(x_values) {
                *sum += x_value * value;
            }
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use tch::{Kind, Tensor};

    use super::{product, MAX_ROWS};

    /// The product as a plain triple loop: each value's terms added in order, from zero.
    fn in_order(x: &[f64], weight_at: impl Fn(usize, usize) -> f32, rows: usize, inner: usize, columns: usize) -> Vec<f64> {
        let mut out = vec![0.0; rows * columns];
        for row in 0..rows {
            for column in 0..columns {
                let mut sum = 0.0;
                for index in 0..inner {
                    sum += x[row * inner + index] * f64::from(weight_at(index, column));
                }
                out[row * columns + column] = sum;
            }
        }
        out
    }

    fn values(tensor: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(tensor.to_kind(Kind::Double).contiguous().view([-1])).unwrap()
    }

    #[test]
    fn equals_the_plain_loop_bit_for_bit_in_both_layouts_at_any_shape() {
        tch::manual_seed(7);
        for (rows, inner, columns) in [(1, 1, 1), (3, 17, 33), (4, 64, 32), (9, 70, 95), (5, 200, 300), (MAX_ROWS, 40, 65)] {
            let x = Tensor::randn([rows, inner], (Kind::Double, tch::Device::Cpu));
            let row_major = Tensor::randn([inner, columns], (Kind::Float, tch::Device::Cpu));
            let transposed = Tensor::randn([columns, inner], (Kind::Float, tch::Device::Cpu));
            let (rows, inner, columns) = (rows as usize, inner as usize, columns as usize);
            let x_values = values(&x);
            let row_major_values = Vec::<f32>::try_from(row_major.view([-1])).unwrap();
            let transposed_values = Vec::<f32>::try_from(transposed.view([-1])).unwrap();
            let expected = in_order(&x_values, |index, column| row_major_values[index * columns + column], rows, inner, columns);
            assert_eq!(values(&product(&x, &row_major).unwrap()), expected, "row-major {rows}x{inner}x{columns}");
            let expected = in_order(&x_values, |index, column| transposed_values[column * inner + index], rows, inner, columns);
            assert_eq!(values(&product(&x, &transposed.tr()).unwrap()), expected, "transposed {rows}x{inner}x{columns}");
        }
    }

    #[test]
    fn a_row_is_the_same_bits_alone_among_others_and_on_any_thread_count() {
        tch::manual_seed(8);
        let x = Tensor::randn([11, 300], (Kind::Double, tch::Device::Cpu));
        let weight = Tensor::randn([300, 200], (Kind::Float, tch::Device::Cpu));
        let threads = tch::get_num_threads();
        let together = values(&product(&x, &weight).unwrap());
        tch::set_num_threads(1);
        let one_thread = values(&product(&x, &weight).unwrap());
        tch::set_num_threads(threads);
        assert_eq!(together, one_thread);
        let alone = values(&product(&x.narrow(0, 5, 1), &weight).unwrap());
        assert_eq!(&together[5 * 200..6 * 200], &alone[..]);
    }

    #[test]
    fn leaves_what_it_does_not_cover_to_libtorch() {
        let weight = Tensor::ones([8, 8], (Kind::Float, tch::Device::Cpu));
        let too_many = Tensor::ones([MAX_ROWS + 1, 8], (Kind::Double, tch::Device::Cpu));
        assert!(product(&too_many, &weight).is_none());
        let single = Tensor::ones([2, 8], (Kind::Float, tch::Device::Cpu));
        assert!(product(&single, &weight).is_none());
        let strided = Tensor::ones([8, 16], (Kind::Float, tch::Device::Cpu)).narrow(1, 0, 8);
        assert!(product(&Tensor::ones([2, 8], (Kind::Double, tch::Device::Cpu)), &strided).is_none());
    }

    #[test]
    fn agrees_with_libtorch_to_float64_rounding() {
        tch::manual_seed(9);
        let x = Tensor::randn([6, 768], (Kind::Double, tch::Device::Cpu));
        let weight = Tensor::randn([768, 500], (Kind::Float, tch::Device::Cpu));
        let ours = product(&x, &weight).unwrap();
        let libtorch = x.matmul(&weight.to_kind(Kind::Double));
        let error = (&ours - &libtorch).abs().max().double_value(&[]);
        let scale = libtorch.abs().max().double_value(&[]);
        assert!(error <= 1e-13 * scale, "{error} against {scale}");
    }
}
