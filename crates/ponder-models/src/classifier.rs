//! Encoder + exit heads.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::Device;
use ponder_core::{
    AdaptiveOutput, AllLayersOutput, ExitPolicy, LayerwiseBackbone, forward_all_layers,
    run_adaptive,
};
use ponder_exits::{
    ClassifierHeads, ClassifierHeadsConfig, HaltingHead, HaltingHeadConfig, HaltingHeads,
};
use ponder_mamba::MambaEncoderConfig;
use ponder_transformer::{EncoderConfig, EncoderInput};

use crate::backbone::{Backbone, BackboneConfig};

/// Configuration of a [`MultiExitClassifier`].
#[derive(Config, Debug)]
pub struct MultiExitConfig {
    /// The backbone (a transformer encoder or Mamba).
    pub backbone: BackboneConfig,
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
    /// A halting head (PonderNet's linear λ head, PALBERT's Lambda layer), for the
    /// methods that learn an exit distribution. Default: none.
    #[config(default = "None")]
    pub halting: Option<HaltingHeadConfig>,
}

impl MultiExitConfig {
    /// Builds the model.
    pub fn init(&self, device: &Device) -> MultiExitClassifier {
        MultiExitClassifier {
            backbone: self.backbone.init(device),
            heads: ClassifierHeadsConfig::new(
                self.backbone.n_layers(),
                self.backbone.d_model(),
                self.n_classes,
            )
            .with_shared(self.shared_head)
            .with_pooler_per_head(self.pooler_per_head)
            .with_dropout(self.head_dropout)
            .init(device),
            halting: self.halting.as_ref().map(|h| h.init(device)),
        }
    }
}

impl From<EncoderConfig> for BackboneConfig {
    fn from(config: EncoderConfig) -> Self {
        Self::Transformer(config)
    }
}

impl From<MambaEncoderConfig> for BackboneConfig {
    fn from(config: MambaEncoderConfig) -> Self {
        Self::Mamba(config)
    }
}

/// A layer-wise backbone with a classifier at every exit.
#[derive(Module, Debug)]
pub struct MultiExitClassifier {
    /// The backbone.
    pub backbone: Backbone,
    /// The exit heads.
    pub heads: ClassifierHeads,
    /// The halting head, if the model learns an exit distribution.
    pub halting: Option<HaltingHead>,
}

impl MultiExitClassifier {
    /// Number of layers (exits).
    pub fn n_layers(&self) -> usize {
        self.backbone.n_layers()
    }

    /// The classifiers paired with the halting head, if there is one.
    pub fn halting_heads(&self) -> Option<HaltingHeads<'_>> {
        self.halting.as_ref().map(|halting| HaltingHeads {
            classifiers: &self.heads,
            halting,
        })
    }

    /// Every exit's logits (and halting probabilities, with a halting head) for every
    /// row (training).
    pub fn forward_all(&self, input: EncoderInput) -> AllLayersOutput {
        match self.halting_heads() {
            Some(heads) => forward_all_layers(&self.backbone, &heads, input),
            None => forward_all_layers(&self.backbone, &self.heads, input),
        }
    }

    /// Adaptive inference under `policy` through the batched runner.
    pub fn adaptive<P: ExitPolicy>(
        &self,
        input: EncoderInput,
        policy: &P,
        targets: Option<&[usize]>,
    ) -> AdaptiveOutput {
        match self.halting_heads() {
            Some(heads) => run_adaptive(&self.backbone, &heads, policy, input, targets),
            None => run_adaptive(&self.backbone, &self.heads, policy, input, targets),
        }
    }
}
