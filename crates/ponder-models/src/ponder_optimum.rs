//! How far a trained halting head is from the best exit distribution its loss allows.
//!
//! The PonderNet loss of one row, `Σ_k p_k·ℓ_k + β·KL`, has a closed-form minimiser over
//! the exit distributions ([`optimal_exit_distribution`]). Comparing it with what the
//! halting head learned separates two explanations of a learned distribution that equals
//! the prior: the optimum itself is the prior (every layer is right, so nothing is gained
//! by moving mass), or the head did not learn what the loss asks for.

use ponder_core::to_host;
use ponder_exits::loss;
use ponder_exits::ponder::{self, LastLayer, optimal_exit_distribution};
use serde::{Deserialize, Serialize};

use crate::classifier::MultiExitClassifier;
use crate::source::Batch;
use crate::train::PonderConfig;

/// A learned exit distribution against the per-row optimum of its loss, over some rows.
/// Distributions are compared with every layer's mass summing to 1 (`λ_N = 1`), by the
/// mean total-variation distance `½·Σ_k |p_k − q_k|`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HaltingOptimum {
    /// Rows compared.
    pub rows: usize,
    /// Mean expected exit layer (1-based) under the learned distribution.
    pub learned_depth: f64,
    /// Mean expected exit layer under the per-row optimum.
    pub optimal_depth: f64,
    /// Expected exit layer under the prior.
    pub prior_depth: f64,
    /// Mean distance between the learned distribution and the optimum.
    pub learned_to_optimal: f64,
    /// Mean distance between the learned distribution and the prior.
    pub learned_to_prior: f64,
    /// Mean distance between the optimum and the prior.
    pub optimal_to_prior: f64,
    /// Share of rows whose optimum is within 0.05 of the prior.
    pub optimal_near_prior: f64,
}

fn distance(p: &[f64], q: &[f64]) -> f64 {
    0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>()
}

fn depth(p: &[f64]) -> f64 {
    p.iter().enumerate().map(|(k, v)| (k + 1) as f64 * v).sum()
}

/// The halting head of `model` against the optimum of `config`'s loss on `batches`
/// (`None` for a model without a halting head).
pub fn halting_optimum(
    model: &MultiExitClassifier,
    batches: &[Batch],
    config: &PonderConfig,
) -> Option<HaltingOptimum> {
    model.halting.as_ref()?;
    let n_layers = model.n_layers();
    let prior: Vec<f64> =
        ponder::geometric_prior(config.lambda_p, n_layers, config.prior_leftover_on_last)
            .into_iter()
            .map(f64::from)
            .collect();
    let total: f64 = prior.iter().sum();
    let prior_normalised: Vec<f64> = prior.iter().map(|g| g / total).collect();
    let mut sums = [0.0f64; 5];
    let mut near = 0usize;
    let mut rows = 0usize;
    for batch in batches {
        let out = model.forward_all(batch.input.clone());
        let device = out.logits[0].device();
        let targets = batch.targets_tensor(&device);
        let ce: Vec<Vec<f32>> = out
            .logits
            .into_iter()
            .map(|l| to_host(loss::cross_entropy_per_row(l, targets.clone())))
            .collect();
        let lambdas: Vec<_> = out.halting.into_iter().flatten().collect();
        let p: Vec<Vec<f32>> = ponder::exit_distribution(&lambdas, LastLayer::ForceHalt)
            .into_iter()
            .map(to_host)
            .collect();
        for r in 0..batch.targets.len() {
            let losses: Vec<f64> = ce.iter().map(|l| l[r] as f64).collect();
            let learned: Vec<f64> = p.iter().map(|p| p[r] as f64).collect();
            let optimal = optimal_exit_distribution(&losses, &prior, config.beta as f64, config.kl);
            let to_prior = distance(&optimal, &prior_normalised);
            sums[0] += depth(&learned);
            sums[1] += depth(&optimal);
            sums[2] += distance(&learned, &optimal);
            sums[3] += distance(&learned, &prior_normalised);
            sums[4] += to_prior;
            near += usize::from(to_prior < 0.05);
            rows += 1;
        }
    }
    let n = rows.max(1) as f64;
    Some(HaltingOptimum {
        rows,
        learned_depth: sums[0] / n,
        optimal_depth: sums[1] / n,
        prior_depth: depth(&prior_normalised),
        learned_to_optimal: sums[2] / n,
        learned_to_prior: sums[3] / n,
        optimal_to_prior: sums[4] / n,
        optimal_near_prior: near as f64 / n,
    })
}
