//! Learn-then-Test threshold calibration (Angelopoulos, Bates, Candès, Jordan & Lei 2021),
//! as CALM (Schuster et al. 2022) uses it to pick an early-exit threshold.
//!
//! Each candidate threshold `λ_j` comes with its losses on the same `n` i.i.d. calibration
//! rows, each in [0, 1] (CALM: the inconsistency of the early-exit output with the full
//! model's). For each candidate the null hypothesis `H0_j: E[loss_j] > δ` ("this threshold is
//! too risky") gets a p-value, and fixed-sequence testing walks the candidates from the most
//! conservative to the least, rejecting while `p_j ≤ ε`. Every rejected candidate then has
//! risk at most δ, with probability at least `1 − ε` over the calibration draw (the walk
//! controls the family-wise error at ε without a multiplicity correction because it stops at
//! the first non-rejection).

use serde::{Deserialize, Serialize};
use statrs::distribution::{Binomial, DiscreteCDF};

use crate::error::{CalibrationError, Result};

/// Relative tolerance within which the total loss `n · mean` is taken to be the nearest
/// integer before the ceiling `⌈n · mean⌉` of the Bentkus bound.
///
/// Without it, round-off adds a whole failure: 21 failures in 300 rows give a mean of
/// `21/300`, and `300 · (21/300)` is `21.000000000000004` in f64, whose ceiling is 22.
/// Snapping within `1e-9 · max(1, n · mean)` moves the bound by a negligible amount.
pub const TOTAL_LOSS_TOLERANCE: f64 = 1e-9;

/// Which p-value tests `H0: E[loss] > δ` for each candidate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PValue {
    /// [`hoeffding_bentkus_p_value`]: valid for any losses in [0, 1]. The LTT paper's and
    /// CALM's choice.
    #[default]
    HoeffdingBentkus,
    /// [`binomial_p_value`]: exact, and more powerful, but only valid for losses that are
    /// exactly 0 or 1; any other loss is an error.
    Binomial,
}

/// One candidate threshold and its losses on the calibration rows.
///
/// Every candidate of one [`learn_then_test`] call must have losses on the same rows, in
/// the same order (row `i` of every candidate is the same calibration example).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LttCandidate<'a> {
    /// The threshold this candidate stands for. It is only carried to
    /// [`LttOutcome::threshold`], so any convention works (a confidence threshold, an
    /// exit index, `+∞` for "never exit"); only NaN is rejected.
    pub threshold: f64,
    /// The candidate's loss on each calibration row, each in [0, 1].
    pub losses: &'a [f64],
}

/// The result of [`learn_then_test`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LttOutcome {
    /// The p-value of every candidate, in the candidates' order (all are computed, also
    /// those after the first non-rejection, for inspection; only the walk decides).
    pub p_values: Vec<f64>,
    /// The empirical mean loss of every candidate, in the candidates' order.
    pub mean_losses: Vec<f64>,
    /// Index (into the candidates) of the last rejected candidate of the walk: the least
    /// conservative one certified to have risk ≤ δ. `None` when the first candidate is not
    /// rejected.
    pub chosen: Option<usize>,
    /// The chosen candidate's threshold (may be `±∞`; serialised as the string `"inf"`
    /// or `"-inf"` then, since JSON has no infinity), or `None`.
    #[serde(with = "crate::serde_ext::option_f64_or_inf")]
    pub threshold: Option<f64>,
    /// The risk tolerance δ.
    pub delta: f64,
    /// The error level ε: the guarantee holds with probability at least `1 − ε`.
    pub epsilon: f64,
    /// The p-value used.
    pub p_value: PValue,
    /// The number of calibration rows `n` (losses per candidate).
    pub n_calibration: usize,
}

/// `Err(InvalidLevel)` unless `0 < value < 1`.
fn check_level(value: f64, name: &str) -> Result<()> {
    if value > 0.0 && value < 1.0 {
        Ok(())
    } else {
        Err(CalibrationError::InvalidLevel {
            name: name.into(),
            value,
        })
    }
}

/// `Err(Empty)` if `n` is 0.
fn check_n(n: usize) -> Result<()> {
    if n == 0 {
        Err(CalibrationError::Empty {
            what: "calibration set (n = 0)".into(),
        })
    } else {
        Ok(())
    }
}

/// `h1(a, b) = a·ln(a/b) + (1−a)·ln((1−a)/(1−b))`, the Bernoulli KL divergence, with
/// `0·ln 0 = 0`, for `a ∈ [0, 1]` and `b ∈ (0, 1)`; clamped at 0 (it is ≥ 0, round-off
/// aside).
fn h1(a: f64, b: f64) -> f64 {
    let first = if a == 0.0 { 0.0 } else { a * (a / b).ln() };
    let second = if a == 1.0 {
        0.0
    } else {
        (1.0 - a) * ((-a).ln_1p() - (-b).ln_1p())
    };
    (first + second).max(0.0)
}

/// `P(Binomial(n, δ) ≤ k)` by statrs's regularised incomplete beta function, in [0, 1].
fn binomial_cdf(k: u64, n: usize, delta: f64) -> Result<f64> {
    let binomial =
        Binomial::new(delta, n as u64).map_err(|e| CalibrationError::InvalidParameter {
            name: "risk tolerance delta".into(),
            value: delta.to_string(),
            reason: format!("no Binomial(n = {n}, p = {delta}): {e}"),
        })?;
    Ok(binomial.cdf(k).clamp(0.0, 1.0))
}

/// `⌈total⌉`, with `total` snapped to the nearest integer within
/// [`TOTAL_LOSS_TOLERANCE`] first.
fn ceil_count(total: f64) -> u64 {
    let nearest = total.round();
    if (total - nearest).abs() <= TOTAL_LOSS_TOLERANCE * total.max(1.0) {
        nearest as u64
    } else {
        total.ceil() as u64
    }
}

/// The Hoeffding–Bentkus p-value from a checked mean and total loss (`total = n · mean`).
fn hb_p_value(mean: f64, total: f64, n: usize, delta: f64) -> Result<f64> {
    let hoeffding = (-(n as f64) * h1(mean.min(delta), delta)).exp();
    let bentkus = std::f64::consts::E * binomial_cdf(ceil_count(total), n, delta)?;
    Ok(hoeffding.min(bentkus))
}

/// The Hoeffding–Bentkus p-value of `H0: E[loss] > δ` (Bates et al. 2021, "Distribution-free,
/// risk-controlling prediction sets", Prop. 5; used by Learn-then-Test and CALM), for `n`
/// i.i.d. losses in [0, 1] with empirical mean `mean_loss`:
///
/// ```text
/// p = min( exp(−n · h1(min(mean, δ), δ)),  e · P(Binomial(n, δ) ≤ ⌈n · mean⌉) )
/// h1(a, b) = a·ln(a/b) + (1−a)·ln((1−a)/(1−b))          (0·ln 0 = 0)
/// ```
///
/// The first term is Hoeffding's bound, the second Bentkus's; the p-value is at most 1, and
/// exactly 1 at `mean ≥ δ` (the Hoeffding term is 1 and the Bentkus term at least `e/2`,
/// since a binomial's median is `⌊nδ⌋` or `⌈nδ⌉`). `n · mean` is snapped to the nearest
/// integer within [`TOTAL_LOSS_TOLERANCE`] before the ceiling. The binomial tail comes from
/// statrs (relative accuracy about 1e-10 for `n ≤ 1e5`).
///
/// The p-value is non-increasing as the mean decreases. As `n` grows at a fixed mean below δ
/// the Hoeffding term decreases, but the Bentkus term can jump up where `⌈n · mean⌉` steps,
/// so the p-value is not monotone in `n` at every `n`.
///
/// # Errors
///
/// [`CalibrationError::InvalidLevel`] unless `0 < δ < 1`; [`CalibrationError::Empty`] for
/// `n = 0`; [`CalibrationError::NonFinite`] for a mean that is NaN or outside [0, 1].
pub fn hoeffding_bentkus_p_value(mean_loss: f64, n: usize, delta: f64) -> Result<f64> {
    check_level(delta, "risk tolerance delta")?;
    check_n(n)?;
    if !(0.0..=1.0).contains(&mean_loss) {
        return Err(CalibrationError::NonFinite {
            what: "mean loss".into(),
            index: 0,
            value: mean_loss,
        });
    }
    hb_p_value(mean_loss, n as f64 * mean_loss, n, delta)
}

/// The exact binomial p-value of `H0: E[loss] > δ` for `n` i.i.d. 0/1 losses of which
/// `failures` are 1: `P(Binomial(n, δ) ≤ failures)` (the binomial tail from statrs).
///
/// Under the null the number of failures is stochastically at least `Binomial(n, δ)`, so
/// `P(p ≤ ε) ≤ ε` exactly (conservatively, as the distribution is discrete).
///
/// # Errors
///
/// [`CalibrationError::InvalidLevel`] unless `0 < δ < 1`; [`CalibrationError::Empty`] for
/// `n = 0`; [`CalibrationError::InvalidParameter`] for `failures > n`.
pub fn binomial_p_value(failures: usize, n: usize, delta: f64) -> Result<f64> {
    check_level(delta, "risk tolerance delta")?;
    check_n(n)?;
    if failures > n {
        return Err(CalibrationError::InvalidParameter {
            name: "failures".into(),
            value: failures.to_string(),
            reason: format!("more failures than the {n} calibration rows"),
        });
    }
    binomial_cdf(failures as u64, n, delta)
}

/// Checks one candidate's losses and returns their sum (for [`PValue::Binomial`], the
/// number of failures, exactly).
fn checked_total(candidate: usize, losses: &[f64], p_value: PValue) -> Result<f64> {
    let mut total = 0.0;
    for (row, &loss) in losses.iter().enumerate() {
        if !(0.0..=1.0).contains(&loss) {
            return Err(CalibrationError::NonFinite {
                what: format!("loss of candidate {candidate}, row {row}"),
                index: row,
                value: loss,
            });
        }
        if p_value == PValue::Binomial && loss != 0.0 && loss != 1.0 {
            return Err(CalibrationError::NonBinaryLoss {
                candidate,
                row,
                value: loss,
            });
        }
        total += loss;
    }
    Ok(total)
}

/// Learn-then-Test with fixed-sequence testing: picks the least conservative threshold whose
/// risk `E[loss]` is certified to be at most `delta`, with probability at least
/// `1 − epsilon` over the calibration draw.
///
/// `candidates` must be ordered from the most conservative (e.g. never exit early: loss 0)
/// to the least, and the order must be fixed before the calibration losses are seen. The
/// walk rejects `H0_j: E[loss_j] > δ` while `p_j ≤ ε` and stops at the first candidate that
/// is not rejected, even if a later one would be; the choice is the last rejected candidate,
/// or `None` if the first is not rejected. The calibration rows must be i.i.d. and
/// independent of the data the threshold is used on.
///
/// With `n` calibration rows even a candidate with zero losses has p-value `(1 − δ)^n`
/// (both p-values), so nothing can be chosen unless `n ≥ ln ε / ln(1 − δ)` (22 rows for
/// δ = ε = 0.1).
///
/// # Errors
///
/// [`CalibrationError::InvalidLevel`] unless `0 < δ < 1` and `0 < ε < 1`;
/// [`CalibrationError::Empty`] for no candidates or a candidate without losses;
/// [`CalibrationError::ShapeMismatch`] for a candidate with a different number of losses
/// than the first; [`CalibrationError::NonFinite`] for a NaN threshold, or a loss that is
/// NaN or outside [0, 1] (naming the candidate and the row);
/// [`CalibrationError::NonBinaryLoss`] for a loss other than 0 or 1 with
/// [`PValue::Binomial`].
pub fn learn_then_test(
    candidates: &[LttCandidate<'_>],
    delta: f64,
    epsilon: f64,
    p_value: PValue,
) -> Result<LttOutcome> {
    check_level(delta, "risk tolerance delta")?;
    check_level(epsilon, "error level epsilon")?;
    let Some(first) = candidates.first() else {
        return Err(CalibrationError::Empty {
            what: "candidate list".into(),
        });
    };
    let n = first.losses.len();
    let mut p_values = Vec::with_capacity(candidates.len());
    let mut mean_losses = Vec::with_capacity(candidates.len());
    for (j, candidate) in candidates.iter().enumerate() {
        if candidate.threshold.is_nan() {
            return Err(CalibrationError::NonFinite {
                what: format!("threshold of candidate {j}"),
                index: j,
                value: candidate.threshold,
            });
        }
        if candidate.losses.is_empty() {
            return Err(CalibrationError::Empty {
                what: format!("loss list of candidate {j}"),
            });
        }
        if candidate.losses.len() != n {
            return Err(CalibrationError::ShapeMismatch {
                what: format!("losses of candidate {j}"),
                expected: n,
                actual: candidate.losses.len(),
            });
        }
        let total = checked_total(j, candidate.losses, p_value)?;
        let mean = total / n as f64;
        let p = match p_value {
            PValue::HoeffdingBentkus => hb_p_value(mean, total, n, delta)?,
            // The total of 0/1 losses is an exact integer (n < 2^53).
            PValue::Binomial => binomial_cdf(total as u64, n, delta)?,
        };
        p_values.push(p);
        mean_losses.push(mean);
    }
    let rejected = p_values.iter().take_while(|&&p| p <= epsilon).count();
    let chosen = rejected.checked_sub(1);
    Ok(LttOutcome {
        p_values,
        mean_losses,
        chosen,
        threshold: chosen.map(|j| candidates[j].threshold),
        delta,
        epsilon,
        p_value,
        n_calibration: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `P(Binomial(n, p) ≤ k)` by summing the pmf, each term built in log space by the
    /// ratio recursion `pmf(i+1)/pmf(i) = (n−i)/(i+1) · p/(1−p)` (no statrs).
    fn cdf_by_summation(k: usize, n: usize, p: f64) -> f64 {
        let mut log_pmf = n as f64 * (-p).ln_1p();
        let log_odds = p.ln() - (-p).ln_1p();
        let mut sum = log_pmf.exp();
        for i in 0..k.min(n) {
            log_pmf += ((n - i) as f64 / (i + 1) as f64).ln() + log_odds;
            sum += log_pmf.exp();
        }
        sum
    }

    fn close(actual: f64, expected: f64, rel: f64) -> bool {
        (actual - expected).abs() <= rel * expected.abs()
    }

    #[test]
    fn h1_matches_hand_values() {
        // Reference values from mpmath at 40 digits.
        let cases = [
            (0.05, 0.1, 0.016_706_501_178_764_714),
            (0.0, 0.1, 0.105_360_515_657_826_3), // −ln(0.9)
            (0.3, 0.5, 0.082_282_878_505_051_85),
        ];
        for (a, b, expected) in cases {
            assert!(
                close(h1(a, b), expected, 1e-13),
                "h1({a}, {b}) = {}",
                h1(a, b)
            );
        }
        assert_eq!(h1(0.1, 0.1), 0.0);
        // h1(1, b) = ln(1/b).
        assert!(close(h1(1.0, 0.25), 4f64.ln(), 1e-15));
    }

    #[test]
    fn hoeffding_bentkus_matches_hand_values() {
        // (mean, n, δ, p) from mpmath at 40 digits, Bentkus's term by exact summation.
        let cases = [
            // Bentkus smaller (Hoeffding 0.18812472262917958).
            (0.05, 100, 0.1, 0.156_510_204_276_953_15),
            // Bentkus smaller (Hoeffding 2.0924329367242556e-7).
            (0.02, 300, 0.1, 1.120_892_061_844_024e-7),
            // Mean 0: Hoeffding (1 − δ)^n is smaller than Bentkus's e·(1 − δ)^n.
            (0.0, 50, 0.2, 1.427_247_692_705_959_9e-5),
            (0.25, 40, 0.5, 3.019_241_529_447_296e-3),
            (0.15, 20, 0.3, 0.291_092_114_750_238_2),
            // 21/300: 300·mean rounds to 21.000000000000004; the snapped count is 21
            // (with 22 Bentkus's term would be 0.19011619188713682).
            (21.0 / 300.0, 300, 0.1, 0.124_513_940_363_971_29),
        ];
        for (mean, n, delta, expected) in cases {
            let p = hoeffding_bentkus_p_value(mean, n, delta).unwrap();
            assert!(close(p, expected, 1e-9), "HB({mean}, {n}, {delta}) = {p}");
        }
        // At mean = δ the Hoeffding term is 1 and Bentkus's e·0.548… > 1.
        assert_eq!(hoeffding_bentkus_p_value(0.1, 300, 0.1).unwrap(), 1.0);
        assert!((0.0..=1.0).contains(&hoeffding_bentkus_p_value(0.5, 10, 0.1).unwrap()));
    }

    #[test]
    fn binomial_p_value_equals_pmf_summation() {
        for (n, delta) in [
            (1usize, 0.5),
            (20, 0.3),
            (300, 0.1),
            (1000, 0.05),
            (5000, 0.2),
        ] {
            for k in [0, 1, n / 20, n / 10, n / 5, n / 2, n.saturating_sub(1), n] {
                let p = binomial_p_value(k, n, delta).unwrap();
                let expected = cdf_by_summation(k, n, delta).min(1.0);
                assert!(
                    close(p, expected, 1e-9),
                    "n {n}, k {k}, δ {delta}: {p} vs {expected}"
                );
            }
        }
        // A hand value: P(Bin(20, 0.3) ≤ 3), mpmath.
        assert!(close(
            binomial_p_value(3, 20, 0.3).unwrap(),
            0.107_086_804_503_731,
            1e-12
        ));
        assert_eq!(binomial_p_value(7, 7, 0.4).unwrap(), 1.0);
    }

    #[test]
    fn p_values_shrink_with_lower_mean_and_more_data() {
        let n = 300;
        let delta = 0.1;
        // Mean decreasing from above δ to 0 (as counts, so both p-values see the same data).
        let mut previous = (f64::INFINITY, f64::INFINITY);
        for k in (0..=60).rev() {
            let hb = hoeffding_bentkus_p_value(k as f64 / n as f64, n, delta).unwrap();
            let bin = binomial_p_value(k, n, delta).unwrap();
            assert!(hb <= previous.0 && bin <= previous.1, "k {k}: {hb}, {bin}");
            // The exact test is never less powerful than HB on 0/1 losses.
            // (At k = 0 both are (1 − δ)^n, computed two ways: allow round-off.)
            assert!(bin <= hb * (1.0 + 1e-12), "k {k}: binomial {bin} > HB {hb}");
            previous = (hb, bin);
        }
        // Growing n at a fixed mean 0.05 < δ (n·mean an integer, so no ceiling step).
        let mut previous = (f64::INFINITY, f64::INFINITY);
        for n in (20..=2000).step_by(20) {
            let hb = hoeffding_bentkus_p_value(0.05, n, delta).unwrap();
            let bin = binomial_p_value(n / 20, n, delta).unwrap();
            assert!(hb <= previous.0 && bin <= previous.1, "n {n}: {hb}, {bin}");
            previous = (hb, bin);
        }
        assert!(previous.0 < 1e-10 && previous.1 < 1e-10, "{previous:?}");
    }

    #[test]
    fn extreme_means() {
        // Zero mean, large n: (1 − δ)^n.
        let p = hoeffding_bentkus_p_value(0.0, 1000, 0.1).unwrap();
        assert!(close(p, 0.9f64.powi(1000), 1e-9) && p < 1e-40, "{p}");
        assert!(close(
            binomial_p_value(0, 1000, 0.1).unwrap(),
            0.9f64.powi(1000),
            1e-9
        ));
        // Mean at or above δ: the Hoeffding term is 1, and Bentkus's is e·P(Bin ≤ ⌈n·mean⌉)
        // ≥ e/2 > 1 (a binomial's median is ⌊nδ⌋ or ⌈nδ⌉), so p = 1 exactly.
        for n in [10, 100, 1000, 10_000] {
            for mean in [0.1, 0.2, 0.5, 1.0] {
                let p = hoeffding_bentkus_p_value(mean, n, 0.1).unwrap();
                assert_eq!(p, 1.0, "n {n}, mean {mean}");
            }
        }
        // The binomial p-value at failures = nδ is about one half, far above any usual ε.
        let p = binomial_p_value(100, 1000, 0.1).unwrap();
        assert!(p > 0.5 && p < 0.6, "{p}");
    }

    fn candidates<'a>(losses: &'a [Vec<f64>]) -> Vec<LttCandidate<'a>> {
        losses
            .iter()
            .enumerate()
            .map(|(j, l)| LttCandidate {
                threshold: 1.0 - 0.1 * j as f64,
                losses: l,
            })
            .collect()
    }

    /// `n` 0/1 losses of which the first `failures` are 1.
    fn ones(failures: usize, n: usize) -> Vec<f64> {
        (0..n).map(|i| f64::from(u8::from(i < failures))).collect()
    }

    #[test]
    fn fixed_sequence_stops_at_the_first_non_rejection() {
        let n = 300;
        // p-values (binomial, δ = 0.1): ~2e-14, ~1e-7, 0.55 (not rejected), ~2e-14.
        let losses = vec![ones(0, n), ones(6, n), ones(30, n), ones(0, n)];
        let cands = candidates(&losses);
        for p_value in [PValue::HoeffdingBentkus, PValue::Binomial] {
            let out = learn_then_test(&cands, 0.1, 0.1, p_value).unwrap();
            assert_eq!(out.chosen, Some(1), "{p_value:?}: {out:?}");
            assert_eq!(out.threshold, Some(0.9));
            assert!(out.p_values[3] <= 0.1, "candidate 3 would be rejected");
            assert!(out.p_values[2] > 0.1);
            assert_eq!(out.mean_losses, vec![0.0, 0.02, 0.1, 0.0]);
            assert_eq!(out.p_values.len(), 4);
            assert_eq!(out.n_calibration, n);
            assert_eq!((out.delta, out.epsilon, out.p_value), (0.1, 0.1, p_value));
        }
        // The same p-values as the free functions.
        let out = learn_then_test(&cands, 0.1, 0.1, PValue::HoeffdingBentkus).unwrap();
        assert_eq!(
            out.p_values[1],
            hoeffding_bentkus_p_value(0.02, n, 0.1).unwrap()
        );
        let out = learn_then_test(&cands, 0.1, 0.1, PValue::Binomial).unwrap();
        assert_eq!(out.p_values[1], binomial_p_value(6, n, 0.1).unwrap());

        // The first candidate not rejected: nothing is chosen.
        let losses = vec![ones(40, n), ones(0, n)];
        let out = learn_then_test(&candidates(&losses), 0.1, 0.1, PValue::Binomial).unwrap();
        assert_eq!((out.chosen, out.threshold), (None, None));
        // All rejected: the last one.
        let losses = vec![ones(0, n), ones(3, n), ones(6, n)];
        let out = learn_then_test(&candidates(&losses), 0.1, 0.1, PValue::Binomial).unwrap();
        assert_eq!(out.chosen, Some(2));
        // p = ε exactly is a rejection, and the next float below is not.
        let losses = vec![ones(0, 2)];
        let p = binomial_p_value(0, 2, 0.5).unwrap();
        assert!(close(p, 0.25, 1e-12), "{p}");
        let out = learn_then_test(&candidates(&losses), 0.5, p, PValue::Binomial).unwrap();
        assert_eq!(out.chosen, Some(0));
        let below = f64::from_bits(p.to_bits() - 1);
        let out = learn_then_test(&candidates(&losses), 0.5, below, PValue::Binomial).unwrap();
        assert_eq!(out.chosen, None);
    }

    #[test]
    fn too_few_rows_certify_nothing() {
        // (1 − δ)^n ≤ ε needs n ≥ ln 0.1 / ln 0.9 ≈ 21.85, i.e. 22 rows.
        for p_value in [PValue::HoeffdingBentkus, PValue::Binomial] {
            for (n, expected) in [(21, None), (22, Some(0))] {
                let losses = vec![ones(0, n)];
                let out = learn_then_test(&candidates(&losses), 0.1, 0.1, p_value).unwrap();
                assert_eq!(out.chosen, expected, "{p_value:?}, n {n}: {out:?}");
            }
        }
    }

    #[test]
    fn hoeffding_bentkus_takes_fractional_losses() {
        // Losses 0.04 everywhere: mean 0.04, n = 200.
        let losses = vec![vec![0.0; 200], vec![0.04; 200]];
        let out =
            learn_then_test(&candidates(&losses), 0.1, 0.05, PValue::HoeffdingBentkus).unwrap();
        let expected = hoeffding_bentkus_p_value(0.04, 200, 0.1).unwrap();
        assert!(close(out.p_values[1], expected, 1e-12));
        assert!((out.mean_losses[1] - 0.04).abs() < 1e-15);
        assert_eq!(out.chosen, Some(1), "{out:?}");
    }

    #[test]
    fn outcome_round_trips_through_json() {
        let losses = vec![ones(0, 50), ones(20, 50)];
        let mut cands = candidates(&losses);
        cands[0].threshold = f64::INFINITY;
        let out = learn_then_test(&cands, 0.2, 0.1, PValue::Binomial).unwrap();
        assert_eq!(out.chosen, Some(0));
        let json = serde_json::to_string(&out).unwrap();
        assert!(json.contains(r#""threshold":"inf""#), "{json}");
        assert!(json.contains(r#""p_value":"binomial""#), "{json}");
        assert_eq!(serde_json::from_str::<LttOutcome>(&json).unwrap(), out);
        let none = LttOutcome {
            chosen: None,
            threshold: None,
            ..out
        };
        let json = serde_json::to_string(&none).unwrap();
        assert!(json.contains(r#""threshold":null"#), "{json}");
        assert_eq!(serde_json::from_str::<LttOutcome>(&json).unwrap(), none);
    }

    #[test]
    fn p_value_functions_reject_bad_inputs() {
        for delta in [0.0, 1.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
            for result in [
                hoeffding_bentkus_p_value(0.1, 10, delta),
                binomial_p_value(1, 10, delta),
            ] {
                match result {
                    Err(CalibrationError::InvalidLevel { name, value }) => {
                        assert_eq!(name, "risk tolerance delta");
                        assert_eq!(value.to_bits(), delta.to_bits());
                    }
                    other => panic!("δ {delta}: expected InvalidLevel, got {other:?}"),
                }
            }
        }
        assert!(matches!(
            hoeffding_bentkus_p_value(0.1, 0, 0.1),
            Err(CalibrationError::Empty { .. })
        ));
        assert!(matches!(
            binomial_p_value(0, 0, 0.1),
            Err(CalibrationError::Empty { .. })
        ));
        for mean in [-0.01, 1.01, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                hoeffding_bentkus_p_value(mean, 10, 0.1),
                Err(CalibrationError::NonFinite { .. })
            ));
        }
        assert!(matches!(
            binomial_p_value(11, 10, 0.1),
            Err(CalibrationError::InvalidParameter { .. })
        ));
    }

    #[test]
    fn learn_then_test_rejects_bad_inputs() {
        let good = [0.0, 1.0, 0.0];
        fn cand(losses: &[f64]) -> LttCandidate<'_> {
            LttCandidate {
                threshold: 0.5,
                losses,
            }
        }
        let hb = PValue::HoeffdingBentkus;
        for level in [0.0, 1.0, -0.5, f64::NAN] {
            match learn_then_test(&[cand(&good)], 0.1, level, hb) {
                Err(CalibrationError::InvalidLevel { name, .. }) => {
                    assert_eq!(name, "error level epsilon")
                }
                other => panic!("ε {level}: {other:?}"),
            }
            match learn_then_test(&[cand(&good)], level, 0.1, hb) {
                Err(CalibrationError::InvalidLevel { name, .. }) => {
                    assert_eq!(name, "risk tolerance delta")
                }
                other => panic!("δ {level}: {other:?}"),
            }
        }
        assert_eq!(
            learn_then_test(&[], 0.1, 0.1, hb).unwrap_err(),
            CalibrationError::Empty {
                what: "candidate list".into()
            }
        );
        assert_eq!(
            learn_then_test(&[cand(&good), cand(&[])], 0.1, 0.1, hb).unwrap_err(),
            CalibrationError::Empty {
                what: "loss list of candidate 1".into()
            }
        );
        assert_eq!(
            learn_then_test(&[cand(&[]), cand(&good)], 0.1, 0.1, hb).unwrap_err(),
            CalibrationError::Empty {
                what: "loss list of candidate 0".into()
            }
        );
        assert_eq!(
            learn_then_test(&[cand(&good), cand(&good), cand(&[0.0, 0.0])], 0.1, 0.1, hb)
                .unwrap_err(),
            CalibrationError::ShapeMismatch {
                what: "losses of candidate 2".into(),
                expected: 3,
                actual: 2
            }
        );
        for bad in [f64::NAN, -0.1, 1.5, f64::INFINITY] {
            let losses = [0.0, 0.0, 0.0, bad];
            let e = learn_then_test(&[cand(&[0.0; 4]), cand(&losses)], 0.1, 0.1, hb).unwrap_err();
            match &e {
                CalibrationError::NonFinite { what, index, value } => {
                    assert_eq!(what, "loss of candidate 1, row 3");
                    assert_eq!(*index, 3);
                    assert_eq!(value.to_bits(), bad.to_bits());
                }
                other => panic!("loss {bad}: {other:?}"),
            }
            assert!(
                e.to_string().starts_with("loss of candidate 1, row 3 is "),
                "{e}"
            );
        }
        let nan_threshold = LttCandidate {
            threshold: f64::NAN,
            losses: &good,
        };
        assert!(matches!(
            learn_then_test(&[cand(&good), nan_threshold], 0.1, 0.1, hb),
            Err(CalibrationError::NonFinite { index: 1, .. })
        ));
        // Fractional losses: fine for HB, an error for the binomial p-value.
        let fractional = [0.0, 1.0, 0.5];
        assert!(learn_then_test(&[cand(&good), cand(&fractional)], 0.1, 0.1, hb).is_ok());
        assert_eq!(
            learn_then_test(
                &[cand(&good), cand(&fractional)],
                0.1,
                0.1,
                PValue::Binomial
            )
            .unwrap_err(),
            CalibrationError::NonBinaryLoss {
                candidate: 1,
                row: 2,
                value: 0.5
            }
        );
    }
}
