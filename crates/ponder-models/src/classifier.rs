//! Encoder + exit heads.

use burn::config::Config;
use std::path::Path;

use burn::module::Module;
use burn::store::RecordError;
use burn::tensor::Device;
use ponder_core::{
    AdaptiveOutput, AllLayersOutput, ExitPolicy, LayerwiseBackbone, exit_flops, forward_all_layers,
    run_adaptive,
};
use ponder_exits::{
    ClassifierHeads, ClassifierHeadsConfig, ExitGates, ExitGatesConfig, GatedHeads, HaltingHead,
    HaltingHeadConfig, HaltingHeads, OffRampHeads, OffRampPooler,
};
use ponder_mamba::MambaEncoderConfig;
use ponder_transformer::{Encoder, EncoderConfig, EncoderInput};

use crate::backbone::{Backbone, BackboneConfig, PrePooled};

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
    /// DeeBERT's off-ramp poolers, if any (see [`OffRampPooler`]). Default: none.
    ///
    /// [`OffRampPooler::Separate`] (DeeBERT's reference form) needs per-layer heads
    /// without a halting head or gates. On Mamba, which has no pooler to copy, it means
    /// no pooler at all: every exit's classifier reads the pooled, normalised state, as
    /// the final exit does (the off-ramps mirror the final exit).
    #[config(default = "None")]
    pub offramp_pooler: Option<OffRampPooler>,
    /// Dropout on the classifier input. Default: 0.1.
    #[config(default = 0.1)]
    pub head_dropout: f64,
    /// Batch normalisation of every exit's classifier input
    /// ([`ClassifierHeadsConfig::input_norm`]). Default: false.
    #[config(default = false)]
    pub head_input_norm: bool,
    /// A halting head (PonderNet's linear λ head, PALBERT's Lambda layer), for the
    /// methods that learn an exit distribution. Default: none.
    #[config(default = "None")]
    pub halting: Option<HaltingHeadConfig>,
    /// JEI-DNN's gates, one per early exit (`n_layers − 1`), on the confidence features of
    /// each exit's logits. Default: false.
    #[config(default = false)]
    pub gates: bool,
}

impl MultiExitConfig {
    /// Builds the model.
    ///
    /// # Panics
    /// With [`OffRampPooler::Separate`] and a shared head, a halting head or gates.
    pub fn init(&self, device: &Device) -> MultiExitClassifier {
        let offramp_pooler = match (self.offramp_pooler, &self.backbone) {
            (Some(OffRampPooler::Separate), backbone) => {
                assert!(
                    !self.shared_head && self.halting.is_none() && !self.gates,
                    "MultiExitConfig: separate off-ramp poolers need per-layer heads without a halting head or gates"
                );
                // Mamba has no pooler: its off-ramps are plain classifiers like its final exit
                matches!(backbone, BackboneConfig::Transformer(_))
                    .then_some(OffRampPooler::Separate)
            }
            (form, _) => form,
        };
        MultiExitClassifier {
            backbone: self.backbone.init(device),
            heads: ClassifierHeadsConfig::new(
                self.backbone.n_layers(),
                self.backbone.d_model(),
                self.n_classes,
            )
            .with_shared(self.shared_head)
            .with_offramp_pooler(offramp_pooler)
            .with_dropout(self.head_dropout)
            .with_input_norm(self.head_input_norm)
            .init(device),
            halting: self.halting.as_ref().map(|h| h.init(device)),
            gates: self.gates.then(|| {
                let n_layers = self.backbone.n_layers();
                assert!(
                    n_layers >= 2,
                    "MultiExitConfig: gates need at least 2 layers (one early exit), got {n_layers}"
                );
                ExitGatesConfig::new(n_layers - 1).init(device)
            }),
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
    /// JEI-DNN's gates, if the model has them.
    pub gates: Option<ExitGates>,
}

/// The layout of [`MultiExitClassifier`] before it had a choice of backbone: the
/// transformer encoder was the field `encoder`, so checkpoints of that time name its
/// tensors `encoder.*` (now `backbone.Transformer.*`).
#[derive(Module, Debug)]
struct TransformerOnlyClassifier {
    encoder: Encoder,
    heads: ClassifierHeads,
    halting: Option<HaltingHead>,
}

impl MultiExitClassifier {
    /// Before DeeBERT's stage 2: copies the backbone's main pooler (the final exit's)
    /// into every off-ramp's pooler when the off-ramps read the pre-pooler features
    /// (DeeBERT's reference form, [`OffRampPooler::Separate`]; the reference code's
    /// `init_highway_pooler`); otherwise returns the model unchanged.
    pub fn init_offramp_poolers(self) -> Self {
        let Self {
            backbone,
            heads,
            halting,
            gates,
        } = self;
        let heads = match backbone.main_pooler() {
            Some(main) => heads.copy_pooler(main),
            None => heads,
        };
        Self {
            backbone,
            heads,
            halting,
            gates,
        }
    }

    /// The heads and backbone of DeeBERT's reference form as the runner sees them
    /// (pre-pooler features; the off-ramps' poolers and the main pooler in the heads),
    /// if the model has that form.
    fn offramps(&self) -> Option<(PrePooled<'_>, OffRampHeads<'_>)> {
        if self.heads.offramp_pooler != Some(OffRampPooler::Separate) {
            return None;
        }
        let main_pooler = self.backbone.main_pooler()?;
        Some((
            PrePooled(&self.backbone),
            OffRampHeads {
                heads: &self.heads,
                main_pooler,
            },
        ))
    }

    /// Loads weights written by `save_file` into this model, also from checkpoints
    /// written before the backbone became a choice (transformer models only).
    pub fn load_weights(self, path: &Path) -> Result<Self, RecordError> {
        let error = match self.clone().try_load_file(path) {
            Ok(model) => return Ok(model),
            Err(e) => e,
        };
        let Self {
            backbone: Backbone::Transformer(encoder),
            heads,
            halting,
            gates: None,
        } = self
        else {
            return Err(error);
        };
        let old = TransformerOnlyClassifier {
            encoder,
            heads,
            halting,
        };
        match old.try_load_file(path) {
            Ok(old) => Ok(Self {
                backbone: Backbone::Transformer(old.encoder),
                heads: old.heads,
                halting: old.halting,
                gates: None,
            }),
            // The file is not of the old layout either: report the current one's error.
            Err(_) => Err(error),
        }
    }

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

    /// The classifiers paired with JEI-DNN's gates, if there are gates.
    pub fn gated_heads(&self) -> Option<GatedHeads<'_>> {
        self.gates.as_ref().map(|gates| GatedHeads {
            classifiers: &self.heads,
            gates,
        })
    }

    /// Every exit's logits (and halting probabilities with a halting head, or gate values
    /// at the early exits with gates) for every row (training).
    pub fn forward_all(&self, input: EncoderInput) -> AllLayersOutput {
        if let Some((backbone, heads)) = self.offramps() {
            forward_all_layers(&backbone, &heads, input)
        } else if let Some(heads) = self.halting_heads() {
            forward_all_layers(&self.backbone, &heads, input)
        } else if let Some(heads) = self.gated_heads() {
            forward_all_layers(&self.backbone, &heads, input)
        } else {
            forward_all_layers(&self.backbone, &self.heads, input)
        }
    }

    /// Adaptive inference under `policy` through the batched runner.
    pub fn adaptive<P: ExitPolicy>(
        &self,
        input: EncoderInput,
        policy: &P,
        targets: Option<&[usize]>,
    ) -> AdaptiveOutput {
        if let Some((backbone, heads)) = self.offramps() {
            run_adaptive(&backbone, &heads, policy, input, targets)
        } else if let Some(heads) = self.halting_heads() {
            run_adaptive(&self.backbone, &heads, policy, input, targets)
        } else if let Some(heads) = self.gated_heads() {
            run_adaptive(&self.backbone, &heads, policy, input, targets)
        } else {
            run_adaptive(&self.backbone, &self.heads, policy, input, targets)
        }
    }

    /// The cost `ĉ_l` of reaching each exit over the cost of the final exit, per row of
    /// `input` (all rows have the same cost): the embedding, the layers up to `l`, and the
    /// heads (and gates) evaluated on the way, counted as the runner counts them (JEI-DNN's
    /// normalised exit costs `ĉ_l = c_l / c_final`, so `ĉ_final = 1`; Regol, Chataoui,
    /// Coates, ICLR 2024, arXiv:2310.09163).
    pub fn exit_costs(&self, input: EncoderInput) -> Vec<f64> {
        let hidden = self.backbone.embed(input);
        let costs = match (self.offramps(), self.halting_heads(), self.gated_heads()) {
            (Some((b, h)), _, _) => exit_flops(&b, &h, &hidden),
            (None, Some(h), _) => exit_flops(&self.backbone, &h, &hidden),
            (None, None, Some(g)) => exit_flops(&self.backbone, &g, &hidden),
            (None, None, None) => exit_flops(&self.backbone, &self.heads, &hidden),
        };
        let last = costs.last().copied().unwrap_or(1).max(1) as f64;
        costs.into_iter().map(|c| c as f64 / last).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tensor};

    #[test]
    fn checkpoints_of_the_transformer_only_layout_still_load() {
        let device = Device::flex();
        device.seed(1);
        let config = MultiExitConfig::new(EncoderConfig::tiny_vit().with_dropout(0.0).into(), 10)
            .with_head_dropout(0.0);
        let trained = config.init(&device);
        let Backbone::Transformer(encoder) = trained.backbone.clone() else {
            unreachable!()
        };
        let old = TransformerOnlyClassifier {
            encoder,
            heads: trained.heads.clone(),
            halting: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.bpk");
        old.save_file(&path).unwrap();
        // A freshly initialised model takes the old file's weights.
        device.seed(2);
        let loaded = config.init(&device).load_weights(&path).unwrap();
        let images = Tensor::<4>::random([2, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device);
        let logits = |m: &MultiExitClassifier| {
            m.forward_all(EncoderInput::Images(images.clone())).logits[2]
                .clone()
                .try_into_vec_as::<f32>()
                .unwrap()
        };
        assert_eq!(logits(&trained.valid()), logits(&loaded.valid()));
        // A file of neither layout is still an error.
        std::fs::write(&path, b"not a checkpoint").unwrap();
        assert!(config.init(&device).load_weights(&path).is_err());
    }
}
