//! # ponder-calibration: calibration and conformal prediction sets for any exit
//!
//! Calibration and uncertainty metrics for early-exit models: how far a model's (or an
//! exit's) confidence can be trusted, and prediction sets with a coverage guarantee.
//!
//! The crate works on plain slices (`&[f32]` probabilities or logits, row-major
//! `[n, n_classes]`, and `&[usize]` labels) and has no tensor dependency, so the outputs of
//! any backend can be measured after one host copy, and the numbers do not depend on the
//! backend. Sums and fits are computed in f64.
//!
//! ## Where it sits
//!
//! A leaf of the workspace with no tensor code: it depends on neither burn nor
//! `ponder-core`, so it measures any model, ponder's or not. The `ponder` program feeds
//! it every (model, policy) it evaluates (see `docs/architecture.md` in the repository);
//! the example `calibrate_exits` walks through a whole calibration of a simulated
//! 4-exit model: `cargo run -p ponder-calibration --example calibrate_exits`.
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
//! * Learn-then-Test ([`learn_then_test`]): CALM's choice of an exit threshold whose risk
//!   (expected inconsistency with the full model, any loss in [0, 1]) is at most δ with
//!   probability at least `1 − ε`; see "Learn-then-Test" below.
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
//! ## Learn-then-Test
//!
//! [`learn_then_test`] (Angelopoulos, Bates, Candès, Jordan & Lei 2021, as used by CALM,
//! Schuster et al. 2022) takes candidate thresholds ([`LttCandidate`]), each with its losses
//! on the same `n` i.i.d. calibration rows, ordered from the most conservative (never exit
//! early) to the least. Each candidate's null `H0_j: E[loss_j] > δ` gets a p-value
//! ([`PValue`]): [`hoeffding_bentkus_p_value`] for any losses in [0, 1], or the exact
//! [`binomial_p_value`] for 0/1 losses. Fixed-sequence testing rejects while `p_j ≤ ε` and
//! stops at the first non-rejection; the last rejected candidate is the choice
//! ([`LttOutcome`]), and it has risk at most δ with probability at least `1 − ε` over the
//! calibration draw. `None` means not even the first candidate could be certified (with
//! `n < ln ε / ln(1 − δ)` rows that is always so).
//!
//! ```
//! use ponder_calibration::{LttCandidate, PValue, learn_then_test};
//!
//! // Losses (1 = the early output disagrees with the full model) of three thresholds on
//! // the same 100 calibration rows: never exit (no loss), 0.9 (2 losses), 0.5 (20 losses).
//! let never: Vec<f64> = vec![0.0; 100];
//! let high: Vec<f64> = (0..100).map(|i| if i < 2 { 1.0 } else { 0.0 }).collect();
//! let low: Vec<f64> = (0..100).map(|i| if i < 20 { 1.0 } else { 0.0 }).collect();
//! let candidates = [
//!     LttCandidate { threshold: f64::INFINITY, losses: &never },
//!     LttCandidate { threshold: 0.9, losses: &high },
//!     LttCandidate { threshold: 0.5, losses: &low },
//! ];
//! let outcome = learn_then_test(&candidates, 0.1, 0.1, PValue::HoeffdingBentkus)?;
//! assert_eq!(outcome.chosen, Some(1));
//! assert_eq!(outcome.threshold, Some(0.9));
//! # Ok::<(), ponder_calibration::CalibrationError>(())
//! ```
//!
//! ## Choices
//!
//! Calibration and conformal settings follow JEI-DNN (Regol, Chataoui, Coates, ICLR 2024,
//! arXiv:2310.09163) and Angelopoulos & Bates (arXiv:2107.07511); where they differ:
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
//! * **Infinite thresholds survive JSON.** A `q̂` of `+∞` (or an LTT threshold of `±∞`) is
//!   written as the string `"inf"` (JSON has no infinity; serde_json would write `null` and
//!   fail to read it back).
//! * **LTT counts are snapped.** The Bentkus term's `⌈n · mean⌉` snaps `n · mean` to the
//!   nearest integer within [`TOTAL_LOSS_TOLERANCE`] first, so round-off in a mean of 0/1
//!   losses (`300 · (21/300) = 21.000000000000004`) does not add a failure.
//! * **Errors, not panics, for data.** Everything that takes data returns
//!   [`Result`] with a structured [`CalibrationError`]; the few infallible helpers
//!   ([`softmax_rows`], [`apply_temperature`], `prediction_set`) document their panics.

mod conformal;
mod error;
mod ltt;
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
pub use ltt::{
    LttCandidate, LttOutcome, PValue, TOTAL_LOSS_TOLERANCE, binomial_p_value,
    hoeffding_bentkus_p_value, learn_then_test,
};
pub use metrics::{
    Binning, CalibrationReport, NLL_FLOOR, ReliabilityBin, brier_score, calibration_error,
    negative_log_likelihood, top_label_calibration_error,
};
pub use posterior::{WEIGHT_SUM_TOLERANCE, mixture_posterior, mixture_posterior_rows};
pub use predictions::{PROB_TOLERANCE, Predictions, ROW_SUM_TOLERANCE, softmax_rows};
pub use temperature::{
    BETA_MAX, BETA_MIN, Temperature, apply_temperature, fit_temperature, fit_temperatures_per_exit,
};
