//! The backbones a multi-exit classifier can have: the transformer encoder or Mamba.

use burn::config::Config;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Device, Int, Tensor};
use ponder_core::LayerwiseBackbone;
use ponder_exits::ClassifierHeads;
use ponder_mamba::{MambaEncoder, MambaEncoderConfig, MambaEncoderState, MambaInput};
use ponder_transformer::{Encoder, EncoderConfig, EncoderInput, EncoderState};

/// Which backbone, with its configuration.
#[derive(Config, Debug)]
pub enum BackboneConfig {
    /// A transformer encoder (BERT, ALBERT, ViT).
    Transformer(EncoderConfig),
    /// A Mamba stack with pooling (text only).
    Mamba(MambaEncoderConfig),
}

impl BackboneConfig {
    /// Number of layers (exits).
    pub fn n_layers(&self) -> usize {
        match self {
            Self::Transformer(c) => c.n_layers,
            Self::Mamba(c) => c.mamba.n_layers,
        }
    }

    /// Width of the features the exit heads read.
    pub fn d_model(&self) -> usize {
        match self {
            Self::Transformer(c) => c.d_model,
            Self::Mamba(c) => c.mamba.d_model,
        }
    }

    /// Checks the configuration (the Mamba backbone reads tokens, not images).
    pub fn validate(&self) -> ponder_core::Result<()> {
        match self {
            Self::Transformer(c) => c.validate(),
            Self::Mamba(c) => c.mamba.validate(),
        }
    }

    /// Builds the backbone.
    ///
    /// # Panics
    /// If the configuration is invalid ([`BackboneConfig::validate`]).
    pub fn init(&self, device: &Device) -> Backbone {
        match self {
            Self::Transformer(c) => Backbone::Transformer(c.init(device)),
            Self::Mamba(c) => Backbone::Mamba(c.init(device)),
        }
    }
}

/// A layer-wise backbone: the transformer encoder or the Mamba stack.
// One per model, built once: boxing a variant would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Backbone {
    /// Transformer encoder.
    Transformer(Encoder),
    /// Mamba stack with pooling.
    Mamba(MambaEncoder),
}

/// The hidden state of a [`Backbone`].
#[derive(Debug, Clone)]
pub enum BackboneHidden {
    /// Of the transformer.
    Transformer(EncoderState),
    /// Of Mamba.
    Mamba(MambaEncoderState),
}

fn mamba_input(input: EncoderInput) -> MambaInput {
    match input {
        EncoderInput::Tokens { ids, mask_pad, .. } => MambaInput { ids, mask_pad },
        EncoderInput::Images(_) => {
            panic!(
                "the Mamba backbone reads token ids, not images ; the experiment's configuration check refuses it"
            )
        }
    }
}

fn mismatch() -> ! {
    unreachable!("a backbone always receives its own hidden state")
}

impl Backbone {
    /// The hidden state after the first `n_layers` layers.
    pub fn forward_cut(&self, input: EncoderInput, n_layers: usize) -> BackboneHidden {
        let mut hidden = self.embed(input);
        for layer_idx in 0..n_layers {
            hidden = self.forward_layer(layer_idx, hidden);
        }
        hidden
    }

    /// The features the exit heads read (the transformer's pooler, Mamba's pooling).
    pub fn pooled(&self, hidden: &BackboneHidden) -> Tensor<2> {
        self.features(hidden)
    }

    /// The main pooler's input: the transformer's normalised `[CLS]` state (or token
    /// mean); for Mamba, which has no pooler, its pooled features.
    ///
    /// # Shapes
    /// - output: `[batch_size, d_model]`
    pub fn pre_pooled(&self, hidden: &BackboneHidden) -> Tensor<2> {
        match (self, hidden) {
            (Self::Transformer(e), BackboneHidden::Transformer(h)) => e.pre_pooled(h),
            (Self::Mamba(m), BackboneHidden::Mamba(h)) => m.features(h),
            _ => mismatch(),
        }
    }

    /// The main pooler `tanh(W·f + b)` (the transformer's); Mamba has none.
    pub fn main_pooler(&self) -> Option<&Linear> {
        match self {
            Self::Transformer(e) => Some(&e.pooler),
            Self::Mamba(_) => None,
        }
    }

    /// What the head of exit `layer_idx` reads from `hidden`: the pre-pooler features
    /// for an off-ramp with a pooler of its own (DeeBERT's reference form,
    /// [`ClassifierHeads::reads_pre_pooler`]), else the pooled features.
    ///
    /// # Shapes
    /// - output: `[batch_size, d_model]`
    pub fn head_input(
        &self,
        heads: &ClassifierHeads,
        layer_idx: usize,
        hidden: &BackboneHidden,
    ) -> Tensor<2> {
        if heads.reads_pre_pooler(layer_idx) {
            self.pre_pooled(hidden)
        } else {
            self.pooled(hidden)
        }
    }
}

/// A [`Backbone`] whose features at every exit are the main pooler's input
/// ([`Backbone::pre_pooled`]), for [`ponder_exits::OffRampHeads`], which pool them; its
/// feature FLOPs leave the main pooler out (the heads charge it at the final exit).
#[derive(Debug, Clone, Copy)]
pub struct PrePooled<'a>(pub &'a Backbone);

impl LayerwiseBackbone for PrePooled<'_> {
    type Input = EncoderInput;
    type Hidden = BackboneHidden;

    fn n_layers(&self) -> usize {
        self.0.n_layers()
    }

    fn embed(&self, input: EncoderInput) -> BackboneHidden {
        self.0.embed(input)
    }

    fn forward_layer(&self, layer_idx: usize, hidden: BackboneHidden) -> BackboneHidden {
        self.0.forward_layer(layer_idx, hidden)
    }

    fn features(&self, hidden: &BackboneHidden) -> Tensor<2> {
        self.0.pre_pooled(hidden)
    }

    fn select_rows(&self, hidden: BackboneHidden, rows: Tensor<1, Int>) -> BackboneHidden {
        self.0.select_rows(hidden, rows)
    }

    fn batch_size(&self, hidden: &BackboneHidden) -> usize {
        self.0.batch_size(hidden)
    }

    fn embed_flops(&self, hidden: &BackboneHidden) -> u64 {
        self.0.embed_flops(hidden)
    }

    fn layer_flops(&self, layer_idx: usize, hidden: &BackboneHidden) -> u64 {
        self.0.layer_flops(layer_idx, hidden)
    }

    fn features_flops(&self, hidden: &BackboneHidden) -> u64 {
        let pooler = match self.0 {
            Backbone::Transformer(e) => e.pooler_flops(),
            Backbone::Mamba(_) => 0,
        };
        self.0.features_flops(hidden) - pooler
    }

    fn device(&self) -> Device {
        self.0.device()
    }
}

impl LayerwiseBackbone for Backbone {
    type Input = EncoderInput;
    type Hidden = BackboneHidden;

    fn n_layers(&self) -> usize {
        match self {
            Self::Transformer(e) => e.n_layers(),
            Self::Mamba(m) => m.n_layers(),
        }
    }

    fn embed(&self, input: EncoderInput) -> BackboneHidden {
        match self {
            Self::Transformer(e) => BackboneHidden::Transformer(e.embed(input)),
            Self::Mamba(m) => BackboneHidden::Mamba(m.embed(mamba_input(input))),
        }
    }

    fn forward_layer(&self, layer_idx: usize, hidden: BackboneHidden) -> BackboneHidden {
        match (self, hidden) {
            (Self::Transformer(e), BackboneHidden::Transformer(h)) => {
                BackboneHidden::Transformer(e.forward_layer(layer_idx, h))
            }
            (Self::Mamba(m), BackboneHidden::Mamba(h)) => {
                BackboneHidden::Mamba(m.forward_layer(layer_idx, h))
            }
            _ => mismatch(),
        }
    }

    fn features(&self, hidden: &BackboneHidden) -> Tensor<2> {
        match (self, hidden) {
            (Self::Transformer(e), BackboneHidden::Transformer(h)) => e.features(h),
            (Self::Mamba(m), BackboneHidden::Mamba(h)) => m.features(h),
            _ => mismatch(),
        }
    }

    fn select_rows(&self, hidden: BackboneHidden, rows: Tensor<1, Int>) -> BackboneHidden {
        match (self, hidden) {
            (Self::Transformer(e), BackboneHidden::Transformer(h)) => {
                BackboneHidden::Transformer(e.select_rows(h, rows))
            }
            (Self::Mamba(m), BackboneHidden::Mamba(h)) => {
                BackboneHidden::Mamba(m.select_rows(h, rows))
            }
            _ => mismatch(),
        }
    }

    fn batch_size(&self, hidden: &BackboneHidden) -> usize {
        match hidden {
            BackboneHidden::Transformer(h) => h.x.dims()[0],
            BackboneHidden::Mamba(h) => h.x.dims()[0],
        }
    }

    fn embed_flops(&self, hidden: &BackboneHidden) -> u64 {
        match (self, hidden) {
            (Self::Transformer(e), BackboneHidden::Transformer(h)) => e.embed_flops(h),
            (Self::Mamba(m), BackboneHidden::Mamba(h)) => m.embed_flops(h),
            _ => mismatch(),
        }
    }

    fn layer_flops(&self, layer_idx: usize, hidden: &BackboneHidden) -> u64 {
        match (self, hidden) {
            (Self::Transformer(e), BackboneHidden::Transformer(h)) => e.layer_flops(layer_idx, h),
            (Self::Mamba(m), BackboneHidden::Mamba(h)) => m.layer_flops(layer_idx, h),
            _ => mismatch(),
        }
    }

    fn features_flops(&self, hidden: &BackboneHidden) -> u64 {
        match (self, hidden) {
            (Self::Transformer(e), BackboneHidden::Transformer(h)) => e.features_flops(h),
            (Self::Mamba(m), BackboneHidden::Mamba(h)) => m.features_flops(h),
            _ => mismatch(),
        }
    }

    fn device(&self) -> Device {
        match self {
            Self::Transformer(e) => e.device(),
            Self::Mamba(m) => m.device(),
        }
    }
}
