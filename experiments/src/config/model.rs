//! The `[model]` section: the backbone (transformer or Mamba, optionally a pretrained
//! Hugging Face encoder) and its exits, and the encoder configurations it builds.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use ponder_exits::OffRampPooler;
use ponder_mamba::{MambaConfig, MambaEncoderConfig, Pooling};
use ponder_models::BackboneConfig;
use ponder_transformer::{EmbeddingKind, EncoderConfig, HfConfig};
use serde::{Deserialize, Serialize};

use super::{Experiment, InputKind};

/// The backbone: an encoder and its exits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Number of layers.
    pub n_layers: usize,
    /// Hidden size.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Feed-forward size.
    pub d_ff: usize,
    /// Embedding size (ALBERT's factorised embedding); default: `d_model`.
    #[serde(default)]
    pub d_embed: Option<usize>,
    /// One layer shared by all depths (ALBERT).
    #[serde(default)]
    pub share_layers: bool,
    /// Pre-norm layers.
    #[serde(default)]
    pub norm_first: bool,
    /// Backbone dropout. Default: 0.1 (0 for a new experiment on a pretrained encoder
    /// with `[CLS]` pooling: see `head_input_norm`).
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Dropout on the classifier inputs.
    #[serde(default = "default_dropout")]
    pub head_dropout: f64,
    /// Images: side of a square patch.
    #[serde(default = "default_patch")]
    pub patch_size: usize,
    /// A pretrained Hugging Face encoder to start from (BERT, RoBERTa or ALBERT): a
    /// folder holding `config.json` and `model.safetensors`, e.g.
    /// `data/all-minilm-l6-v2`. Text only, transformer backbone; the encoder's sizes are
    /// the checkpoint's (`n_layers`, `d_model`, `n_heads`, `d_ff` must equal them) and
    /// its vocabulary must be the tokenizer's. A new experiment with it gets the exit
    /// settings that make early exits learn on a pretrained encoder for the keys it
    /// leaves unset (`config::pretrained_defaults`; the program prints them).
    #[serde(default)]
    pub pretrained: Option<PathBuf>,
    /// The backbone: `transformer` (default) or `mamba` (text only; `n_heads`, `d_ff`,
    /// `d_embed`, `share_layers`, `norm_first` and `dropout` are the transformer's).
    #[serde(default)]
    pub backbone: BackboneKind,
    /// Mamba: SSM state size n per channel.
    #[serde(default = "default_d_state")]
    pub d_state: usize,
    /// Mamba: width of the causal convolution.
    #[serde(default = "default_d_conv")]
    pub d_conv: usize,
    /// Mamba: expansion factor (d_inner = expand · d_model).
    #[serde(default = "default_expand")]
    pub expand: usize,
    /// What every exit reads: `mean`, the mean of the real tokens' states (both
    /// backbones; for a sentence-transformers checkpoint such as all-MiniLM-L6-v2 the
    /// pooling it was trained with), or `last` (the default): the last real token for
    /// Mamba, the `[CLS]` token (BERT's pooler input) for the transformer.
    #[serde(default = "default_pooling")]
    pub pooling: Pooling,
    /// One classifier shared by every exit (`true`) or one per layer (`false`).
    /// Default: shared for PALBERT and PonderNet (their papers' form), per layer for
    /// the other methods. `false` trains PALBERT's or PonderNet's loss with per-layer
    /// heads (an ablation); `true` is refused for DeeBERT and JEI-DNN, whose later
    /// stages train the early exits' heads apart from the final one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_head: Option<bool>,
    /// DeeBERT's off-ramp poolers (only DeeBERT's models read it; the other methods
    /// have no pooler in their heads and ignore it):
    ///
    /// * `separate` (the default of a new experiment): DeeBERT's reference form. Each
    ///   off-ramp (every exit but the last) has its own pooler on the layer's pre-pooler
    ///   features (the normalised `[CLS]` state, or the token mean with `pooling =
    ///   "mean"`), set to a copy of the main pooler trained in stage 1 when stage 2
    ///   starts; the final exit is the main pooler and its classifier, as in a
    ///   `final_only` model. On the Mamba backbone, which has no pooler, every exit's
    ///   classifier reads the pooled state directly.
    /// * `stacked`: every exit, the final one too, stacks its own freshly initialised
    ///   pooler on the main pooler's output (ponder's DeeBERT before `separate`).
    ///
    /// A run folder records the form in its `config.toml`; one saved before the key
    /// existed has none and was trained `stacked`, which is what it loads as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offramp_pooler: Option<OffRampPooler>,
    /// Batch normalisation of every exit's classifier input, feature by feature (after
    /// DeeBERT's off-ramp poolers, before the dropout; running statistics in
    /// evaluation, so a prediction does not depend on the batch). Default: false.
    ///
    /// For pretrained encoders read through `[CLS]` (`pooling = "last"`) that were not
    /// trained to pool there, such as all-MiniLM-L6-v2: their early `[CLS]` states
    /// differ between inputs by a thousandth of their size, too little for a head to read
    /// at any usual learning rate, while on the same states standardised the early exits
    /// learn (docs/results.md). Such a run wants `dropout = 0`: dropout's noise on those
    /// states is larger than their spread. It helps mean pooling too (the heads start
    /// from standardised features). A new experiment with `pretrained` gets it when it
    /// leaves it unset, and with `[CLS]` pooling also `dropout = 0`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub head_input_norm: bool,
}

/// The backbone of a multi-exit model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackboneKind {
    /// A transformer encoder (BERT, ALBERT, ViT).
    #[default]
    Transformer,
    /// A Mamba selective-SSM stack with pooling (text only).
    Mamba,
}

impl BackboneKind {
    /// The name used in configs, model folders and tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Transformer => "transformer",
            Self::Mamba => "mamba",
        }
    }
}

pub(crate) fn default_d_state() -> usize {
    16
}
pub(crate) fn default_d_conv() -> usize {
    4
}
pub(crate) fn default_expand() -> usize {
    2
}
fn default_pooling() -> Pooling {
    Pooling::Last
}

fn default_dropout() -> f64 {
    0.1
}
fn default_patch() -> usize {
    7
}

impl Experiment {
    /// DeeBERT's off-ramp poolers (`model.offramp_pooler`; `separate` when unset).
    pub fn offramp_pooler(&self) -> OffRampPooler {
        self.model.offramp_pooler.unwrap_or(OffRampPooler::Separate)
    }

    /// The Mamba stack of this experiment (same `n_layers` and `d_model` as the
    /// transformer) for a vocabulary of `vocab_size` tokens.
    pub fn mamba_config(&self, vocab_size: usize) -> MambaEncoderConfig {
        let m = &self.model;
        MambaEncoderConfig::new(
            MambaConfig::new(vocab_size, m.d_model, m.n_layers)
                .with_d_state(m.d_state)
                .with_d_conv(m.d_conv)
                .with_expand(m.expand),
        )
        .with_pooling(m.pooling)
    }

    /// The backbone `model.backbone` of this experiment.
    pub fn backbone_config(
        &self,
        vocab_size: usize,
        max_position: usize,
    ) -> Result<BackboneConfig> {
        Ok(match self.model.backbone {
            BackboneKind::Transformer => {
                BackboneConfig::Transformer(self.encoder_config(vocab_size, max_position)?)
            }
            BackboneKind::Mamba => BackboneConfig::Mamba(self.mamba_config(vocab_size)),
        })
    }

    /// The pretrained checkpoint's encoder (`model.pretrained`), checked against the
    /// `[model]` sizes, the tokenizer's vocabulary and `data.max_tokens`; dropout as
    /// `model.dropout`.
    pub fn pretrained_config(
        &self,
        dir: &Path,
        vocab_size: Option<usize>,
        max_position: usize,
    ) -> Result<EncoderConfig> {
        let hf = HfConfig::read(dir.join("config.json"))
            .map_err(|e| anyhow::anyhow!("{e}").context("in `model.pretrained`"))?;
        let config = hf
            .encoder_config()
            .map_err(|e| anyhow::anyhow!("{e}").context("in `model.pretrained`"))?
            .with_dropout(self.model.dropout)
            .with_mean_pool(self.model.pooling == Pooling::Mean);
        let m = &self.model;
        for (key, ours, theirs) in [
            ("n_layers", m.n_layers, config.n_layers),
            ("d_model", m.d_model, config.d_model),
            ("n_heads", m.n_heads, config.n_heads),
            ("d_ff", m.d_ff, config.d_ff),
            (
                "d_embed",
                m.d_embed.unwrap_or(m.d_model),
                config.embed_size(),
            ),
            (
                "share_layers",
                m.share_layers as usize,
                config.share_layers as usize,
            ),
            (
                "norm_first",
                m.norm_first as usize,
                config.norm_first as usize,
            ),
        ] {
            if ours != theirs {
                bail!(
                    "invalid value for `model.{key}`: {ours}, but the pretrained encoder in {} has {theirs}",
                    dir.display()
                );
            }
        }
        let EmbeddingKind::Text {
            vocab_size: theirs,
            max_position: positions,
            ..
        } = config.embedding
        else {
            unreachable!("pretrained encoders read text")
        };
        if let Some(vocab_size) = vocab_size
            && vocab_size != theirs
        {
            bail!(
                "the tokenizer has {vocab_size} tokens but the pretrained encoder in {} has {theirs}: use its own tokenizer (`data.tokenizer`)",
                dir.display()
            );
        }
        if max_position > positions {
            bail!(
                "invalid value for `data.max_tokens`: {max_position} exceeds the pretrained encoder's {positions} positions"
            );
        }
        Ok(config)
    }

    /// The encoder of this experiment for `max_position` tokens (text) or images.
    pub fn encoder_config(&self, vocab_size: usize, max_position: usize) -> Result<EncoderConfig> {
        let m = &self.model;
        if let Some(dir) = &m.pretrained {
            return self.pretrained_config(dir, Some(vocab_size), max_position);
        }
        let embedding = match self.data.input() {
            // an IDX file's size is known once it is read: until then any multiple of the
            // patch passes
            InputKind::Images { size, channels } => EmbeddingKind::Patch {
                image_size: size.unwrap_or(m.patch_size),
                patch_size: m.patch_size,
                channels,
            },
            InputKind::Text => EmbeddingKind::Text {
                vocab_size,
                max_position,
                type_vocab_size: 2,
            },
        };
        let config = EncoderConfig::new(embedding, m.n_layers, m.d_model, m.n_heads, m.d_ff)
            .with_d_embed(m.d_embed)
            .with_share_layers(m.share_layers)
            .with_norm_first(m.norm_first)
            .with_dropout(m.dropout)
            .with_mean_pool(m.pooling == Pooling::Mean);
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}").context("in section [model]"))?;
        Ok(config)
    }
}
