//! Correlation of paired series: [`ranks`], [`pearson`] and [`spearman`], the one
//! implementation behind GLUE's STS-B score ([`glue_regression_score`]), the checkpoint
//! selection of regression models and the experiments' rank correlations.
//!
//! A correlation is `None` where it is undefined: fewer than two pairs, series of
//! different lengths, a constant series (zero variance), or a NaN result (a NaN or
//! infinite value). Each caller decides what an undefined correlation means for it
//! (GLUE reports NaN, model selection counts it as 0) and says so where it maps the
//! `None`.
//!
//! [`glue_regression_score`]: crate::glue_regression_score

/// Average ranks, 1-based: the smallest value has rank 1, and tied values share the mean
/// of the ranks they span (`[3, 1, 3]` → `[2.5, 1, 2.5]`).
///
/// Values are ordered by [`f64::total_cmp`] and tied by `==` (so `-0.0` ties with `0.0`,
/// and every NaN has a rank of its own).
pub fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut out = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        // order[i..=j]: one run of equal values
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = rank;
        }
        i = j + 1;
    }
    out
}

/// Pearson's correlation of two equally long series:
/// `Σ (x - x̄)(y - ȳ) / √(Σ (x - x̄)² · Σ (y - ȳ)²)`, sums in index order.
///
/// `None` when undefined: fewer than two pairs, different lengths, zero variance in either
/// series, or a NaN result (a NaN or infinite value).
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    if vx == 0.0 || vy == 0.0 {
        return None;
    }
    let r = cov / (vx * vy).sqrt();
    (!r.is_nan()).then_some(r)
}

/// Spearman's rank correlation: [`pearson`] of the [`ranks`] of two equally long series.
///
/// `None` when undefined: fewer than two pairs, different lengths, or a constant series.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() {
        return None;
    }
    pearson(&ranks(x), &ranks(y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRng;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn ranks_share_ties() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0]), vec![2.5, 1.0, 2.5]);
        assert_eq!(ranks(&[0.5, -0.0, 0.0, 2.0]), vec![3.0, 1.5, 1.5, 4.0]);
        assert!(ranks(&[]).is_empty());
    }

    #[test]
    fn correlations_of_known_series() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert!(close(pearson(&x, &[2.0, 4.0, 6.0, 8.0]), 1.0));
        assert!(close(pearson(&x, &[8.0, 6.0, 4.0, 2.0]), -1.0));
        assert!(close(spearman(&x, &[1.0, 5.0, 6.0, 9.0]), 1.0));
        assert!(close(spearman(&x, &[9.0, 6.0, 5.0, 1.0]), -1.0));
        // x̄ = 2.5, ȳ = 3: Σ (x - x̄)(y - ȳ) = 5, Σ (x - x̄)² = 5, Σ (y - ȳ)² = 10
        assert!(close(pearson(&x, &[1.0, 4.0, 2.0, 5.0]), 0.5f64.sqrt()));
    }

    #[test]
    fn undefined_is_none() {
        let x = [1.0, 2.0, 3.0];
        assert_eq!(pearson(&x, &[2.0; 3]), None);
        assert_eq!(pearson(&[2.0; 3], &x), None);
        assert_eq!(spearman(&x, &[2.0; 3]), None);
        assert_eq!(pearson(&[], &[]), None);
        assert_eq!(pearson(&[1.0], &[1.0]), None);
        assert_eq!(spearman(&[1.0], &[2.0]), None);
        assert_eq!(pearson(&x, &[1.0, 2.0]), None);
        assert_eq!(spearman(&x, &[1.0, 2.0]), None);
        assert_eq!(pearson(&x, &[1.0, f64::NAN, 2.0]), None);
        assert_eq!(pearson(&x, &[1.0, f64::INFINITY, 2.0]), None);
        // ranks are finite: a NaN is just the largest value
        assert!(close(spearman(&x, &[1.0, 2.0, f64::NAN]), 1.0));
    }

    /// The rank correlation the experiments computed before this module (centred on
    /// `(n + 1) / 2`, one loop): bit for bit the same as `spearman`.
    fn spearman_before(x: &[f64], y: &[f64]) -> f64 {
        let n = x.len();
        let (rx, ry) = (ranks(x), ranks(y));
        let mean = (n as f64 + 1.0) / 2.0;
        let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
        for i in 0..n {
            let (a, b) = (rx[i] - mean, ry[i] - mean);
            sxy += a * b;
            sxx += a * a;
            syy += b * b;
        }
        if n < 2 || sxx == 0.0 || syy == 0.0 {
            0.0
        } else {
            sxy / (sxx * syy).sqrt()
        }
    }

    #[test]
    fn spearman_is_bit_identical_to_the_experiments_formula() {
        let mut rng = SeededRng::new(3);
        for trial in 0..2000 {
            let n = rng.usize_inclusive(0..=40);
            // few distinct values: many ties, some constant series
            let distinct = rng.usize_inclusive(1..=if trial % 2 == 0 { 4 } else { 1000 });
            let mut draw = || {
                (0..n)
                    .map(|_| rng.usize_inclusive(0..=distinct - 1) as f64 * 0.37)
                    .collect::<Vec<f64>>()
            };
            let (x, y) = (draw(), draw());
            let new = spearman(&x, &y).unwrap_or(0.0);
            assert_eq!(
                new.to_bits(),
                spearman_before(&x, &y).to_bits(),
                "{x:?} {y:?}"
            );
        }
    }
}
