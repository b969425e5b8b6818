//! A/B tests between models: deterministic assignment and the statistics behind a verdict.
//!
//! Assignment hashes (test id, subject id) onto the variants' weights, so a subject always
//! lands in the same variant without storing assignments. Each variant's success rate gets a
//! Wilson 95 % interval, and each non-control variant is compared with the control (the first
//! variant) by a two-sided two-proportion z-test; p-values are Holm-adjusted because a test
//! with several variants makes several comparisons.

use sha2::{Digest, Sha256};

/// The index of the variant `subject` belongs to in `test`, given the variants' weights.
/// Weights must be positive; callers validate that when the test is created.
pub fn assign(test_id: &str, subject: &str, weights: &[u32]) -> usize {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return 0;
    }
    let digest = Sha256::new().chain_update(test_id).chain_update([0]).chain_update(subject).finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 2^64 is so much larger than any total weight that the modulo bias is negligible.
    let mut point = u64::from_be_bytes(first) % total;
    for (index, &weight) in weights.iter().enumerate() {
        if point < u64::from(weight) {
            return index;
        }
        point -= u64::from(weight);
    }
    weights.len() - 1
}

/// The Wilson score interval of a proportion at 95 % confidence; `(0, 0)` without trials.
pub fn wilson_interval(successes: u64, trials: u64) -> (f64, f64) {
    if trials == 0 {
        return (0.0, 0.0);
    }
    const Z: f64 = 1.959_963_984_540_054;
    let n = trials as f64;
    let p = successes as f64 / n;
    let denominator = 1.0 + Z * Z / n;
    let centre = p + Z * Z / (2.0 * n);
    let margin = Z * (p * (1.0 - p) / n + Z * Z / (4.0 * n * n)).sqrt();
    (((centre - margin) / denominator).max(0.0), ((centre + margin) / denominator).min(1.0))
}

/// Two-sided p-value of the pooled two-proportion z-test; 1 when it is undefined (no trials,
/// or every trial of both arms had the same outcome).
pub fn two_proportion_p_value(s1: u64, n1: u64, s2: u64, n2: u64) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let pooled = (s1 + s2) as f64 / (n1f + n2f);
    let standard_error = (pooled * (1.0 - pooled) * (1.0 / n1f + 1.0 / n2f)).sqrt();
    if standard_error == 0.0 {
        return 1.0;
    }
    let z = (s1 as f64 / n1f - s2 as f64 / n2f) / standard_error;
    erfc(z.abs() / std::f64::consts::SQRT_2).min(1.0)
}

/// Holm–Bonferroni adjustment: controls the family-wise error rate over all comparisons.
pub fn holm_adjust(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let mut adjusted = vec![0.0; m];
    let mut running_max: f64 = 0.0;
    for (rank, &index) in order.iter().enumerate() {
        let value = ((m - rank) as f64 * p_values[index]).min(1.0);
        running_max = running_max.max(value);
        adjusted[index] = running_max;
    }
    adjusted
}

/// Outcome counts of one variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub trials: u64,
    pub successes: u64,
}

/// How a variant compares with the control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Control,
    InsufficientData,
    NotSignificant,
    SignificantlyBetter,
    SignificantlyWorse,
}

/// The comparison of every variant with the control (`counts[0]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub interval: (f64, f64),
    /// Holm-adjusted; `None` for the control.
    pub p_value: Option<f64>,
    pub verdict: Verdict,
}

/// Compares each variant with the control at significance `alpha`; variants (or a control)
/// with fewer than `min_samples` outcomes get `InsufficientData`.
pub fn compare(counts: &[Counts], alpha: f64, min_samples: u64) -> Vec<Comparison> {
    let Some(control) = counts.first() else { return Vec::new() };
    let raw: Vec<f64> = counts[1..]
        .iter()
        .map(|v| two_proportion_p_value(v.successes, v.trials, control.successes, control.trials))
        .collect();
    let adjusted = holm_adjust(&raw);
    let rate = |c: &Counts| if c.trials == 0 { 0.0 } else { c.successes as f64 / c.trials as f64 };
    counts
        .iter()
        .enumerate()
        .map(|(index, variant)| {
            let interval = wilson_interval(variant.successes, variant.trials);
            if index == 0 {
                return Comparison { interval, p_value: None, verdict: Verdict::Control };
            }
            let p_value = adjusted[index - 1];
            let verdict = if variant.trials < min_samples || control.trials < min_samples {
                Verdict::InsufficientData
            } else if p_value >= alpha {
                Verdict::NotSignificant
            } else if rate(variant) > rate(control) {
                Verdict::SignificantlyBetter
            } else {
                Verdict::SignificantlyWorse
            };
            Comparison { interval, p_value: Some(p_value), verdict }
        })
        .collect()
}

/// The complementary error function, accurate to about 1.2e-7 relative (Numerical Recipes'
/// Chebyshev fit), which is ample for p-values.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let result = t * poly.exp();
    if x >= 0.0 { result } else { 2.0 - result }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn assignment_is_stable_and_follows_weights_over_ten_thousand_subjects() {
        let weights = [70, 20, 10];
        let mut seen = [0u32; 3];
        for subject in 0..10_000 {
            let subject = format!("user-{subject}");
            let first = assign("test-1", &subject, &weights);
            assert_eq!(first, assign("test-1", &subject, &weights), "same subject, same variant");
            seen[first] += 1;
        }
        // Binomial standard deviation at n = 10,000 is under 0.5 percentage points; allow 1.5.
        for (count, weight) in seen.iter().zip(weights) {
            let share = f64::from(*count) / 10_000.0;
            assert!(close(share, f64::from(weight) / 100.0, 0.015), "{seen:?}");
        }
    }

    #[test]
    fn assignment_differs_between_tests() {
        let weights = [50, 50];
        let differing = (0..1_000)
            .filter(|i| assign("a", &i.to_string(), &weights) != assign("b", &i.to_string(), &weights))
            .count();
        assert!((400..600).contains(&differing), "tests must be independent: {differing}");
    }

    #[test]
    fn wilson_matches_known_values() {
        let (lo, hi) = wilson_interval(60, 100);
        assert!(close(lo, 0.502_002_586_8, 1e-6) && close(hi, 0.690_598_713_6, 1e-6), "{lo} {hi}");
        let (lo, hi) = wilson_interval(0, 10);
        assert!(close(lo, 0.0, 1e-9) && close(hi, 0.277_532_799_9, 1e-6));
        assert_eq!(wilson_interval(0, 0), (0.0, 0.0));
    }

    #[test]
    fn z_test_matches_known_values() {
        // Reference values computed with math.erfc in Python.
        assert!(close(two_proportion_p_value(60, 100, 45, 100), 0.033_672_068_86, 1e-6));
        assert!(close(two_proportion_p_value(520, 1000, 480, 1000), 0.073_638_270_12, 1e-6));
        assert!(close(two_proportion_p_value(30, 50, 30, 50), 1.0, 1e-6));
        assert_eq!(two_proportion_p_value(10, 10, 10, 10), 1.0);
        assert_eq!(two_proportion_p_value(0, 0, 1, 2), 1.0);
    }

    #[test]
    fn holm_adjusts_in_rank_order() {
        let adjusted = holm_adjust(&[0.01, 0.04, 0.03]);
        assert!(close(adjusted[0], 0.03, 1e-12));
        assert!(close(adjusted[2], 0.06, 1e-12));
        assert!(close(adjusted[1], 0.06, 1e-12), "monotone: never below a smaller p's value");
    }

    #[test]
    fn verdicts_follow_significance_direction_and_sample_size() {
        let control = Counts { trials: 100, successes: 45 };
        let better = Counts { trials: 100, successes: 60 };
        let worse = Counts { trials: 100, successes: 30 };
        let result = compare(&[control, better], 0.05, 30);
        assert_eq!(result[0].verdict, Verdict::Control);
        assert_eq!(result[1].verdict, Verdict::SignificantlyBetter);
        assert!(close(result[1].p_value.unwrap(), 0.033_672, 1e-5));

        // Two comparisons: Holm doubles the smaller p-value, so 0.034 is no longer enough.
        let result = compare(&[control, better, Counts { trials: 100, successes: 44 }], 0.05, 30);
        assert_eq!(result[1].verdict, Verdict::NotSignificant);

        assert_eq!(compare(&[control, worse], 0.05, 30)[1].verdict, Verdict::SignificantlyWorse);
        assert_eq!(
            compare(&[control, Counts { trials: 20, successes: 20 }], 0.05, 30)[1].verdict,
            Verdict::InsufficientData
        );
    }
}
