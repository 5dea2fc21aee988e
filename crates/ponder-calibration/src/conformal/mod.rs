//! Split conformal prediction sets for classifiers (Vovk et al. 2005; Angelopoulos & Bates
//! 2021, arXiv:2107.07511), with one threshold for the whole model or one per exit
//! (JEI-DNN's "gated" variant, Regol et al., ICLR 2024, arXiv:2310.09163).
//!
//! Scores are computed in f64 from the f32 probabilities. A class `k` is in a row's set iff
//! its score `s(x, k) ≤ q̂`, where `s(x, k)` is computed by exactly the same arithmetic as the
//! calibration score of a row whose label is `k`, so "the label is in the set" and "the
//! label's score is at most q̂" never disagree through round-off.

mod per_exit;
mod quantile;
mod score;
mod split;

pub use per_exit::{PerExitConformal, QuantileSource};
pub use quantile::{
    QuantileRule, conformal_quantile, conformal_quantile_capped, conformal_quantile_with,
};
pub use score::{ConformalScore, nonconformity, nonconformity_scores};
pub use split::{ConformalReport, SplitConformal};
