//! `--noise-floor`: tells a breach that float32 rounding explains from a real one. Our model
//! also runs in float64, the closest this tool gets to the exact values; each comparison then
//! says how far its float32 candidate and its float32 reference sit from those, and whether the
//! difference is of the size float32 rounding makes (docs/metrics.md states the rule).
use super::stats::finite_mean;
use crate::schema::noise_floor::{Breach, NoiseFloor};
use crate::schema::{Criterion, Tolerance};

/// How many times our own float32 rounding an external reference may sit from the float64
/// result and still count as rounding: HF's float32 sits 0.9x to 1.5x as far as ours on a model
/// with GPT-2's magnitudes, a 1e-3 error in one logit 12x, a wrong LayerNorm epsilon 200x.
pub const REFERENCE_NOISE_FACTOR: f64 = 4.0;

/// The float64 result of the reference side: our model's (`Ours`), or none for a reference
/// file, which is judged as it is.
pub enum ReferenceFloat64<'a> {
    Ours(&'a [f32]),
    External,
}

/// The noise floor of a comparison of `candidate` with `reference` ([positions, vocab], float32)
/// that passed or not (`passed`), given the float64 results.
pub fn noise_floor(
    criterion: Criterion,
    tolerance: Tolerance,
    vocab: usize,
    passed: bool,
    (candidate, candidate_float64): (&[f32], &[f32]),
    (reference, reference_float64): (&[f32], ReferenceFloat64),
) -> NoiseFloor {
    let candidate_vs_float64 = deviation(criterion, tolerance, vocab, candidate, candidate_float64).max_abs_diff;
    let (reference_vs_float64, float64_passes) = match reference_float64 {
        ReferenceFloat64::Ours(reference_float64) => (
            deviation(criterion, tolerance, vocab, reference, reference_float64).max_abs_diff,
            deviation(criterion, tolerance, vocab, candidate_float64, reference_float64).passed,
        ),
        ReferenceFloat64::External => {
            let at_float64 = deviation(criterion, tolerance, vocab, candidate_float64, reference);
            (at_float64.max_abs_diff, at_float64.passed)
        }
    };
    // A float32 reference carries its own rounding, which no float64 run of ours removes: it
    // counts as noise while it is of the order of ours (two float32 implementations of the same
    // arithmetic), measured by the candidate's own distance from float64.
    let reference_within_noise = match reference_float64 {
        ReferenceFloat64::Ours(_) => false,
        ReferenceFloat64::External => reference_vs_float64 <= REFERENCE_NOISE_FACTOR * candidate_vs_float64,
    };
    let breach = (!passed).then_some(if float64_passes || reference_within_noise { Breach::RoundingNoise } else { Breach::Real });
    NoiseFloor { candidate_vs_float64, reference_vs_float64, float64_passes, breach }
}

struct Deviation {
    max_abs_diff: f64,
    passed: bool,
}

/// Max |a − b| under `criterion` and whether every element is within tolerance (rtol at `b`'s
/// magnitude before centering, as the criterion says); non-finite values fail.
fn deviation(criterion: Criterion, tolerance: Tolerance, vocab: usize, a: &[f32], b: &[f32]) -> Deviation {
    let mut deviation = Deviation { max_abs_diff: 0.0, passed: true };
    for (a_row, b_row) in a.chunks_exact(vocab).zip(b.chunks_exact(vocab)) {
        let shift = match criterion {
            Criterion::Raw => 0.0,
            Criterion::ShiftInvariant => finite_mean(a_row) - finite_mean(b_row),
        };
        for (&a, &b) in a_row.iter().zip(b_row) {
            let (a, b) = (f64::from(a), f64::from(b));
            let diff = a - b - shift;
            if !diff.is_finite() {
                deviation.passed = false;
                deviation.max_abs_diff = f64::NAN;
                continue;
            }
            deviation.max_abs_diff = deviation.max_abs_diff.max(diff.abs());
            deviation.passed &= tolerance.allows_diff(diff, b);
        }
    }
    deviation
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOLERANCE: Tolerance = Tolerance { atol: 1e-4, rtol: 1e-5 };

    #[test]
    fn a_breach_that_float64_removes_is_rounding_noise() {
        // Exact values near -60; our float32 is off by 8e-4 (over the 7e-4 allowed), the
        // reference by 1e-5.
        let exact = [-60.0f32, -55.0, -65.0];
        let candidate = [-60.0008f32, -55.0, -65.0];
        let reference = [-60.00001f32, -55.0, -65.0];
        let floor = noise_floor(Criterion::Raw, TOLERANCE, 3, false, (&candidate, &exact), (&reference, ReferenceFloat64::External));
        assert_eq!(floor.breach, Some(Breach::RoundingNoise));
        assert!((floor.candidate_vs_float64 - 8e-4).abs() < 1e-5 && floor.reference_vs_float64 < 2e-5, "{floor:?}");
    }

    #[test]
    fn a_reference_as_far_from_float64_as_our_float32_is_rounding_noise() {
        // Both sides round by ~8e-4 in opposite directions: float64 alone still fails against
        // the reference, whose own rounding is of our order.
        let exact = [-60.0f32, -55.0, -65.0];
        let candidate = [-60.0008f32, -55.0, -65.0];
        let reference = [-59.9992f32, -55.0, -65.0];
        let floor = noise_floor(Criterion::Raw, TOLERANCE, 3, false, (&candidate, &exact), (&reference, ReferenceFloat64::External));
        assert!(!floor.float64_passes);
        assert_eq!(floor.breach, Some(Breach::RoundingNoise));
        // Five times our rounding is more than noise.
        let reference = [-59.996f32, -55.0, -65.0];
        let floor = noise_floor(Criterion::Raw, TOLERANCE, 3, false, (&candidate, &exact), (&reference, ReferenceFloat64::External));
        assert_eq!(floor.breach, Some(Breach::Real));
    }

    #[test]
    fn a_breach_that_float64_keeps_is_real() {
        let exact = [-60.0f32, -55.0, -65.0];
        let reference = [-60.01f32, -55.0, -65.0];
        let floor = noise_floor(Criterion::Raw, TOLERANCE, 3, false, (&exact, &exact), (&reference, ReferenceFloat64::External));
        assert_eq!(floor.breach, Some(Breach::Real));
        assert_eq!(floor.candidate_vs_float64, 0.0);
        // Between two of our own models, each side's float64 result is used.
        let floor = noise_floor(Criterion::Raw, TOLERANCE, 3, false, (&exact, &exact), (&reference, ReferenceFloat64::Ours(&reference)));
        assert_eq!(floor.breach, Some(Breach::Real));
        assert_eq!(floor.reference_vs_float64, 0.0);
    }

    #[test]
    fn a_passing_comparison_has_no_breach_whatever_float64_says() {
        // Between two of our own models whose float32 results agree (the comparison passes)
        // while their float64 results do not: judged on float64 alone this is a real breach.
        let (candidate, reference) = ([-60.0f32, -55.0, -65.0], [-60.00001f32, -55.0, -65.0]);
        let (candidate_float64, reference_float64) = (candidate, [-60.5f32, -55.0, -65.0]);
        let passed = deviation(Criterion::Raw, TOLERANCE, 3, &candidate, &reference).passed;
        assert!(passed);
        let sides = |passed| {
            noise_floor(
                Criterion::Raw,
                TOLERANCE,
                3,
                passed,
                (&candidate, &candidate_float64),
                (&reference, ReferenceFloat64::Ours(&reference_float64)),
            )
        };
        let floor = sides(passed);
        assert!(!floor.float64_passes, "{floor:?}");
        assert_eq!(floor.breach, None);
        // The same sides, failing, get the verdict the float64 results give.
        assert_eq!(sides(false).breach, Some(Breach::Real));
    }
}
