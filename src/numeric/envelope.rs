//! The rounding envelope: how far a faithful float32 GPT-2 lands from the exact values on this
//! prompt, measured as how far our own float32 forward lands from our float64 one, per residual
//! snapshot and at the logits. Every side of a comparison is then judged by its own distance from
//! the float64 truth as a multiple of that ("x rounding"): faithful implementations stay within a
//! few, a port that computes something else lands far outside, even when its logits sit inside
//! atol + rtol. Pure arithmetic on row-major slices (docs/metrics.md states the rule).
use rayon::prelude::*;

use crate::schema::rounding::{outside, worst_of, Form, Forms, Place, SideRounding};

/// Values known to float64 precision, kept as float32 pairs (`base` + `correction`), so they
/// wait in compare's spill beside the logits and cost no float64 copy of the model's outputs.
pub struct Exact {
    pub base: Vec<f32>,
    pub correction: Vec<f32>,
}

impl Exact {
    pub fn from_f64(values: &[f64]) -> Self {
        let base: Vec<f32> = values.par_iter().map(|&value| value as f32).collect();
        let correction = values.par_iter().zip(&base).map(|(&value, &base)| (value - f64::from(base)) as f32).collect();
        Self { base, correction }
    }

    fn at(&self, index: usize) -> f64 {
        f64::from(self.base[index]) + f64::from(self.correction[index])
    }
}

/// The shape of what is compared: `snapshots` matrices of [positions, width], each the
/// residual stream after a block (width d_model) or the logits (width vocab).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub snapshots: usize,
    pub positions: usize,
    pub width: usize,
    pub kind: Scaling,
}

/// How a deviation is put on one scale across a matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scaling {
    /// Residual stream: each dimension by its RMS over the positions, floored at the median
    /// dimension's. GPT-2's few massive dimensions (values in the hundreds) carry rounding
    /// errors a hundred times the others'; a plain max would see only them, so a fault in the
    /// ordinary dimensions, or a later block, would hide under their noise.
    PerDimension,
    /// Logits: each position by its RMS over the vocabulary.
    PerPosition,
}

/// One snapshot of a side against the truth: the largest scaled deviation of each position.
pub struct Measured {
    pub positions: Vec<f64>,
    /// What storing the truth itself in float32 costs on this scale (one ulp of the largest
    /// scaled value): no float32 file can do better, so the envelope is never below it.
    pub floor: f64,
}

impl Measured {
    pub fn max(&self) -> f64 {
        self.positions.iter().copied().fold(0.0, |max, value| if value.is_nan() || max.is_nan() { f64::NAN } else { max.max(value) })
    }
}

/// Every snapshot of `side` against `truth`, in `form`.
pub fn measure(side: &[f32], truth: &Exact, shape: Shape, form: Form) -> Vec<Measured> {
    let per_snapshot = shape.positions * shape.width;
    (0..shape.snapshots)
        .map(|snapshot| {
            let range = snapshot * per_snapshot..(snapshot + 1) * per_snapshot;
            measure_snapshot(&side[range.clone()], truth, range.start, shape, form)
        })
        .collect()
}

fn measure_snapshot(side: &[f32], truth: &Exact, offset: usize, shape: Shape, form: Form) -> Measured {
    let Shape { positions, width, .. } = shape;
    // Rows (and, for the per-dimension scale, columns) run in parallel; each sum still runs in
    // order within its row or column, so the figures do not depend on the thread count.
    let truth_row = |row: usize| {
        let range = offset + row * width..offset + (row + 1) * width;
        (&truth.base[range.clone()], &truth.correction[range])
    };
    let side_row = |row: usize| &side[row * width..(row + 1) * width];
    let mean = |sum: f64| sum / width as f64;
    let exact_at = |row: usize, column: usize| truth.at(offset + row * width + column);
    let (truth_means, side_means): (Vec<f64>, Vec<f64>) = match form {
        Form::Raw => (vec![0.0; positions], vec![0.0; positions]),
        Form::Centered => (
            row_sums(positions, width, exact_at).into_iter().map(mean).collect(),
            row_sums(positions, width, |row, column| f64::from(side[row * width + column])).into_iter().map(mean).collect(),
        ),
    };
    let truth_value = |row: usize, column: usize| exact_at(row, column) - truth_means[row];
    let scales: Vec<f64> = match shape.kind {
        Scaling::PerDimension => {
            let rms: Vec<f64> = (0..width)
                .into_par_iter()
                .map(|column| ((0..positions).map(|row| truth_value(row, column).powi(2)).sum::<f64>() / positions as f64).sqrt())
                .collect();
            let mut sorted = rms.clone();
            sorted.sort_by(f64::total_cmp);
            let median = sorted[sorted.len() / 2].max(f64::MIN_POSITIVE);
            rms.into_iter().map(|rms| rms.max(median)).collect()
        }
        Scaling::PerPosition => row_sums(positions, width, |row, column| truth_value(row, column).powi(2))
            .into_iter()
            .map(|sum| (sum / width as f64).sqrt().max(f64::MIN_POSITIVE))
            .collect(),
    };
    let scale = |row: usize, column: usize| match shape.kind {
        Scaling::PerDimension => scales[column],
        Scaling::PerPosition => scales[row],
    };
    // Per row: its largest scaled deviation, and its largest scaled truth value (up to the
    // first non-finite deviation, which ends the row).
    let by_element = |row: usize| {
        let (mut worst, mut largest_scaled_truth) = (0.0f64, 0.0f64);
        for column in 0..width {
            let truth = truth_value(row, column);
            let diff = (f64::from(side[row * width + column]) - side_means[row]) - truth;
            let scaled = diff.abs() / scale(row, column);
            largest_scaled_truth = largest_scaled_truth.max(truth.abs() / scale(row, column));
            if !scaled.is_finite() {
                return (f64::INFINITY, largest_scaled_truth);
            }
            worst = worst.max(scaled);
        }
        (worst, largest_scaled_truth)
    };
    let rows: Vec<(f64, f64)> = (0..positions)
        .into_par_iter()
        .map(|row| match shape.kind {
            Scaling::PerPosition => on_one_scale(side_row(row), side_means[row], truth_row(row), truth_means[row], scales[row])
                .unwrap_or_else(|| by_element(row)),
            Scaling::PerDimension => by_element(row),
        })
        .collect();
    let largest_scaled_truth = rows.iter().map(|&(_, largest)| largest).fold(0.0f64, f64::max);
    Measured { positions: rows.into_iter().map(|(worst, _)| worst).collect(), floor: largest_scaled_truth * f64::from(f32::EPSILON) }
}

/// Each of `positions` rows' sum of `value(row, column)` over its `width` columns, added in
/// column order from -0.0 as `Iterator::sum` adds, so to the same bits. A sum in order is a chain
/// of dependent additions; eight rows side by side keep eight chains in flight on one core.
fn row_sums(positions: usize, width: usize, value: impl Fn(usize, usize) -> f64 + Sync) -> Vec<f64> {
    const ROWS_TOGETHER: usize = 8;
    let groups: Vec<usize> = (0..positions).step_by(ROWS_TOGETHER).collect();
    groups
        .into_par_iter()
        .flat_map_iter(|first| {
            let rows = ROWS_TOGETHER.min(positions - first);
            let mut sums = [-0.0f64; ROWS_TOGETHER];
            for column in 0..width {
                for (lane, sum) in sums[..rows].iter_mut().enumerate() {
                    *sum += value(first + lane, column);
                }
            }
            sums.into_iter().take(rows)
        })
        .collect()
}

/// The values of a row held as float32 pairs, in float64.
fn exact_values<'a>((base, correction): (&'a [f32], &'a [f32])) -> impl Iterator<Item = f64> + 'a {
    base.iter().zip(correction).map(|(&base, &correction)| f64::from(base) + f64::from(correction))
}

/// A row on one scale (a logits position): its largest |deviation| and |truth value|, each
/// divided by the scale once. Dividing by a positive number keeps the order of any two values,
/// so these are the largest of the element-by-element quotients to the bit. `None` when a
/// deviation or the quotient is not finite: the element-by-element loop then says where the row
/// ends.
fn on_one_scale(side: &[f32], side_mean: f64, truth: (&[f32], &[f32]), truth_mean: f64, scale: f64) -> Option<(f64, f64)> {
    let (mut largest_diff, mut largest_truth, mut finite) = (0.0f64, 0.0f64, true);
    for (&side, truth) in side.iter().zip(exact_values(truth)) {
        let truth = truth - truth_mean;
        let diff = (f64::from(side) - side_mean) - truth;
        finite &= diff.is_finite();
        largest_diff = largest_diff.max(diff.abs());
        largest_truth = largest_truth.max(truth.abs());
    }
    let worst = largest_diff / scale;
    (finite && worst.is_finite()).then_some((worst, largest_truth / scale))
}

/// One side measured against a truth: each residual snapshot (none without a residual stream),
/// then the logits.
pub struct Measurements {
    pub resid: Option<Vec<Measured>>,
    pub logits: Measured,
}

/// Per residual snapshot (none without a residual stream), then at the logits: how far a
/// faithful float32 forward lands from the truth.
#[derive(Debug, Clone)]
pub struct Widths {
    pub snapshots: Vec<f64>,
    pub logits: f64,
}

impl Widths {
    /// Our own float32 forward's measurements, each at least its float32 floor.
    pub fn of(ours: &Measurements) -> Self {
        let width = |measured: &Measured| measured.max().max(measured.floor);
        Self { snapshots: ours.resid.iter().flatten().map(width).collect(), logits: width(&ours.logits) }
    }
}

/// The envelope of one prompt in one form. `whole`: our float32 forward against our float64
/// one, end to end. `each_block`: what each block (and the head) adds on its own, given the same
/// input: our float32 block against our float64 block on our float32 residual stream. A
/// deviation inside one block is a few times the latter even where, passed on through the
/// residual stream, it hides under the rounding that earlier blocks accumulated.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub whole: Widths,
    pub each_block: Option<Widths>,
}

impl Envelope {
    /// The widths for a side judged in `forms`, from the envelopes in each form.
    pub fn for_forms(forms: Forms, raw: &Envelope, centered: &Envelope) -> Envelope {
        let pick = |form: Form| match form {
            Form::Raw => raw,
            Form::Centered => centered,
        };
        let (resid, logits) = (pick(forms.resid), pick(forms.logits));
        let compose = |resid: &Widths, logits: &Widths| Widths { snapshots: resid.snapshots.clone(), logits: logits.logits };
        Envelope {
            whole: compose(&resid.whole, &logits.whole),
            each_block: resid.each_block.as_ref().zip(logits.each_block.as_ref()).map(|(resid, logits)| compose(resid, logits)),
        }
    }

    /// This envelope, each width at least `other`'s at the same place, in either view.
    pub fn widened_by(&self, other: &Envelope) -> Self {
        let widen = |widths: &Widths, other: Option<&Widths>| match other {
            Some(other) => Widths {
                snapshots: widths.snapshots.iter().zip(&other.snapshots).map(|(a, b)| a.max(*b)).collect(),
                logits: widths.logits.max(other.logits),
            },
            None => widths.clone(),
        };
        Self {
            whole: widen(&self.whole, Some(&other.whole)),
            each_block: self.each_block.as_ref().map(|widths| widen(widths, other.each_block.as_ref())),
        }
    }
}

impl SideRounding {
    /// A side's multiples from its measurements against the truth (`whole`) and, for another
    /// implementation with a residual stream, against each of our blocks on its own input
    /// (`each_block`). `logits_index` is the logits' place (n_layer + 1).
    pub fn judge(
        side: &str,
        forms: Forms,
        whole: &Measurements,
        each_block: Option<&Measurements>,
        envelope: &Envelope,
        logits_index: usize,
    ) -> Self {
        let divide = |measured: &Measured, width: f64| measured.max() / width;
        let snapshots: Option<Vec<f64>> =
            whole.resid.as_ref().map(|resid| resid.iter().zip(&envelope.whole.snapshots).map(|(m, &w)| divide(m, w)).collect());
        let logits = divide(&whole.logits, envelope.whole.logits);
        let local = each_block.zip(envelope.each_block.as_ref());
        let each_block_multiples: Option<Vec<f64>> = local.and_then(|(each_block, widths)| {
            let resid = each_block.resid.as_ref()?;
            let mut multiples: Vec<f64> = resid.iter().zip(&widths.snapshots).map(|(m, &w)| divide(m, w)).collect();
            if let (Some(first), Some(whole_first)) = (multiples.first_mut(), snapshots.as_ref().and_then(|s| s.first())) {
                *first = *whole_first;
            }
            Some(multiples)
        });
        let head = local.map(|(each_block, widths)| divide(&each_block.logits, widths.logits));
        // The first place either view leaves the envelope, and each position's multiple there
        // (the sharper, per-block view first).
        let at = |index: usize| -> Option<Vec<f64>> {
            let per_position = |measured: &Measured, width: f64| measured.positions.iter().map(|value| value / width).collect();
            if index == logits_index {
                if let (Some(head), Some((each_block, widths))) = (head, local) {
                    if outside(head) {
                        return Some(per_position(&each_block.logits, widths.logits));
                    }
                }
                return outside(logits).then(|| per_position(&whole.logits, envelope.whole.logits));
            }
            if let (Some(multiples), Some((each_block, widths))) = (&each_block_multiples, local) {
                if index > 0 && outside(multiples[index]) {
                    return Some(per_position(&each_block.resid.as_ref()?[index], widths.snapshots[index]));
                }
            }
            let (multiple, measured) = (snapshots.as_ref()?[index], &whole.resid.as_ref()?[index]);
            outside(multiple).then(|| per_position(measured, envelope.whole.snapshots[index]))
        };
        let places = snapshots.as_ref().map_or(0, Vec::len);
        let first = (0..places).chain([logits_index]).find_map(|index| at(index).map(|positions| (Place { index }, positions)));
        let (first_outside, positions) = first.unzip();
        Self {
            side: side.to_owned(),
            forms,
            snapshots,
            logits,
            each_block: each_block_multiples,
            head,
            first_outside,
            positions,
            cause: None,
            deviations_tried: 0,
        }
    }
}

/// Max |side - truth| over the logits, in `form`: what a tested cause's match is in plain units.
pub fn max_abs_diff(side: &[f32], truth: &Exact, positions: usize, width: usize, form: Form) -> f64 {
    (0..positions)
        .map(|row| {
            let range = row * width..(row + 1) * width;
            let (side_mean, truth_mean) = match form {
                Form::Raw => (0.0, 0.0),
                Form::Centered => (
                    side[range.clone()].iter().map(|&v| f64::from(v)).sum::<f64>() / width as f64,
                    range.clone().map(|index| truth.at(index)).sum::<f64>() / width as f64,
                ),
            };
            range.map(|index| ((f64::from(side[index]) - side_mean) - (truth.at(index) - truth_mean)).abs()).fold(0.0, f64::max)
        })
        .fold(0.0, f64::max)
}

/// Below this |correlation| at every position, a side's logits owe nothing to wte: a faithful
/// head gives 1, no ln_f about 0.5, a random lm_head about 1/sqrt(V) (docs/metrics.md). A wte
/// reshaped instead of transposed scrambles it as much, so the forward rules that out first.
pub const UNTIED_CORRELATION: f64 = 0.1;

/// Over positions, the largest |Pearson correlation| across the vocabulary between a side's
/// logits and the truth's ([T, V] each); NaN when a row is constant or not finite.
pub fn largest_correlation(side: &[f32], truth: &Exact, positions: usize, width: usize) -> f64 {
    worst_of((0..positions).map(|row| {
        let range = row * width..(row + 1) * width;
        let side_mean = side[range.clone()].iter().map(|&v| f64::from(v)).sum::<f64>() / width as f64;
        let truth_mean = range.clone().map(|index| truth.at(index)).sum::<f64>() / width as f64;
        let (mut product, mut side_square, mut truth_square) = (0.0, 0.0, 0.0);
        for index in range {
            let (a, b) = (f64::from(side[index]) - side_mean, truth.at(index) - truth_mean);
            (product, side_square, truth_square) = (product + a * b, side_square + a * a, truth_square + b * b);
        }
        (product / (side_square * truth_square).sqrt()).abs()
    }))
}

/// Whether every row of a side's logits holds the truth's values in some order: sorted, each
/// row matches within a thousandth of the truth row's spread (float32 rounding is far below it,
/// other values far above).
pub fn is_reordering(side: &[f32], truth: &Exact, positions: usize, width: usize) -> bool {
    (0..positions).all(|row| {
        let range = row * width..(row + 1) * width;
        let mut ours: Vec<f64> = side[range.clone()].iter().map(|&value| f64::from(value)).collect();
        let mut exact: Vec<f64> = range.map(|index| truth.at(index)).collect();
        ours.sort_by(f64::total_cmp);
        exact.sort_by(f64::total_cmp);
        let mean = exact.iter().sum::<f64>() / width as f64;
        let spread = (exact.iter().map(|value| (value - mean).powi(2)).sum::<f64>() / width as f64).sqrt();
        ours.iter().zip(&exact).all(|(a, b)| (a - b).abs() <= 1e-3 * spread)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(values: &[f64]) -> Exact {
        Exact::from_f64(values)
    }

    /// The envelope set by `ours` (logits only, or a residual stream of one snapshot and logits
    /// equal to it), and `side` judged in it.
    fn judged(ours: &[f32], side: &[f32], truth: &Exact, shape: Shape, form: Form) -> SideRounding {
        let measurements = |values: &[f32]| {
            let resid = (shape.kind == Scaling::PerDimension).then(|| measure(values, truth, shape, form));
            Measurements { resid, logits: measure(values, truth, shape, form).remove(0) }
        };
        let envelope = Envelope { whole: Widths::of(&measurements(ours)), each_block: None };
        SideRounding::judge("side", Forms { resid: form, logits: form }, &measurements(side), None, &envelope, 1)
    }

    #[test]
    fn exact_keeps_float64_precision_in_two_float32s() {
        let values = [1.0 + 1e-12, -60.123456789012, 1e-30, 0.0];
        let held = exact(&values);
        for (index, &value) in values.iter().enumerate() {
            assert!((held.at(index) - value).abs() <= value.abs() * 1e-14, "{value} -> {}", held.at(index));
        }
    }

    #[test]
    fn a_massive_dimension_does_not_hide_a_deviation_in_an_ordinary_one() {
        // Two positions, four dimensions; dimension 3 is massive (hundreds).
        let truth = [1.0, -1.0, 0.5, 400.0, -1.0, 1.0, -0.5, -300.0];
        let shape = Shape { snapshots: 1, positions: 2, width: 4, kind: Scaling::PerDimension };
        // Our float32 forward: an error of 1e-4 on the massive dimension (its rounding scale).
        let ours: Vec<f32> = truth.iter().enumerate().map(|(i, &v)| (v + if i % 4 == 3 { 1e-4 } else { 1e-7 }) as f32).collect();
        // A port: exact on the massive dimension, off by 1e-4 on an ordinary one; the plain
        // max |diff| of the two is the same.
        let port: Vec<f32> = truth.iter().enumerate().map(|(i, &v)| (v + if i == 1 { 1e-4 } else { 0.0 }) as f32).collect();
        let side = judged(&ours, &port, &exact(&truth), shape, Form::Raw);
        assert!(side.snapshots.as_ref().unwrap()[0] > 100.0, "{side:?}");
        assert_eq!(side.first_outside, Some(Place { index: 0 }));
    }

    #[test]
    fn our_own_float32_side_sits_at_one_and_centering_removes_a_shift() {
        let truth: Vec<f64> = (0..12).map(|i| (i as f64 * 0.37).sin() * 10.0 - 60.0).collect();
        let shape = Shape { snapshots: 1, positions: 3, width: 4, kind: Scaling::PerPosition };
        let ours: Vec<f32> = truth.iter().map(|&v| (v * (1.0 + 3e-7)) as f32).collect();
        let shifted: Vec<f32> = ours.iter().enumerate().map(|(i, &v)| v + (i / 4) as f32 * 0.25).collect();
        let truth = exact(&truth);
        let own = judged(&ours, &ours, &truth, shape, Form::Centered);
        assert!((own.logits - 1.0).abs() < 1e-12 && own.passed(), "{own:?}");
        assert!(judged(&ours, &shifted, &truth, shape, Form::Centered).passed());
        let raw = judged(&ours, &shifted, &truth, shape, Form::Raw);
        assert!(!raw.passed() && raw.first_outside == Some(Place { index: 1 }), "{raw:?}");
    }

    /// A logits row's figures as the rule states them: every element's quotient, the largest
    /// kept, the row ending at the first non-finite one.
    fn row_by_definition(side: &[f32], side_mean: f64, truth: &[f64], truth_mean: f64, scale: f64) -> (f64, f64) {
        let (mut worst, mut largest) = (0.0f64, 0.0f64);
        for (&side, &truth) in side.iter().zip(truth) {
            let truth = truth - truth_mean;
            let scaled = ((f64::from(side) - side_mean) - truth).abs() / scale;
            largest = largest.max(truth.abs() / scale);
            if !scaled.is_finite() {
                return (f64::INFINITY, largest);
            }
            worst = worst.max(scaled);
        }
        (worst, largest)
    }

    #[test]
    fn a_row_on_one_scale_is_the_element_by_element_figure_to_the_bit() {
        let truth: Vec<f64> = (0..997).map(|i| (i as f64 * 0.731).sin() * 12.0 - 59.5 + (i as f64) * 1e-9).collect();
        let side: Vec<f32> = truth.iter().enumerate().map(|(i, &value)| (value + (i as f64 * 1.37).cos() * 3e-6) as f32).collect();
        let exact = exact(&truth);
        let values: Vec<f64> = exact_values((&exact.base, &exact.correction)).collect();
        for (side_mean, truth_mean, scale) in [(0.0, 0.0, 16.66), (-59.52, -59.5233, 16.66), (0.0, 0.0, 3.7e-5), (1.0, 0.5, 0.1)] {
            let fast = on_one_scale(&side, side_mean, (&exact.base, &exact.correction), truth_mean, scale);
            let expected = row_by_definition(&side, side_mean, &values, truth_mean, scale);
            assert_eq!(
                fast.map(|(worst, largest)| (worst.to_bits(), largest.to_bits())),
                Some((expected.0.to_bits(), expected.1.to_bits()))
            );
        }
        // A non-finite deviation, or a quotient that overflows, leaves the row to the element-by-element loop.
        let mut broken = side.clone();
        broken[500] = f32::NAN;
        assert!(on_one_scale(&broken, 0.0, (&exact.base, &exact.correction), 0.0, 1.0).is_none());
        broken[500] = f32::INFINITY;
        assert!(on_one_scale(&broken, 0.0, (&exact.base, &exact.correction), 0.0, 1.0).is_none());
        let mut huge = side.clone();
        huge[500] = f32::MAX;
        assert!(on_one_scale(&huge, 0.0, (&exact.base, &exact.correction), 0.0, 1.0).is_some());
        assert!(on_one_scale(&huge, 0.0, (&exact.base, &exact.correction), 0.0, f64::MIN_POSITIVE).is_none());
        // And measure gives the definition's figures on such a row too.
        let shape = Shape { snapshots: 1, positions: 1, width: truth.len(), kind: Scaling::PerPosition };
        let measured = measure(&broken, &exact, shape, Form::Raw).remove(0);
        assert_eq!(measured.positions, vec![f64::INFINITY]);
    }

    #[test]
    fn non_finite_values_leave_the_envelope() {
        let truth = exact(&[1.0, 2.0, 3.0, 4.0]);
        let shape = Shape { snapshots: 1, positions: 1, width: 4, kind: Scaling::PerPosition };
        let ours = [1.0f32, 2.0, 3.0, 4.0];
        let own = judged(&ours, &ours, &truth, shape, Form::Raw);
        assert!(own.passed() && own.logits == 0.0, "the float32 floor keeps the envelope above 0: {own:?}");
        assert!(!judged(&ours, &[1.0, f32::NAN, 3.0, 4.0], &truth, shape, Form::Raw).passed());
        assert!(!judged(&ours, &[1.0, f32::INFINITY, 3.0, 4.0], &truth, shape, Form::Raw).passed());
    }

    #[test]
    fn correlation_is_per_position_and_the_largest_wins() {
        // Two positions of four logits: the side follows the truth (scaled and shifted) at the
        // first position and is orthogonal to it at the second.
        let truth = exact(&[1.0, 2.0, 3.0, 4.0, 1.0, -1.0, 1.0, -1.0]);
        let side = [10.0, 12.0, 14.0, 16.0, 1.0, 1.0, -1.0, -1.0];
        assert!((largest_correlation(&side, &truth, 2, 4) - 1.0).abs() < 1e-12);
        assert!(largest_correlation(&side[4..], &exact(&[1.0, -1.0, 1.0, -1.0]), 1, 4) < 1e-12);
        let reversed = [4.0, 3.0, 2.0, 1.0];
        assert!((largest_correlation(&reversed, &exact(&[1.0, 2.0, 3.0, 4.0]), 1, 4) - 1.0).abs() < 1e-12, "|r| counts");
        assert!(largest_correlation(&[5.0; 4], &exact(&[1.0, 2.0, 3.0, 4.0]), 1, 4).is_nan(), "a constant row");
    }

    #[test]
    fn a_reordering_keeps_every_value() {
        let truth = exact(&[1.0, 2.0, 3.0, 4.0]);
        assert!(is_reordering(&[4.0, 3.0, 1.0, 2.0], &truth, 1, 4));
        assert!(!is_reordering(&[4.0, 3.0, 1.0, 2.5], &truth, 1, 4));
    }

    #[test]
    fn rows_summed_side_by_side_are_the_bits_of_each_row_summed_alone() {
        // 19 rows: two full groups of eight and a short one; values spanning twelve orders of
        // magnitude so that the order of the additions shows in the bits; one row of -0.0.
        let (positions, width) = (19, 1001);
        let value = |row: usize, column: usize| {
            if row == 5 {
                return -0.0;
            }
            let x = ((row * 7919 + column * 104_729) % 1_000_003) as f64 / 1_000_003.0 - 0.5;
            x * 10f64.powi((column % 13) as i32 - 6)
        };
        let together = row_sums(positions, width, value);
        for (row, sum) in together.iter().enumerate() {
            let alone: f64 = (0..width).map(|column| value(row, column)).sum();
            assert_eq!(sum.to_bits(), alone.to_bits(), "row {row}");
        }
    }
}
