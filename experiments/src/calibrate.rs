//! Calibration and conformal prediction sets of every evaluated (model, policy).
//!
//! * Calibration is measured on the test outputs of the policy (each row's prediction at
//!   its exit): ECE over the whole test set (not per batch, unlike JEI-DNN's code) with
//!   15 equal-mass bins (JEI-DNN's binning) and with 15 equal-width bins, MCE, NLL,
//!   Brier, and the reliability diagram (equal-width bins).
//! * Conformal sets use the LAC score `1 − p_y` (JEI-DNN's) and APS, calibrated on the
//!   validation split under the same policy and measured on the test split, at
//!   α ∈ [`ALPHAS`]: `split` (one q̂ from the validation rows' exited outputs) and
//!   `per_exit` (JEI-DNN's "gated" variant: one q̂ per exit from the validation rows that
//!   exit there, falling back to every validation row's scores at that exit when 20 or
//!   fewer exit there).
//! * Temperature scaling per exit (fitted on the validation split, every exit's outputs
//!   on every row) separates a global miscalibration of each exit from the bias the exit
//!   rule adds (JEI-DNN's argument: thresholding on confidence selects over-confident
//!   rows): `ece_scaled` is the ECE after each row's output is rescaled with the
//!   temperature of its exit.
//! * Models with JEI-DNN's gates also get the posterior: the exit-distribution-weighted
//!   mixture `Σ_l P_l·p_l` of every exit's probabilities (all exits computed).

use anyhow::{Context, Result, bail};
use ponder_calibration::{
    Binning, ConformalReport, ConformalScore, PerExitConformal, Predictions, ReliabilityBin,
    SplitConformal, apply_temperature, brier_score, calibration_error, fit_temperatures_per_exit,
    mixture_posterior_rows, negative_log_likelihood,
};
use ponder_core::argmax;
use ponder_exits::jei::exit_distribution_row;
use ponder_models::{EvalOutput, LayerOutputs};
use serde::{Deserialize, Serialize};

/// The miscoverage levels of the conformal sets.
pub const ALPHAS: [f64; 2] = [0.05, 0.1];
/// Bins of the ECE and of the reliability diagram.
pub const BINS: usize = 15;
/// Per-exit conformal falls back to all rows' scores at an exit when at most this many
/// validation rows exit there (JEI-DNN's 20).
pub const MIN_EXIT_ROWS: usize = 20;

/// Calibration of one policy's outputs on the test set, and its conformal sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationResult {
    /// ECE (fraction, not %) with 15 equal-mass bins on p_max vs correctness.
    pub ece: f64,
    /// ECE with 15 equal-width bins.
    pub ece_uniform: f64,
    /// MCE with 15 equal-mass bins.
    pub mce: f64,
    /// ECE (15 equal-mass bins) after temperature scaling with each row's exit's
    /// temperature (fitted per exit on the validation split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ece_scaled: Option<f64>,
    /// Mean negative log-likelihood of the true class.
    pub nll: f64,
    /// Multi-class Brier score.
    pub brier: f64,
    /// Conformal sets, per score, variant and α.
    pub conformal: Vec<ConformalResult>,
    /// Reliability diagram: 15 equal-width bins of p_max.
    pub reliability: Vec<ReliabilityBin>,
}

/// One conformal predictor measured on the test set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConformalResult {
    /// Miscoverage level α.
    pub alpha: f64,
    /// `lac` or `aps`.
    pub score: String,
    /// `split` (one threshold) or `per_exit` (one per exit, with the fallback).
    pub variant: String,
    /// Fraction of test rows whose set holds the true class.
    pub coverage: f64,
    /// Mean number of classes in a set.
    pub mean_set_size: f64,
}

impl ConformalResult {
    fn new(alpha: f64, score: &str, variant: &str, report: ConformalReport) -> Self {
        Self {
            alpha,
            score: score.into(),
            variant: variant.into(),
            coverage: report.coverage,
            mean_set_size: report.mean_set_size,
        }
    }
}

/// One split-conformal set per (α, score), calibrated on `calibration`, measured on
/// `test`.
fn split_sets(calibration: &Predictions, test: &Predictions) -> Result<Vec<ConformalResult>> {
    conformal_grid()
        .map(|(alpha, name, score)| {
            let report = SplitConformal::calibrate(score, calibration, alpha)?.evaluate(test)?;
            Ok(ConformalResult::new(alpha, name, "split", report))
        })
        .collect()
}

/// Every (α, score name, score) measured.
fn conformal_grid() -> impl Iterator<Item = (f64, &'static str, ConformalScore)> {
    ALPHAS.into_iter().flat_map(|alpha| {
        [("lac", ConformalScore::Lac), ("aps", ConformalScore::Aps)]
            .into_iter()
            .map(move |(name, score)| (alpha, name, score))
    })
}

impl CalibrationResult {
    /// The conformal result of (`score`, `variant`, `alpha`), if measured.
    pub fn conformal(&self, score: &str, variant: &str, alpha: f64) -> Option<&ConformalResult> {
        self.conformal
            .iter()
            .find(|c| c.score == score && c.variant == variant && c.alpha == alpha)
    }
}

/// The scores and ECE-style metrics of outputs `probs` (row-major) against `targets`.
fn metrics(probs: &[f32], n_classes: usize, targets: &[usize]) -> Result<CalibrationResult> {
    let preds = Predictions::new(probs, n_classes, targets)?;
    let (confidence, correct) = preds.top_label();
    let quantile = calibration_error(&confidence, &correct, Binning::Quantile(BINS))?;
    let uniform = calibration_error(&confidence, &correct, Binning::Uniform(BINS))?;
    Ok(CalibrationResult {
        ece: quantile.ece,
        ece_uniform: uniform.ece,
        mce: quantile.mce,
        ece_scaled: None,
        nll: negative_log_likelihood(&preds)?,
        brier: brier_score(&preds)?,
        conformal: Vec::new(),
        reliability: uniform.bins,
    })
}

/// What calibrating a model's policies needs once per model: every exit's outputs on
/// the validation split (the per-exit conformal fallback) and each exit's temperature.
#[derive(Debug, Clone)]
pub struct ModelCalibration {
    /// Every exit's outputs on the validation split.
    pub layers: LayerOutputs,
    /// The temperature of each exit, fitted on `layers`.
    pub temperatures: Vec<f64>,
    /// The last layer's number for every validation row (full depth's exits).
    full_depth_exits: Vec<usize>,
}

/// What calibration reads of a policy's evaluation on one split: each row's output
/// probabilities (row-major), true class and exit layer (1-based).
#[derive(Debug, Clone, Copy)]
pub struct PolicyOutputs<'a> {
    /// Row-major `[rows, n_classes]` probabilities.
    pub probs: &'a [f32],
    /// True classes.
    pub targets: &'a [usize],
    /// Exit layers, 1-based.
    pub exit_layers: &'a [usize],
}

impl<'a> From<&'a EvalOutput> for PolicyOutputs<'a> {
    fn from(out: &'a EvalOutput) -> Self {
        Self {
            probs: &out.probs,
            targets: &out.targets,
            exit_layers: &out.exit_layers,
        }
    }
}

impl ModelCalibration {
    /// Fits each exit's temperature on the validation outputs (the log-probabilities
    /// serve as logits: they differ from them by a constant per row).
    pub fn new(layers: LayerOutputs) -> Result<Self> {
        for (l, p) in layers.probs.iter().enumerate() {
            Predictions::new(p, layers.n_classes, &layers.targets)
                .with_context(|| format!("exit {} on the validation split", l + 1))?;
        }
        let logits: Vec<Vec<f32>> = layers
            .probs
            .iter()
            .map(|p| p.iter().map(|&x| x.max(1e-30).ln()).collect())
            .collect();
        let slices: Vec<&[f32]> = logits.iter().map(Vec::as_slice).collect();
        let temperatures = fit_temperatures_per_exit(&slices, layers.n_classes, &layers.targets)
            .context("fitting each exit's temperature on the validation split")?
            .into_iter()
            .map(|t| t.temperature)
            .collect();
        Ok(Self {
            full_depth_exits: vec![layers.probs.len(); layers.len()],
            layers,
            temperatures,
        })
    }

    /// Full depth's outputs on the validation split: the last exit's, already
    /// computed (no need to run the policy again).
    pub fn full_depth(&self) -> PolicyOutputs<'_> {
        PolicyOutputs {
            probs: self.layers.probs.last().map_or(&[], Vec::as_slice),
            targets: &self.layers.targets,
            exit_layers: &self.full_depth_exits,
        }
    }

    /// `probs` (row-major) rescaled row by row with the temperature of the row's exit
    /// (`exit_layers` 1-based).
    pub fn rescale(&self, probs: &[f32], exit_layers: &[usize]) -> Vec<f32> {
        let n_classes = self.layers.n_classes;
        probs
            .chunks(n_classes)
            .zip(exit_layers)
            .flat_map(|(row, &l)| {
                let t = self.temperatures[l - 1];
                let logits: Vec<f32> = row.iter().map(|&p| p.max(1e-30).ln()).collect();
                apply_temperature(&logits, n_classes, t)
            })
            .collect()
    }
}

/// Calibration of one policy: `test` and `calibration` are the policy's evaluations on
/// the test and validation splits.
pub fn policy_calibration(
    test: PolicyOutputs<'_>,
    calibration: PolicyOutputs<'_>,
    model: &ModelCalibration,
) -> Result<CalibrationResult> {
    let calibration_layers = &model.layers;
    let n_classes = calibration_layers.n_classes;
    let mut result = metrics(test.probs, n_classes, test.targets)?;
    let scaled = model.rescale(test.probs, test.exit_layers);
    let scaled = Predictions::new(&scaled, n_classes, test.targets)?;
    let (confidence, correct) = scaled.top_label();
    result.ece_scaled =
        Some(calibration_error(&confidence, &correct, Binning::Quantile(BINS))?.ece);
    let test_preds = Predictions::new(test.probs, n_classes, test.targets)?;
    let calib_preds = Predictions::new(calibration.probs, n_classes, calibration.targets)?;
    let zero_based = |layers: &[usize]| layers.iter().map(|&l| l - 1).collect::<Vec<_>>();
    let test_exits = zero_based(test.exit_layers);
    let calib_exits = zero_based(calibration.exit_layers);
    let layer_probs: Vec<&[f32]> = calibration_layers.probs.iter().map(Vec::as_slice).collect();
    result.conformal = split_sets(&calib_preds, &test_preds)?;
    for (alpha, name, score) in conformal_grid() {
        let per_exit = PerExitConformal::calibrate(
            score,
            alpha,
            MIN_EXIT_ROWS,
            &calib_exits,
            &calib_preds,
            &layer_probs,
        )?;
        let report = per_exit.evaluate(&test_exits, &test_preds)?;
        result
            .conformal
            .push(ConformalResult::new(alpha, name, "per_exit", report));
    }
    Ok(result)
}

/// JEI-DNN's posterior of every row: `Σ_l P_l·p_l` with the exit distribution of the
/// gates (row-major `[rows, n_classes]`).
fn posterior(layers: &LayerOutputs) -> Result<Vec<f32>> {
    let gates = layers
        .gates
        .as_ref()
        .context("the posterior needs a model with gates")?;
    // the exit distribution of every row, row-major [rows, n_exits]
    let mut weights = Vec::with_capacity(layers.len() * layers.probs.len());
    for row in 0..layers.len() {
        let g: Vec<f32> = gates.iter().map(|g| g[row]).collect();
        if let Some(bad) = g.iter().position(|v| !(0.0..=1.0).contains(v)) {
            bail!("gate {} of row {row} is {}, not in [0, 1]", bad + 1, g[bad]);
        }
        weights.extend(exit_distribution_row(&g));
    }
    let probs: Vec<&[f32]> = layers.probs.iter().map(Vec::as_slice).collect();
    Ok(mixture_posterior_rows(&weights, &probs, layers.n_classes)?)
}

/// The JEI-DNN posterior of a model with gates, measured like a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PosteriorResult {
    /// Test accuracy of the posterior's argmax.
    pub accuracy: f64,
    /// Its calibration and split-conformal sets (calibrated on validation).
    pub calibration: CalibrationResult,
}

/// The posterior on the test split, with split-conformal sets calibrated on the
/// validation split.
pub fn posterior_result(
    test: &LayerOutputs,
    calibration: &LayerOutputs,
) -> Result<PosteriorResult> {
    let n_classes = test.n_classes;
    let test_probs = posterior(test)?;
    let calib_probs = posterior(calibration)?;
    let mut result = metrics(&test_probs, n_classes, &test.targets)?;
    let test_preds = Predictions::new(&test_probs, n_classes, &test.targets)?;
    let calib_preds = Predictions::new(&calib_probs, n_classes, &calibration.targets)?;
    result.conformal = split_sets(&calib_preds, &test_preds)?;
    let correct = test_probs
        .chunks(n_classes)
        .zip(&test.targets)
        .filter(|(p, t)| argmax(p) == **t)
        .count();
    Ok(PosteriorResult {
        accuracy: correct as f64 / test.len().max(1) as f64,
        calibration: result,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(probs: Vec<f32>, targets: Vec<usize>, exit_layers: Vec<usize>) -> EvalOutput {
        let n = targets.len();
        EvalOutput {
            policy: "test".into(),
            accuracy: 0.0,
            stats: ponder_core::ExitStats::new(&exit_layers, &vec![1; n], 2, 1),
            wall_seconds: 0.0,
            predictions: vec![0; n],
            confidences: vec![0.0; n],
            probs,
            targets,
            exit_layers,
            values: Vec::new(),
            scores: Vec::new(),
        }
    }

    #[test]
    fn policy_calibration_measures_every_alpha_score_and_variant() {
        // 40 rows of 2 classes, confident and right; exits alternate between layers 1, 2
        let n = 40;
        let probs: Vec<f32> = (0..n)
            .flat_map(|i| if i % 2 == 0 { [0.9, 0.1] } else { [0.2, 0.8] })
            .collect();
        let targets: Vec<usize> = (0..n).map(|i| i % 2).collect();
        let exits: Vec<usize> = (0..n).map(|i| 1 + (i / 2) % 2).collect();
        let out = output(probs.clone(), targets.clone(), exits);
        let layers = LayerOutputs {
            probs: vec![probs.clone(), probs],
            gates: None,
            targets,
            n_classes: 2,
        };
        let model = ModelCalibration::new(layers).unwrap();
        // every row right: the fitted temperatures sharpen both exits (T < 1)
        assert!(
            model.temperatures.iter().all(|&t| t < 1.0),
            "{:?}",
            model.temperatures
        );
        let r = policy_calibration((&out).into(), (&out).into(), &model).unwrap();
        assert!(r.ece_scaled.unwrap() < r.ece);
        assert_eq!(r.conformal.len(), ALPHAS.len() * 2 * 2);
        let lac = r.conformal("lac", "split", 0.1).unwrap();
        assert_eq!(lac.coverage, 1.0);
        assert_eq!(lac.mean_set_size, 1.0);
        // p_max 0.9 and 0.8 with every row right: ECE = mean(1 − p_max) = 0.15
        assert!((r.ece - 0.15).abs() < 1e-6, "{}", r.ece);
        assert!((r.ece_uniform - 0.15).abs() < 1e-6);
    }

    #[test]
    fn posterior_mixes_the_exits_with_the_gate_distribution() {
        // 2 exits, 1 gate; row 0: g = 1 → all mass on exit 0; row 1: g = 0 → final
        let layers = LayerOutputs {
            probs: vec![vec![0.9, 0.1, 0.6, 0.4], vec![0.2, 0.8, 0.3, 0.7]],
            gates: Some(vec![vec![1.0, 0.0]]),
            targets: vec![0, 1],
            n_classes: 2,
        };
        let p = posterior(&layers).unwrap();
        let expected = [0.9, 0.1, 0.3, 0.7];
        for (a, b) in p.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{p:?}");
        }
        let r = posterior_result(&layers, &layers).unwrap();
        assert_eq!(r.accuracy, 1.0);
    }
}
