//! Halting heads: the per-layer conditional probability λ of stopping (PonderNet,
//! PALBERT), and the exit heads that pair them with classifiers.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Int, Tensor};
use ponder_core::{ExitHeads, linear_flops};

use crate::heads::ClassifierHeads;

/// Configuration of a [`HaltingHead`].
///
/// * PonderNet: `HaltingHeadConfig::new(d)`: `λ = σ(Linear(d→1)(u_i))`.
/// * PALBERT's Lambda layer ([`palbert`](Self::palbert)): the input is the current and
///   previous features concatenated, `[u_i; u_{i−1}]` with `u_0 = 0`, then three
///   `Linear(2d→2d)`+tanh blocks and `Linear(2d→1)`, then σ; dropout on its input in
///   training only (PALBERT, Balagansky & Gavrilov, NeurIPS 2022, arXiv:2204.03276).
#[derive(Config, Debug)]
pub struct HaltingHeadConfig {
    /// Size of the features the head reads (per layer).
    pub d_features: usize,
    /// Read `[u_i; u_{i−1}]` (PALBERT's `linear_cat`) instead of `u_i`. Default: false.
    #[config(default = false)]
    pub cat_previous: bool,
    /// Hidden `Linear`+tanh blocks before the output layer (PALBERT: 3; PonderNet: 0).
    /// Default: 0.
    #[config(default = 0)]
    pub hidden_blocks: usize,
    /// Dropout on the head's input, in training only. Default: 0.
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl HaltingHeadConfig {
    /// PALBERT's Lambda layer on `d_features`-wide features.
    pub fn palbert(d_features: usize) -> Self {
        Self::new(d_features)
            .with_cat_previous(true)
            .with_hidden_blocks(3)
            .with_dropout(0.1)
    }

    /// Builds the head.
    pub fn init(&self, device: &Device) -> HaltingHead {
        assert!(
            self.d_features > 0,
            "HaltingHeadConfig: d_features must be positive"
        );
        let d_in = self.d_in();
        HaltingHead {
            blocks: (0..self.hidden_blocks)
                .map(|_| LinearConfig::new(d_in, d_in).init(device))
                .collect(),
            output: LinearConfig::new(d_in, 1).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            cat_previous: self.cat_previous,
            d_features: self.d_features,
        }
    }

    fn d_in(&self) -> usize {
        if self.cat_previous {
            2 * self.d_features
        } else {
            self.d_features
        }
    }
}

/// A halting head: the conditional probability `λ_i ∈ (0, 1)` of stopping at layer `i`
/// given that no earlier layer stopped. The same weights serve every layer.
#[derive(Module, Debug)]
pub struct HaltingHead {
    /// Hidden `Linear`+tanh blocks (empty for PonderNet's linear head).
    pub blocks: Vec<Linear>,
    /// The output `Linear(→1)` before the sigmoid.
    pub output: Linear,
    /// Dropout on the input (training only).
    pub dropout: Dropout,
    /// Whether the previous layer's features are concatenated to the input.
    pub cat_previous: bool,
    /// Feature size per layer.
    pub d_features: usize,
}

impl HaltingHead {
    /// `λ` for every row.
    ///
    /// `previous` is the previous layer's features (`None` before the first layer, read
    /// as zeros); it is ignored unless the head concatenates it.
    ///
    /// # Shapes
    /// - current, previous: `[batch_size, d_features]`
    /// - output: `[batch_size]`
    pub fn forward(&self, current: Tensor<2>, previous: Option<Tensor<2>>) -> Tensor<1> {
        let [batch_size, d] = current.dims();
        assert_eq!(
            d, self.d_features,
            "halting head for {} features given {d}",
            self.d_features
        );
        let input = if self.cat_previous {
            let previous = previous.unwrap_or_else(|| current.zeros_like());
            Tensor::cat(vec![current, previous], 1)
        } else {
            current
        };
        let mut z = self.dropout.forward(input);
        for block in &self.blocks {
            z = block.forward(z).tanh();
        }
        sigmoid(self.output.forward(z)).reshape([batch_size])
    }

    /// FLOPs of one [`forward`](Self::forward) for one row.
    pub fn flops(&self) -> u64 {
        let d_in = if self.cat_previous {
            2 * self.d_features
        } else {
            self.d_features
        } as u64;
        self.blocks.len() as u64 * (linear_flops(1, d_in, d_in) + 5 * d_in)
            + linear_flops(1, d_in, 1)
            + 5
    }
}

/// Classifier heads paired with a halting head: the exit heads of PonderNet and PALBERT.
///
/// The per-row state is the previous layer's features (what PALBERT's Lambda layer
/// reads), kept only when the halting head uses it.
#[derive(Debug, Clone, Copy)]
pub struct HaltingHeads<'a> {
    /// The classifiers (PALBERT: one shared by every layer).
    pub classifiers: &'a ClassifierHeads,
    /// The halting head.
    pub halting: &'a HaltingHead,
}

impl ExitHeads for HaltingHeads<'_> {
    type State = Option<Tensor<2>>;

    fn n_classes(&self) -> usize {
        self.classifiers.n_classes
    }

    fn start(&self, _batch_size: usize, _device: &Device) -> Option<Tensor<2>> {
        None
    }

    fn forward(
        &self,
        layer_idx: usize,
        features: Tensor<2>,
        state: &mut Option<Tensor<2>>,
    ) -> (Tensor<2>, Option<Tensor<1>>) {
        let logits = self.classifiers.logits(layer_idx, features.clone());
        let lambda = self.halting.forward(features.clone(), state.take());
        if self.halting.cat_previous {
            *state = Some(features);
        }
        (logits, Some(lambda))
    }

    fn select_rows(&self, state: Option<Tensor<2>>, rows: Tensor<1, Int>) -> Option<Tensor<2>> {
        state.map(|s| s.select(0, rows))
    }

    fn flops(&self, layer_idx: usize) -> u64 {
        self.classifiers.flops(layer_idx) + self.halting.flops()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClassifierHeadsConfig;
    use burn::tensor::Distribution;

    #[test]
    fn lambda_is_a_probability_per_row_and_reads_the_previous_layer() {
        let d = Device::flex();
        let head = HaltingHeadConfig::palbert(8).init(&d).valid();
        let cur = Tensor::<2>::random([5, 8], Distribution::Normal(0.0, 1.0), &d);
        let prev = Tensor::<2>::random([5, 8], Distribution::Normal(0.0, 1.0), &d);
        let with_prev = ponder_core::to_host(head.forward(cur.clone(), Some(prev)));
        let without = ponder_core::to_host(head.forward(cur, None));
        assert_eq!(with_prev.len(), 5);
        assert!(with_prev.iter().all(|&l| l > 0.0 && l < 1.0));
        assert_ne!(with_prev, without, "the previous features must matter");
    }

    #[test]
    fn heads_keep_the_previous_features_and_select_rows() {
        let d = Device::flex();
        let classifiers = ClassifierHeadsConfig::new(3, 4, 2)
            .with_shared(true)
            .init(&d)
            .valid();
        let halting = HaltingHeadConfig::palbert(4).init(&d).valid();
        let heads = HaltingHeads {
            classifiers: &classifiers,
            halting: &halting,
        };
        let mut state = heads.start(3, &d);
        let f = Tensor::<2>::random([3, 4], Distribution::Normal(0.0, 1.0), &d);
        let (logits, lambda) = heads.forward(0, f, &mut state);
        assert_eq!(logits.dims(), [3, 2]);
        assert_eq!(lambda.map(|l| l.dims()), Some([3]));
        let state = heads.select_rows(state, ponder_core::index_tensor(&[2], &d));
        assert_eq!(state.map(|s| s.dims()), Some([1, 4]));
    }

    #[test]
    fn heads_feed_the_previous_layers_features_to_the_lambda_layer() {
        let d = Device::flex();
        let classifiers = ClassifierHeadsConfig::new(3, 4, 2).init(&d).valid();
        let halting = HaltingHeadConfig::palbert(4).init(&d).valid();
        let heads = HaltingHeads {
            classifiers: &classifiers,
            halting: &halting,
        };
        let f: Vec<Tensor<2>> = (0..3)
            .map(|_| Tensor::<2>::random([2, 4], Distribution::Normal(0.0, 1.0), &d))
            .collect();
        let mut state = heads.start(2, &d);
        for (l, features) in f.iter().enumerate() {
            let (_, lambda) = heads.forward(l, features.clone(), &mut state);
            let previous = if l == 0 { None } else { Some(f[l - 1].clone()) };
            let expected = ponder_core::to_host(halting.forward(features.clone(), previous));
            assert_eq!(ponder_core::to_host(lambda.unwrap()), expected, "layer {l}");
        }
    }
}
