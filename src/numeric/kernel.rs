//! compare_logits's arithmetic for matrices without NaN or Inf (every healthy run), fast enough
//! to keep up with thousands of prompts: each position's row pair is read in two passes of f32
//! loads (sums, maxima and the range of c - r; then every difference, tolerance verdict and
//! log-sum-exp term) into eight f64 lanes whose partial results combine in a fixed order, plus a
//! top-k scan that skips blocks, and the positions are spread over threads (rayon; on every core,
//! RAYON_NUM_THREADS limits them). Every figure depends on the data alone, never on the thread
//! count or the machine's vector width: each row is computed whole by one thread, rows combine in
//! position order, and nothing is fused or reordered (Rust does not contract a * b + c).
//!
//! Against the element-by-element definitions (stats.rs keeps them, for non-finite input and as
//! the tests' oracle) only rounding differs: sums run in lanes instead of one chain, the standard
//! deviation combines per-row moments (Chan et al.), the row means feeding the centered figures
//! round differently, and KL and the log-softmax difference come from the difference of the two
//! log-sum-exps rather than from two separately rounded log-probabilities. stats.rs's tests hold
//! the two paths together: counts, places, verdicts and the element-wise maxima identical, sums
//! within 1e-12 relative, the rest within 1e-12 absolute.
use rayon::prelude::*;

use crate::schema::{Criterion, Tolerance};

pub const LANES: usize = 8;
/// Up to this |shift-free difference| (see [`summarize_row`]) a series replaces the candidate's
/// exponential: 2^-7.
const SMALL_SHIFT_FREE_DIFF: f64 = 0.007_812_5;
/// How many of each side's best tokens are compared.
pub const TOP_K: usize = 5;

/// What one position (a row of the vocabulary) contributes to a comparison. Columns count from
/// the row's start.
#[derive(Debug, Clone)]
pub struct RowSummary {
    pub candidate_mean: f64,
    pub reference_mean: f64,
    /// Sum of squared deviations from the row's own mean, per side.
    pub candidate_m2: f64,
    pub reference_m2: f64,
    /// The element-wise figures and verdicts.
    pub differences: RowDifferences,
    pub log_softmax_max_abs_diff: f64,
    pub kl: f64,
    pub candidate_top: Vec<usize>,
    pub reference_top: Vec<usize>,
}

/// Every row's summary, in position order; `None` when a value is NaN or infinite (the caller
/// then takes the element-by-element path, which defines what non-finite values do).
pub fn summarize_rows(
    candidate: &[f32],
    reference: &[f32],
    vocab: usize,
    criterion: Criterion,
    tolerance: Tolerance,
) -> Option<Vec<RowSummary>> {
    candidate
        .par_chunks_exact(vocab)
        .zip(reference.par_chunks_exact(vocab))
        .map(|(candidate, reference)| summarize_row(candidate, reference, criterion, tolerance))
        .collect()
}

/// Mean and sample standard deviation (n - 1) of one side over all rows, from the rows' means
/// and squared deviations: M2 = sum of row M2 + sum of n_row (row mean - mean)^2.
pub fn mean_and_std(rows: &[RowSummary], vocab: usize, side: impl Fn(&RowSummary) -> (f64, f64)) -> (f64, f64) {
    let count = (rows.len() * vocab) as f64;
    let mean = rows.iter().map(|row| side(row).0 * vocab as f64).sum::<f64>() / count;
    let m2: f64 = rows
        .iter()
        .map(|row| {
            let (row_mean, row_m2) = side(row);
            row_m2 + vocab as f64 * (row_mean - mean) * (row_mean - mean)
        })
        .sum();
    let std = if count > 1.0 { (m2 / (count - 1.0)).sqrt() } else { 0.0 };
    (mean, std)
}

fn summarize_row(candidate: &[f32], reference: &[f32], criterion: Criterion, tolerance: Tolerance) -> Option<RowSummary> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has just been found to support AVX-512F.
            return unsafe { summarize_row_avx512(candidate, reference, criterion, tolerance) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has just been found to support AVX2.
            return unsafe { summarize_row_avx2(candidate, reference, criterion, tolerance) };
        }
    }
    summarize_row_portable(candidate, reference, criterion, tolerance)
}

/// The same code compiled for wider vectors; no fused multiply-add, so the same results.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn summarize_row_avx512(candidate: &[f32], reference: &[f32], criterion: Criterion, tolerance: Tolerance) -> Option<RowSummary> {
    summarize_row_portable(candidate, reference, criterion, tolerance)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn summarize_row_avx2(candidate: &[f32], reference: &[f32], criterion: Criterion, tolerance: Tolerance) -> Option<RowSummary> {
    summarize_row_portable(candidate, reference, criterion, tolerance)
}

#[inline(always)]
fn summarize_row_portable(candidate: &[f32], reference: &[f32], criterion: Criterion, tolerance: Tolerance) -> Option<RowSummary> {
    let first = scan(candidate, reference, Extremes::new()).finish()?;
    let width = candidate.len() as f64;
    let means = (first.candidate_sum / width, first.reference_sum / width);
    // The two rows' log-softmax differ by (c - r) - (lse(c) - lse(r)). Per element, c - r is
    // split into the difference of the maxima and the rest, the shift-free difference; when
    // that is small everywhere (a row in parity, shifted or not), exp(c - max c) follows from
    // exp(r - max r) and a short series, instead of a second exponential.
    let maxima = (f64::from(first.candidate_max), f64::from(first.reference_max));
    let maxima_difference = maxima.0 - maxima.1;
    let small = (first.max_diff - maxima_difference).abs().max((first.min_diff - maxima_difference).abs()) <= SMALL_SHIFT_FREE_DIFF;
    let (differences, distributions) = match (criterion, small) {
        (Criterion::Raw, false) => second_pass::<false, false>(candidate, reference, means, maxima, tolerance),
        (Criterion::Raw, true) => second_pass::<false, true>(candidate, reference, means, maxima, tolerance),
        (Criterion::ShiftInvariant, false) => second_pass::<true, false>(candidate, reference, means, maxima, tolerance),
        (Criterion::ShiftInvariant, true) => second_pass::<true, true>(candidate, reference, means, maxima, tolerance),
    };
    Some(RowSummary {
        candidate_mean: means.0,
        reference_mean: means.1,
        candidate_m2: distributions.candidate_m2,
        reference_m2: distributions.reference_m2,
        differences,
        // log-softmax difference = (c - r) - lse difference: largest at the largest or smallest c - r.
        log_softmax_max_abs_diff: (first.max_diff - distributions.lse_difference).max(distributions.lse_difference - first.min_diff),
        kl: distributions.kl.max(0.0),
        candidate_top: top_k(candidate, TOP_K),
        reference_top: top_k(reference, TOP_K),
    })
}

/// Second pass: everything that needs the rows' means and maxima.
#[inline(always)]
fn second_pass<const SHIFT_INVARIANT: bool, const SMALL: bool>(
    candidate: &[f32],
    reference: &[f32],
    means: (f64, f64),
    maxima: (f64, f64),
    tolerance: Tolerance,
) -> (RowDifferences, RowDistributions) {
    let both = (Differences::<SHIFT_INVARIANT>::new(means, tolerance), Distributions::<SMALL>::new(means, maxima));
    scan(candidate, reference, both).finish()
}

/// Running values kept in [`LANES`] lanes over one pass of a row pair: element `column` goes to
/// lane `column % LANES`, so that the compiler can hold the lanes in vector registers.
trait LaneScan {
    type Result;
    fn add(&mut self, lane: usize, column: usize, candidate: f32, reference: f32);
    fn finish(self) -> Self::Result;
}

#[inline(always)]
fn scan<S: LaneScan>(candidate: &[f32], reference: &[f32], mut lanes: S) -> S {
    let (candidate_chunks, reference_chunks) = (candidate.chunks_exact(LANES), reference.chunks_exact(LANES));
    let (candidate_rest, reference_rest) = (candidate_chunks.remainder(), reference_chunks.remainder());
    let full = candidate.len() - candidate_rest.len();
    for (chunk, (c, r)) in candidate_chunks.zip(reference_chunks).enumerate() {
        for lane in 0..LANES {
            lanes.add(lane, chunk * LANES + lane, c[lane], r[lane]);
        }
    }
    for (lane, (&c, &r)) in candidate_rest.iter().zip(reference_rest).enumerate() {
        lanes.add(lane, full + lane, c, r);
    }
    lanes
}

/// Two scans in one pass over the rows.
impl<A: LaneScan, B: LaneScan> LaneScan for (A, B) {
    type Result = (A::Result, B::Result);

    #[inline(always)]
    fn add(&mut self, lane: usize, column: usize, candidate: f32, reference: f32) {
        self.0.add(lane, column, candidate, reference);
        self.1.add(lane, column, candidate, reference);
    }

    fn finish(self) -> Self::Result {
        (self.0.finish(), self.1.finish())
    }
}

/// First pass: sums, maxima, the range of c - r, and whether every value is finite.
struct Extremes {
    candidate_sum: [f64; LANES],
    reference_sum: [f64; LANES],
    candidate_max: [f32; LANES],
    reference_max: [f32; LANES],
    max_diff: [f64; LANES],
    min_diff: [f64; LANES],
    finite: [bool; LANES],
}

struct RowExtremes {
    candidate_sum: f64,
    reference_sum: f64,
    candidate_max: f32,
    reference_max: f32,
    max_diff: f64,
    min_diff: f64,
}

impl Extremes {
    fn new() -> Self {
        Self {
            candidate_sum: [0.0; LANES],
            reference_sum: [0.0; LANES],
            candidate_max: [f32::MIN; LANES],
            reference_max: [f32::MIN; LANES],
            max_diff: [f64::NEG_INFINITY; LANES],
            min_diff: [f64::INFINITY; LANES],
            finite: [true; LANES],
        }
    }
}

impl LaneScan for Extremes {
    /// `None` when a value is not finite.
    type Result = Option<RowExtremes>;

    #[inline(always)]
    fn add(&mut self, lane: usize, _column: usize, c: f32, r: f32) {
        self.candidate_sum[lane] += f64::from(c);
        self.reference_sum[lane] += f64::from(r);
        self.candidate_max[lane] = if c > self.candidate_max[lane] { c } else { self.candidate_max[lane] };
        self.reference_max[lane] = if r > self.reference_max[lane] { r } else { self.reference_max[lane] };
        let diff = f64::from(c) - f64::from(r);
        self.max_diff[lane] = if diff > self.max_diff[lane] { diff } else { self.max_diff[lane] };
        self.min_diff[lane] = if diff < self.min_diff[lane] { diff } else { self.min_diff[lane] };
        self.finite[lane] &= c.abs() <= f32::MAX && r.abs() <= f32::MAX;
    }

    fn finish(self) -> Self::Result {
        if !self.finite.iter().all(|&lane| lane) {
            return None;
        }
        let max = |lanes: [f32; LANES]| lanes.into_iter().fold(f32::MIN, f32::max);
        Some(RowExtremes {
            candidate_sum: sum_lanes(self.candidate_sum),
            reference_sum: sum_lanes(self.reference_sum),
            candidate_max: max(self.candidate_max),
            reference_max: max(self.reference_max),
            max_diff: self.max_diff.into_iter().fold(f64::NEG_INFINITY, f64::max),
            min_diff: self.min_diff.into_iter().fold(f64::INFINITY, f64::min),
        })
    }
}

/// Element-wise figures and the tolerance's verdicts, as numeric::tolerance's
/// `Judgement` makes them. `SHIFT_INVARIANT` picks the criterion that judges the worst element.
struct Differences<const SHIFT_INVARIANT: bool> {
    means: (f64, f64),
    tolerance: Tolerance,
    abs_diff_sum: [f64; LANES],
    squared_diff_sum: [f64; LANES],
    dot: [f64; LANES],
    candidate_norm2: [f64; LANES],
    reference_norm2: [f64; LANES],
    max_abs_diff: [f64; LANES],
    max_column: [usize; LANES],
    max_rel_diff: [f64; LANES],
    centered_max_abs_diff: [f64; LANES],
    violations: [usize; LANES],
    centered_violations: [usize; LANES],
    worst_excess: [f64; LANES],
    worst_abs_diff: [f64; LANES],
    worst_column: [usize; LANES],
}

/// A row's element-wise figures: sums, maxima (with their columns, counted from the row's
/// start) and the tolerance's verdicts.
#[derive(Debug, Clone)]
pub struct RowDifferences {
    pub abs_diff_sum: f64,
    pub squared_diff_sum: f64,
    pub dot: f64,
    pub candidate_norm2: f64,
    pub reference_norm2: f64,
    pub max_abs_diff: f64,
    pub max_column: usize,
    pub max_rel_diff: f64,
    pub centered_max_abs_diff: f64,
    pub violations: usize,
    pub centered_violations: usize,
    /// Largest |diff| - rtol * magnitude under the criterion, its |diff|, and where.
    pub worst_excess: f64,
    pub worst_abs_diff: f64,
    pub worst_column: usize,
}

impl<const SHIFT_INVARIANT: bool> Differences<SHIFT_INVARIANT> {
    fn new(means: (f64, f64), tolerance: Tolerance) -> Self {
        let zero = [0.0; LANES];
        Self {
            means,
            tolerance,
            abs_diff_sum: zero,
            squared_diff_sum: zero,
            dot: zero,
            candidate_norm2: zero,
            reference_norm2: zero,
            max_abs_diff: [-1.0; LANES],
            max_column: [usize::MAX; LANES],
            max_rel_diff: zero,
            centered_max_abs_diff: zero,
            violations: [0; LANES],
            centered_violations: [0; LANES],
            worst_excess: [f64::NEG_INFINITY; LANES],
            worst_abs_diff: zero,
            worst_column: [usize::MAX; LANES],
        }
    }
}

impl<const SHIFT_INVARIANT: bool> LaneScan for Differences<SHIFT_INVARIANT> {
    type Result = RowDifferences;

    #[inline(always)]
    fn add(&mut self, lane: usize, column: usize, c: f32, r: f32) {
        let Tolerance { atol, rtol } = self.tolerance;
        let (c, r) = (f64::from(c), f64::from(r));
        let abs_diff = (c - r).abs();
        self.abs_diff_sum[lane] += abs_diff;
        self.squared_diff_sum[lane] += abs_diff * abs_diff;
        self.dot[lane] += c * r;
        self.candidate_norm2[lane] += c * c;
        self.reference_norm2[lane] += r * r;
        if abs_diff > self.max_abs_diff[lane] {
            self.max_abs_diff[lane] = abs_diff;
            self.max_column[lane] = column;
        }
        let relative = if r != 0.0 { abs_diff / r.abs() } else { 0.0 };
        self.max_rel_diff[lane] = if relative > self.max_rel_diff[lane] { relative } else { self.max_rel_diff[lane] };
        // Both criteria allow rtol at the reference before centering, where the error was made.
        let allowance = rtol * r.abs();
        let centered_abs_diff = ((c - self.means.0) - (r - self.means.1)).abs();
        self.centered_max_abs_diff[lane] =
            if centered_abs_diff > self.centered_max_abs_diff[lane] { centered_abs_diff } else { self.centered_max_abs_diff[lane] };
        self.violations[lane] += usize::from(abs_diff > atol + allowance);
        self.centered_violations[lane] += usize::from(centered_abs_diff > atol + allowance);
        let judged_abs_diff = if SHIFT_INVARIANT { centered_abs_diff } else { abs_diff };
        let excess = judged_abs_diff - allowance;
        if excess > self.worst_excess[lane] {
            self.worst_excess[lane] = excess;
            self.worst_abs_diff[lane] = judged_abs_diff;
            self.worst_column[lane] = column;
        }
    }

    fn finish(self) -> RowDifferences {
        let (max_abs_diff, max_column) = first_largest(&self.max_abs_diff, &self.max_column);
        let (worst_excess, worst_column) = first_largest(&self.worst_excess, &self.worst_column);
        let worst_lane = self.worst_column.iter().position(|&column| column == worst_column).expect("a lane holds the worst column");
        let max = |values: [f64; LANES]| values.into_iter().fold(f64::NEG_INFINITY, f64::max);
        RowDifferences {
            abs_diff_sum: sum_lanes(self.abs_diff_sum),
            squared_diff_sum: sum_lanes(self.squared_diff_sum),
            dot: sum_lanes(self.dot),
            candidate_norm2: sum_lanes(self.candidate_norm2),
            reference_norm2: sum_lanes(self.reference_norm2),
            max_abs_diff,
            max_column,
            max_rel_diff: max(self.max_rel_diff),
            centered_max_abs_diff: max(self.centered_max_abs_diff),
            violations: self.violations.iter().sum(),
            centered_violations: self.centered_violations.iter().sum(),
            worst_excess,
            worst_abs_diff: self.worst_abs_diff[worst_lane],
            worst_column,
        }
    }
}

/// The squared deviations from the means, and the next-token distributions. With
/// weights w = exp(r - max r), the reference's probabilities are w / sum w; `SMALL` rows (every
/// shift-free difference within [`SMALL_SHIFT_FREE_DIFF`]) sum w * expm1(shift-free difference)
/// and w * shift-free difference, the others exp(c - max c) and w * (c - r).
struct Distributions<const SMALL: bool> {
    means: (f64, f64),
    maxima: (f64, f64),
    candidate_m2: [f64; LANES],
    reference_m2: [f64; LANES],
    weight_sum: [f64; LANES],
    candidate_exp_sum: [f64; LANES],
    weighted_diff_sum: [f64; LANES],
}

struct RowDistributions {
    candidate_m2: f64,
    reference_m2: f64,
    /// lse(c) - lse(r), each the log-sum-exp over the row.
    lse_difference: f64,
    /// KL(p || q) before clamping at zero.
    kl: f64,
}

impl<const SMALL: bool> Distributions<SMALL> {
    fn new(means: (f64, f64), maxima: (f64, f64)) -> Self {
        let zero = [0.0; LANES];
        Self { means, maxima, candidate_m2: zero, reference_m2: zero, weight_sum: zero, candidate_exp_sum: zero, weighted_diff_sum: zero }
    }
}

impl<const SMALL: bool> LaneScan for Distributions<SMALL> {
    type Result = RowDistributions;

    #[inline(always)]
    fn add(&mut self, lane: usize, _column: usize, c: f32, r: f32) {
        let (c, r) = (f64::from(c), f64::from(r));
        let (c_centered, r_centered) = (c - self.means.0, r - self.means.1);
        self.candidate_m2[lane] += c_centered * c_centered;
        self.reference_m2[lane] += r_centered * r_centered;
        let weight = exp_of_nonpositive(r - self.maxima.1);
        self.weight_sum[lane] += weight;
        if SMALL {
            let shift_free = (c - r) - (self.maxima.0 - self.maxima.1);
            self.candidate_exp_sum[lane] += weight * expm1_of_small(shift_free);
            self.weighted_diff_sum[lane] += weight * shift_free;
        } else {
            self.candidate_exp_sum[lane] += exp_of_nonpositive(c - self.maxima.0);
            self.weighted_diff_sum[lane] += weight * (c - r);
        }
    }

    /// lse(c) - lse(r) and KL(p || q) = sum p (log p - log q) = (lse(c) - lse(r)) - E_p[c - r],
    /// without forming either log-sum-exp: their rounding at |logits| ~ 100 would swamp a small
    /// difference. In `SMALL` rows lse(c) - lse(r) = maxima difference + ln(1 + E_p[expm1(shift-free)]).
    fn finish(self) -> RowDistributions {
        let weights = sum_lanes(self.weight_sum);
        let maxima_difference = self.maxima.0 - self.maxima.1;
        let (lse_difference, kl) = if SMALL {
            let log_ratio = (sum_lanes(self.candidate_exp_sum) / weights).ln_1p();
            (maxima_difference + log_ratio, log_ratio - sum_lanes(self.weighted_diff_sum) / weights)
        } else {
            let lse_difference = maxima_difference + (sum_lanes(self.candidate_exp_sum) / weights).ln();
            (lse_difference, lse_difference - sum_lanes(self.weighted_diff_sum) / weights)
        };
        RowDistributions { candidate_m2: sum_lanes(self.candidate_m2), reference_m2: sum_lanes(self.reference_m2), lse_difference, kl }
    }
}

/// The largest value over the lanes and its column; among equal values the lowest column, as a
/// left-to-right scan with a strict `>` finds it.
fn first_largest(values: &[f64; LANES], columns: &[usize; LANES]) -> (f64, usize) {
    let mut best = (values[0], columns[0]);
    for (&value, &column) in values.iter().zip(columns).skip(1) {
        if value > best.0 || (value == best.0 && column < best.1) {
            best = (value, column);
        }
    }
    best
}

/// The lanes' sum, pairwise in a fixed order.
#[inline(always)]
fn sum_lanes(lanes: [f64; LANES]) -> f64 {
    ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))
}

/// exp(x) for x <= 0, within two units in the last place, in straight-line arithmetic the
/// compiler vectorises: exp(x) = 2^k exp(t) with k = round(x / ln 2) and |t| <= ln(2) / 2, and
/// exp(t) by its Taylor series to t^13 (the next term is below 2^-55). Below -708 it returns
/// exp(-708) ~ 3e-308: the terms summed here are relative to a largest term of exactly 1, so
/// such values are far below the sum's last place either way.
#[inline(always)]
fn exp_of_nonpositive(x: f64) -> f64 {
    const LN2_HIGH: f64 = 6.931_471_803_691_238_164_9e-1;
    const LN2_LOW: f64 = 1.908_214_929_270_587_700_02e-10;
    // 1.5 * 2^52: adding it rounds to an integer held in the low bits of the mantissa.
    const ROUNDER: f64 = 6_755_399_441_055_744.0;
    let x = if x < -708.0 { -708.0 } else { x };
    let shifted = x * std::f64::consts::LOG2_E + ROUNDER;
    let k = shifted - ROUNDER;
    let t = (x - k * LN2_HIGH) - k * LN2_LOW;
    let mut series = 1.0 / 6_227_020_800.0;
    for factorial in [479_001_600.0, 39_916_800.0, 3_628_800.0, 362_880.0, 40_320.0, 5_040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0] {
        series = series * t + 1.0 / factorial;
    }
    // 2^k: k + 1023 in the exponent field (k >= -1022 here, so it stays a normal number).
    let power = f64::from_bits(shifted.to_bits().wrapping_add(1023) << 52);
    series * power
}

/// exp(x) - 1 for |x| <= [`SMALL_SHIFT_FREE_DIFF`], by its Taylor series to x^6: the next term
/// is below 4e-19.
#[inline(always)]
fn expm1_of_small(x: f64) -> f64 {
    x * (1.0 + x * (1.0 / 2.0 + x * (1.0 / 6.0 + x * (1.0 / 24.0 + x * (1.0 / 120.0 + x * (1.0 / 720.0))))))
}

/// Indices of the k largest values of a non-empty row, largest first (ties: lower index first).
/// Blocks whose largest value cannot enter the list are skipped whole; the rest go through the
/// element-by-element rule, so the result is exactly that rule's.
pub fn top_k(row: &[f32], k: usize) -> Vec<usize> {
    const BLOCK: usize = 64;
    let mut best: Vec<usize> = Vec::with_capacity(k + 1);
    for (block, values) in row.chunks(BLOCK).enumerate() {
        if best.len() == k && !any_above(values, row[best[k - 1]]) {
            continue;
        }
        for (offset, &value) in values.iter().enumerate() {
            if best.len() == k && value <= row[best[k - 1]] {
                continue;
            }
            let at = best.iter().position(|&other| value > row[other]).unwrap_or(best.len());
            best.insert(at, block * BLOCK + offset);
            best.truncate(k);
        }
    }
    best
}

/// Whether any of `values` is above `threshold`, in lanes so that it vectorises.
#[inline(always)]
fn any_above(values: &[f32], threshold: f32) -> bool {
    let mut lanes = [f32::MIN; 16];
    let chunks = values.chunks_exact(16);
    for (lane, &value) in lanes.iter_mut().zip(chunks.remainder()) {
        *lane = value;
    }
    for chunk in chunks {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane = if value > *lane { value } else { *lane };
        }
    }
    lanes.iter().fold(false, |any, &lane| any | (lane > threshold))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_units_in_the_last_place() {
        let mut x = 0.0f64;
        while x > -745.0 {
            let (ours, libm) = (exp_of_nonpositive(x), x.exp());
            if x >= -708.0 {
                assert!((ours - libm).abs() <= 2.0 * libm * f64::EPSILON, "exp({x}) = {ours}, libm {libm}");
            } else {
                assert!(ours <= 4e-308, "exp({x}) = {ours}");
            }
            x -= 0.000_731;
        }
        assert_eq!(exp_of_nonpositive(0.0), 1.0);
    }

    #[test]
    fn blocked_top_k_is_the_element_by_element_rule() {
        let plain = |row: &[f32], k: usize| {
            let mut best: Vec<usize> = Vec::new();
            for (index, &value) in row.iter().enumerate() {
                if best.len() == k && value <= row[best[k - 1]] {
                    continue;
                }
                let at = best.iter().position(|&other| value > row[other]).unwrap_or(best.len());
                best.insert(at, index);
                best.truncate(k);
            }
            best
        };
        let mut state = 7u32;
        for length in [1, 3, 5, 63, 64, 65, 200, 1000] {
            // Few distinct values, so that ties are common.
            let row: Vec<f32> = (0..length)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    f32::from((state >> 27) as u8)
                })
                .collect();
            assert_eq!(top_k(&row, TOP_K), plain(&row, TOP_K), "length {length}");
        }
    }

    #[test]
    fn every_vector_width_gives_the_same_bits() {
        let tolerance = Tolerance { atol: 1e-4, rtol: 1e-5 };
        let mut state = 11u64;
        let mut next = || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let reference: Vec<f32> = (0..1003).map(|_| (-60.0 + 30.0 * next()) as f32).collect();
        let near: Vec<f32> = reference.iter().map(|&r| r + (1e-4 * (next() - 0.5)) as f32).collect();
        let far: Vec<f32> = reference.iter().map(|&r| r + (3.0 * (next() - 0.5)) as f32).collect();
        for candidate in [&near, &far] {
            for criterion in [Criterion::Raw, Criterion::ShiftInvariant] {
                let portable = format!("{:?}", summarize_row_portable(candidate, &reference, criterion, tolerance));
                #[cfg(target_arch = "x86_64")]
                {
                    if std::arch::is_x86_feature_detected!("avx2") {
                        // SAFETY: checked just above.
                        let avx2 = format!("{:?}", unsafe { summarize_row_avx2(candidate, &reference, criterion, tolerance) });
                        assert_eq!(avx2, portable);
                    }
                    if std::arch::is_x86_feature_detected!("avx512f") {
                        // SAFETY: checked just above.
                        let avx512 = format!("{:?}", unsafe { summarize_row_avx512(candidate, &reference, criterion, tolerance) });
                        assert_eq!(avx512, portable);
                    }
                }
            }
        }
    }
}
