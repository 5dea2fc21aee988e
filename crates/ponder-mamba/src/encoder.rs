//! A Mamba sequence classifier trunk that runs one layer at a time, so every exit head,
//! policy and the batched runner of `ponder-core` work on it unchanged.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Bool, Device, Int, Tensor};
use ponder_core::LayerwiseBackbone;
use serde::{Deserialize, Serialize};

use crate::config::MambaConfig;
use crate::model::Mamba;

/// How a sequence becomes one feature vector at an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The last non-padding token (it has read the whole sequence: the model is causal).
    Last,
    /// The mean over non-padding tokens.
    Mean,
}

/// Configuration of a [`MambaEncoder`].
#[derive(Config, Debug, PartialEq)]
pub struct MambaEncoderConfig {
    /// The trunk (`tie_embeddings` is unused here).
    pub mamba: MambaConfig,
    /// Pooling at every exit. Default: last token.
    #[config(default = "Pooling::Last")]
    pub pooling: Pooling,
}

impl MambaEncoderConfig {
    /// Builds the encoder.
    ///
    /// # Panics
    /// If the configuration is invalid ([`MambaConfig::validate`]).
    pub fn init(&self, device: &Device) -> MambaEncoder {
        MambaEncoder {
            mamba: self.mamba.init(device),
            mean_pool: self.pooling == Pooling::Mean,
        }
    }
}

/// Token ids and the padding mask (`true` at padding; padding must be on the right).
#[derive(Debug, Clone)]
pub struct MambaInput {
    /// `[batch, seq_len]`.
    pub ids: Tensor<2, Int>,
    /// `[batch, seq_len]`, `true` at padding positions.
    pub mask_pad: Option<Tensor<2, Bool>>,
}

/// The residual stream between layers.
#[derive(Debug, Clone)]
pub struct MambaEncoderState {
    /// `[batch, seq_len, d_model]`.
    pub x: Tensor<3>,
    /// `[batch, seq_len]`, `true` at padding positions.
    pub mask_pad: Option<Tensor<2, Bool>>,
}

/// A Mamba trunk with pooling: the backbone of a multi-exit sequence classifier.
///
/// Every exit reads `pool(norm_f(x_l))` after block `l` (the shared final RMSNorm, as a
/// pre-norm stack needs). Padding on the right cannot change the outputs at real
/// tokens, because the scan is causal.
#[derive(Module, Debug)]
pub struct MambaEncoder {
    /// Embedding, blocks and the final norm.
    pub mamba: Mamba,
    /// Mean pooling instead of the last token.
    pub mean_pool: bool,
}

impl MambaEncoder {
    /// Pooled, normalised features `[batch, d_model]`.
    pub fn pooled(&self, hidden: &MambaEncoderState) -> Tensor<2> {
        let x = hidden.x.clone();
        let [batch, _, d] = x.dims();
        if self.mean_pool {
            ponder_core::masked_mean(self.mamba.norm_f.forward(x), hidden.mask_pad.as_ref())
        } else {
            // RMSNorm is per token: pick the last real token first, then normalise it.
            let keep = ponder_core::real_tokens(hidden.mask_pad.as_ref(), &x);
            let last = (keep.sum_dim(1).int() - 1).clamp_min(0); // [B, 1]
            let index = last.reshape([batch, 1, 1]).repeat_dim(2, d);
            self.mamba
                .norm_f
                .forward(x.gather(1, index).reshape([batch, d]))
        }
    }
}

impl LayerwiseBackbone for MambaEncoder {
    type Input = MambaInput;
    type Hidden = MambaEncoderState;

    fn n_layers(&self) -> usize {
        self.mamba.n_layers()
    }

    fn embed(&self, input: MambaInput) -> MambaEncoderState {
        MambaEncoderState {
            x: self.mamba.embed(input.ids),
            mask_pad: input.mask_pad,
        }
    }

    fn forward_layer(&self, layer_idx: usize, hidden: MambaEncoderState) -> MambaEncoderState {
        let (x, _) = self.mamba.layers[layer_idx].forward(hidden.x, None);
        MambaEncoderState {
            x,
            mask_pad: hidden.mask_pad,
        }
    }

    fn features(&self, hidden: &MambaEncoderState) -> Tensor<2> {
        self.pooled(hidden)
    }

    fn select_rows(&self, hidden: MambaEncoderState, rows: Tensor<1, Int>) -> MambaEncoderState {
        MambaEncoderState {
            x: hidden.x.select(0, rows.clone()),
            mask_pad: hidden.mask_pad.map(|m| m.select(0, rows)),
        }
    }

    fn batch_size(&self, hidden: &MambaEncoderState) -> usize {
        hidden.x.dims()[0]
    }

    fn embed_flops(&self, hidden: &MambaEncoderState) -> u64 {
        // A table lookup: count a copy of each embedding.
        (hidden.x.dims()[1] * self.mamba.d_model) as u64
    }

    fn layer_flops(&self, layer_idx: usize, hidden: &MambaEncoderState) -> u64 {
        let t = hidden.x.dims()[1] as u64;
        let d = self.mamba.d_model as u64;
        // RMSNorm, the mixer, the residual add.
        5 * t * d + self.mamba.layers[layer_idx].mixer.flops(t, d) + t * d
    }

    fn features_flops(&self, hidden: &MambaEncoderState) -> u64 {
        let t = hidden.x.dims()[1] as u64;
        let d = self.mamba.d_model as u64;
        if self.mean_pool { 7 * t * d } else { 5 * d }
    }

    fn device(&self) -> Device {
        self.mamba.embedding.weight.val().device()
    }
}
