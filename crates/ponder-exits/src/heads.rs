//! Classifier heads for every exit.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};
use ponder_core::{ExitHeads, linear_flops};
use serde::{Deserialize, Serialize};

/// Where DeeBERT's off-ramps get their pooler `tanh(W·f + b)` (Xin et al., ACL 2020,
/// arXiv:2004.12993).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffRampPooler {
    /// DeeBERT's reference form (`castorini/DeeBERT`): each off-ramp (every exit but the
    /// last) has its own pooler on the layer's pre-pooler features (the normalised
    /// `[CLS]` state, or the token mean with mean pooling), set to a copy of the trained
    /// main pooler when stage 2 starts; the final exit reads the backbone's main pooler,
    /// as every other method's heads do, and has no pooler of its own.
    Separate,
    /// Every exit, the final one too, stacks its own freshly initialised pooler on the
    /// main pooler's output (ponder's form before the reference one).
    Stacked,
}

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
    /// Poolers of DeeBERT's off-ramps in the heads, if any. Default: none (the heads read
    /// the backbone's pooled features).
    ///
    /// * [`OffRampPooler::Separate`]: a pooler for each exit but the last
    ///   (`n_layers − 1`). The head of an off-ramp then reads the backbone's pre-pooler
    ///   features, the final head the backbone's pooled features
    ///   ([`reads_pre_pooler`](ClassifierHeads::reads_pre_pooler)); the poolers start as
    ///   copies of the main pooler ([`copy_pooler`](ClassifierHeads::copy_pooler)).
    ///   Needs per-layer classifiers and at least 2 layers.
    /// * [`OffRampPooler::Stacked`]: a pooler for each classifier, on the backbone's
    ///   pooled features, randomly initialised.
    #[config(default = "None")]
    pub offramp_pooler: Option<OffRampPooler>,
    /// Dropout on the classifier input, in training only. Default: 0.1.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Standardises each exit's classifier input, feature by feature, with batch
    /// normalisation (Ioffe & Szegedy, ICML 2015, arXiv:1502.03167): one [`BatchNorm`]
    /// per exit (per layer, also under a shared classifier), between any pooler and the
    /// dropout. In training it uses the batch's statistics and updates running ones;
    /// in evaluation it is the fixed affine map of the running statistics, so a row's
    /// prediction does not depend on the rest of the batch. Default: false.
    ///
    /// It is for features whose spread across inputs is tiny next to their common
    /// value, such as the early `[CLS]` states of a pretrained encoder that was never
    /// trained to pool through `[CLS]`: a linear head reads them only with enormous
    /// weights, which a head trained at any usual rate does not reach, while on the
    /// standardised features it learns at once.
    #[config(default = false)]
    pub input_norm: bool,
}

/// The variance floor of [`ClassifierHeadsConfig::input_norm`]'s batch normalisation.
/// Far below burn's default of 1e-5: the features it exists for vary by 1e-3 or less of
/// their value, so their variances are of the order of 1e-6 and a floor of 1e-5 would
/// shrink them instead of standardising them.
pub const INPUT_NORM_EPSILON: f64 = 1e-10;

/// Linear classifiers at every exit, on the backbone's pooled features (or, for the
/// off-ramps of DeeBERT's reference form, their own pooler on the pre-pooler features).
#[derive(Module, Debug)]
pub struct ClassifierHeads {
    /// The classifiers: one per layer, or a single shared one.
    pub classifiers: Vec<Linear>,
    /// DeeBERT's poolers, if configured: one per classifier ([`OffRampPooler::Stacked`])
    /// or one per off-ramp, `n_layers − 1` ([`OffRampPooler::Separate`]).
    pub poolers: Vec<Linear>,
    /// Batch normalisation of each exit's classifier input, one per exit, if configured
    /// ([`ClassifierHeadsConfig::input_norm`]); empty otherwise.
    pub norms: Vec<BatchNorm>,
    /// Dropout on the classifier input.
    pub dropout: Dropout,
    /// Number of exits.
    pub n_layers: usize,
    /// Number of classes.
    pub n_classes: usize,
    /// Feature size.
    pub d_features: usize,
    /// Where the poolers sit, if there are any.
    #[module(skip)]
    pub offramp_pooler: Option<OffRampPooler>,
}

impl ClassifierHeadsConfig {
    /// Builds the heads.
    pub fn init(&self, device: &Device) -> ClassifierHeads {
        assert!(
            self.n_layers > 0 && self.n_classes > 0 && self.d_features > 0,
            "ClassifierHeadsConfig: n_layers, n_classes and d_features must be positive"
        );
        let n_heads = if self.shared { 1 } else { self.n_layers };
        let n_poolers = match self.offramp_pooler {
            None => 0,
            Some(OffRampPooler::Stacked) => n_heads,
            Some(OffRampPooler::Separate) => {
                assert!(
                    !self.shared && self.n_layers >= 2,
                    "ClassifierHeadsConfig: separate off-ramp poolers need per-layer classifiers and at least 2 layers"
                );
                self.n_layers - 1
            }
        };
        ClassifierHeads {
            classifiers: (0..n_heads)
                .map(|_| LinearConfig::new(self.d_features, self.n_classes).init(device))
                .collect(),
            poolers: (0..n_poolers)
                .map(|_| LinearConfig::new(self.d_features, self.d_features).init(device))
                .collect(),
            norms: (0..if self.input_norm { self.n_layers } else { 0 })
                .map(|_| {
                    BatchNormConfig::new(self.d_features)
                        .with_epsilon(INPUT_NORM_EPSILON)
                        .init(device)
                })
                .collect(),
            dropout: DropoutConfig::new(self.dropout).init(),
            n_layers: self.n_layers,
            n_classes: self.n_classes,
            d_features: self.d_features,
            offramp_pooler: self.offramp_pooler,
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

    /// Whether the head at `layer_idx` reads the backbone's pre-pooler features (an
    /// off-ramp of [`OffRampPooler::Separate`], which pools them itself) rather than its
    /// pooled features (every other head).
    pub fn reads_pre_pooler(&self, layer_idx: usize) -> bool {
        self.offramp_pooler == Some(OffRampPooler::Separate) && layer_idx + 1 < self.n_layers
    }

    /// With [`OffRampPooler::Separate`], sets every off-ramp's pooler to a copy of `main`
    /// (DeeBERT's `init_highway_pooler`, before stage 2): equal values, but parameters of
    /// their own, which train apart from `main` and from each other. Any other heads are
    /// returned unchanged.
    pub fn copy_pooler(mut self, main: &Linear) -> Self {
        if self.offramp_pooler != Some(OffRampPooler::Separate) {
            return self;
        }
        self.poolers = std::mem::take(&mut self.poolers)
            .into_iter()
            .map(|pooler| Linear {
                weight: copy_param(pooler.weight, &main.weight),
                bias: match (pooler.bias, &main.bias) {
                    (Some(own), Some(from)) => Some(copy_param(own, from)),
                    (own, _) => own,
                },
            })
            .collect();
        self
    }

    /// Folds the pending updates of the input normalisations' running statistics into
    /// their values. burn's `RunningState` keeps each training forward's update aside
    /// (per thread) until the next forward or a `valid()` copy folds it in, and a record
    /// (a checkpoint) reads the folded value only; the training loop calls this after
    /// every step, so a checkpoint holds the statistics of the step it is written at and
    /// loading weights into the model is not overwritten by a stale pending update.
    pub fn sync_running_statistics(&self) {
        for norm in &self.norms {
            // `valid()` folds the shared state's pending updates in (the copy is dropped)
            let _ = norm.valid();
        }
    }

    /// Logits of the head at `layer_idx`: on the backbone's pooled features, or for an
    /// off-ramp that [`reads_pre_pooler`](Self::reads_pre_pooler), on its pre-pooler
    /// features; through the exit's input normalisation when there is one.
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
        let features = match self.norms.get(layer_idx) {
            Some(norm) => norm.forward(features),
            None => features,
        };
        self.classifiers[i].forward(self.dropout.forward(features))
    }
}

/// The heads on the backbone's pooled features at every exit. Heads with
/// [`OffRampPooler::Separate`] read other features at the off-ramps: run them as
/// [`OffRampHeads`].
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

    fn flops(&self, layer_idx: usize) -> u64 {
        let d = self.d_features as u64;
        let pooler = if self.poolers.get(self.head_index(layer_idx)).is_some() {
            pooler_flops(self.d_features)
        } else {
            0
        };
        // evaluation-mode batch normalisation: a multiply and an add per feature
        let norm = if self.norms.is_empty() { 0 } else { 2 * d };
        pooler + norm + linear_flops(1, d, self.n_classes as u64)
    }
}

/// `own` with the value of `from`: the same parameter id and gradient setting as `own`,
/// a value detached from `from`'s autodiff graph.
fn copy_param<const D: usize>(own: Param<Tensor<D>>, from: &Param<Tensor<D>>) -> Param<Tensor<D>> {
    let value = from.val().detach();
    own.map(|own| {
        let grad = own.is_require_grad();
        value.set_require_grad(grad)
    })
}

/// FLOPs of a pooler `tanh(W·f + b)` on `d`-wide features, for one row.
pub fn pooler_flops(d: usize) -> u64 {
    let d = d as u64;
    linear_flops(1, d, d) + 5 * d
}

/// The exits of [`OffRampPooler::Separate`] heads as the runner sees them, on a backbone
/// that supplies the pre-pooler features at every exit: the off-ramps pool them with
/// their own poolers, the final exit with the backbone's main pooler (whose FLOPs are
/// charged there only).
#[derive(Debug, Clone, Copy)]
pub struct OffRampHeads<'a> {
    /// The classifiers and the off-ramps' poolers.
    pub heads: &'a ClassifierHeads,
    /// The backbone's main pooler `tanh(W·f + b)`, read by the final exit.
    pub main_pooler: &'a Linear,
}

impl ExitHeads for OffRampHeads<'_> {
    type State = ();

    fn n_classes(&self) -> usize {
        self.heads.n_classes
    }

    fn start(&self, _batch_size: usize, _device: &Device) {}

    fn forward(
        &self,
        layer_idx: usize,
        features: Tensor<2>,
        _state: &mut (),
    ) -> (Tensor<2>, Option<Tensor<1>>) {
        let features = if self.heads.reads_pre_pooler(layer_idx) {
            features
        } else {
            self.main_pooler.forward(features).tanh()
        };
        (self.heads.logits(layer_idx, features), None)
    }

    fn select_rows(&self, _state: (), _rows: Tensor<1, Int>) {}

    fn flops(&self, layer_idx: usize) -> u64 {
        let main = if self.heads.reads_pre_pooler(layer_idx) {
            0
        } else {
            pooler_flops(self.heads.d_features)
        };
        main + self.heads.flops(layer_idx)
    }
}
