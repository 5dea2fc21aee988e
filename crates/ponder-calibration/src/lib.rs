//! # ponder-calibration
//!
//! Calibration and uncertainty metrics for early-exit models: how far a model's (or an
//! exit's) confidence can be trusted, and prediction sets with a coverage guarantee.
//!
//! The crate works on plain slices (`&[f32]` probabilities or logits, row-major
//! `[n, n_classes]`, and `&[usize]` labels) and has no tensor dependency, so the outputs of
//! any backend can be measured after one host copy, and the numbers do not depend on the
//! backend. Sums and fits are computed in f64.
//!
//! ## How the pieces fit
//!
//! * [`Predictions`] wraps and checks probabilities with labels once (finite, in [0, 1],
//!   rows summing to 1, labels in range); everything downstream takes it and need not
//!   check again. [`softmax_rows`] turns logits into probabilities.
//! * Metrics ([`calibration_error`], [`brier_score`], [`negative_log_likelihood`]): ECE and
//!   MCE with reliability-diagram bins ([`CalibrationReport`]) from `p_max` and correctness
//!   ([`Predictions::top_label`]), uniform or quantile ([`Binning`]).
//! * Temperature scaling ([`fit_temperature`], [`apply_temperature`],
//!   [`fit_temperatures_per_exit`]): one scalar per model or per exit, fitted on logits by
//!   minimising NLL.
//! * Conformal prediction ([`SplitConformal`], [`PerExitConformal`]): split-conformal sets
//!   with the LAC, APS or RAPS score ([`ConformalScore`]), one threshold for the whole model
//!   or one per exit with JEI-DNN's fallback; [`ConformalReport`] gives coverage and mean
//!   set size.
//! * Posteriors ([`mixture_posterior`]): JEI-DNN's exit-distribution-weighted mixture of
//!   every exit's probabilities.
//!
//! ```
//! use ponder_calibration::{
//!     Binning, ConformalScore, Predictions, SplitConformal, calibration_error, fit_temperature,
//!     softmax_rows,
//! };
//!
//! // Three rows of two-class logits (host copies of any backend's output) and labels.
//! let logits = [2.0f32, 0.0, 0.5, 1.5, 3.0, -1.0];
//! let labels = [0, 1, 1];
//! let probs = softmax_rows(&logits, 2);
//! let preds = Predictions::new(&probs, 2, &labels)?;
//!
//! let (confidence, correct) = preds.top_label();
//! let report = calibration_error(&confidence, &correct, Binning::Quantile(15))?;
//! assert!(report.ece >= 0.0 && report.ece <= 1.0);
//!
//! let t = fit_temperature(&logits, 2, &labels)?;
//! assert!(t.nll_after <= t.nll_before);
//!
//! let conformal = SplitConformal::calibrate(ConformalScore::Lac, &preds, 0.5)?;
//! let set = conformal.prediction_set(preds.row(0));
//! assert!(set.contains(&0));
//! # Ok::<(), ponder_calibration::CalibrationError>(())
//! ```
//!
//! ## Choices (see `methods.md` §5.5 and pitfalls 12–13)
//!
//! * **ECE is dataset-level.** JEI-DNN's code computes ECE per batch and averages it
//!   weighted by batch size; [`calibration_error`] bins the whole set at once, which does
//!   not depend on the batch size. JEI-DNN's setting is `Binning::Quantile(15)` on `p_max`;
//!   ECE is a fraction here (JEI-DNN reports ×100).
//! * **Conformal quantile.** [`conformal_quantile`] is the `⌈(n+1)(1−α)⌉`-th smallest
//!   score, and `+∞` (every class in every set) when that rank exceeds `n`, which keeps the
//!   `1 − α` guarantee. JEI-DNN's code uses numpy's "higher" quantile at level
//!   `min(1, ⌈(n+1)(1−α)⌉/n)`, which is one order statistic higher when the level is below
//!   1 and the largest score when it is capped; [`conformal_quantile_capped`] and
//!   [`QuantileRule::ReferenceCapped`] reproduce it.
//! * **APS and RAPS are non-randomised** (no uniform tie-breaking draw): the sets are
//!   deterministic and nested in α, and coverage is at least `1 − α` (slightly
//!   conservative). Prediction sets are never forced to be non-empty.
//! * **Infinite thresholds survive JSON.** A `q̂` of `+∞` is written as the string `"inf"`
//!   (JSON has no infinity; serde_json would write `null` and fail to read it back).
//! * **Errors, not panics, for data.** Everything that takes data returns
//!   [`Result`] with a structured [`CalibrationError`]; the few infallible helpers
//!   ([`softmax_rows`], [`apply_temperature`], `prediction_set`) document their panics.

mod conformal;
mod error;
mod metrics;
mod posterior;
mod predictions;
mod serde_ext;
mod temperature;

pub use conformal::{
    ConformalReport, ConformalScore, PerExitConformal, QuantileRule, QuantileSource,
    SplitConformal, conformal_quantile, conformal_quantile_capped, conformal_quantile_with,
    nonconformity, nonconformity_scores,
};
pub use error::{CalibrationError, Result};
pub use metrics::{
    Binning, CalibrationReport, NLL_FLOOR, ReliabilityBin, brier_score, calibration_error,
    negative_log_likelihood, top_label_calibration_error,
};
pub use posterior::{WEIGHT_SUM_TOLERANCE, mixture_posterior, mixture_posterior_rows};
pub use predictions::{PROB_TOLERANCE, Predictions, ROW_SUM_TOLERANCE, softmax_rows};
pub use temperature::{
    BETA_MAX, BETA_MIN, Temperature, apply_temperature, fit_temperature, fit_temperatures_per_exit,
};
