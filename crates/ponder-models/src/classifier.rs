//! Encoder + exit heads.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::Device;
use ponder_core::{AdaptiveOutput, AllLayersOutput, ExitPolicy, forward_all_layers, run_adaptive};
use ponder_exits::{ClassifierHeads, ClassifierHeadsConfig};
use ponder_transformer::{Encoder, EncoderConfig, EncoderInput};

/// Configuration of a [`MultiExitClassifier`].
#[derive(Config, Debug)]
pub struct MultiExitConfig {
    /// The backbone.
    pub encoder: EncoderConfig,
    /// Number of classes.
    pub n_classes: usize,
    /// One classifier shared by all exits (PALBERT) instead of one per layer. Default:
    /// false.
    #[config(default = false)]
    pub shared_head: bool,
    /// A pooler per exit head (DeeBERT's off-ramps). Default: false.
    #[config(default = false)]
    pub pooler_per_head: bool,
    /// Dropout on the classifier input. Default: 0.1.
    #[config(default = 0.1)]
    pub head_dropout: f64,
}

impl MultiExitConfig {
    /// Builds the model.
    pub fn init(&self, device: &Device) -> MultiExitClassifier {
        MultiExitClassifier {
            encoder: self.encoder.init(device),
            heads: ClassifierHeadsConfig::new(
                self.encoder.n_layers,
                self.encoder.d_model,
                self.n_classes,
            )
            .with_shared(self.shared_head)
            .with_pooler_per_head(self.pooler_per_head)
            .with_dropout(self.head_dropout)
            .init(device),
        }
    }
}

/// A layer-wise encoder with a classifier at every exit.
#[derive(Module, Debug)]
pub struct MultiExitClassifier {
    /// The backbone.
    pub encoder: Encoder,
    /// The exit heads.
    pub heads: ClassifierHeads,
}

impl MultiExitClassifier {
    /// Number of layers (exits).
    pub fn n_layers(&self) -> usize {
        self.encoder.n_layers
    }

    /// Every exit's logits for every row (training).
    pub fn forward_all(&self, input: EncoderInput) -> AllLayersOutput {
        forward_all_layers(&self.encoder, &self.heads, input)
    }

    /// Adaptive inference under `policy` through the batched runner.
    pub fn adaptive<P: ExitPolicy>(
        &self,
        input: EncoderInput,
        policy: &P,
        targets: Option<&[usize]>,
    ) -> AdaptiveOutput {
        run_adaptive(&self.encoder, &self.heads, policy, input, targets)
    }
}
