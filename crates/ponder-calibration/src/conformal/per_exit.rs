//! JEI-DNN's per-exit ("gated") split conformal prediction.

use serde::{Deserialize, Serialize};

use super::quantile::{QuantileRule, check_alpha, conformal_quantile_with};
use super::score::{ConformalScore, score_with};
use super::split::{ConformalReport, Tally, non_empty, set_at};
use crate::error::{CalibrationError, Result};
use crate::predictions::{Predictions, check_len, check_probability_rows};

/// Where a [`PerExitConformal`] threshold came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantileSource {
    /// From the scores of the calibration rows that exit at this exit (at their exit).
    Exit,
    /// From every calibration row's score at this exit's head: too few rows exit here.
    Fallback,
}

/// JEI-DNN's per-exit ("gated") split conformal prediction: one `q̂` per exit, from the
/// calibration rows that exit there, falling back to every row's score at that exit's head
/// when at most `min_exit_samples` rows (20 in JEI-DNN) exit there (Regol et al., ICLR 2024,
/// arXiv:2310.09163).
///
/// JEI-DNN's other variants: `general` is [`SplitConformal`](crate::SplitConformal) calibrated on the exited
/// outputs; `gated_all` is this with `min_exit_samples = usize::MAX` (always the fallback);
/// `gated_strict` is this with `min_exit_samples = 0` (the exit's own rows whenever it has
/// any; an exit that no calibration row takes still falls back, as there is nothing else).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerExitConformal {
    /// The nonconformity score.
    pub score: ConformalScore,
    /// The target miscoverage α.
    pub alpha: f64,
    /// An exit needs more than this many calibration rows to get its own `q̂` (JEI-DNN: 20).
    pub min_exit_samples: usize,
    /// The threshold of each exit, `[n_exits]` (each may be `+∞`; serialised as the string
    /// `"inf"` then, since JSON has no infinity).
    #[serde(with = "crate::serde_ext::vec_f64_or_inf")]
    pub q_hat: Vec<f64>,
    /// Where each exit's threshold came from, `[n_exits]`.
    pub source: Vec<QuantileSource>,
}

/// `Err(InvalidParameter)` for the first exit index `>= n_exits`.
fn check_exit_layers(exit_layer: &[usize], n_exits: usize) -> Result<()> {
    match exit_layer.iter().position(|&l| l >= n_exits) {
        Some(i) => Err(CalibrationError::InvalidParameter {
            name: format!("exit layer of row {i}"),
            value: exit_layer[i].to_string(),
            reason: format!("there are only {n_exits} exits (0..{n_exits})"),
        }),
        None => Ok(()),
    }
}

impl PerExitConformal {
    /// Calibrates one `q̂` per exit, as JEI-DNN's "gated" variant, with [`QuantileRule::Exact`].
    ///
    /// For exit `l`: if more than `min_exit_samples` calibration rows exit at `l`, `q̂_l` is
    /// the conformal quantile of those rows' scores at their exit
    /// ([`QuantileSource::Exit`]); otherwise it is the conformal quantile of **every**
    /// calibration row's score at exit `l`'s head ([`QuantileSource::Fallback`]).
    ///
    /// # Shapes
    ///
    /// * `exit_layer`: `[n]`, the 0-based exit of each calibration row;
    /// * `exited`: `n` rows, each row's probabilities at its exit, with the labels;
    /// * `layer_probs`: `[n_exits]` of `[n, n_classes]` row-major: every calibration row's
    ///   probabilities at each exit's head (same rows, same labels as `exited`).
    ///
    /// # Errors
    ///
    /// [`CalibrationError::InvalidAlpha`]; [`CalibrationError::Empty`] for no calibration
    /// rows or no exits; [`CalibrationError::ShapeMismatch`] if `exit_layer` or a
    /// `layer_probs[l]` does not match `exited`; [`CalibrationError::InvalidParameter`] for
    /// an exit index `>= layer_probs.len()` or a bad RAPS λ; [`CalibrationError::NonFinite`]
    /// / [`CalibrationError::InvalidParameter`] for invalid probabilities in `layer_probs`.
    pub fn calibrate(
        score: ConformalScore,
        alpha: f64,
        min_exit_samples: usize,
        exit_layer: &[usize],
        exited: &Predictions,
        layer_probs: &[&[f32]],
    ) -> Result<Self> {
        Self::calibrate_with_rule(
            score,
            alpha,
            min_exit_samples,
            exit_layer,
            exited,
            layer_probs,
            QuantileRule::Exact,
        )
    }

    /// [`PerExitConformal::calibrate`] with a choice of [`QuantileRule`]
    /// ([`QuantileRule::ReferenceCapped`] reproduces JEI-DNN's thresholds).
    ///
    /// # Errors
    ///
    /// As [`PerExitConformal::calibrate`].
    pub fn calibrate_with_rule(
        score: ConformalScore,
        alpha: f64,
        min_exit_samples: usize,
        exit_layer: &[usize],
        exited: &Predictions,
        layer_probs: &[&[f32]],
        rule: QuantileRule,
    ) -> Result<Self> {
        check_alpha(alpha)?;
        score.validate()?;
        non_empty(exited, "calibration set")?;
        if layer_probs.is_empty() {
            return Err(CalibrationError::Empty {
                what: "list of exits' probabilities".into(),
            });
        }
        let n_exits = layer_probs.len();
        let n_classes = exited.n_classes();
        check_len("exit layers", exited.len(), exit_layer.len())?;
        check_exit_layers(exit_layer, n_exits)?;
        for (l, probs) in layer_probs.iter().enumerate() {
            check_len(
                &format!("probabilities at exit {l} (rows × n_classes)"),
                exited.len() * n_classes,
                probs.len(),
            )?;
            check_probability_rows(probs, n_classes, "probability").map_err(|e| e.at_exit(l))?;
        }

        let mut order = Vec::with_capacity(n_classes);
        let mut q_hat = Vec::with_capacity(n_exits);
        let mut source = Vec::with_capacity(n_exits);
        for (l, probs) in layer_probs.iter().enumerate() {
            let own: Vec<f64> = exited
                .rows()
                .zip(exit_layer)
                .filter(|&(_, &exit)| exit == l)
                .map(|((row, label), _)| score_with(score, row, label, &mut order))
                .collect();
            if own.len() > min_exit_samples {
                q_hat.push(conformal_quantile_with(&own, alpha, rule)?);
                source.push(QuantileSource::Exit);
            } else {
                let all: Vec<f64> = probs
                    .chunks_exact(n_classes)
                    .zip(exited.labels())
                    .map(|(row, &label)| score_with(score, row, label, &mut order))
                    .collect();
                q_hat.push(conformal_quantile_with(&all, alpha, rule)?);
                source.push(QuantileSource::Fallback);
            }
        }
        Ok(Self {
            score,
            alpha,
            min_exit_samples,
            q_hat,
            source,
        })
    }

    /// The number of exits.
    pub fn n_exits(&self) -> usize {
        self.q_hat.len()
    }

    /// The prediction set `{k : s(x, k) ≤ q̂_l}` of a row that exits at `exit_layer = l`,
    /// from its probabilities `[n_classes]` at that exit, in ascending class order (not
    /// forced to be non-empty, as [`SplitConformal::prediction_set`](crate::SplitConformal::prediction_set)).
    ///
    /// # Panics
    ///
    /// If `exit_layer >= self.n_exits()`.
    pub fn prediction_set(&self, exit_layer: usize, probs: &[f32]) -> Vec<usize> {
        assert!(
            exit_layer < self.n_exits(),
            "exit {exit_layer} out of range for {} exits",
            self.n_exits()
        );
        set_at(self.score, self.q_hat[exit_layer], probs)
    }

    /// Empirical coverage and mean set size on a test set: `test` holds each row's
    /// probabilities at its exit `exit_layer[i]`, with the labels.
    ///
    /// # Errors
    ///
    /// [`CalibrationError::Empty`] for an empty test set; [`CalibrationError::ShapeMismatch`]
    /// if `exit_layer.len() != test.len()`; [`CalibrationError::InvalidParameter`] for an
    /// exit index `>= self.n_exits()`.
    pub fn evaluate(&self, exit_layer: &[usize], test: &Predictions) -> Result<ConformalReport> {
        non_empty(test, "test set")?;
        check_len("exit layers", test.len(), exit_layer.len())?;
        check_exit_layers(exit_layer, self.n_exits())?;
        let mut tally = Tally::new(test.n_classes());
        for ((row, label), &exit) in test.rows().zip(exit_layer) {
            tally.add(self.score, self.q_hat[exit], row, label);
        }
        Ok(tally.report(self.alpha, test.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformal::{conformal_quantile, nonconformity};

    struct PerExitCase {
        exited: Vec<f32>,
        labels: Vec<usize>,
        exit_layer: Vec<usize>,
        head0: Vec<f32>,
        head1: Vec<f32>,
    }

    /// Two classes, exit 0 and exit 1. Rows that exit at 0 are confident and right, so their
    /// own q̂ is small; every row's head-0 probabilities are poor, so the fallback q̂ is large.
    fn per_exit_case(n_exit0: usize) -> PerExitCase {
        let n = 40;
        let mut exited = Vec::new();
        let mut head0 = Vec::new();
        let mut head1 = Vec::new();
        let mut exit_layer = Vec::new();
        for i in 0..n {
            // Distinct scores: exit-0 rows score 0.01·(1 + i/n) at their exit; head 0 gives
            // every row a score of 0.5 + 0.01·i; head 1 gives 0.2 + 0.001·i.
            let own0 = 0.01 * (1.0 + i as f32 / n as f32);
            let all0 = 0.5 + 0.01 * i as f32;
            let all1 = 0.2 + 0.001 * i as f32;
            let exit = usize::from(i >= n_exit0);
            let at_exit = if exit == 0 { own0 } else { all1 };
            exited.extend([1.0 - at_exit, at_exit]);
            head0.extend([1.0 - all0, all0]);
            head1.extend([1.0 - all1, all1]);
            exit_layer.push(exit);
        }
        PerExitCase {
            exited,
            labels: vec![0; n],
            exit_layer,
            head0,
            head1,
        }
    }

    #[test]
    fn per_exit_uses_own_scores_above_the_minimum_and_falls_back_otherwise() {
        let alpha = 0.1;
        for (n_exit0, expect_source0) in [
            (25, QuantileSource::Exit),
            (20, QuantileSource::Fallback),
            (0, QuantileSource::Fallback),
        ] {
            let PerExitCase {
                exited,
                labels,
                exit_layer,
                head0,
                head1,
            } = per_exit_case(n_exit0);
            let preds = Predictions::new(&exited, 2, &labels).unwrap();
            let pc = PerExitConformal::calibrate(
                ConformalScore::Lac,
                alpha,
                20,
                &exit_layer,
                &preds,
                &[&head0, &head1],
            )
            .unwrap();
            assert_eq!(pc.source[0], expect_source0, "n_exit0 = {n_exit0}");
            // The two candidate thresholds for exit 0, computed independently.
            let own: Vec<f64> = (0..n_exit0)
                .map(|i| nonconformity(ConformalScore::Lac, preds.row(i), 0))
                .collect();
            let all: Vec<f64> = head0
                .chunks(2)
                .map(|r| nonconformity(ConformalScore::Lac, r, 0))
                .collect();
            let fallback = conformal_quantile(&all, alpha).unwrap();
            assert!(fallback > 0.5, "fallback q̂ {fallback} must differ from own");
            if expect_source0 == QuantileSource::Exit {
                let own_q = conformal_quantile(&own, alpha).unwrap();
                assert!(own_q < 0.03);
                assert_eq!(pc.q_hat[0], own_q);
            } else {
                assert_eq!(pc.q_hat[0], fallback);
            }
            // Exit 1 has 40 − n_exit0 ≥ 15 rows: its own q̂ when > 20.
            let n_exit1 = 40 - n_exit0;
            let expect_source1 = if n_exit1 > 20 {
                QuantileSource::Exit
            } else {
                QuantileSource::Fallback
            };
            assert_eq!(pc.source[1], expect_source1, "n_exit0 = {n_exit0}");
            let report = pc.evaluate(&exit_layer, &preds).unwrap();
            assert_eq!(report.n, 40);
            assert_eq!(pc.prediction_set(0, &[0.995, 0.005]), vec![0]);
        }
    }

    #[test]
    fn per_exit_round_trips_through_json_with_infinite_thresholds() {
        let pc = PerExitConformal {
            score: ConformalScore::Lac,
            alpha: 0.01,
            min_exit_samples: 20,
            q_hat: vec![0.5, f64::INFINITY],
            source: vec![QuantileSource::Fallback, QuantileSource::Exit],
        };
        let json = serde_json::to_string(&pc).unwrap();
        assert!(json.contains(r#""q_hat":[0.5,"inf"]"#), "{json}");
        assert!(json.contains(r#""source":["fallback","exit"]"#), "{json}");
        assert_eq!(serde_json::from_str::<PerExitConformal>(&json).unwrap(), pc);
    }

    #[test]
    fn per_exit_rejects_bad_inputs() {
        let PerExitCase {
            exited,
            labels,
            exit_layer,
            head0,
            head1,
        } = per_exit_case(25);
        let preds = Predictions::new(&exited, 2, &labels).unwrap();
        let cal = |exit_layer: &[usize], heads: &[&[f32]], alpha: f64| {
            PerExitConformal::calibrate(ConformalScore::Aps, alpha, 20, exit_layer, &preds, heads)
        };
        assert!(matches!(
            cal(&exit_layer, &[&head0, &head1], 1.0),
            Err(CalibrationError::InvalidAlpha { .. })
        ));
        assert!(matches!(
            cal(&exit_layer, &[], 0.1),
            Err(CalibrationError::Empty { .. })
        ));
        // Exit index 1 with a single head.
        assert!(matches!(
            cal(&exit_layer, &[&head0], 0.1),
            Err(CalibrationError::InvalidParameter { .. })
        ));
        assert!(matches!(
            cal(&exit_layer[1..], &[&head0, &head1], 0.1),
            Err(CalibrationError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            cal(&exit_layer, &[&head0, &head1[2..]], 0.1),
            Err(CalibrationError::ShapeMismatch { .. })
        ));
        let mut nan_head = head1.clone();
        nan_head[5] = f32::NAN;
        match cal(&exit_layer, &[&head0, &nan_head], 0.1) {
            Err(CalibrationError::NonFinite { what, index, .. }) => {
                assert_eq!(what, "probability of row 2, class 1 at exit 1");
                assert_eq!(index, 2);
            }
            other => panic!("expected NonFinite, got {other:?}"),
        }
        let empty = Predictions::new(&[], 2, &[]).unwrap();
        assert!(matches!(
            PerExitConformal::calibrate(ConformalScore::Lac, 0.1, 20, &[], &empty, &[&[]]),
            Err(CalibrationError::Empty { .. })
        ));
        let pc = cal(&exit_layer, &[&head0, &head1], 0.1).unwrap();
        assert!(matches!(
            pc.evaluate(
                &[0, 2],
                &Predictions::new(&exited[..4], 2, &labels[..2]).unwrap()
            ),
            Err(CalibrationError::InvalidParameter { .. })
        ));
        assert!(matches!(
            pc.evaluate(
                &[0],
                &Predictions::new(&exited[..4], 2, &labels[..2]).unwrap()
            ),
            Err(CalibrationError::ShapeMismatch { .. })
        ));
    }
}
