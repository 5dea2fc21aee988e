//! Calibration metrics: expected and maximum calibration error with reliability-diagram
//! data, the Brier score and the negative log-likelihood.

use serde::{Deserialize, Serialize};

use crate::error::{CalibrationError, Result};
use crate::predictions::{PROB_TOLERANCE, Predictions, check_len};

/// How [`calibration_error`] groups the confidences into bins. The count must be ≥ 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Binning {
    /// `B` equal-width bins `[i/B, (i+1)/B)`, the last one closed (confidence 1 goes in it).
    Uniform(usize),
    /// `B` equal-mass bins of the sorted confidences (JEI-DNN uses 15): bin `b` holds the
    /// sorted positions `⌊b·n/B⌋ .. ⌊(b+1)·n/B⌋`, so bin sizes differ by at most one.
    /// Equal confidences are ordered by their index in the input, so a run of ties that
    /// straddles a bin edge is split between the two bins.
    Quantile(usize),
}

impl Binning {
    /// The number of bins.
    pub fn n_bins(&self) -> usize {
        match *self {
            Binning::Uniform(b) | Binning::Quantile(b) => b,
        }
    }
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Lower edge: `i/B` for uniform bins, the smallest confidence in the bin for quantile bins.
    pub lower: f64,
    /// Upper edge: `(i+1)/B` for uniform bins, the largest confidence in the bin for quantile bins.
    pub upper: f64,
    /// Number of samples in the bin (always > 0: empty bins are not reported).
    pub count: usize,
    /// Mean confidence of the bin's samples.
    pub mean_confidence: f64,
    /// Fraction of the bin's samples that are correct.
    pub accuracy: f64,
}

/// Expected and maximum calibration error with the reliability-diagram data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationReport {
    /// The binning used.
    pub binning: Binning,
    /// Expected calibration error, `Σ_b |acc_b − conf_b|·n_b/n`, as a fraction (JEI-DNN
    /// reports it ×100).
    pub ece: f64,
    /// Maximum calibration error, `max_b |acc_b − conf_b|` over the non-empty bins.
    pub mce: f64,
    /// The non-empty bins in ascending order of confidence (empty bins are left out, so
    /// there may be fewer than the number of bins asked for).
    pub bins: Vec<ReliabilityBin>,
}

/// Per-bin sums.
#[derive(Clone, Copy, Default)]
struct BinSums {
    count: usize,
    confidence: f64,
    correct: usize,
    lower: f64,
    upper: f64,
}

/// Expected calibration error (ECE), maximum calibration error (MCE) and the reliability
/// diagram of confidences against correctness, over the **whole** set.
///
/// `ECE = Σ_b |acc_b − conf_b| · n_b / n` and `MCE = max_b |acc_b − conf_b|` over the
/// non-empty bins (Guo et al. 2017, eqs. 3 and 5). JEI-DNN (ICLR 2024, arXiv:2310.09163)
/// uses 15 quantile bins on `p_max`, but its code computes ECE per batch and averages it
/// weighted by batch size, which depends on the batch size; this is the dataset-level ECE.
///
/// Confidences may lie up to [`PROB_TOLERANCE`] outside [0, 1] (f32 round-off) and are
/// clamped into it. Cost: O(n) for uniform bins, one O(n log n) sort for quantile bins.
///
/// # Shapes
///
/// `confidences`: `[n]` (typically `p_max`, see [`Predictions::top_label`]); `correct`: `[n]`.
///
/// # Errors
///
/// * [`CalibrationError::InvalidParameter`] for zero bins (or more than `u32::MAX`
///   samples with quantile bins);
/// * [`CalibrationError::ShapeMismatch`] if the lengths differ;
/// * [`CalibrationError::Empty`] for no samples;
/// * [`CalibrationError::NonFinite`] for a NaN, infinite or out-of-[0, 1] confidence.
pub fn calibration_error(
    confidences: &[f32],
    correct: &[bool],
    binning: Binning,
) -> Result<CalibrationReport> {
    let n_bins = binning.n_bins();
    if n_bins == 0 {
        return Err(CalibrationError::InvalidParameter {
            name: "number of bins".into(),
            value: "0".into(),
            reason: "at least one bin is needed".into(),
        });
    }
    check_len("correctness flags", confidences.len(), correct.len())?;
    let n = confidences.len();
    if n == 0 {
        return Err(CalibrationError::Empty {
            what: "confidences".into(),
        });
    }
    if let Some(index) = confidences
        .iter()
        .position(|c| !(-PROB_TOLERANCE..=1.0 + PROB_TOLERANCE).contains(c))
    {
        return Err(CalibrationError::NonFinite {
            what: format!("confidence at index {index}"),
            index,
            value: f64::from(confidences[index]),
        });
    }
    // `+ 0.0` turns a clamped −0.0 into +0.0, so that bit patterns sort like values.
    let clamp = |c: f32| c.clamp(0.0, 1.0) + 0.0;

    let mut sums = vec![BinSums::default(); n_bins];
    match binning {
        Binning::Uniform(_) => {
            for (b, s) in sums.iter_mut().enumerate() {
                s.lower = b as f64 / n_bins as f64;
                s.upper = (b + 1) as f64 / n_bins as f64;
            }
            for (&c, &ok) in confidences.iter().zip(correct) {
                let c = f64::from(clamp(c));
                // Bin i is [i/B, (i+1)/B); c = 1 falls into the last bin.
                let b = ((c * n_bins as f64) as usize).min(n_bins - 1);
                let s = &mut sums[b];
                s.count += 1;
                s.confidence += c;
                s.correct += usize::from(ok);
            }
        }
        Binning::Quantile(_) => {
            if u32::try_from(n).is_err() {
                return Err(CalibrationError::InvalidParameter {
                    name: "number of samples".into(),
                    value: n.to_string(),
                    reason: "quantile binning supports at most u32::MAX samples".into(),
                });
            }
            // Non-negative f32 bit patterns order like the values, so one u64 key
            // (confidence bits, index) sorts by confidence with ties in input order.
            let mut keys: Vec<u64> = confidences
                .iter()
                .enumerate()
                .map(|(i, &c)| (u64::from(clamp(c).to_bits()) << 32) | i as u64)
                .collect();
            keys.sort_unstable();
            for (b, s) in sums.iter_mut().enumerate() {
                let start = (b as u128 * n as u128 / n_bins as u128) as usize;
                let end = ((b + 1) as u128 * n as u128 / n_bins as u128) as usize;
                for &key in &keys[start..end] {
                    let c = f64::from(f32::from_bits((key >> 32) as u32));
                    let i = (key & u64::from(u32::MAX)) as usize;
                    if s.count == 0 {
                        s.lower = c;
                    }
                    s.upper = c;
                    s.count += 1;
                    s.confidence += c;
                    s.correct += usize::from(correct[i]);
                }
            }
        }
    }

    let mut ece = 0.0;
    let mut mce = 0.0f64;
    let mut bins = Vec::with_capacity(n_bins);
    for s in sums.iter().filter(|s| s.count > 0) {
        let mean_confidence = s.confidence / s.count as f64;
        let accuracy = s.correct as f64 / s.count as f64;
        let gap = (accuracy - mean_confidence).abs();
        ece += gap * s.count as f64 / n as f64;
        mce = mce.max(gap);
        bins.push(ReliabilityBin {
            lower: s.lower,
            upper: s.upper,
            count: s.count,
            mean_confidence,
            accuracy,
        });
    }
    Ok(CalibrationReport {
        binning,
        ece,
        mce,
        bins,
    })
}

/// Top-label calibration of predictions: [`calibration_error`] of `p_max` against whether
/// the arg-max is the label.
///
/// # Errors
///
/// As [`calibration_error`]; [`CalibrationError::Empty`] for no rows.
pub fn top_label_calibration_error(
    preds: &Predictions,
    binning: Binning,
) -> Result<CalibrationReport> {
    let (confidences, correct) = preds.top_label();
    calibration_error(&confidences, &correct, binning)
}

/// `Err(Empty)` if `preds` has no rows.
fn non_empty(preds: &Predictions) -> Result<()> {
    if preds.is_empty() {
        Err(CalibrationError::Empty {
            what: "predictions".into(),
        })
    } else {
        Ok(())
    }
}

/// Multi-class Brier score, `(1/n) Σ_i Σ_k (p_ik − 1[k = y_i])²` (Brier 1950), in [0, 2].
///
/// # Errors
///
/// [`CalibrationError::Empty`] for no rows.
pub fn brier_score(preds: &Predictions) -> Result<f64> {
    non_empty(preds)?;
    let mut total = 0.0f64;
    for (row, label) in preds.rows() {
        let mut sum = 0.0f64;
        for (k, &p) in row.iter().enumerate() {
            let d = f64::from(p) - if k == label { 1.0 } else { 0.0 };
            sum += d * d;
        }
        total += sum;
    }
    Ok(total / preds.len() as f64)
}

/// The floor on `p_y` in [`negative_log_likelihood`], so that a zero probability costs
/// `−ln 1e-12 ≈ 27.6` instead of infinity.
pub const NLL_FLOOR: f64 = 1e-12;

/// Mean negative log-likelihood, `(1/n) Σ_i −ln max(p_{i,y_i}, 1e-12)` (see [`NLL_FLOOR`]).
///
/// # Errors
///
/// [`CalibrationError::Empty`] for no rows.
pub fn negative_log_likelihood(preds: &Predictions) -> Result<f64> {
    non_empty(preds)?;
    let total: f64 = preds
        .rows()
        .map(|(row, label)| -f64::from(row[label]).max(NLL_FLOOR).ln())
        .sum();
    Ok(total / preds.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-built case, deliberately out of order (sorted: 0.3 F, 0.4 T, 0.6 T,
    /// 0.6 T, 0.7 F, 0.8 F, 0.9 T, 1.0 T).
    const CONF: [f32; 8] = [0.9, 0.3, 0.6, 1.0, 0.7, 0.4, 0.8, 0.6];
    const CORRECT: [bool; 8] = [true, false, true, true, false, true, false, true];
    /// The inputs are f32 literals (relative error ≤ 6e-8) averaged in f64.
    const TOL: f64 = 1e-6;

    #[test]
    fn uniform_bins_match_hand_computed_ece_and_mce() {
        // Four bins [0, .25), [.25, .5), [.5, .75), [.75, 1]:
        //   bin 1: {0.3 F, 0.4 T}: conf 0.35, acc 1/2, gap 0.15;
        //   bin 2: {0.6 T, 0.6 T, 0.7 F}: conf 19/30, acc 2/3, gap 1/30;
        //   bin 3: {0.8 F, 0.9 T, 1.0 T} (1.0 in the closed last bin): conf 0.9, acc 2/3, gap 7/30.
        // ECE = (2·0.15 + 3/30 + 3·7/30)/8 = 1.1/8 = 0.1375; MCE = 7/30.
        let r = calibration_error(&CONF, &CORRECT, Binning::Uniform(4)).unwrap();
        assert!((r.ece - 0.1375).abs() < TOL, "ece {}", r.ece);
        assert!((r.mce - 7.0 / 30.0).abs() < TOL, "mce {}", r.mce);
        assert_eq!(r.bins.len(), 3, "the empty bin [0, .25) is left out");
        assert_eq!(
            r.bins.iter().map(|b| b.count).collect::<Vec<_>>(),
            vec![2, 3, 3]
        );
        assert!((r.bins[0].lower - 0.25).abs() < TOL && (r.bins[0].upper - 0.5).abs() < TOL);
        assert!((r.bins[2].mean_confidence - 0.9).abs() < TOL);
        assert!((r.bins[2].accuracy - 2.0 / 3.0).abs() < TOL);
    }

    #[test]
    fn quantile_bins_match_hand_computed_ece_and_mce() {
        // Two equal-mass bins of 4:
        //   {0.3 F, 0.4 T, 0.6 T, 0.6 T}: conf 0.475, acc 0.75, gap 0.275;
        //   {0.7 F, 0.8 F, 0.9 T, 1.0 T}: conf 0.85, acc 0.5, gap 0.35.
        // ECE = (4·0.275 + 4·0.35)/8 = 0.3125; MCE = 0.35.
        let r = calibration_error(&CONF, &CORRECT, Binning::Quantile(2)).unwrap();
        assert!((r.ece - 0.3125).abs() < TOL, "ece {}", r.ece);
        assert!((r.mce - 0.35).abs() < TOL, "mce {}", r.mce);
        assert!((r.bins[0].lower - 0.3).abs() < TOL && (r.bins[0].upper - 0.6).abs() < TOL);
        assert!((r.bins[1].lower - 0.7).abs() < TOL && (r.bins[1].upper - 1.0).abs() < TOL);
        // Three bins of positions [0, 2), [2, 5), [5, 8) give the uniform case's groups.
        let r = calibration_error(&CONF, &CORRECT, Binning::Quantile(3)).unwrap();
        assert_eq!(
            r.bins.iter().map(|b| b.count).collect::<Vec<_>>(),
            vec![2, 3, 3]
        );
        assert!((r.ece - 0.1375).abs() < TOL, "ece {}", r.ece);
        assert!((r.mce - 7.0 / 30.0).abs() < TOL, "mce {}", r.mce);
    }

    #[test]
    fn quantile_bins_split_ties_in_input_order() {
        // Four ties at 0.5, two bins: input order puts {T, T} in the first bin and {F, F} in
        // the second, so each bin is off by exactly 0.5.
        let r = calibration_error(&[0.5; 4], &[true, true, false, false], Binning::Quantile(2))
            .unwrap();
        assert_eq!(r.bins.len(), 2);
        assert!((r.ece - 0.5).abs() < TOL && (r.mce - 0.5).abs() < TOL);
        // More bins than samples: the empty bins are left out.
        let r = calibration_error(&[0.2, 0.9], &[false, true], Binning::Quantile(15)).unwrap();
        assert_eq!(r.bins.len(), 2);
        assert!((r.ece - 0.15).abs() < TOL, "ece {}", r.ece);
    }

    #[test]
    fn one_bin_is_the_global_gap() {
        // One bin: |mean acc − mean conf| = |5/8 − 5.3/8|.
        for binning in [Binning::Uniform(1), Binning::Quantile(1)] {
            let r = calibration_error(&CONF, &CORRECT, binning).unwrap();
            assert!(
                (r.ece - 0.3 / 8.0).abs() < TOL,
                "{binning:?}: ece {}",
                r.ece
            );
        }
    }

    #[test]
    fn calibration_error_rejects_bad_inputs() {
        assert!(matches!(
            calibration_error(&[], &[], Binning::Uniform(15)),
            Err(CalibrationError::Empty { .. })
        ));
        match calibration_error(&[0.5, f32::NAN], &[true, false], Binning::Quantile(15)) {
            Err(CalibrationError::NonFinite { what, index, value }) => {
                assert_eq!(index, 1);
                assert!(value.is_nan());
                assert_eq!(what, "confidence at index 1");
            }
            other => panic!("expected NonFinite, got {other:?}"),
        }
        for bad in [f32::INFINITY, 1.01, -0.01] {
            assert!(matches!(
                calibration_error(&[bad], &[true], Binning::Uniform(15)),
                Err(CalibrationError::NonFinite { index: 0, .. })
            ));
        }
        assert!(matches!(
            calibration_error(&[0.5], &[true, false], Binning::Uniform(15)),
            Err(CalibrationError::ShapeMismatch {
                expected: 1,
                actual: 2,
                ..
            })
        ));
        assert!(matches!(
            calibration_error(&[0.5], &[true], Binning::Quantile(0)),
            Err(CalibrationError::InvalidParameter { .. })
        ));
        // Round-off just outside [0, 1] is accepted and clamped.
        let r =
            calibration_error(&[1.000_05, -0.000_05], &[true, false], Binning::Uniform(2)).unwrap();
        assert!(r.ece.abs() < TOL);
    }

    #[test]
    fn brier_and_nll_match_hand_values() {
        let probs = [0.7, 0.2, 0.1, 0.0, 0.5, 0.5];
        let labels = [0, 0];
        let p = Predictions::new(&probs, 3, &labels).unwrap();
        // Brier: row 0: 0.09 + 0.04 + 0.01 = 0.14; row 1: 1 + 0.25 + 0.25 = 1.5; mean 0.82.
        assert!((brier_score(&p).unwrap() - 0.82).abs() < TOL);
        // NLL: (−ln 0.7 − ln 1e-12)/2 (row 1's p_y = 0 is floored).
        let expected = (-(0.7f64.ln()) - 1e-12f64.ln()) / 2.0;
        assert!((negative_log_likelihood(&p).unwrap() - expected).abs() < TOL);
        let empty = Predictions::new(&[], 3, &[]).unwrap();
        assert!(matches!(
            brier_score(&empty),
            Err(CalibrationError::Empty { .. })
        ));
        assert!(matches!(
            negative_log_likelihood(&empty),
            Err(CalibrationError::Empty { .. })
        ));
        assert!(matches!(
            top_label_calibration_error(&empty, Binning::Quantile(15)),
            Err(CalibrationError::Empty { .. })
        ));
    }

    #[test]
    fn reports_round_trip_through_json_in_snake_case() {
        assert_eq!(Binning::Uniform(15).n_bins(), 15);
        assert_eq!(
            serde_json::to_string(&Binning::Quantile(15)).unwrap(),
            r#"{"quantile":15}"#
        );
        let r = calibration_error(&CONF, &CORRECT, Binning::Quantile(3)).unwrap();
        let back: CalibrationReport =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
