//! Training losses of multi-exit classifiers.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

/// Mean cross-entropy of `logits` against class indices.
///
/// # Shapes
/// - logits: `[batch_size, n_classes]`
/// - targets: `[batch_size]`
/// - output: `[1]`
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    cross_entropy_per_row(logits, targets).mean().reshape([1])
}

/// Mean squared error of one-output heads against real-valued targets (PABEE's
/// regression heads, STS-B).
///
/// # Shapes
/// - outputs: `[batch_size, 1]`
/// - targets: `[batch_size]`
/// - output: `[1]`
pub fn mse(outputs: Tensor<2>, targets: Tensor<1>) -> Tensor<1> {
    let [batch_size, width] = outputs.dims();
    assert_eq!(width, 1, "regression heads have one output, got {width}");
    let diff = outputs.reshape([batch_size]) - targets;
    (diff.clone() * diff).mean().reshape([1])
}

/// Cross-entropy of each row of `logits` against its class index.
///
/// # Shapes
/// - logits: `[batch_size, n_classes]`
/// - targets: `[batch_size]`
/// - output: `[batch_size]`
pub fn cross_entropy_per_row(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [batch_size, _] = logits.dims();
    let log_probs = log_softmax(logits, 1);
    log_probs
        .gather(1, targets.reshape([batch_size, 1]))
        .reshape([batch_size])
        .neg()
}

/// PABEE's depth-weighted loss `Σ_i i·L_i / Σ_i i` over per-layer losses, with 1-based
/// weights: the first layer has weight 1, not 0 (PABEE, Zhou et al., NeurIPS 2020,
/// arXiv:2006.04152).
///
/// # Panics
/// If `per_layer` is empty.
pub fn depth_weighted(per_layer: Vec<Tensor<1>>) -> Tensor<1> {
    assert!(!per_layer.is_empty(), "depth_weighted: no layer losses");
    let n = per_layer.len();
    let norm = (n * (n + 1) / 2) as f32;
    let mut total: Option<Tensor<1>> = None;
    for (i, loss) in per_layer.into_iter().enumerate() {
        let term = loss.mul_scalar((i + 1) as f32);
        total = Some(match total {
            Some(t) => t + term,
            None => term,
        });
    }
    total.unwrap_or_else(|| unreachable!()).div_scalar(norm)
}

/// Unweighted sum of per-layer losses (DeeBERT's second stage sums the internal
/// off-ramps' losses, `Σ_{i<N} L_i`).
///
/// # Panics
/// If `per_layer` is empty.
pub fn sum(per_layer: Vec<Tensor<1>>) -> Tensor<1> {
    per_layer
        .into_iter()
        .reduce(|a, b| a + b)
        .unwrap_or_else(|| panic!("sum: no layer losses"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn device() -> Device {
        Device::flex()
    }

    #[test]
    fn mse_matches_hand_computation() {
        let d = device();
        let out = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 3.0, -1.0], [3, 1]), &d);
        let target = Tensor::<1>::from_data(TensorData::new(vec![0.0f32, 3.5, 1.0], [3]), &d);
        // (1 + 0.25 + 4) / 3
        let v = ponder_core::to_host(mse(out, target))[0];
        assert!((v - 1.75).abs() < 1e-6, "{v}");
    }

    #[test]
    fn cross_entropy_matches_hand_computation() {
        let d = device();
        let logits =
            Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 0.0, 2.0, 0.0], [2, 2]), &d);
        let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 0], [2]), &d);
        let got: f32 = cross_entropy(logits, targets).into_scalar::<f32>();
        let expected = (2f32.ln() + (1.0 + (-2f32).exp()).ln()) / 2.0;
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
    }

    #[test]
    fn depth_weighting_is_one_based() {
        let d = device();
        let losses: Vec<Tensor<1>> = [1.0f32, 2.0, 3.0]
            .iter()
            .map(|&v| Tensor::from_data(TensorData::new(vec![v], [1]), &d))
            .collect();
        let got: f32 = depth_weighted(losses).into_scalar::<f32>();
        // (1·1 + 2·2 + 3·3) / (1 + 2 + 3)
        assert!((got - 14.0 / 6.0).abs() < 1e-6);
    }
}
