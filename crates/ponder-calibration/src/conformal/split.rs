//! Split conformal prediction with one threshold, and the coverage report.

use serde::{Deserialize, Serialize};

use super::quantile::{QuantileRule, check_alpha, conformal_quantile_with};
use super::score::{ConformalScore, nonconformity_scores, scores_all_classes};
use crate::error::{CalibrationError, Result};
use crate::predictions::Predictions;

/// Empirical coverage and set size of conformal prediction sets on a test set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConformalReport {
    /// The target miscoverage α.
    pub alpha: f64,
    /// Fraction of test rows whose label is in their set (target ≥ 1 − α).
    pub coverage: f64,
    /// Mean number of classes per set.
    pub mean_set_size: f64,
    /// Number of test rows.
    pub n: usize,
}

/// Per-row coverage and set-size counts, with reusable scratch buffers.
pub(super) struct Tally {
    order: Vec<usize>,
    scores: Vec<f64>,
    covered: usize,
    set_sizes: usize,
}

impl Tally {
    pub(super) fn new(n_classes: usize) -> Self {
        Self {
            order: Vec::with_capacity(n_classes),
            scores: Vec::with_capacity(n_classes),
            covered: 0,
            set_sizes: 0,
        }
    }

    /// Counts one row with threshold `q_hat`.
    pub(super) fn add(&mut self, score: ConformalScore, q_hat: f64, probs: &[f32], label: usize) {
        scores_all_classes(score, probs, &mut self.order, &mut self.scores);
        self.set_sizes += self.scores.iter().filter(|&&s| s <= q_hat).count();
        self.covered += usize::from(self.scores[label] <= q_hat);
    }

    pub(super) fn report(&self, alpha: f64, n: usize) -> ConformalReport {
        ConformalReport {
            alpha,
            coverage: self.covered as f64 / n as f64,
            mean_set_size: self.set_sizes as f64 / n as f64,
            n,
        }
    }
}

/// `{k : s(x, k) ≤ q̂}` in ascending class order.
pub(super) fn set_at(score: ConformalScore, q_hat: f64, probs: &[f32]) -> Vec<usize> {
    let mut scores = Vec::with_capacity(probs.len());
    scores_all_classes(score, probs, &mut Vec::new(), &mut scores);
    scores
        .iter()
        .enumerate()
        .filter(|&(_, &s)| s <= q_hat)
        .map(|(k, _)| k)
        .collect()
}

/// `Err(Empty)` if `preds` has no rows.
pub(super) fn non_empty(preds: &Predictions, what: &str) -> Result<()> {
    if preds.is_empty() {
        Err(CalibrationError::Empty { what: what.into() })
    } else {
        Ok(())
    }
}

/// Split conformal prediction with one threshold `q̂` for every input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitConformal {
    /// The nonconformity score.
    pub score: ConformalScore,
    /// The target miscoverage α.
    pub alpha: f64,
    /// The threshold: a class is in the set iff its score is `≤ q_hat` (may be `+∞`;
    /// serialised as the string `"inf"` then, since JSON has no infinity).
    #[serde(with = "crate::serde_ext::f64_or_inf")]
    pub q_hat: f64,
    /// The number of calibration rows.
    pub n_calibration: usize,
}

impl SplitConformal {
    /// Calibrates `q̂` = [`conformal_quantile`](crate::conformal_quantile) of the calibration rows' scores.
    ///
    /// # Errors
    ///
    /// [`CalibrationError::InvalidAlpha`] unless `0 < α < 1`; [`CalibrationError::Empty`]
    /// for an empty calibration set; [`CalibrationError::InvalidParameter`] for a bad RAPS λ.
    pub fn calibrate(score: ConformalScore, calibration: &Predictions, alpha: f64) -> Result<Self> {
        Self::calibrate_with_rule(score, calibration, alpha, QuantileRule::Exact)
    }

    /// [`SplitConformal::calibrate`] with a choice of [`QuantileRule`]
    /// ([`QuantileRule::ReferenceCapped`] reproduces JEI-DNN's threshold).
    ///
    /// # Errors
    ///
    /// As [`SplitConformal::calibrate`].
    pub fn calibrate_with_rule(
        score: ConformalScore,
        calibration: &Predictions,
        alpha: f64,
        rule: QuantileRule,
    ) -> Result<Self> {
        check_alpha(alpha)?;
        score.validate()?;
        non_empty(calibration, "calibration set")?;
        let scores = nonconformity_scores(score, calibration);
        Ok(Self {
            score,
            alpha,
            q_hat: conformal_quantile_with(&scores, alpha, rule)?,
            n_calibration: calibration.len(),
        })
    }

    /// The prediction set `{k : s(x, k) ≤ q̂}` of one row of probabilities `[n_classes]`, in
    /// ascending class order. For APS/RAPS `s(x, k)` is the score the row would have if its
    /// label were `k`.
    ///
    /// The set is the honest one: it is **not** forced to be non-empty (with LAC a row whose
    /// top probability is below `1 − q̂` gets an empty set; such rows count as misses).
    pub fn prediction_set(&self, probs: &[f32]) -> Vec<usize> {
        set_at(self.score, self.q_hat, probs)
    }

    /// Empirical coverage and mean set size on a test set (rows are not allocated a set).
    ///
    /// # Errors
    ///
    /// [`CalibrationError::Empty`] for an empty test set.
    pub fn evaluate(&self, test: &Predictions) -> Result<ConformalReport> {
        non_empty(test, "test set")?;
        let mut tally = Tally::new(test.n_classes());
        for (row, label) in test.rows() {
            tally.add(self.score, self.q_hat, row, label);
        }
        Ok(tally.report(self.alpha, test.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: [f32; 4] = [0.1, 0.5, 0.3, 0.1];

    #[test]
    fn infinite_thresholds_round_trip_through_json() {
        let raps = ConformalScore::Raps {
            lambda: 0.5,
            k_reg: 2,
        };
        for q_hat in [f64::INFINITY, 0.25] {
            let sc = SplitConformal {
                score: raps,
                alpha: 0.01,
                q_hat,
                n_calibration: 30,
            };
            let json = serde_json::to_string(&sc).unwrap();
            assert_eq!(
                json.contains(r#""q_hat":"inf""#),
                q_hat.is_infinite(),
                "{json}"
            );
            assert!(
                json.contains(r#""raps":{"lambda":0.5,"k_reg":2}"#),
                "{json}"
            );
            assert_eq!(serde_json::from_str::<SplitConformal>(&json).unwrap(), sc);
        }
        assert!(
            serde_json::from_str::<SplitConformal>(
                r#"{"score":"lac","alpha":0.1,"q_hat":"big","n_calibration":3}"#
            )
            .is_err()
        );
    }

    #[test]
    fn sets_are_honest_and_may_be_empty() {
        let sc = SplitConformal {
            score: ConformalScore::Lac,
            alpha: 0.1,
            q_hat: 0.4,
            n_calibration: 10,
        };
        // LAC with q̂ = 0.4: classes with p ≥ 0.6; none here.
        assert!(sc.prediction_set(&ROW).is_empty());
        let sc = SplitConformal { q_hat: 0.75, ..sc };
        assert_eq!(sc.prediction_set(&ROW), vec![1, 2]);
        // APS with q̂ = 0.85: cumulative 0.5 (1), 0.8 (2), 0.9 (0), 1.0 (3) → {1, 2}.
        let aps = SplitConformal {
            score: ConformalScore::Aps,
            q_hat: 0.85,
            ..sc
        };
        assert_eq!(aps.prediction_set(&ROW), vec![1, 2]);
        let all = SplitConformal {
            q_hat: f64::INFINITY,
            ..aps
        };
        assert_eq!(all.prediction_set(&ROW), vec![0, 1, 2, 3]);
    }

    #[test]
    fn calibrate_and_evaluate_small_case() {
        // Calibration scores (LAC): 0.1, 0.2, …, 0.9 (n = 9); α = 0.2: k = ⌈10·0.8⌉ = 8 → 0.8.
        let probs: Vec<f32> = (1..=9)
            .flat_map(|i| {
                let p = 1.0 - i as f32 / 10.0;
                [p, 1.0 - p]
            })
            .collect();
        let labels = [0; 9];
        let cal = Predictions::new(&probs, 2, &labels).unwrap();
        let sc = SplitConformal::calibrate(ConformalScore::Lac, &cal, 0.2).unwrap();
        assert!((sc.q_hat - 0.8).abs() < 1e-6, "{sc:?}");
        assert_eq!(sc.n_calibration, 9);
        // On the same rows: label 0 is in the set iff its score ≤ q̂, and q̂ is the 8th
        // smallest of those very scores (bit-identical), so exactly 8 of 9 rows are covered.
        let report = sc.evaluate(&cal).unwrap();
        assert_eq!(report.n, 9);
        assert!((report.coverage - 8.0 / 9.0).abs() < 1e-12, "{report:?}");
        let sizes: usize = (0..9).map(|i| sc.prediction_set(cal.row(i)).len()).sum();
        assert!((report.mean_set_size - sizes as f64 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn split_conformal_rejects_bad_inputs() {
        let probs = [0.5f32, 0.5];
        let cal = Predictions::new(&probs, 2, &[0]).unwrap();
        let empty = Predictions::new(&[], 2, &[]).unwrap();
        for alpha in [0.0, 1.0, -0.1, f64::NAN] {
            assert!(matches!(
                SplitConformal::calibrate(ConformalScore::Aps, &cal, alpha),
                Err(CalibrationError::InvalidAlpha { .. })
            ));
        }
        assert_eq!(
            SplitConformal::calibrate(ConformalScore::Lac, &empty, 0.1).unwrap_err(),
            CalibrationError::Empty {
                what: "calibration set".into()
            }
        );
        let bad_raps = ConformalScore::Raps {
            lambda: -1.0,
            k_reg: 0,
        };
        assert!(matches!(
            SplitConformal::calibrate(bad_raps, &cal, 0.1),
            Err(CalibrationError::InvalidParameter { .. })
        ));
        let sc = SplitConformal::calibrate(ConformalScore::Lac, &cal, 0.1).unwrap();
        assert!(matches!(
            sc.evaluate(&empty),
            Err(CalibrationError::Empty { .. })
        ));
    }
}
