//! PonderNet's exit distribution, geometric prior and loss (Banino, Balaguer & Blundell 2021,
//! arXiv:2107.05407), with PALBERT's variants (Balagansky & Gavrilov, NeurIPS 2022,
//! arXiv:2204.03276).
//!
//! With conditional halting probabilities `λ_n` from a [`HaltingHead`](crate::HaltingHead),
//! the probability of exiting at layer `n` is `p_n = λ_n · Π_{j<n}(1 − λ_j)`, and the
//! loss is `Σ_n mean_b(p_n·ℓ_n) + β·KL` against a geometric prior truncated to `N`
//! layers. Everything here is computed in `f32`, whatever precision the model runs in
//! (products of `1 − λ` over many layers underflow in half precision).

use burn::tensor::{FloatDType, Tensor};
use serde::{Deserialize, Serialize};

/// What happens at the last layer, where the product of `1 − λ` leaves mass unassigned.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LastLayer {
    /// `λ_N := 1`: the last layer takes all the remaining mass, so `Σ p = 1` exactly
    /// (labml's PonderNet). `λ_N` itself is ignored.
    ForceHalt,
    /// PALBERT: `λ_N` is not forced, so `Σ p` is not 1 in general (below 1, or a little
    /// above once the floor applies); once a row's cumulative probability exceeds
    /// `1 − ε`, its later `p` are set to `ε / N` (keeps `log p` finite in the KL).
    EpsilonFloor(f32),
}

/// Which KL divergence regularises the exit distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlDirection {
    /// `KL(p_G ‖ p) = Σ_k p_G(k)(log p_G(k) − log p_k)`: what the reference code computes
    /// (`KLDivLoss(log p, p_G)` in PyTorch's argument order, labml and PALBERT alike).
    PriorToExits,
    /// `KL(p ‖ p_G) = Σ_k p_k(log p_k − log p_G(k))`: what the PonderNet paper writes.
    ExitsToPrior,
}

/// The smallest probability `log` is taken of: `p` is clamped before `log` so that the KL
/// stays finite when a layer gets no exit mass.
const LOG_FLOOR: f32 = 1e-10;

/// The exit distribution `p_n = λ_n · Π_{j<n}(1 − λ_j)` for every layer, per row.
///
/// # Shapes
/// - lambdas: `N` tensors `[batch_size]` (one per layer, values in `[0, 1]`)
/// - output: `N` tensors `[batch_size]`, in `f32`
///
/// # Panics
/// If `lambdas` is empty or an ε is outside `(0, 1)`.
pub fn exit_distribution(lambdas: &[Tensor<1>], last: LastLayer) -> Vec<Tensor<1>> {
    let n = lambdas.len();
    assert!(n > 0, "exit_distribution: no layers");
    let first = lambdas[0].clone().cast(FloatDType::F32);
    let mut cond = first.ones_like();
    let mut cdf = first.zeros_like();
    let mut out = Vec::with_capacity(n);
    for (i, lambda) in lambdas.iter().enumerate() {
        let lambda = lambda.clone().cast(FloatDType::F32);
        let p = match last {
            LastLayer::ForceHalt if i + 1 == n => cond.clone(),
            LastLayer::ForceHalt => lambda.clone() * cond.clone(),
            LastLayer::EpsilonFloor(eps) => {
                assert!(
                    eps > 0.0 && eps < 1.0,
                    "exit_distribution: ε = {eps} is not in (0, 1)"
                );
                let done = cdf.clone().greater_elem(1.0 - eps);
                (lambda.clone() * cond.clone()).mask_fill(done, eps / n as f32)
            }
        };
        cond = cond * lambda.neg().add_scalar(1.0);
        cdf = cdf + p.clone();
        out.push(p);
    }
    out
}

/// The expected exit layer `Σ_n n·p_n` (1-based) per row.
///
/// # Shapes
/// - p: `N` tensors `[batch_size]`
/// - output: `[batch_size]`
pub fn expected_depth(p: &[Tensor<1>]) -> Tensor<1> {
    p.iter()
        .enumerate()
        .map(|(i, p)| p.clone().mul_scalar((i + 1) as f32))
        .reduce(|a, b| a + b)
        .unwrap_or_else(|| panic!("expected_depth: no layers"))
}

/// The geometric prior `p_G(k) = λ_p (1 − λ_p)^{k−1}`, `k = 1..n`, truncated to `n`
/// layers. With `leftover_on_last` the mass beyond `n` goes to the last layer so the
/// prior sums to 1 (PALBERT); without it the raw first `n` masses are used (labml).
///
/// # Panics
/// If `lambda_p` is not in `(0, 1]` or `n` is 0.
pub fn geometric_prior(lambda_p: f64, n: usize, leftover_on_last: bool) -> Vec<f32> {
    assert!(
        lambda_p > 0.0 && lambda_p <= 1.0,
        "geometric_prior: λ_p = {lambda_p} is not in (0, 1]"
    );
    assert!(n > 0, "geometric_prior: no layers");
    let mut prior: Vec<f64> = (0..n)
        .map(|k| lambda_p * (1.0 - lambda_p).powi(k as i32))
        .collect();
    if leftover_on_last {
        // the mass beyond layer n − 1, (1 − λ_p)^{n−1}, in closed form (never negative)
        prior[n - 1] = (1.0 - lambda_p).powi(n as i32 - 1);
    }
    prior.into_iter().map(|v| v as f32).collect()
}

/// The KL divergence between the exit distribution and a prior, averaged over the rows.
///
/// `p` is clamped to `1e-10` before its log is taken; prior entries of 0 contribute 0.
///
/// # Shapes
/// - p: `N` tensors `[batch_size]`
/// - output: `[1]`
///
/// # Panics
/// If `prior` does not have one entry per layer, or the paper's direction meets a prior
/// entry of 0.
pub fn kl_to_prior(p: &[Tensor<1>], prior: &[f32], direction: KlDirection) -> Tensor<1> {
    assert_eq!(
        p.len(),
        prior.len(),
        "kl_to_prior: {} layers but a prior of {}",
        p.len(),
        prior.len()
    );
    let terms = p.iter().zip(prior).filter_map(|(p, &g)| {
        let p = p.clone().cast(FloatDType::F32);
        match direction {
            KlDirection::PriorToExits if g > 0.0 => Some(
                p.clamp_min(LOG_FLOOR)
                    .log()
                    .neg()
                    .add_scalar(g.ln())
                    .mul_scalar(g),
            ),
            KlDirection::PriorToExits => None,
            KlDirection::ExitsToPrior => {
                assert!(
                    g > 0.0,
                    "kl_to_prior: KL(p ‖ prior) needs a prior > 0 everywhere"
                );
                let log_p = p.clone().clamp_min(LOG_FLOOR).log();
                Some(p * log_p.sub_scalar(g.ln()))
            }
        }
    });
    terms
        .reduce(|a, b| a + b)
        .unwrap_or_else(|| panic!("kl_to_prior: the prior is 0 everywhere"))
        .mean()
        .reshape([1])
}

/// The PonderNet loss and its parts.
#[derive(Debug, Clone)]
pub struct PonderLoss {
    /// `task + β·kl`, `[1]`.
    pub total: Tensor<1>,
    /// `Σ_n mean_b(p_n·ℓ_n)`, `[1]`.
    pub task: Tensor<1>,
    /// The KL term (before β), `[1]`.
    pub kl: Tensor<1>,
}

/// PonderNet's loss `Σ_n mean_b(p_{n,b}·ℓ_{n,b}) + β·KL(·)` (arXiv:2107.05407; PALBERT,
/// arXiv:2204.03276).
///
/// Every layer's loss is used, so `p` and `per_row_losses` must have one entry per
/// layer. PALBERT's code stops computing layers once every row's cdf exceeds `1 − ε` and
/// zips the shorter list of logits with `p`, silently dropping the late layers from the
/// task loss; here nothing is dropped.
///
/// # Shapes
/// - p, per_row_losses: `N` tensors `[batch_size]`
///
/// # Panics
/// If the lengths differ or are 0.
pub fn ponder_loss(
    p: &[Tensor<1>],
    per_row_losses: &[Tensor<1>],
    prior: &[f32],
    beta: f32,
    direction: KlDirection,
) -> PonderLoss {
    assert_eq!(
        p.len(),
        per_row_losses.len(),
        "ponder_loss: {} exit probabilities but {} layer losses",
        p.len(),
        per_row_losses.len()
    );
    let task = p
        .iter()
        .zip(per_row_losses)
        .map(|(p, l)| (p.clone() * l.clone().cast(FloatDType::F32)).mean())
        .reduce(|a, b| a + b)
        .unwrap_or_else(|| panic!("ponder_loss: no layers"))
        .reshape([1]);
    let kl = kl_to_prior(p, prior, direction);
    PonderLoss {
        total: task.clone() + kl.clone().mul_scalar(beta),
        task,
        kl,
    }
}

/// The exit distribution that minimises one row's PonderNet loss
/// `Σ_k p_k·ℓ_k + β·KL` over every distribution `p` on the `N` layers (what a halting
/// head could at best learn for that row), from the row's per-layer losses `ℓ_k`:
///
/// * `KL(p_G ‖ p)` (the reference code's): `p_k = β·p_G(k) / (ℓ_k + μ)`, with `μ` the
///   unique value `> −min ℓ` for which `Σ p = 1` (setting the Lagrangian's derivative
///   `ℓ_k − β·p_G(k)/p_k + μ` to 0). A row whose losses are equal at every layer (an
///   easy row, right everywhere) gets exactly the prior.
/// * `KL(p ‖ p_G)` (the paper's): `p_k ∝ p_G(k)·exp(−ℓ_k / β)`.
///
/// With `β = 0` all the mass goes to the layer of the smallest loss.
///
/// # Panics
/// If the lengths differ or are 0, `β < 0`, or the prior has no positive entry.
pub fn optimal_exit_distribution(
    losses: &[f64],
    prior: &[f64],
    beta: f64,
    direction: KlDirection,
) -> Vec<f64> {
    assert_eq!(
        losses.len(),
        prior.len(),
        "optimal_exit_distribution: {} losses, a prior of {}",
        losses.len(),
        prior.len()
    );
    assert!(!losses.is_empty(), "optimal_exit_distribution: no layers");
    assert!(beta >= 0.0, "optimal_exit_distribution: β = {beta} < 0");
    let support = |k: usize| prior[k] > 0.0;
    assert!(
        (0..prior.len()).any(support),
        "optimal_exit_distribution: the prior is 0 everywhere"
    );
    let argmin = (0..losses.len())
        .filter(|&k| beta == 0.0 || support(k))
        .min_by(|&a, &b| losses[a].total_cmp(&losses[b]))
        .unwrap_or(0);
    if beta == 0.0 {
        let mut p = vec![0.0; losses.len()];
        p[argmin] = 1.0;
        return p;
    }
    match direction {
        KlDirection::ExitsToPrior => {
            let min = losses[argmin];
            let w: Vec<f64> = (0..losses.len())
                .map(|k| prior[k] * (-(losses[k] - min) / beta).exp())
                .collect();
            let total: f64 = w.iter().sum();
            w.into_iter().map(|v| v / total).collect()
        }
        KlDirection::PriorToExits => {
            // Σ_k β·p_G(k)/(ℓ_k + μ) falls from +∞ (μ → −min ℓ) to 0: bisect for 1
            let min = losses[argmin];
            let mass = |mu: f64| -> f64 {
                (0..losses.len())
                    .filter(|&k| support(k))
                    .map(|k| beta * prior[k] / (losses[k] + mu))
                    .sum()
            };
            let (mut lo, mut hi) = (-min, beta - min + 1.0);
            for _ in 0..200 {
                let mid = 0.5 * (lo + hi);
                if mid <= lo || mid >= hi {
                    break;
                }
                if mass(mid) > 1.0 {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            let mu = hi;
            let p: Vec<f64> = (0..losses.len())
                .map(|k| match support(k) {
                    true => beta * prior[k] / (losses[k] + mu),
                    false => 0.0,
                })
                .collect();
            let total: f64 = p.iter().sum();
            p.into_iter().map(|v| v / total).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn the_optimal_exit_distribution_minimises_the_row_loss() {
        let prior: Vec<f64> = geometric_prior(0.2, 6, true)
            .into_iter()
            .map(f64::from)
            .collect();
        let objective = |p: &[f64], l: &[f64], beta: f64, direction: KlDirection| -> f64 {
            let task: f64 = p.iter().zip(l).map(|(p, l)| p * l).sum();
            let kl: f64 = match direction {
                KlDirection::PriorToExits => {
                    prior.iter().zip(p).map(|(g, p)| g * (g / p).ln()).sum()
                }
                KlDirection::ExitsToPrior => {
                    p.iter().zip(&prior).map(|(p, g)| p * (p / g).ln()).sum()
                }
            };
            task + beta * kl
        };
        // a hard row (right only at the later layers) and an easy one (right everywhere)
        let hard = [2.3, 1.9, 1.2, 0.4, 0.1, 0.05];
        let easy = [0.01; 6];
        for direction in [KlDirection::PriorToExits, KlDirection::ExitsToPrior] {
            for beta in [0.5, 0.05] {
                let p = optimal_exit_distribution(&hard, &prior, beta, direction);
                assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
                let best = objective(&p, &hard, beta, direction);
                // every small move along the simplex costs
                for i in 0..6 {
                    for j in 0..6 {
                        if i == j || p[j] < 1e-4 {
                            continue;
                        }
                        let mut q = p.clone();
                        q[i] += 1e-4;
                        q[j] -= 1e-4;
                        assert!(objective(&q, &hard, beta, direction) > best - 1e-12);
                    }
                }
                // equal losses everywhere: the prior itself
                let p = optimal_exit_distribution(&easy, &prior, beta, direction);
                let total: f64 = prior.iter().sum();
                for (p, g) in p.iter().zip(&prior) {
                    assert!((p - g / total).abs() < 1e-9, "{p} vs {g}");
                }
            }
        }
        let greedy = optimal_exit_distribution(&hard, &prior, 0.0, KlDirection::PriorToExits);
        assert_eq!(greedy, vec![0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    }

    fn col(values: &[f32]) -> Tensor<1> {
        Tensor::from_data(
            TensorData::new(values.to_vec(), [values.len()]),
            &Device::flex(),
        )
    }

    fn host(t: Tensor<1>) -> Vec<f32> {
        ponder_core::to_host(t)
    }

    #[test]
    fn forced_last_layer_sums_to_one() {
        // three rows with very different λ sequences over 12 layers
        let lambdas: Vec<Tensor<1>> = (0..12)
            .map(|i| col(&[0.01, 0.9, (i as f32 * 0.37).sin().abs()]))
            .collect();
        let p = exit_distribution(&lambdas, LastLayer::ForceHalt);
        let total = host(p.into_iter().reduce(|a, b| a + b).unwrap());
        for t in total {
            assert!((t - 1.0).abs() < 1e-6, "Σp = {t}");
        }
    }

    #[test]
    fn expected_depth_matches_closed_form_for_constant_lambda() {
        for &(lambda, n) in &[(0.1f32, 12usize), (0.3, 6), (0.5, 20), (0.9, 3)] {
            let lambdas: Vec<Tensor<1>> = (0..n).map(|_| col(&[lambda])).collect();
            let p = exit_distribution(&lambdas, LastLayer::ForceHalt);
            let got = host(expected_depth(&p))[0] as f64;
            // E[min(G, N)] for G geometric: Σ_{k<N} (1−λ)^k
            let l = lambda as f64;
            let expected = (1.0 - (1.0 - l).powi(n as i32)) / l;
            assert!(
                (got - expected).abs() < 1e-5,
                "λ={lambda} N={n}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn epsilon_floor_follows_palbert() {
        // λ = 0.99 everywhere: cdf passes 1 − ε after layer 1, later p are ε/N
        let eps = 0.05;
        let lambdas: Vec<Tensor<1>> = (0..4).map(|_| col(&[0.99, 0.1])).collect();
        let p: Vec<Vec<f32>> = exit_distribution(&lambdas, LastLayer::EpsilonFloor(eps))
            .into_iter()
            .map(host)
            .collect();
        assert!((p[0][0] - 0.99).abs() < 1e-6);
        for layer in &p[1..] {
            assert!((layer[0] - eps / 4.0).abs() < 1e-7, "{layer:?}");
        }
        // the slow row is never floored: p = 0.1·0.9^(n−1), Σ p < 1
        for (i, layer) in p.iter().enumerate() {
            assert!((layer[1] - 0.1 * 0.9f32.powi(i as i32)).abs() < 1e-6);
        }
    }

    #[test]
    fn prior_truncation_options() {
        let raw = geometric_prior(0.2, 5, false);
        assert!((raw[4] - 0.2 * 0.8f32.powi(4)).abs() < 1e-7);
        assert!(raw.iter().sum::<f32>() < 1.0);
        let normalised = geometric_prior(0.2, 5, true);
        assert!((normalised.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((normalised[4] - 0.8f32.powi(4)).abs() < 1e-6);
    }

    #[test]
    fn kl_is_zero_at_the_prior_in_both_directions_and_positive_elsewhere() {
        let prior = geometric_prior(0.3, 6, true);
        let p: Vec<Tensor<1>> = prior.iter().map(|&g| col(&[g, g])).collect();
        for dir in [KlDirection::PriorToExits, KlDirection::ExitsToPrior] {
            let kl = host(kl_to_prior(&p, &prior, dir))[0];
            assert!(kl.abs() < 1e-6, "{dir:?}: {kl}");
        }
        let uniform: Vec<Tensor<1>> = (0..6).map(|_| col(&[1.0 / 6.0])).collect();
        let forward = host(kl_to_prior(&uniform, &prior, KlDirection::ExitsToPrior))[0];
        let reverse = host(kl_to_prior(&uniform, &prior, KlDirection::PriorToExits))[0];
        assert!(forward > 0.0 && reverse > 0.0 && (forward - reverse).abs() > 1e-4);
        // both directions by hand
        let by_hand: f32 = prior
            .iter()
            .map(|&g| (1.0f32 / 6.0) * ((1.0f32 / 6.0).ln() - g.ln()))
            .sum();
        assert!((forward - by_hand).abs() < 1e-5);
        let by_hand: f32 = prior
            .iter()
            .map(|&g| g * (g.ln() - (1.0f32 / 6.0).ln()))
            .sum();
        assert!((reverse - by_hand).abs() < 1e-5);
    }

    #[test]
    fn loss_weights_layer_losses_by_exit_probability() {
        let p = vec![col(&[0.25, 1.0]), col(&[0.75, 0.0])];
        let losses = vec![col(&[2.0, 4.0]), col(&[1.0, 8.0])];
        let prior = geometric_prior(0.5, 2, true);
        let out = ponder_loss(&p, &losses, &prior, 0.0, KlDirection::PriorToExits);
        // layer 1: mean(0.5, 4) = 2.25; layer 2: mean(0.75, 0) = 0.375
        assert!((host(out.task)[0] - 2.625).abs() < 1e-6);
        assert!((host(out.total)[0] - 2.625).abs() < 1e-6);
        let with_kl = ponder_loss(&p, &losses, &prior, 0.5, KlDirection::PriorToExits);
        let kl = host(with_kl.kl)[0];
        // KL(prior ‖ p) for rows (0.25, 0.75) and (1, ~0) against (0.5, 0.5), p clamped
        let by_hand = (0.5 * (0.5f32.ln() - 0.25f32.ln())
            + 0.5 * (0.5f32.ln() - 0.75f32.ln())
            + 0.5 * (0.5f32.ln() - 1f32.ln())
            + 0.5 * (0.5f32.ln() - 1e-10f32.ln()))
            / 2.0;
        assert!((kl - by_hand).abs() < 1e-4, "{kl} vs {by_hand}");
        assert!((host(with_kl.total)[0] - (2.625 + 0.5 * kl)).abs() < 1e-5);
    }
}
