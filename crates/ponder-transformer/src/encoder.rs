//! The layer-wise encoder.

use burn::module::Module;
use burn::nn::activation::ActivationConfig;
use burn::nn::attention::MultiHeadAttention;
use burn::nn::transformer::{TransformerEncoderConfig, TransformerEncoderLayer};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Int, Tensor};
use ponder_core::{LayerwiseBackbone, linear_flops, transformer_layer_flops};

use crate::config::{EmbeddingKind, EncoderConfig};
use crate::embedding::{PatchEmbedding, TextEmbedding};

/// What the encoder consumes.
// burn tensors are large handles; boxing them would only add indirection
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum EncoderInput {
    /// Token ids with optional segment ids and padding mask.
    Tokens {
        /// Token ids `[batch_size, seq_len]`.
        ids: Tensor<2, Int>,
        /// Segment ids `[batch_size, seq_len]` (zeros when absent).
        type_ids: Option<Tensor<2, Int>>,
        /// `true` at padding positions `[batch_size, seq_len]`.
        mask_pad: Option<Tensor<2, Bool>>,
    },
    /// Images `[batch_size, channels, height, width]`.
    Images(Tensor<4>),
}

impl EncoderInput {
    /// Keeps the given rows.
    pub fn select_rows(self, rows: Tensor<1, Int>) -> Self {
        match self {
            Self::Tokens {
                ids,
                type_ids,
                mask_pad,
            } => Self::Tokens {
                ids: ids.select(0, rows.clone()),
                type_ids: type_ids.map(|t| t.select(0, rows.clone())),
                mask_pad: mask_pad.map(|m| m.select(0, rows)),
            },
            Self::Images(images) => Self::Images(images.select(0, rows)),
        }
    }

    /// The same input without autodiff (for a frozen backbone run in evaluation mode).
    pub fn without_autodiff(self) -> Self {
        match self {
            Self::Tokens {
                ids,
                type_ids,
                mask_pad,
            } => Self::Tokens {
                ids: ids.without_autodiff(),
                type_ids: type_ids.map(|t| t.without_autodiff()),
                mask_pad: mask_pad.map(|m| m.without_autodiff()),
            },
            Self::Images(images) => Self::Images(images.without_autodiff()),
        }
    }

    /// Number of rows.
    pub fn batch_size(&self) -> usize {
        match self {
            Self::Tokens { ids, .. } => ids.dims()[0],
            Self::Images(images) => images.dims()[0],
        }
    }
}

/// The hidden state between layers: what layer `i` needs from layer `i − 1`.
#[derive(Debug, Clone)]
pub struct EncoderState {
    /// Hidden states `[batch_size, seq_len, d_model]`.
    pub x: Tensor<3>,
    /// `true` at padding positions `[batch_size, seq_len]`.
    pub mask_pad: Option<Tensor<2, Bool>>,
}

/// A transformer encoder that can be advanced one layer at a time.
#[derive(Module, Debug)]
pub struct Encoder {
    /// Token embedding (text input).
    pub text: Option<TextEmbedding>,
    /// Patch embedding (image input).
    pub patch: Option<PatchEmbedding>,
    /// Linear map E → H after the embedding, when E ≠ H (ALBERT's
    /// `embedding_hidden_mapping_in`, applied once before layer 1).
    pub embed_map: Option<Linear>,
    /// The layers: `n_layers` of them, or one shared by all depths (ALBERT).
    pub layers: Vec<TransformerEncoderLayer>,
    /// Final layer norm of pre-norm encoders, applied before the pooler at every exit.
    pub final_norm: Option<LayerNorm>,
    /// The pooler `tanh(W·h_cls + b)`, shared by all exits (in DeeBERT's reference form,
    /// by the final exit only: each off-ramp has its own copy in the exit heads).
    pub pooler: Linear,
    /// The pooler reads the mean of the real tokens' states instead of `h_cls`.
    pub mean_pool: bool,
    /// Number of layers (applications of the shared layer for ALBERT).
    pub n_layers: usize,
    /// Hidden size.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Feed-forward inner size.
    pub d_ff: usize,
    /// Embedding size E.
    pub d_embed: usize,
}

impl EncoderConfig {
    /// Builds the encoder.
    ///
    /// # Panics
    /// If the configuration is invalid (see [`EncoderConfig::validate`], which returns
    /// the same problem as an error).
    pub fn init(&self, device: &Device) -> Encoder {
        if let Err(e) = self.validate() {
            panic!("EncoderConfig::init: {e}");
        }
        let d_embed = self.embed_size();
        let (text, patch) = match &self.embedding {
            EmbeddingKind::Text {
                vocab_size,
                max_position,
                type_vocab_size,
            } => (
                Some(TextEmbedding::new(
                    *vocab_size,
                    *max_position,
                    *type_vocab_size,
                    d_embed,
                    self.dropout,
                    self.layer_norm_eps,
                    device,
                )),
                None,
            ),
            EmbeddingKind::Patch {
                image_size,
                patch_size,
                channels,
            } => (
                None,
                Some(PatchEmbedding::new(
                    *image_size,
                    *patch_size,
                    *channels,
                    d_embed,
                    self.dropout,
                    device,
                )),
            ),
        };
        let layer_config =
            TransformerEncoderConfig::new(self.d_model, self.d_ff, self.n_heads, self.n_layers)
                .with_dropout(self.dropout)
                .with_norm_first(self.norm_first)
                .with_layer_norm_eps(self.layer_norm_eps)
                .with_activation(if self.gelu_approximate {
                    ActivationConfig::GeluApproximate
                } else {
                    ActivationConfig::Gelu
                });
        let n_weight_sets = if self.share_layers { 1 } else { self.n_layers };
        Encoder {
            text,
            patch,
            embed_map: (d_embed != self.d_model)
                .then(|| LinearConfig::new(d_embed, self.d_model).init(device)),
            layers: (0..n_weight_sets)
                .map(|_| TransformerEncoderLayer::new(&layer_config, device))
                .collect(),
            final_norm: self.norm_first.then(|| {
                LayerNormConfig::new(self.d_model)
                    .with_epsilon(self.layer_norm_eps)
                    .init(device)
            }),
            pooler: LinearConfig::new(self.d_model, self.d_model).init(device),
            mean_pool: self.mean_pool,
            n_layers: self.n_layers,
            d_model: self.d_model,
            n_heads: self.n_heads,
            d_ff: self.d_ff,
            d_embed,
        }
    }
}

impl Encoder {
    /// Whether one layer is shared by all depths (ALBERT).
    pub fn shares_layers(&self) -> bool {
        self.layers.len() == 1 && self.n_layers > 1
    }

    /// The layer that runs at depth `layer_idx`.
    pub fn layer(&self, layer_idx: usize) -> &TransformerEncoderLayer {
        assert!(
            layer_idx < self.n_layers,
            "layer {layer_idx} requested from an encoder of {} layers",
            self.n_layers
        );
        if self.shares_layers() {
            &self.layers[0]
        } else {
            &self.layers[layer_idx]
        }
    }

    /// Embeds the input.
    ///
    /// # Shapes
    /// - output: `x` `[batch_size, seq_len, d_model]`
    pub fn embed_input(&self, input: EncoderInput) -> EncoderState {
        let (x, mask_pad) = match input {
            EncoderInput::Tokens {
                ids,
                type_ids,
                mask_pad,
            } => {
                let text = self
                    .text
                    .as_ref()
                    .unwrap_or_else(|| panic!("token input given to an image encoder"));
                (text.forward(ids, type_ids), mask_pad)
            }
            EncoderInput::Images(images) => {
                let patch = self
                    .patch
                    .as_ref()
                    .unwrap_or_else(|| panic!("image input given to a text encoder"));
                (patch.forward(images), None)
            }
        };
        let x = match &self.embed_map {
            Some(map) => map.forward(x),
            None => x,
        };
        EncoderState { x, mask_pad }
    }

    /// Applies layer `layer_idx`.
    ///
    /// # Shapes
    /// - `x`: `[batch_size, seq_len, d_model]` in and out
    pub fn layer_forward(&self, layer_idx: usize, state: EncoderState) -> EncoderState {
        let x = layer_forward(self.layer(layer_idx), state.x, state.mask_pad.clone());
        EncoderState {
            x,
            mask_pad: state.mask_pad,
        }
    }

    /// The pooler's input: `norm(h_cls)`, or with `mean_pool` `mean_t norm(h_t)` over the
    /// real (non-padding) tokens (`norm` is the final layer norm of pre-norm encoders).
    ///
    /// # Shapes
    /// - output: `[batch_size, d_model]`
    pub fn pre_pooled(&self, state: &EncoderState) -> Tensor<2> {
        let [batch_size, _, d_model] = state.x.dims();
        let norm = |x: Tensor<3>| match &self.final_norm {
            Some(norm) => norm.forward(x),
            None => x,
        };
        if self.mean_pool {
            ponder_core::masked_mean(norm(state.x.clone()), state.mask_pad.as_ref())
        } else {
            norm(state.x.clone().slice([0..batch_size, 0..1, 0..d_model]))
                .reshape([batch_size, d_model])
        }
    }

    /// The pooled features of a state: `tanh(W·norm(h_cls) + b)`, or with `mean_pool`
    /// `tanh(W·mean_t norm(h_t) + b)` over the real (non-padding) tokens: the pooler on
    /// [`pre_pooled`](Self::pre_pooled).
    ///
    /// # Shapes
    /// - output: `[batch_size, d_model]`
    pub fn pooled(&self, state: &EncoderState) -> Tensor<2> {
        self.pooler.forward(self.pre_pooled(state)).tanh()
    }

    /// FLOPs of the pooler `tanh(W·f + b)` for one row. The pooler is all that
    /// [`features_flops`](LayerwiseBackbone::features_flops) counts: the final norm and
    /// the `[CLS]` slice or token mean before it are not counted.
    pub fn pooler_flops(&self) -> u64 {
        let h = self.d_model as u64;
        linear_flops(1, h, h) + 5 * h
    }

    /// The full forward pass cut after `n_layers` layers: hidden states after layer
    /// `n_layers` (`n_layers = self.n_layers` is the whole encoder).
    ///
    /// # Shapes
    /// - output: `x` `[batch_size, seq_len, d_model]`
    pub fn forward_cut(&self, input: EncoderInput, n_layers: usize) -> EncoderState {
        let mut state = self.embed_input(input);
        for layer_idx in 0..n_layers {
            state = self.layer_forward(layer_idx, state);
        }
        state
    }
}

/// One encoder layer: burn's [`TransformerEncoderLayer::forward`], with the attention
/// through burn's fused attention op ([`attention`]) wherever no dropout can apply.
///
/// burn's layer runs [`MultiHeadAttention`], which builds the `[batch, heads, seq, seq]`
/// scores, masks them, applies the softmax, multiplies by the values and returns the
/// weights as well. The fused op computes `softmax(q·kᵀ/√d_k)·v` in one pass without
/// returning the weights (on the flex CPU backend: one pair of matrix products per row
/// and head, with the softmax done in place). It has no dropout, so on an autodiff
/// device (training, where the attention dropout applies) the layer is burn's own, and
/// training is unchanged. Without autodiff, dropout is off in burn's layer too, and the
/// two paths compute the same function (equal up to float rounding; tested in
/// `tests/fused_attention.rs`).
pub fn layer_forward(
    layer: &TransformerEncoderLayer,
    x: Tensor<3>,
    mask_pad: Option<Tensor<2, Bool>>,
) -> Tensor<3> {
    if x.device().is_autodiff() || layer.mha.quiet_softmax {
        return layer.forward(x, mask_pad, None);
    }
    let mut residual = x.clone();
    if layer.norm_first {
        residual = layer.norm_2.forward(residual);
    }
    let mut x = x + fused_self_attention(&layer.mha, residual, mask_pad);
    let residual = if layer.norm_first {
        layer.norm_1.forward(x.clone())
    } else {
        x = layer.norm_1.forward(x);
        x.clone()
    };
    let mut x = x + layer.pwff.forward(residual);
    if !layer.norm_first {
        x = layer.norm_2.forward(x);
    }
    x
}

/// Self-attention of `mha`'s weights through the fused attention op; `true` in
/// `mask_pad` marks padding keys, which no query attends to.
///
/// # Shapes
/// - x: `[batch_size, seq_len, d_model]` in and out; mask_pad: `[batch_size, seq_len]`
fn fused_self_attention(
    mha: &MultiHeadAttention,
    x: Tensor<3>,
    mask_pad: Option<Tensor<2, Bool>>,
) -> Tensor<3> {
    let [batch, seq, d_model] = x.dims();
    let (heads, d_k) = (mha.n_heads, mha.d_k);
    let split = |linear: &Linear| {
        linear
            .forward(x.clone())
            .reshape([batch, seq, heads, d_k])
            .swap_dims(1, 2)
    };
    let mask = mask_pad.map(|m| {
        m.reshape([batch, 1, 1, seq])
            .expand([batch, heads, seq, seq])
    });
    let context = attention(
        split(&mha.query),
        split(&mha.key),
        split(&mha.value),
        mask,
        None,
        AttentionModuleOptions::default(),
    );
    mha.output
        .forward(context.swap_dims(1, 2).reshape([batch, seq, d_model]))
}

impl LayerwiseBackbone for Encoder {
    type Input = EncoderInput;
    type Hidden = EncoderState;

    fn n_layers(&self) -> usize {
        self.n_layers
    }

    fn embed(&self, input: EncoderInput) -> EncoderState {
        self.embed_input(input)
    }

    fn forward_layer(&self, layer_idx: usize, hidden: EncoderState) -> EncoderState {
        self.layer_forward(layer_idx, hidden)
    }

    fn features(&self, hidden: &EncoderState) -> Tensor<2> {
        self.pooled(hidden)
    }

    fn select_rows(&self, hidden: EncoderState, rows: Tensor<1, Int>) -> EncoderState {
        EncoderState {
            x: hidden.x.select(0, rows.clone()),
            mask_pad: hidden.mask_pad.map(|m| m.select(0, rows)),
        }
    }

    fn batch_size(&self, hidden: &EncoderState) -> usize {
        hidden.x.dims()[0]
    }

    fn embed_flops(&self, hidden: &EncoderState) -> u64 {
        let t = hidden.x.dims()[1] as u64;
        let e = self.d_embed as u64;
        let h = self.d_model as u64;
        let base = match &self.patch {
            Some(p) => {
                let patch_dim = (p.channels * p.patch_size * p.patch_size) as u64;
                linear_flops(p.n_patches() as u64, patch_dim, e) + 2 * t * e
            }
            None => 10 * t * e,
        };
        let map = if self.embed_map.is_some() {
            linear_flops(t, e, h)
        } else {
            0
        };
        base + map
    }

    fn layer_flops(&self, _layer_idx: usize, hidden: &EncoderState) -> u64 {
        let t = hidden.x.dims()[1] as u64;
        transformer_layer_flops(
            t,
            self.d_model as u64,
            self.d_ff as u64,
            self.n_heads as u64,
        )
    }

    fn features_flops(&self, _hidden: &EncoderState) -> u64 {
        self.pooler_flops()
    }

    fn device(&self) -> Device {
        self.pooler.weight.val().device()
    }
}
