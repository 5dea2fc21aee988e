//! Nonconformity scores: LAC, APS and RAPS (non-randomised).

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::error::{CalibrationError, Result};
use crate::predictions::Predictions;

/// The nonconformity score: large when the label looks unlikely under the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConformalScore {
    /// LAC, the "least ambiguous set-valued classifier" (Sadinle et al. 2019):
    /// `s = 1 − p_y` (JEI-DNN's score).
    Lac,
    /// APS (Romano et al. 2020), non-randomised: `s = Σ` of the probabilities of the
    /// classes ranked at or above `y` (by descending probability, ties broken by the lower
    /// class index first).
    Aps,
    /// RAPS (Angelopoulos et al. 2021), non-randomised: the APS score plus
    /// `λ·max(0, rank(y) − k_reg)`, with `rank(y)` 1-based. `λ` must be finite and ≥ 0.
    Raps {
        /// The penalty per rank beyond `k_reg`, `λ ≥ 0`.
        lambda: f64,
        /// The number of top-ranked classes that go unpenalised.
        k_reg: usize,
    },
}

impl ConformalScore {
    /// Checks the score's parameters (RAPS: `λ` finite and ≥ 0).
    ///
    /// # Errors
    ///
    /// [`CalibrationError::InvalidParameter`] for a bad `λ`.
    pub fn validate(&self) -> Result<()> {
        match *self {
            ConformalScore::Raps { lambda, .. } if !(lambda.is_finite() && lambda >= 0.0) => {
                Err(CalibrationError::InvalidParameter {
                    name: "RAPS lambda".into(),
                    value: lambda.to_string(),
                    reason: "the rank penalty must be finite and non-negative".into(),
                })
            }
            _ => Ok(()),
        }
    }

    /// The rank penalty added to the APS score at 1-based `rank` (0 for LAC and APS).
    fn penalty(&self, rank: usize) -> f64 {
        match *self {
            ConformalScore::Raps { lambda, k_reg } => lambda * rank.saturating_sub(k_reg) as f64,
            _ => 0.0,
        }
    }
}

/// Whether class `a` is ranked strictly before class `b`: a larger probability, or an
/// equal one and a lower index. `total_cmp` makes the order total (and deterministic)
/// whatever the values.
fn ranked_before(probs: &[f32], a: usize, b: usize) -> bool {
    match probs[a].total_cmp(&probs[b]) {
        Ordering::Greater => true,
        Ordering::Equal => a < b,
        Ordering::Less => false,
    }
}

/// Sorts class indices into rank order (see [`ranked_before`]).
fn sort_by_rank(probs: &[f32], order: &mut [usize]) {
    order.sort_unstable_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
}

/// `s(x, label)` with a caller-owned scratch buffer (no allocation once it has grown).
///
/// APS/RAPS: the probabilities of the classes ranked before `label` are added in rank order,
/// then `p_label`: the same additions, in the same order, as the running sum in
/// [`scores_all_classes`], so both give bit-identical scores.
pub(super) fn score_with(
    score: ConformalScore,
    probs: &[f32],
    label: usize,
    order: &mut Vec<usize>,
) -> f64 {
    match score {
        ConformalScore::Lac => 1.0 - f64::from(probs[label]),
        ConformalScore::Aps | ConformalScore::Raps { .. } => {
            order.clear();
            order.extend((0..probs.len()).filter(|&k| ranked_before(probs, k, label)));
            sort_by_rank(probs, order);
            let mut cumulative = 0.0f64;
            for &k in order.iter() {
                cumulative += f64::from(probs[k]);
            }
            cumulative += f64::from(probs[label]);
            cumulative + score.penalty(order.len() + 1)
        }
    }
}

/// `out[k] = s(x, k)` for every class `k` of the row, in O(K log K).
pub(super) fn scores_all_classes(
    score: ConformalScore,
    probs: &[f32],
    order: &mut Vec<usize>,
    out: &mut Vec<f64>,
) {
    out.clear();
    match score {
        ConformalScore::Lac => out.extend(probs.iter().map(|&p| 1.0 - f64::from(p))),
        ConformalScore::Aps | ConformalScore::Raps { .. } => {
            out.resize(probs.len(), 0.0);
            order.clear();
            order.extend(0..probs.len());
            sort_by_rank(probs, order);
            let mut cumulative = 0.0f64;
            for (r, &k) in order.iter().enumerate() {
                cumulative += f64::from(probs[k]);
                out[k] = cumulative + score.penalty(r + 1);
            }
        }
    }
}

/// The nonconformity score `s(x, label)` of `label` for one row of probabilities
/// `[n_classes]` (see [`ConformalScore`] for the formulas).
///
/// # Panics
///
/// If `label >= probs.len()`.
pub fn nonconformity(score: ConformalScore, probs: &[f32], label: usize) -> f64 {
    assert!(
        label < probs.len(),
        "label {label} out of range for {} classes",
        probs.len()
    );
    score_with(score, probs, label, &mut Vec::new())
}

/// The nonconformity score of every row's label, `[n]`.
pub fn nonconformity_scores(score: ConformalScore, preds: &Predictions) -> Vec<f64> {
    let mut order = Vec::with_capacity(preds.n_classes());
    preds
        .rows()
        .map(|(row, label)| score_with(score, row, label, &mut order))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: [f32; 4] = [0.1, 0.5, 0.3, 0.1];

    #[test]
    fn scores_match_hand_values() {
        // Rank order of ROW: class 1 (0.5), 2 (0.3), 0 (0.1, lower index first), 3 (0.1).
        // Probabilities are f32 literals: tolerance 1e-7 covers their rounding.
        let close = |a: f64, b: f64| (a - b).abs() < 1e-7;
        assert!(close(nonconformity(ConformalScore::Lac, &ROW, 2), 0.7));
        assert!(close(nonconformity(ConformalScore::Aps, &ROW, 1), 0.5));
        assert!(close(nonconformity(ConformalScore::Aps, &ROW, 2), 0.8));
        assert!(close(nonconformity(ConformalScore::Aps, &ROW, 0), 0.9));
        assert!(close(nonconformity(ConformalScore::Aps, &ROW, 3), 1.0));
        let raps = ConformalScore::Raps {
            lambda: 0.5,
            k_reg: 1,
        };
        // rank(3) = 4: 1.0 + 0.5·(4 − 1); rank(1) = 1: no penalty.
        assert!(close(nonconformity(raps, &ROW, 3), 2.5));
        assert!(close(nonconformity(raps, &ROW, 1), 0.5));
        assert!(close(nonconformity(raps, &ROW, 2), 0.8 + 0.5));
    }

    #[test]
    fn label_scores_equal_the_set_scores_exactly() {
        // Bit-identical, so that coverage and set membership agree.
        let row = [0.1f32, 0.2, 0.1, 0.35, 0.25, 1e-12];
        for score in [
            ConformalScore::Lac,
            ConformalScore::Aps,
            ConformalScore::Raps {
                lambda: 0.01,
                k_reg: 2,
            },
        ] {
            let mut all = Vec::new();
            scores_all_classes(score, &row, &mut Vec::new(), &mut all);
            for (k, &s) in all.iter().enumerate() {
                assert_eq!(nonconformity(score, &row, k).to_bits(), s.to_bits());
            }
        }
    }
}
