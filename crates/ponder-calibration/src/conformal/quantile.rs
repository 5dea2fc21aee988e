//! The split-conformal threshold q̂: the `⌈(n+1)(1−α)⌉`-th smallest calibration score
//! (Angelopoulos & Bates, arXiv:2107.07511), and JEI-DNN's numpy variant of it.

use serde::{Deserialize, Serialize};

use crate::error::{CalibrationError, Result};

/// Which order statistic of the calibration scores becomes `q̂`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantileRule {
    /// The `⌈(n+1)(1−α)⌉`-th smallest score, or `+∞` when that rank exceeds `n`: see
    /// [`conformal_quantile`]. Keeps the finite-sample coverage guarantee.
    #[default]
    Exact,
    /// JEI-DNN's code: `np.quantile(scores, min(1, ⌈(n+1)(1−α)⌉/n), method="higher")`:
    /// see [`conformal_quantile_capped`]. For reference parity.
    ReferenceCapped,
}

/// Checks α and the scores, and returns `k = ⌈(n+1)(1−α)⌉`.
fn conformal_rank(scores: &[f64], alpha: f64) -> Result<usize> {
    check_alpha(alpha)?;
    if scores.is_empty() {
        return Err(CalibrationError::Empty {
            what: "calibration set".into(),
        });
    }
    if let Some(index) = scores.iter().position(|s| s.is_nan()) {
        return Err(CalibrationError::NonFinite {
            what: format!("conformal score at index {index}"),
            index,
            value: scores[index],
        });
    }
    // The same floating-point expression as the reference `np.ceil((n+1)*(1-alpha))`.
    Ok(((scores.len() + 1) as f64 * (1.0 - alpha)).ceil() as usize)
}

/// `Err(InvalidAlpha)` unless `0 < α < 1`.
pub(super) fn check_alpha(alpha: f64) -> Result<()> {
    if alpha > 0.0 && alpha < 1.0 {
        Ok(())
    } else {
        Err(CalibrationError::InvalidAlpha { alpha })
    }
}

/// The `k`-th smallest (1-based) of `scores`, in O(n).
fn kth_smallest(scores: &[f64], k: usize) -> f64 {
    let mut scratch = scores.to_vec();
    let (_, kth, _) = scratch.select_nth_unstable_by(k - 1, f64::total_cmp);
    *kth
}

/// The split-conformal threshold `q̂`: the `k`-th smallest calibration score with
/// `k = ⌈(n+1)(1−α)⌉` (Angelopoulos & Bates 2021, eq. 1; Vovk et al. 2005).
///
/// When `k > n` (that is, `α < 1/(n+1)`: too few calibration samples for the level asked)
/// this returns `+∞`, so every class is in every set. That is the choice that keeps the
/// guarantee `P(y ∈ C(x)) ≥ 1 − α` for exchangeable data. JEI-DNN's code instead caps the
/// level at 1, i.e. takes the largest score, which can break the guarantee for small `n`;
/// [`conformal_quantile_capped`] reproduces it.
///
/// With continuous (tie-free) scores coverage is also at most `1 − α + 1/(n+1)`.
///
/// `k` is computed as `ceil((n + 1) as f64 * (1 − α))`, the reference's floating-point
/// expression, with no tolerance.
///
/// # Errors
///
/// [`CalibrationError::InvalidAlpha`] unless `0 < α < 1`; [`CalibrationError::Empty`] for
/// no scores; [`CalibrationError::NonFinite`] for a NaN score (infinite ones are allowed).
pub fn conformal_quantile(scores: &[f64], alpha: f64) -> Result<f64> {
    let k = conformal_rank(scores, alpha)?;
    if k > scores.len() {
        Ok(f64::INFINITY)
    } else {
        Ok(kth_smallest(scores, k))
    }
}

/// JEI-DNN's threshold: `np.quantile(scores, min(1, k/n), method="higher")` with
/// `k = ⌈(n+1)(1−α)⌉` (Regol et al., ICLR 2024, arXiv:2310.09163).
///
/// numpy's "higher" method takes the sorted score at 0-based index `⌈q·(n−1)⌉`. For
/// `q = k/n < 1` that index is `⌈k − k/n⌉ = k`, i.e. the `(k+1)`-th smallest score, **one
/// order statistic above** [`conformal_quantile`]'s (slightly more conservative); for
/// `k ≥ n` the level is capped at 1 and the index is `n − 1`, the largest score (less
/// conservative than `+∞`). So this is the `min(k + 1, n)`-th smallest score.
///
/// # Errors
///
/// As [`conformal_quantile`].
pub fn conformal_quantile_capped(scores: &[f64], alpha: f64) -> Result<f64> {
    let k = conformal_rank(scores, alpha)?;
    Ok(kth_smallest(scores, (k + 1).min(scores.len())))
}

/// [`conformal_quantile`] or [`conformal_quantile_capped`], by `rule`.
///
/// # Errors
///
/// As [`conformal_quantile`].
pub fn conformal_quantile_with(scores: &[f64], alpha: f64, rule: QuantileRule) -> Result<f64> {
    match rule {
        QuantileRule::Exact => conformal_quantile(scores, alpha),
        QuantileRule::ReferenceCapped => conformal_quantile_capped(scores, alpha),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_picks_the_right_order_statistic() {
        let scores: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        // n = 10, α = 0.2: k = ⌈11·0.8⌉ = 9 → 9; capped: min(k+1, n) = 10th → 10.
        assert_eq!(conformal_quantile(&scores, 0.2).unwrap(), 9.0);
        assert_eq!(conformal_quantile_capped(&scores, 0.2).unwrap(), 10.0);
        // α = 0.5: k = ⌈5.5⌉ = 6 → 6; capped → 7 (numpy: index ⌈0.6·9⌉ = 6 → value 7).
        assert_eq!(conformal_quantile(&scores, 0.5).unwrap(), 6.0);
        assert_eq!(conformal_quantile_capped(&scores, 0.5).unwrap(), 7.0);
        // α = 0.05: k = ⌈10.45⌉ = 11 > n: +∞, capped: the max.
        assert_eq!(conformal_quantile(&scores, 0.05).unwrap(), f64::INFINITY);
        assert_eq!(conformal_quantile_capped(&scores, 0.05).unwrap(), 10.0);
        assert_eq!(
            conformal_quantile_with(&scores, 0.05, QuantileRule::ReferenceCapped).unwrap(),
            10.0
        );
        // n = 100, α = 0.1: k = 91; numpy's np.quantile(1..=100, 0.91, "higher") = 92.
        let scores: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(conformal_quantile(&scores, 0.1).unwrap(), 91.0);
        assert_eq!(conformal_quantile_capped(&scores, 0.1).unwrap(), 92.0);
    }

    #[test]
    fn quantile_rejects_bad_inputs() {
        for alpha in [0.0, 1.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
            match conformal_quantile(&[0.5], alpha) {
                Err(CalibrationError::InvalidAlpha { alpha: a }) => {
                    assert!(a.to_bits() == alpha.to_bits())
                }
                other => panic!("alpha {alpha}: expected InvalidAlpha, got {other:?}"),
            }
        }
        assert!(matches!(
            conformal_quantile(&[], 0.1),
            Err(CalibrationError::Empty { .. })
        ));
        assert!(matches!(
            conformal_quantile(&[0.1, f64::NAN], 0.1),
            Err(CalibrationError::NonFinite { index: 1, .. })
        ));
    }
}
