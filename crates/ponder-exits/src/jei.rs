//! JEI-DNN (Regol, Chataoui & Coates, ICLR 2024): gates that read confidence features
//! of the inference modules' logits, the capped-sum exit distribution, the
//! cost-aware gate targets and the losses of the two alternating phases
//! (arXiv:2310.09163).
//!
//! * An inference module (IM) is the classifier head of an early exit; the final exit is
//!   the backbone's own head and has no gate.
//! * Gate `l` is `g_l = σ(Linear(4→1)(φ(logits_l)))` where `φ` are four **detached**
//!   confidence features of IM `l`'s logits ([`confidence_features`]): no gradient flows
//!   from a gate into its IM.
//! * The exit distribution ("eq. 8" with a min) is
//!   `P_l = max(0, min(g_l, 1 − Σ_{j<l} P_j))` for the `G` gates and
//!   `P_final = 1 − Σ_l P_l` ([`exit_distribution`]); the conditional activation is
//!   `a_l = P_l / Π_{j<l}(1 − a_j)` and a row exits at the first `a_l ≥ 0.5`
//!   ([`LearnedGate`](crate::LearnedGate)).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::{log_softmax, sigmoid, softmax, softplus};
use burn::tensor::{Device, Int, Tensor, TensorData};
use ponder_core::{ExitHeads, linear_flops};
use serde::{Deserialize, Serialize};

use crate::heads::ClassifierHeads;

/// Number of confidence features a gate reads.
pub const N_CONFIDENCE_FEATURES: usize = 4;

/// The four confidence features of each row of `logits`, detached from the graph (the
/// reference computes them in NumPy): `[p_max, H(p), p_(1) − p_(2), H(p²/Σp²)]` with
/// `p = softmax(logits)` and natural-log entropies (JEI-DNN, arXiv:2310.09163).
///
/// # Shapes
/// - logits: `[batch_size, n_classes]` with `n_classes ≥ 2`
/// - output: `[batch_size, 4]`
pub fn confidence_features(logits: Tensor<2>) -> Tensor<2> {
    let [_, n_classes] = logits.dims();
    assert!(
        n_classes >= 2,
        "confidence_features: the gates need at least 2 classes, got {n_classes}"
    );
    let logits = logits.detach();
    let log_p = log_softmax(logits.clone(), 1);
    let p = softmax(logits, 1);
    let top2 = p.clone().topk(2, 1);
    let p_max = top2.clone().narrow(1, 0, 1);
    let margin = p_max.clone() - top2.narrow(1, 1, 1);
    let entropy = (p.clone() * log_p.clone()).sum_dim(1).neg();
    // q = p² / Σp², log q = 2·log p − log Σp²
    let p2 = p.clone() * p;
    let sum_p2 = p2.clone().sum_dim(1);
    let q = p2 / sum_p2.clone();
    let log_q = log_p.mul_scalar(2.0) - sum_p2.log();
    let pow_entropy = (q * log_q).sum_dim(1).neg();
    Tensor::cat(vec![p_max, entropy, margin, pow_entropy], 1)
}

/// [`confidence_features`] of one row, on the host (f64 inside).
pub fn confidence_features_row(logits: &[f32]) -> [f32; N_CONFIDENCE_FEATURES] {
    assert!(
        logits.len() >= 2,
        "confidence_features_row: the gates need at least 2 classes, got {}",
        logits.len()
    );
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let log_z = logits
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    let log_p: Vec<f64> = logits.iter().map(|&l| l as f64 - log_z).collect();
    let p: Vec<f64> = log_p.iter().map(|l| l.exp()).collect();
    let mut sorted = p.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let entropy = -p.iter().zip(&log_p).map(|(p, l)| p * l).sum::<f64>();
    let sum_p2 = p.iter().map(|p| p * p).sum::<f64>();
    let pow_entropy = -p
        .iter()
        .zip(&log_p)
        .map(|(p, l)| (p * p / sum_p2) * (2.0 * l - sum_p2.ln()))
        .sum::<f64>();
    [
        sorted[0] as f32,
        entropy as f32,
        (sorted[0] - sorted[1]) as f32,
        pow_entropy as f32,
    ]
}

/// Configuration of [`ExitGates`].
#[derive(Config, Debug)]
pub struct ExitGatesConfig {
    /// Number of gates: one per early exit (the final exit has none).
    pub n_gates: usize,
}

impl ExitGatesConfig {
    /// Builds the gates.
    pub fn init(&self, device: &Device) -> ExitGates {
        assert!(
            self.n_gates > 0,
            "ExitGatesConfig: n_gates must be positive"
        );
        ExitGates {
            gates: (0..self.n_gates)
                .map(|_| LinearConfig::new(N_CONFIDENCE_FEATURES, 1).init(device))
                .collect(),
        }
    }
}

/// JEI-DNN's gating mechanism: one `Linear(4 → 1)` per early exit on the confidence
/// features of that exit's logits.
#[derive(Module, Debug)]
pub struct ExitGates {
    /// One gate per early exit.
    pub gates: Vec<Linear>,
}

impl ExitGates {
    /// Number of gates (early exits).
    pub fn n_gates(&self) -> usize {
        self.gates.len()
    }

    /// The gate's pre-sigmoid output (what the gate loss reads).
    ///
    /// # Shapes
    /// - logits: IM `gate_idx`'s logits, `[batch_size, n_classes]`
    /// - output: `[batch_size]`
    pub fn gate_logit(&self, gate_idx: usize, logits: Tensor<2>) -> Tensor<1> {
        assert!(
            gate_idx < self.gates.len(),
            "gate {gate_idx} requested from {} gates",
            self.gates.len()
        );
        let [batch_size, _] = logits.dims();
        self.gates[gate_idx]
            .forward(confidence_features(logits))
            .reshape([batch_size])
    }

    /// `g_l = σ(gate_logit)`.
    ///
    /// # Shapes
    /// - logits: `[batch_size, n_classes]`
    /// - output: `[batch_size]`
    pub fn forward(&self, gate_idx: usize, logits: Tensor<2>) -> Tensor<1> {
        sigmoid(self.gate_logit(gate_idx, logits))
    }

    /// FLOPs of one gate for one row of `n_classes` logits: the softmax, the four
    /// features, the linear map and the sigmoid.
    pub fn flops(&self, n_classes: usize) -> u64 {
        let c = n_classes as u64;
        // softmax (exp, sum, divide), entropy and pow-entropy (a few ops per class),
        // top-2, margin
        12 * c + 8 + linear_flops(1, N_CONFIDENCE_FEATURES as u64, 1) + 5
    }
}

/// Per-layer classifiers paired with gates: the exit heads of JEI-DNN. Layer `l < G`
/// reports its gate value `g_l` as the heads' second output; the final layer reports
/// none.
#[derive(Debug, Clone, Copy)]
pub struct GatedHeads<'a> {
    /// The inference modules (one per layer; the last is the final head).
    pub classifiers: &'a ClassifierHeads,
    /// The gates (one per early exit).
    pub gates: &'a ExitGates,
}

impl ExitHeads for GatedHeads<'_> {
    type State = ();

    fn n_classes(&self) -> usize {
        self.classifiers.n_classes
    }

    fn start(&self, _batch_size: usize, _device: &Device) {}

    fn forward(
        &self,
        layer_idx: usize,
        features: Tensor<2>,
        _state: &mut (),
    ) -> (Tensor<2>, Option<Tensor<1>>) {
        let logits = self.classifiers.logits(layer_idx, features);
        let gate = (layer_idx < self.gates.n_gates())
            .then(|| self.gates.forward(layer_idx, logits.clone()));
        (logits, gate)
    }

    fn select_rows(&self, _state: (), _rows: Tensor<1, Int>) {}

    fn flops(&self, layer_idx: usize) -> u64 {
        let gate = if layer_idx < self.gates.n_gates() {
            self.gates.flops(self.classifiers.n_classes)
        } else {
            0
        };
        self.classifiers.flops(layer_idx) + gate
    }
}

/// The exit distribution of JEI-DNN's "eq. 8" (with the min): for the `G` gates
/// `P_l = max(0, min(g_l, 1 − Σ_{j<l} P_j))`, then `P_final = 1 − Σ_l P_l`. Once the
/// cumulative mass reaches 1 the later exits get 0. Returns `G + 1` tensors.
///
/// # Shapes
/// - gates: `G` tensors `[batch_size]`
/// - output: `G + 1` tensors `[batch_size]`
pub fn exit_distribution(gates: &[Tensor<1>]) -> Vec<Tensor<1>> {
    assert!(!gates.is_empty(), "exit_distribution: no gates");
    let mut cumulative = gates[0].zeros_like();
    let mut p = Vec::with_capacity(gates.len() + 1);
    for g in gates {
        let left = cumulative.clone().neg().add_scalar(1.0);
        let p_l = g.clone().min_pair(left).clamp_min(0.0);
        cumulative = cumulative + p_l.clone();
        p.push(p_l);
    }
    p.push(cumulative.neg().add_scalar(1.0).clamp_min(0.0));
    p
}

/// One step of the capped sum: `P_l = max(0, min(g_l, 1 − Σ_{j<l} P_j))` from the gate
/// value and the mass already assigned (the host form of [`exit_distribution`], shared
/// with [`LearnedGate`](crate::LearnedGate)).
pub fn exit_probability(gate: f64, assigned: f64) -> f64 {
    gate.min(1.0 - assigned).max(0.0)
}

/// [`exit_distribution`] of one row on the host: `G + 1` probabilities from `G` gates.
pub fn exit_distribution_row(gates: &[f32]) -> Vec<f32> {
    let mut cumulative = 0f64;
    let mut p: Vec<f32> = gates
        .iter()
        .map(|&g| {
            let p_l = exit_probability(g as f64, cumulative);
            cumulative += p_l;
            p_l as f32
        })
        .collect();
    p.push((1.0 - cumulative).max(0.0) as f32);
    p
}

/// The exit that minimises each row's cost-aware loss `ℓ_l = CE_l + λ_cost·ĉ_l` over
/// every exit, the final one included (JEI-DNN's gate targets, arXiv:2310.09163);
/// the first on ties.
///
/// `ce[l][b]`: row `b`'s cross-entropy at exit `l`; `costs[l]`: `ĉ_l`, the cost of
/// reaching exit `l` over the cost of the final exit.
pub fn best_exits(ce: &[Vec<f32>], costs: &[f64], cost_weight: f64) -> Vec<usize> {
    assert_eq!(
        ce.len(),
        costs.len(),
        "best_exits: {} exits of losses, {} costs",
        ce.len(),
        costs.len()
    );
    let rows = ce.first().map_or(0, Vec::len);
    (0..rows)
        .map(|b| {
            let mut best = 0;
            let mut best_loss = f64::INFINITY;
            for (l, layer) in ce.iter().enumerate() {
                let loss = layer[b] as f64 + cost_weight * costs[l];
                if loss < best_loss {
                    best = l;
                    best_loss = loss;
                }
            }
            best
        })
        .collect()
}

/// How the gates' positive-class weights count positives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositiveCount {
    /// JEI-DNN's: `n_l` = rows whose best exit is `l` (while gate `l`'s positives are
    /// the rows whose best exit is `l` *or earlier*, so later gates' positives are
    /// over-weighted).
    #[default]
    BestExit,
    /// `n_l` = gate `l`'s actual positives, the rows whose best exit is `l` or earlier
    /// (weights that balance each gate's two classes).
    Cumulative,
}

/// The positive-class weight of each gate's BCE from the best exits `l*` of the
/// validation rows: `w⁺_l = min((N − n_l) / max(n_l, 0.1), cap)` with `n_l` counted as
/// `count` says (JEI-DNN: the rows whose `l* = l`, capped at 5).
pub fn gate_positive_weights(
    best: &[usize],
    n_gates: usize,
    cap: f32,
    count: PositiveCount,
) -> Vec<f32> {
    let n = best.len() as f32;
    (0..n_gates)
        .map(|l| {
            let n_l = best
                .iter()
                .filter(|&&b| match count {
                    PositiveCount::BestExit => b == l,
                    PositiveCount::Cumulative => b <= l,
                })
                .count() as f32;
            ((n - n_l) / n_l.max(0.1)).min(cap)
        })
        .collect()
}

/// The gate phase's loss: BCE-with-logits of every gate against the targets
/// `t_{b,l} = 1[l ≥ l*_b]` ("exit here or at a later gate"; a row whose best exit is
/// the final head has all-zero targets), positives weighted by `w⁺_l`, averaged over
/// rows and gates.
///
/// # Shapes
/// - gate_logits: `G` tensors `[batch_size]`
/// - best: `batch_size` best exits `l*` in `0..=G`
/// - output: `[1]`
pub fn gate_loss(
    gate_logits: Vec<Tensor<1>>,
    best: &[usize],
    positive_weight: &[f32],
) -> Tensor<1> {
    let n_gates = gate_logits.len();
    assert!(n_gates > 0, "gate_loss: no gates");
    assert_eq!(
        positive_weight.len(),
        n_gates,
        "gate_loss: {} positive weights for {n_gates} gates",
        positive_weight.len()
    );
    let device = gate_logits[0].device();
    let terms: Vec<Tensor<1>> = gate_logits
        .into_iter()
        .enumerate()
        .map(|(l, x)| {
            let [rows] = x.dims();
            assert_eq!(
                rows,
                best.len(),
                "gate_loss: {} targets for {rows} rows",
                best.len()
            );
            let t: Vec<f32> = best.iter().map(|&b| f32::from(u8::from(l >= b))).collect();
            let t = Tensor::<1>::from_data(TensorData::new(t, [rows]), &device);
            // BCE with logits: w⁺·t·softplus(−x) + (1 − t)·softplus(x)
            let positive = t.clone() * softplus(x.clone().neg(), 1.0);
            let negative = t.neg().add_scalar(1.0) * softplus(x, 1.0);
            (positive.mul_scalar(positive_weight[l]) + negative).mean()
        })
        .collect();
    Tensor::cat(terms, 0).mean().reshape([1])
}

/// The IM phase's loss, JEI-DNN's `weighted` ("boosted") mode:
/// `mean_{b,l} [P_{b,l}·CE_{b,l}·r_b]` with `r_b = Σ_l CE_{b,l} / Σ_l P_{b,l}·CE_{b,l}`
/// over the `G` inference modules (JEI-DNN, arXiv:2310.09163).
///
/// With `detach_ratio = false` (the reference code) the ratio keeps its gradient, and
/// the loss equals the unweighted mean cross-entropy over IMs in value and gradient;
/// with `true`, each row's IMs are weighted by `P_l·r_b` (the intended emphasis on the
/// exits a row is likely to take). A row with no mass on any IM (`Σ P·CE = 0`)
/// contributes 0.
///
/// # Shapes
/// - ce: `G` tensors `[batch_size]` (per-row cross-entropy, with gradient)
/// - exit_probs: `G` tensors `[batch_size]` (the IMs' `P_l`, detached)
/// - output: `[1]`
pub fn im_loss(ce: Vec<Tensor<1>>, exit_probs: &[Tensor<1>], detach_ratio: bool) -> Tensor<1> {
    let n = ce.len();
    assert!(n > 0, "im_loss: no inference modules");
    assert_eq!(
        exit_probs.len(),
        n,
        "im_loss: {} exit probabilities for {n} losses",
        exit_probs.len()
    );
    let [batch_size] = ce[0].dims();
    let ce = Tensor::stack::<2>(ce, 1); // [b, G]
    let p = Tensor::stack::<2>(exit_probs.iter().map(|p| p.clone().detach()).collect(), 1);
    let weighted = p * ce.clone();
    let ratio = ce.sum_dim(1) / weighted.clone().sum_dim(1).clamp_min(1e-12);
    let ratio = if detach_ratio { ratio.detach() } else { ratio };
    (weighted * ratio)
        .sum()
        .div_scalar((batch_size * n) as f32)
        .reshape([1])
}

/// JEI-DNN's warm-up loss of the inference modules: `Σ_l (G + 1 − l)·CE_l` over the
/// `G` IMs (0-based `l`: earlier IMs weigh more; the final head is frozen).
///
/// # Shapes
/// - ce: `G` mean losses `[1]`
/// - output: `[1]`
pub fn warmup_loss(ce: Vec<Tensor<1>>) -> Tensor<1> {
    let n = ce.len();
    assert!(n > 0, "warmup_loss: no inference modules");
    ce.into_iter()
        .enumerate()
        .map(|(l, c)| c.mul_scalar((n + 1 - l) as f32))
        .reduce(|a, b| a + b)
        .unwrap_or_else(|| unreachable!())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::cross_entropy_per_row;
    use burn::tensor::Distribution;
    use ponder_core::to_host;

    fn device() -> Device {
        Device::flex()
    }

    fn tensor1(v: &[f32], d: &Device) -> Tensor<1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), d)
    }

    #[test]
    fn confidence_features_match_the_host_formula_and_hand_values() {
        let d = device();
        // p = (0.5, 0.25, 0.25): p_max 0.5, margin 0.25, H = 1.5 ln 2,
        // q = (4, 1, 1)/6: H(q) = −(2/3 ln 2/3 + 2·1/6 ln 1/6)
        let row = [2f32.ln(), 0.0, 0.0];
        let f = confidence_features_row(&row);
        let h = 1.5 * 2f64.ln();
        let hq = -(2.0 / 3.0 * (2.0f64 / 3.0).ln() + 2.0 / 6.0 * (1.0f64 / 6.0).ln());
        let expected = [0.5, h as f32, 0.25, hq as f32];
        for (a, b) in f.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{f:?} vs {expected:?}");
        }
        let logits = Tensor::<2>::random([7, 5], Distribution::Normal(0.0, 3.0), &d);
        let host = to_host(logits.clone());
        let got = to_host(confidence_features(logits));
        for r in 0..7 {
            let want = confidence_features_row(&host[r * 5..(r + 1) * 5]);
            for k in 0..4 {
                assert!(
                    (got[r * 4 + k] - want[k]).abs() < 1e-5,
                    "row {r} feature {k}: {} vs {}",
                    got[r * 4 + k],
                    want[k]
                );
            }
        }
    }

    #[test]
    fn exit_distribution_caps_the_sum_and_sums_to_one() {
        let d = device();
        // row 0: 0.3, 0.5, 0.4 → P = 0.3, 0.5, 0.2, final 0
        // row 1: 0.1, 0.2, 0.3 → P = 0.1, 0.2, 0.3, final 0.4
        // row 2: 1.0, 0.9, 0.9 → P = 1, 0, 0, final 0
        let gates = vec![
            tensor1(&[0.3, 0.1, 1.0], &d),
            tensor1(&[0.5, 0.2, 0.9], &d),
            tensor1(&[0.4, 0.3, 0.9], &d),
        ];
        let p: Vec<Vec<f32>> = exit_distribution(&gates).into_iter().map(to_host).collect();
        let expected = [
            [0.3, 0.5, 0.2, 0.0],
            [0.1, 0.2, 0.3, 0.4],
            [1.0, 0.0, 0.0, 0.0],
        ];
        for (r, want) in expected.iter().enumerate() {
            let row: Vec<f32> = p.iter().map(|l| l[r]).collect();
            assert_eq!(row.len(), 4);
            for (a, b) in row.iter().zip(want) {
                assert!((a - b).abs() < 1e-6, "row {r}: {row:?} vs {want:?}");
            }
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            let host_row = exit_distribution_row(&[
                [0.3, 0.1, 1.0][r],
                [0.5, 0.2, 0.9][r],
                [0.4, 0.3, 0.9][r],
            ]);
            for (a, b) in host_row.iter().zip(want) {
                assert!((a - b).abs() < 1e-6, "host row {r}: {host_row:?}");
            }
        }
        // random gates: always a distribution
        let gates: Vec<Tensor<1>> = (0..5)
            .map(|_| Tensor::<1>::random([50], Distribution::Uniform(0.0, 1.0), &d))
            .collect();
        let p: Vec<Vec<f32>> = exit_distribution(&gates).into_iter().map(to_host).collect();
        for r in 0..50 {
            let s: f32 = p.iter().map(|l| l[r]).sum();
            assert!((s - 1.0).abs() < 1e-5, "row {r} sums to {s}");
            assert!(p.iter().all(|l| l[r] >= 0.0));
        }
    }

    #[test]
    fn best_exits_trade_loss_against_cost() {
        // 3 exits with costs 0.2, 0.5, 1.0
        let ce = vec![
            vec![1.0, 0.1, 0.5],
            vec![0.5, 0.05, 0.5],
            vec![0.1, 0.0, 0.5],
        ];
        let costs = [0.2, 0.5, 1.0];
        // λ = 0: the lowest loss (ties: the first)
        assert_eq!(best_exits(&ce, &costs, 0.0), vec![2, 2, 0]);
        // λ = 1: row 0: 1.2, 1.0, 1.1 → 1; row 1: 0.3, 0.55, 1.0 → 0
        assert_eq!(best_exits(&ce, &costs, 1.0), vec![1, 0, 0]);
    }

    #[test]
    fn gate_positive_weights_follow_the_formula() {
        // 10 rows; l* = 0 ×2, 1 ×0, 2 (final) ×8
        let best = [0, 0, 2, 2, 2, 2, 2, 2, 2, 2];
        let w = gate_positive_weights(&best, 2, 5.0, PositiveCount::BestExit);
        assert!((w[0] - 4.0).abs() < 1e-6, "(10 − 2)/2 = 4, got {}", w[0]);
        assert!(
            (w[1] - 5.0).abs() < 1e-6,
            "10/0.1 capped at 5, got {}",
            w[1]
        );
        // gate 1's positives are the rows with l* ≤ 1: still 2, so (10 − 2)/2
        let w = gate_positive_weights(&best, 2, 5.0, PositiveCount::Cumulative);
        assert!((w[1] - 4.0).abs() < 1e-6, "{}", w[1]);
        // l* = 0 ×2, 1 ×2, final ×6: gate 1 has 4 positives, (10 − 4)/4 = 1.5
        let best = [0, 0, 1, 1, 2, 2, 2, 2, 2, 2];
        let w = gate_positive_weights(&best, 2, 5.0, PositiveCount::Cumulative);
        assert!((w[1] - 1.5).abs() < 1e-6, "{}", w[1]);
        let w = gate_positive_weights(&best, 2, 5.0, PositiveCount::BestExit);
        assert!((w[1] - 4.0).abs() < 1e-6, "{}", w[1]);
    }

    #[test]
    fn gate_loss_matches_hand_bce() {
        let d = device();
        let x0 = tensor1(&[0.5, -1.0, 1.5], &d);
        let x1 = tensor1(&[2.0, 0.0, -0.5], &d);
        // row 0: l* = 1 → targets (0, 1); row 1: l* = 2 (final) → (0, 0);
        // row 2: l* = 0 → (1, 1) ("exit here or later": cumulative, not one-hot)
        let got: f32 = gate_loss(vec![x0, x1], &[1, 2, 0], &[3.0, 2.0]).into_scalar();
        let sp = |x: f64| (1.0 + x.exp()).ln();
        // BCE: positive w⁺·softplus(−x), negative softplus(x)
        let gate0 = (sp(0.5) + sp(-1.0) + 3.0 * sp(-1.5)) / 3.0;
        let gate1 = (2.0 * sp(-2.0) + sp(0.0) + 2.0 * sp(0.5)) / 3.0;
        let expected = (gate0 + gate1) / 2.0;
        assert!((got as f64 - expected).abs() < 1e-6, "{got} vs {expected}");
    }

    #[test]
    fn warmup_loss_weighs_earlier_modules_more() {
        let d = device();
        // G = 3 IMs: weights G + 1 − l = 4, 3, 2
        let ce = vec![
            tensor1(&[1.0], &d),
            tensor1(&[10.0], &d),
            tensor1(&[100.0], &d),
        ];
        let got: f32 = warmup_loss(ce).into_scalar();
        assert!((got - (4.0 + 30.0 + 200.0)).abs() < 1e-4, "{got}");
    }

    #[test]
    fn im_loss_without_detached_ratio_is_the_mean_ce_and_with_it_weights_by_p() {
        let d = device().autodiff();
        let logits: Vec<Tensor<2>> = (0..3)
            .map(|_| Tensor::<2>::random([4, 5], Distribution::Normal(0.0, 1.0), &d).require_grad())
            .collect();
        let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 3], [4]), &d);
        let ce = |ls: &[Tensor<2>]| -> Vec<Tensor<1>> {
            ls.iter()
                .map(|l| cross_entropy_per_row(l.clone(), targets.clone()))
                .collect()
        };
        let p = vec![
            tensor1(&[0.2, 0.9, 0.0, 0.5], &d),
            tensor1(&[0.3, 0.1, 0.0, 0.5], &d),
            tensor1(&[0.1, 0.0, 1.0, 0.0], &d),
        ];
        let plain = Tensor::stack::<2>(ce(&logits), 1).mean().reshape([1]);
        let coupled = im_loss(ce(&logits), &p, false);
        let a: f32 = plain.clone().into_scalar();
        let b: f32 = coupled.clone().into_scalar();
        assert!((a - b).abs() < 1e-5, "value: {a} vs {b}");
        // same gradient too: the undetached ratio cancels the weights P
        let g_plain = plain.backward();
        let g_coupled = coupled.backward();
        for l in &logits {
            let x = to_host(l.grad(&g_plain).unwrap());
            let y = to_host(l.grad(&g_coupled).unwrap());
            for (u, v) in x.iter().zip(&y) {
                assert!((u - v).abs() < 1e-5, "gradients differ: {u} vs {v}");
            }
        }
        // detached: the row with P = 0 at an IM gives that IM no gradient
        let detached = im_loss(ce(&logits), &p, true);
        let g = detached.backward();
        let grad2 = to_host(logits[2].grad(&g).unwrap());
        // IM 2 has P = 0.1, 0, 1, 0: rows 1 and 3 get no gradient there
        assert!(grad2[5..10].iter().all(|&v| v == 0.0), "{grad2:?}");
        assert!(grad2[15..20].iter().all(|&v| v == 0.0));
        assert!(grad2[10..15].iter().any(|&v| v != 0.0));
    }

    #[test]
    fn gated_heads_report_gates_on_early_exits_only() {
        let d = device();
        let classifiers = crate::ClassifierHeadsConfig::new(3, 8, 4)
            .with_dropout(0.0)
            .init(&d);
        let gates = ExitGatesConfig::new(2).init(&d);
        let heads = GatedHeads {
            classifiers: &classifiers,
            gates: &gates,
        };
        let f = Tensor::<2>::random([5, 8], Distribution::Normal(0.0, 1.0), &d);
        let (logits, g) = heads.forward(1, f.clone(), &mut ());
        let g = to_host(g.expect("layer 1 has a gate"));
        let expected = to_host(gates.forward(1, classifiers.logits(1, f.clone())));
        assert_eq!(g, expected);
        assert!(g.iter().all(|&v| v > 0.0 && v < 1.0));
        assert_eq!(logits.dims(), [5, 4]);
        assert!(heads.forward(2, f, &mut ()).1.is_none());
        assert!(heads.flops(0) > heads.flops(2));
    }
}
