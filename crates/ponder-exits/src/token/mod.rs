//! Token-level early exit in language models (DYNAMAX: Nogales, Gambella & Roveri 2025,
//! arXiv:2504.20922; CALM: Schuster et al., NeurIPS 2022, arXiv:2207.07061): the parts
//! that need no backbone.
//!
//! * [`ExitClassifierSpec`]: what an exit classifier is (DYNAMAX's linear heads, or a
//!   small Mamba over the layer axis), trained on labels from the frozen model
//!   ([`agreement_labels`]: the final greedy token is in the top-k of the intermediate
//!   prediction) with the depth-weighted two-class cross-entropy
//!   ([`depth_weighted_exit_loss`]). The classifier modules are
//!   `ponder_models::ExitClassifier`.
//! * [`TokenRule`]: when a token exits — the classifier's P(exit), CALM's confidence
//!   measures (softmax max, top-2 margin, hidden-state [`saturation`]), a fixed layer,
//!   or never; a token exits after the first exit position whose score is above the
//!   threshold. [`TokenExitConfig`] adds the exit positions, the rule for the caches of
//!   skipped layers ([`ponder_core::SkipRule`]) and DYNAMAX's option to always run the
//!   last layer; `ponder_models::decode` generates with it.

mod spec;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Int, Tensor};
use ponder_core::{PonderError, Result, SkipRule};
use serde::{Deserialize, Serialize};

pub use spec::{
    ClassifierKind, ExitClassifierSpec, N_SUMMARY_CONFIDENCE, SummaryInput, exit_probability,
    validate_exits,
};

use crate::jei::confidence_features;

/// What decides a token's exit. Scores are compared with a strict `>`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "rule", content = "threshold")]
pub enum TokenRule {
    /// Every token runs every layer.
    Never,
    /// Every token exits after this layer (1-based); analysis and tests.
    Fixed(usize),
    /// The exit classifier's P(exit) (DYNAMAX; CALM's learned classifier).
    Classifier(f64),
    /// The intermediate prediction's largest probability.
    Softmax(f64),
    /// The difference of its two largest probabilities (CALM's softmax response).
    Margin(f64),
    /// `cos(h_{l−1}, h_l)` of the residual streams before and after the layer (CALM's
    /// hidden-state saturation).
    Saturation(f64),
}

impl TokenRule {
    /// Name of the measure (`never`, `fixed`, `classifier`, `softmax`, `margin`,
    /// `saturation`).
    pub fn measure(&self) -> &'static str {
        match self {
            TokenRule::Never => "never",
            TokenRule::Fixed(_) => "fixed",
            TokenRule::Classifier(_) => "classifier",
            TokenRule::Softmax(_) => "softmax",
            TokenRule::Margin(_) => "margin",
            TokenRule::Saturation(_) => "saturation",
        }
    }

    /// The threshold (the layer for `Fixed`, NaN for `Never`).
    pub fn threshold(&self) -> f64 {
        match *self {
            TokenRule::Never => f64::NAN,
            TokenRule::Fixed(l) => l as f64,
            TokenRule::Classifier(t)
            | TokenRule::Softmax(t)
            | TokenRule::Margin(t)
            | TokenRule::Saturation(t) => t,
        }
    }

    /// The same measure at another threshold.
    pub fn with_threshold(&self, threshold: f64) -> Self {
        match self {
            TokenRule::Never | TokenRule::Fixed(_) => *self,
            TokenRule::Classifier(_) => TokenRule::Classifier(threshold),
            TokenRule::Softmax(_) => TokenRule::Softmax(threshold),
            TokenRule::Margin(_) => TokenRule::Margin(threshold),
            TokenRule::Saturation(_) => TokenRule::Saturation(threshold),
        }
    }

    /// Whether the measure needs the intermediate prediction (the shared head) at each
    /// exit position.
    pub fn needs_prediction(&self) -> bool {
        matches!(self, TokenRule::Softmax(_) | TokenRule::Margin(_))
    }

    /// Checks the threshold (finite; NaN would never exit silently).
    pub fn validate(&self, n_layers: usize) -> Result<()> {
        match *self {
            TokenRule::Never => Ok(()),
            TokenRule::Fixed(l) if l == 0 || l > n_layers => Err(PonderError::config(
                "token_exit.rule",
                format!("fixed layer {l} is not in 1..={n_layers}"),
            )),
            TokenRule::Fixed(_) => Ok(()),
            _ if self.threshold().is_nan() => Err(PonderError::config(
                "token_exit.threshold",
                "is NaN (no token would ever exit)",
            )),
            _ => Ok(()),
        }
    }
}

/// How tokens exit during decoding (`ponder_models::decode`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenExitConfig {
    /// The exit rule and its threshold.
    pub rule: TokenRule,
    /// Exit positions (1-based layers) for the confidence measures; a classifier rule
    /// uses its classifier's own positions.
    pub exits: Vec<usize>,
    /// What the caches of skipped layers get.
    pub skip_rule: SkipRule,
    /// DYNAMAX: an exited token still runs the last layer (then the final norm and the
    /// head); otherwise it emits its exit layer's intermediate prediction.
    pub always_run_last: bool,
}

/// Cosine similarity of matching rows `[n, d]` → `[n]` (CALM's hidden-state
/// saturation).
pub fn saturation(a: Tensor<2>, b: Tensor<2>) -> Tensor<1> {
    let [n, _] = a.dims();
    let dot = (a.clone() * b.clone()).sum_dim(1);
    let na = (a.clone() * a).sum_dim(1).sqrt();
    let nb = (b.clone() * b).sum_dim(1).sqrt();
    (dot / (na * nb).clamp_min(1e-12)).reshape([n])
}

/// Confidence summary of a layer for the Mamba classifier and the measures: JEI-DNN's
/// four confidence features of the intermediate logits `[n, V]` (p_max, entropy, top-2
/// margin, pow-entropy) and the saturation `cos(previous, stream)` → `[n, 5]`.
pub fn confidence_summary<const D: usize>(
    logits: Tensor<D>,
    previous: Tensor<D>,
    stream: Tensor<D>,
) -> Tensor<D> {
    let dims = logits.dims();
    let n: usize = dims[..D - 1].iter().product();
    let vocab = dims[D - 1];
    let d = stream.dims()[D - 1];
    let features = confidence_features(logits.reshape([n, vocab]));
    let cos = saturation(previous.reshape([n, d]), stream.reshape([n, d])).reshape([n, 1]);
    let mut out_dims = dims;
    out_dims[D - 1] = N_SUMMARY_CONFIDENCE;
    Tensor::cat(vec![features, cos], 1).reshape(out_dims)
}

/// DYNAMAX's labels: 1 where the final model's greedy token `final_argmax` `[n]` is
/// among the `k` largest logits of the intermediate prediction `logits` `[n, V]`
/// (ties counted in: a token whose logit equals the k-th largest is in).
pub fn agreement_labels(
    logits: Tensor<2>,
    final_argmax: Tensor<1, Int>,
    k: usize,
) -> Tensor<1, Int> {
    let [n, vocab] = logits.dims();
    let k = k.clamp(1, vocab);
    let kth = logits.clone().topk(k, 1).narrow(1, k - 1, 1); // [n, 1]
    let chosen = logits.gather(1, final_argmax.reshape([n, 1])); // [n, 1]
    chosen.greater_equal(kth).int().reshape([n])
}

/// The depth-weighted two-class cross-entropy over exit positions: `Σ_e w_e·CE_e` with
/// `w_e = e / Σ_j j` for the e-th exit (1-based), as DYNAMAX's `wsum`.
pub fn depth_weighted_exit_loss(logits: &[Tensor<2>], labels: &[Tensor<1, Int>]) -> Tensor<1> {
    assert_eq!(logits.len(), labels.len(), "one label vector per exit");
    let device = logits[0].device();
    let ce = CrossEntropyLossConfig::new().init(&device);
    let total: f64 = (1..=logits.len()).map(|e| e as f64).sum();
    logits
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(i, (l, y))| {
            ce.forward(l.clone(), y.clone())
                .mul_scalar((i + 1) as f64 / total)
        })
        .reduce(|a, b| a + b)
        .expect("at least one exit")
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};
    use ponder_core::to_host;

    #[test]
    fn labels_follow_top_k_agreement() {
        let device = Device::default();
        let logits = Tensor::<2>::from_data(
            TensorData::new(vec![3.0f32, 2.0, 1.0, 0.0, 0.0, 1.0, 2.0, 3.0], [2, 4]),
            &device,
        );
        let finals = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 1], [2]), &device);
        let labels = |k| to_host(agreement_labels(logits.clone(), finals.clone(), k).float());
        assert_eq!(labels(1), vec![0.0, 0.0]);
        assert_eq!(labels(2), vec![1.0, 0.0]);
        assert_eq!(labels(3), vec![1.0, 1.0]);
    }

    #[test]
    fn depth_weights_grow_with_the_exit() {
        let device = Device::default();
        // CE of logits (0, 0) is ln 2 whatever the label; of (0, 10) with label 0 ≈ 10.
        let flat = Tensor::<2>::zeros([1, 2], &device);
        let wrong = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 10.0], [1, 2]), &device);
        let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64], [1]), &device);
        let loss = depth_weighted_exit_loss(&[flat, wrong], &[y.clone(), y]);
        let expected = (1.0 / 3.0) * 2f64.ln() + (2.0 / 3.0) * (10.0 + (-10f64).exp().ln_1p());
        assert!((to_host(loss)[0] as f64 - expected).abs() < 1e-4);
    }

    #[test]
    fn saturation_is_the_cosine() {
        let device = Device::default();
        let a = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 0.0, 1.0, 1.0], [2, 2]),
            &device,
        );
        let b = Tensor::<2>::from_data(
            TensorData::new(vec![0.0f32, 2.0, 2.0, 2.0], [2, 2]),
            &device,
        );
        let c = to_host(saturation(a, b));
        assert!(c[0].abs() < 1e-6 && (c[1] - 1.0).abs() < 1e-6, "{c:?}");
    }

    #[test]
    fn rules_validate() {
        assert!(TokenRule::Fixed(0).validate(4).is_err());
        assert!(TokenRule::Fixed(5).validate(4).is_err());
        assert!(TokenRule::Fixed(4).validate(4).is_ok());
        assert!(TokenRule::Softmax(f64::NAN).validate(4).is_err());
        assert_eq!(
            TokenRule::Margin(0.5).with_threshold(0.2),
            TokenRule::Margin(0.2)
        );
        assert!(validate_exits(&[1, 3], 4, "x").is_ok());
        assert!(validate_exits(&[0], 4, "x").is_err());
        assert!(validate_exits(&[4], 4, "x").is_err());
        assert!(validate_exits(&[2, 1], 4, "x").is_err());
        assert!(validate_exits(&[], 4, "x").is_err());
    }
}
