//! Classifier heads for every exit.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};
use ponder_core::{ExitHeads, linear_flops};

/// Configuration of [`ClassifierHeads`].
#[derive(Config, Debug)]
pub struct ClassifierHeadsConfig {
    /// Number of exits (one per backbone layer).
    pub n_layers: usize,
    /// Size of the features the heads read.
    pub d_features: usize,
    /// Number of classes (1 for regression).
    pub n_classes: usize,
    /// One classifier shared by all layers (PALBERT) instead of one per layer (PABEE).
    /// Default: false.
    #[config(default = false)]
    pub shared: bool,
    /// Each head has its own pooler `tanh(W·f + b)` before its classifier (DeeBERT's
    /// off-ramps). Default: false.
    ///
    /// Unlike DeeBERT's reference code, these poolers read the backbone's features (the
    /// shared pooler's output), not the raw `[CLS]` state, and start from a random
    /// initialisation instead of a copy of the main pooler.
    #[config(default = false)]
    pub pooler_per_head: bool,
    /// Dropout on the classifier input, in training only. Default: 0.1.
    #[config(default = 0.1)]
    pub dropout: f64,
}

/// Linear classifiers at every exit, on the backbone's pooled features.
#[derive(Module, Debug)]
pub struct ClassifierHeads {
    /// The classifiers: one per layer, or a single shared one.
    pub classifiers: Vec<Linear>,
    /// Per-head poolers (DeeBERT), one per classifier, if configured.
    pub poolers: Vec<Linear>,
    /// Dropout on the classifier input.
    pub dropout: Dropout,
    /// Number of exits.
    pub n_layers: usize,
    /// Number of classes.
    pub n_classes: usize,
    /// Feature size.
    pub d_features: usize,
}

impl ClassifierHeadsConfig {
    /// Builds the heads.
    pub fn init(&self, device: &Device) -> ClassifierHeads {
        assert!(
            self.n_layers > 0 && self.n_classes > 0 && self.d_features > 0,
            "ClassifierHeadsConfig: n_layers, n_classes and d_features must be positive"
        );
        let n_heads = if self.shared { 1 } else { self.n_layers };
        ClassifierHeads {
            classifiers: (0..n_heads)
                .map(|_| LinearConfig::new(self.d_features, self.n_classes).init(device))
                .collect(),
            poolers: if self.pooler_per_head {
                (0..n_heads)
                    .map(|_| LinearConfig::new(self.d_features, self.d_features).init(device))
                    .collect()
            } else {
                Vec::new()
            },
            dropout: DropoutConfig::new(self.dropout).init(),
            n_layers: self.n_layers,
            n_classes: self.n_classes,
            d_features: self.d_features,
        }
    }
}

impl ClassifierHeads {
    fn head_index(&self, layer_idx: usize) -> usize {
        assert!(
            layer_idx < self.n_layers,
            "exit {layer_idx} requested from heads for {} layers",
            self.n_layers
        );
        if self.classifiers.len() == 1 {
            0
        } else {
            layer_idx
        }
    }

    /// Logits of the head at `layer_idx`.
    ///
    /// # Shapes
    /// - features: `[batch_size, d_features]`
    /// - output: `[batch_size, n_classes]`
    pub fn logits(&self, layer_idx: usize, features: Tensor<2>) -> Tensor<2> {
        let i = self.head_index(layer_idx);
        let features = match self.poolers.get(i) {
            Some(pooler) => pooler.forward(features).tanh(),
            None => features,
        };
        self.classifiers[i].forward(self.dropout.forward(features))
    }
}

impl ExitHeads for ClassifierHeads {
    type State = ();

    fn n_classes(&self) -> usize {
        self.n_classes
    }

    fn start(&self, _batch_size: usize, _device: &Device) {}

    fn forward(
        &self,
        layer_idx: usize,
        features: Tensor<2>,
        _state: &mut (),
    ) -> (Tensor<2>, Option<Tensor<1>>) {
        (self.logits(layer_idx, features), None)
    }

    fn select_rows(&self, _state: (), _rows: Tensor<1, Int>) {}

    fn flops(&self, _layer_idx: usize) -> u64 {
        let d = self.d_features as u64;
        let pooler = if self.poolers.is_empty() {
            0
        } else {
            linear_flops(1, d, d) + 5 * d
        };
        pooler + linear_flops(1, d, self.n_classes as u64)
    }
}
