//! A causal pre-norm transformer decoder language model with a KV cache, in the two
//! families pretrained checkpoints come in: GPT-2 (layer norm, learned positions, GELU
//! MLP, biases) and Llama (RMSNorm, rotary positions, gated SiLU MLP, grouped-query
//! attention, no biases), and their mixtures through [`DecoderConfig`].
//!
//! Three execution modes share one set of weights:
//!
//! * [`DecoderLm::forward`] runs whole sequences under a causal mask (training, and the
//!   reference the other modes must reproduce);
//! * [`DecoderLm::forward_prefill`] does the same for a prompt and returns the
//!   [`KvCache`] after it;
//! * [`DecoderLm::step`] feeds one token per row at position `cache.len()` and extends the
//!   cache.
//!
//! A token-level early-exit generator drives the model one block at a time instead:
//! [`DecoderLm::embed_step`], then [`DecoderBlock::step`] (or its parts
//! [`DecoderBlock::qkv`], [`LayerKv::append`] and [`DecoderBlock::attend`]) per layer,
//! [`DecoderLm::norm`] and [`DecoderLm::logits`] at an exit, and [`DecoderBlock::kv`] to
//! fill the caches of the layers a token skipped.
//!
//! Block: `x ← x + W_o·attn(N₁(x))`, then `x ← x + W₂·act(W₁·N₂(x))` (GPT-2) or
//! `x ← x + W₂·(act(W_g·N₂(x)) ⊙ W₁·N₂(x))` (gated, Llama's SwiGLU), where `N` is a layer
//! norm or an RMSNorm ([`DecoderNorm`]) and `act` the exact GELU, its tanh approximation
//! or SiLU ([`DecoderActivation`]). Positions are learned absolute embeddings added to
//! the tokens (GPT-2), or rotary (RoFormer, arXiv:2104.09864; Llama's "rotate half"
//! pairing: channel `i` turns with channel `i + d_head/2` by the angle
//! `position · θ^(−2i/d_head)`) applied to each head's queries and keys. With
//! grouped-query attention (arXiv:2305.13245) `H` query heads share `H_kv` key/value
//! heads (query head `h` reads key/value head `h / (H / H_kv)`), and the cache holds
//! only the `H_kv` heads. A final norm `norm_f`, and an output head tied to the token
//! embedding unless [`DecoderConfig::tie_embeddings`] is false.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::activation::{gelu, silu, softmax};
use burn::tensor::module::{attention, layer_norm};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use ponder_core::{PonderError, linear_flops, transformer_layer_flops};
use serde::{Deserialize, Serialize};

use crate::kv_cache::{KvCache, LayerKv};

/// The score given to masked (future) positions before the softmax.
const MASKED: f32 = -1.0e9;

/// FLOPs charged per element for a layer norm, softmax or activation (as in
/// [`ponder_core::transformer_layer_flops`]).
const ELEMENTWISE: u64 = 5;

/// Configuration of a [`DecoderLm`].
#[derive(Config, Debug, PartialEq)]
pub struct DecoderConfig {
    /// Vocabulary size (rows of the token embedding, columns of the logits).
    pub vocab_size: usize,
    /// Model width d.
    pub d_model: usize,
    /// Number of attention heads; must divide `d_model`.
    pub n_heads: usize,
    /// Number of blocks.
    pub n_layers: usize,
    /// Inner size of the feed-forward block.
    pub d_ff: usize,
    /// Number of learned positions: the longest sequence the model accepts.
    pub max_len: usize,
    /// Layer-norm epsilon. Default: 1e-5 (GPT-2).
    #[config(default = 1e-5)]
    pub norm_eps: f64,
    /// The output head is the token embedding's transpose. Default: true.
    #[config(default = true)]
    pub tie_embeddings: bool,
    /// The norm before attention, before the MLP and at the end. Default: layer norm
    /// (GPT-2).
    #[config(default = "DecoderNorm::LayerNorm")]
    pub norm: DecoderNorm,
    /// The MLP's activation. Default: the exact GELU.
    #[config(default = "DecoderActivation::Gelu")]
    pub activation: DecoderActivation,
    /// A gated MLP `W₂·(act(W_g·x) ⊙ W₁·x)` (Llama's SwiGLU with SiLU). Default: false.
    #[config(default = false)]
    pub gated_mlp: bool,
    /// Key/value heads of grouped-query attention; must divide `n_heads`. Default:
    /// `None` (as many as query heads).
    #[config(default = "None")]
    pub n_kv_heads: Option<usize>,
    /// Rotary positions with this base θ instead of learned positions (Llama: 10,000 or
    /// the checkpoint's `rope_theta`). `max_len` still bounds the sequence. Default:
    /// `None` (learned positions).
    #[config(default = "None")]
    pub rope_theta: Option<f64>,
    /// Biases on the query, key and value projections. Default: true (GPT-2).
    #[config(default = true)]
    pub qkv_bias: bool,
    /// A bias on the attention output projection. Default: true (GPT-2).
    #[config(default = true)]
    pub out_bias: bool,
    /// Biases on the MLP's linears. Default: true (GPT-2).
    #[config(default = true)]
    pub mlp_bias: bool,
}

/// The decoder's normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecoderNorm {
    /// Layer norm with weight and bias (GPT-2).
    LayerNorm,
    /// RMSNorm `x / √(mean(x²) + ε) · g` (Llama).
    RmsNorm,
}

/// The activation of the decoder's MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecoderActivation {
    /// The exact (erf) GELU.
    Gelu,
    /// GELU's tanh approximation (GPT-2's `gelu_new`).
    GeluTanh,
    /// SiLU `x·σ(x)` (Llama).
    Silu,
}

impl DecoderActivation {
    fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Gelu => gelu(x),
            Self::GeluTanh => gelu_tanh(x),
            Self::Silu => silu(x),
        }
    }
}

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715)).mul_scalar(c);
    x.mul_scalar(0.5) * (inner.tanh() + 1.0)
}

/// A [`DecoderNorm`] with its weights: a layer norm (`gamma`, `beta`) or an RMSNorm
/// (`gamma` only).
///
/// One module for both, whose parameters have burn's `LayerNorm` names, so a decoder
/// saved before the norm became a choice loads unchanged; the layer norm is burn's own
/// operation.
#[derive(Module, Debug)]
pub struct NormLayer {
    /// Scale.
    pub gamma: Param<Tensor<1>>,
    /// Shift (layer norm only).
    pub beta: Option<Param<Tensor<1>>>,
    /// ε inside the square root.
    pub epsilon: f64,
    /// RMSNorm `x / √(mean(x²) + ε) · γ` rather than a layer norm.
    pub rms: bool,
}

impl NormLayer {
    /// Normalises the last axis.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let gamma = self.gamma.val();
        if self.rms {
            let rms = (x.clone().square().mean_dim(D - 1) + self.epsilon).sqrt();
            (x / rms) * gamma.unsqueeze()
        } else {
            layer_norm(x, gamma, self.beta.as_ref().map(Param::val), self.epsilon)
        }
    }

    /// Which norm this is.
    pub fn kind(&self) -> DecoderNorm {
        if self.rms {
            DecoderNorm::RmsNorm
        } else {
            DecoderNorm::LayerNorm
        }
    }
}

impl DecoderConfig {
    /// A tiny decoder for tests: vocabulary 100, d = 32, 4 heads, 4 layers, FFN 64, 64
    /// positions.
    pub fn tiny() -> Self {
        Self::new(100, 32, 4, 4, 64, 64)
    }

    /// Width of one head, `d_model / n_heads`.
    pub fn d_head(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// Key/value heads (`n_heads` without grouped-query attention).
    pub fn kv_heads(&self) -> usize {
        self.n_kv_heads.unwrap_or(self.n_heads)
    }

    /// Checks that the sizes fit together, naming the field at fault.
    pub fn validate(&self) -> ponder_core::Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("n_layers", self.n_layers),
            ("d_ff", self.d_ff),
            ("max_len", self.max_len),
        ];
        crate::config::check_sizes(&positive, self.d_model, self.n_heads)?;
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return Err(PonderError::config(
                "norm_eps",
                format!("{} is not a positive number", self.norm_eps),
            ));
        }
        let kv = self.kv_heads();
        if kv == 0 || !self.n_heads.is_multiple_of(kv) {
            return Err(PonderError::config(
                "n_kv_heads",
                format!(
                    "{kv} key/value heads do not divide {} query heads",
                    self.n_heads
                ),
            ));
        }
        if let Some(theta) = self.rope_theta {
            if !(theta > 1.0 && theta.is_finite()) {
                return Err(PonderError::config(
                    "rope_theta",
                    format!("{theta} is not a base above 1"),
                ));
            }
            if !self.d_head().is_multiple_of(2) {
                return Err(PonderError::config(
                    "rope_theta",
                    format!(
                        "rotary positions turn pairs of channels, but a head is {} wide",
                        self.d_head()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The language model, initialised as GPT-2: linear and embedding weights
    /// `N(0, 0.02)`, biases 0, the residual projections (`wo`, `ff_out`)
    /// `N(0, 0.02/√(2·n_layers))`, layer norms weight 1 and bias 0.
    ///
    /// # Panics
    /// If the configuration is invalid ([`DecoderConfig::validate`] returns the problem
    /// as an error).
    pub fn init_lm(&self, device: &Device) -> DecoderLm {
        if let Err(e) = self.validate() {
            panic!("DecoderConfig::init_lm: {e}");
        }
        let embedding = |n: usize| {
            EmbeddingConfig::new(n, self.d_model)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device)
        };
        DecoderLm {
            token_embedding: embedding(self.vocab_size),
            position_embedding: self.rope_theta.is_none().then(|| embedding(self.max_len)),
            max_positions: self.max_len,
            layers: (0..self.n_layers)
                .map(|_| self.init_block(device))
                .collect(),
            norm_f: self.norm_layer(device),
            lm_head: (!self.tie_embeddings).then(|| {
                LinearConfig::new(self.d_model, self.vocab_size)
                    .with_bias(false)
                    .with_initializer(Initializer::Normal {
                        mean: 0.0,
                        std: 0.02,
                    })
                    .init(device)
            }),
        }
    }

    /// One block with GPT-2's initialisation (see [`DecoderConfig::init_lm`]).
    ///
    /// # Panics
    /// If the configuration is invalid.
    pub fn init_block(&self, device: &Device) -> DecoderBlock {
        if let Err(e) = self.validate() {
            panic!("DecoderConfig::init_block: {e}");
        }
        let d = self.d_model;
        let d_kv = self.kv_heads() * self.d_head();
        let residual_std = 0.02 / (2.0 * self.n_layers as f64).sqrt();
        let (qkv, out, mlp) = (self.qkv_bias, self.out_bias, self.mlp_bias);
        DecoderBlock {
            ln1: self.norm_layer(device),
            wq: gpt2_linear(d, d, 0.02, qkv, device),
            wk: gpt2_linear(d, d_kv, 0.02, qkv, device),
            wv: gpt2_linear(d, d_kv, 0.02, qkv, device),
            wo: gpt2_linear(d, d, residual_std, out, device),
            ln2: self.norm_layer(device),
            ff_in: gpt2_linear(d, self.d_ff, 0.02, mlp, device),
            ff_gate: self
                .gated_mlp
                .then(|| gpt2_linear(d, self.d_ff, 0.02, mlp, device)),
            ff_out: gpt2_linear(self.d_ff, d, residual_std, mlp, device),
            n_heads: self.n_heads,
            n_kv_heads: self.kv_heads(),
            d_head: self.d_head(),
            rope_theta: self.rope_theta,
            activation: self.activation,
        }
    }

    /// A norm of width `d_model` of the configured kind (scale 1, shift 0).
    pub fn norm_layer(&self, device: &Device) -> NormLayer {
        let rms = self.norm == DecoderNorm::RmsNorm;
        NormLayer {
            gamma: Initializer::Ones.init([self.d_model], device),
            beta: (!rms).then(|| Initializer::Zeros.init([self.d_model], device)),
            epsilon: self.norm_eps,
            rms,
        }
    }
}

/// A linear layer with weight `N(0, std)` and, with `bias`, a zero bias.
fn gpt2_linear(d_in: usize, d_out: usize, std: f64, bias: bool, device: &Device) -> Linear {
    let mut linear = LinearConfig::new(d_in, d_out)
        .with_bias(false)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device);
    linear.bias = bias.then(|| Initializer::Zeros.init([d_out], device));
    linear
}

/// The rotary positions' turn of positions `start..start + len`: channel pair `(i, i +
/// d_head/2)` of each head turns by `position · θ^(−2i/d_head)` (Llama's `rotate_half`
/// form). Built once per call and applied to both queries and keys.
struct Rotation {
    /// `[1, 1, len, d_head/2]`.
    cos: Tensor<4>,
    /// `[1, 1, len, d_head/2]`.
    sin: Tensor<4>,
}

impl Rotation {
    fn new(start: usize, len: usize, d_head: usize, theta: f64, device: &Device) -> Self {
        let half = d_head / 2;
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in start..start + len {
            for i in 0..half {
                let angle = p as f64 * theta.powf(-2.0 * i as f64 / d_head as f64);
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let table =
            |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [1, 1, len, half]), device);
        Self {
            cos: table(cos),
            sin: table(sin),
        }
    }

    /// # Shapes
    /// - x: `[batch, heads, len, d_head]`, output the same
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let half = x.dims()[3] / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.narrow(3, half, half);
        Tensor::cat(
            vec![
                x1.clone() * self.cos.clone() - x2.clone() * self.sin.clone(),
                x2 * self.cos.clone() + x1 * self.sin.clone(),
            ],
            3,
        )
    }
}

/// One pre-norm decoder block: causal multi-head self-attention and an MLP, each with a
/// residual connection.
#[derive(Module, Debug)]
pub struct DecoderBlock {
    /// Norm before attention.
    pub ln1: NormLayer,
    /// Query projection `d → H·d_head`.
    pub wq: Linear,
    /// Key projection `d → H_kv·d_head`.
    pub wk: Linear,
    /// Value projection `d → H_kv·d_head`.
    pub wv: Linear,
    /// Attention output projection `H·d_head → d`.
    pub wo: Linear,
    /// Norm before the MLP.
    pub ln2: NormLayer,
    /// MLP input `d → d_ff` (Llama's `up_proj`).
    pub ff_in: Linear,
    /// The gate of a gated MLP `d → d_ff` (Llama's `gate_proj`); `None` for GPT-2's.
    pub ff_gate: Option<Linear>,
    /// MLP output `d_ff → d`.
    pub ff_out: Linear,
    /// Query heads H.
    pub n_heads: usize,
    /// Key/value heads `H_kv` (divides H).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub d_head: usize,
    /// Rotary positions' base θ; `None` when the model adds learned positions.
    pub rope_theta: Option<f64>,
    /// The MLP's activation (set by the configuration, not stored in records).
    #[module(skip)]
    pub activation: DecoderActivation,
}

impl DecoderBlock {
    /// Model width d.
    pub fn d_model(&self) -> usize {
        self.wq.weight.dims()[0]
    }

    /// Inner size of the MLP.
    pub fn d_ff(&self) -> usize {
        self.ff_in.weight.dims()[1]
    }

    /// `[batch_size, seq_len, heads·d_head]` → `[batch_size, heads, seq_len, d_head]`.
    fn split_heads(&self, x: Tensor<3>, heads: usize) -> Tensor<4> {
        let [batch, seq_len, _] = x.dims();
        x.reshape([batch, seq_len, heads, self.d_head])
            .swap_dims(1, 2)
    }

    /// `[n, heads·d_head]` → `[n, heads, 1, d_head]`.
    fn split_heads_row(&self, x: Tensor<2>, heads: usize) -> Tensor<4> {
        let [n, _] = x.dims();
        x.reshape([n, heads, 1, self.d_head])
    }

    /// The rotation of positions `start..start + len`, when the block has rotary
    /// positions.
    fn rotation(&self, start: usize, len: usize, device: &Device) -> Option<Rotation> {
        self.rope_theta
            .map(|theta| Rotation::new(start, len, self.d_head, theta, device))
    }

    /// Attention of grouped queries: the `H / H_kv` query heads that share a key/value
    /// head are laid side by side as rows of one head, so the keys and values (the
    /// whole cache, when stepping) are read as they are, never copied per query head.
    /// Query head `h` reads key/value head `h / (H / H_kv)`.
    ///
    /// `causal`: query `i` of a whole sequence (`t = len`) sees keys `0..=i`; otherwise
    /// every query sees every key (a step over the cache).
    ///
    /// # Shapes
    /// - q: `[n, H, t, d_head]`; k, v: `[n, H_kv, len, d_head]`
    /// - output: `[n, t, H·d_head]`
    fn grouped_attention(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        causal: bool,
    ) -> Tensor<3> {
        let [n, h, t, dh] = q.dims();
        let [_, kv, len, _] = k.dims();
        let group = h / kv;
        let q = q.reshape([n, kv, group * t, dh]);
        let device = q.device();
        // `true` strictly above the diagonal (the future), tiled once per query head of
        // a group, as the grouped rows are laid out.
        let future = || {
            Tensor::<2, Bool>::tril_mask([t, len], 0, &device)
                .unsqueeze_dim::<3>(0)
                .expand([group, t, len])
                .reshape([1, 1, group * t, len])
                .expand([n, kv, group * t, len])
        };
        let context = if device.is_autodiff() {
            // Training: the explicit product and softmax (burn's autodiff would decompose
            // the fused op into the same operations).
            let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(self.scale()); // [n, kv, group·t, len]
            let scores = if causal {
                scores.mask_fill(future(), MASKED)
            } else {
                scores
            };
            softmax(scores, 3).matmul(v)
        } else {
            // Inference: burn's fused attention op (on flex: the scores of one row and
            // head at a time, the softmax in place). Without grouping, its own causal
            // mode replaces the mask; grouped rows need the tiled mask.
            let options = AttentionModuleOptions {
                scale: Some(self.scale()),
                is_causal: causal && group == 1,
                ..AttentionModuleOptions::default()
            };
            let mask = (causal && group > 1).then(future);
            attention(q, k, v, mask, None, options)
        }; // [n, kv, group·t, dh]
        context
            .reshape([n, h, t, dh])
            .swap_dims(1, 2)
            .reshape([n, t, h * dh])
    }

    /// `1/√d_head`.
    fn scale(&self) -> f64 {
        1.0 / (self.d_head as f64).sqrt()
    }

    /// The MLP with its residual: `x + W₂·act(W₁·N₂(x))`, or with a gate `x +
    /// W₂·(act(W_g·N₂(x)) ⊙ W₁·N₂(x))`.
    fn mlp_residual<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let h = self.ln2.forward(x.clone());
        let act = self.activation;
        let inner = match &self.ff_gate {
            Some(gate) => act.apply(gate.forward(h.clone())) * self.ff_in.forward(h),
            None => act.apply(self.ff_in.forward(h)),
        };
        x + self.ff_out.forward(inner)
    }

    /// The block on a whole causal sequence (position `i` attends to `0..=i`).
    ///
    /// # Shapes
    /// - x: `[batch_size, seq_len, d_model]`
    /// - output: `[batch_size, seq_len, d_model]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.forward_with_kv(x).0
    }

    /// [`DecoderBlock::forward`], plus the keys and values of every position (what a
    /// prompt's prefill leaves in this layer's cache).
    ///
    /// # Shapes
    /// - x: `[batch_size, seq_len, d_model]`
    /// - output: `[batch_size, seq_len, d_model]`; cache k, v
    ///   `[batch_size, n_heads, seq_len, d_head]`
    pub fn forward_with_kv(&self, x: Tensor<3>) -> (Tensor<3>, LayerKv) {
        let [_, seq_len, _] = x.dims();
        let device = x.device();
        let h = self.ln1.forward(x.clone());
        let (heads, kv_heads) = (self.n_heads, self.n_kv_heads);
        let mut q = self.split_heads(self.wq.forward(h.clone()), heads);
        let mut k = self.split_heads(self.wk.forward(h.clone()), kv_heads);
        if let Some(rotation) = self.rotation(0, seq_len, &device) {
            (q, k) = (rotation.apply(q), rotation.apply(k));
        }
        let v = self.split_heads(self.wv.forward(h), kv_heads);
        let context = self.grouped_attention(q, k.clone(), v.clone(), true);
        let x = x + self.wo.forward(context);
        (
            self.mlp_residual(x),
            LayerKv {
                k: Some(k),
                v: Some(v),
            },
        )
    }

    /// The key and value this layer writes for input `x` at `position`: `N₁` then
    /// `W_k` (rotated to `position` with rotary positions), `W_v`. Fills the cache of a
    /// layer a token skipped.
    ///
    /// # Shapes
    /// - x: `[n, d_model]`
    /// - k, v: `[n, n_kv_heads, 1, d_head]`
    pub fn kv(&self, x: Tensor<2>, position: usize) -> (Tensor<4>, Tensor<4>) {
        let h = self.ln1.forward(x);
        let kv = self.n_kv_heads;
        let k = self.split_heads_row(self.wk.forward(h.clone()), kv);
        let k = match self.rotation(position, 1, &k.device()) {
            Some(rotation) => rotation.apply(k),
            None => k,
        };
        (k, self.split_heads_row(self.wv.forward(h), kv))
    }

    /// Query, key and value of input `x` at `position` (which only rotary positions
    /// read).
    ///
    /// # Shapes
    /// - x: `[n, d_model]`
    /// - q: `[n, n_heads, 1, d_head]`; k, v: `[n, n_kv_heads, 1, d_head]`
    pub fn qkv(&self, x: Tensor<2>, position: usize) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let h = self.ln1.forward(x);
        let (heads, kv) = (self.n_heads, self.n_kv_heads);
        let q = self.split_heads_row(self.wq.forward(h.clone()), heads);
        let k = self.split_heads_row(self.wk.forward(h.clone()), kv);
        let v = self.split_heads_row(self.wv.forward(h), kv);
        match self.rotation(position, 1, &q.device()) {
            Some(rotation) => (rotation.apply(q), rotation.apply(k), v),
            None => (q, k, v),
        }
    }

    /// The rest of the block at one position, given its query and the keys and values
    /// of every position it may see (all cached positions, the current one included, so
    /// no mask): `softmax(q·kᵀ/√d_head)·v`, `W_o`, the residual, then the MLP and its
    /// residual.
    ///
    /// # Shapes
    /// - x (the block input): `[n, d_model]`
    /// - q: `[n, n_heads, 1, d_head]`
    /// - k_all, v_all: `[n, n_kv_heads, len, d_head]`
    /// - output: `[n, d_model]`
    ///
    /// # Panics
    /// If the shapes disagree.
    pub fn attend(
        &self,
        x: Tensor<2>,
        q: Tensor<4>,
        k_all: Tensor<4>,
        v_all: Tensor<4>,
    ) -> Tensor<2> {
        let [n, _] = x.dims();
        let (h, kv, dh) = (self.n_heads, self.n_kv_heads, self.d_head);
        assert_eq!(q.dims(), [n, h, 1, dh], "DecoderBlock::attend: query shape");
        let [kn, kh, len, kd] = k_all.dims();
        assert!(
            kn == n && kh == kv && kd == dh && len > 0 && v_all.dims() == [kn, kh, len, kd],
            "DecoderBlock::attend: keys {:?} and values {:?} do not fit rows {n} × {kv} heads × {dh}",
            k_all.dims(),
            v_all.dims()
        );
        let context = self
            .grouped_attention(q, k_all, v_all, false)
            .reshape([n, h * dh]);
        let x = x + self.wo.forward(context);
        self.mlp_residual(x)
    }

    /// One position: [`DecoderBlock::qkv`], appends k and v to `cache`, then
    /// [`DecoderBlock::attend`] over every cached position. Equals
    /// [`DecoderBlock::forward`] at that position when `cache` holds the earlier ones.
    ///
    /// # Shapes
    /// - x: `[n, d_model]`, output `[n, d_model]`
    pub fn step(&self, x: Tensor<2>, cache: &mut LayerKv) -> Tensor<2> {
        let (q, k, v) = self.qkv(x.clone(), cache.len());
        cache.append(k, v);
        let k_all = cache
            .k
            .clone()
            .expect("the cache holds the position just appended");
        let v_all = cache
            .v
            .clone()
            .expect("the cache holds the position just appended");
        self.attend(x, q, k_all, v_all)
    }

    /// FLOPs of [`DecoderBlock::step`] for one row at a position with `cache_len`
    /// earlier positions: the query, key, value and output projections, scores and
    /// context over `cache_len + 1` positions (2 multiply-adds per position and channel),
    /// the MLP (three linears when gated, plus the product), 5 FLOPs per element for the
    /// softmax, the two norms and the activation, and 3 per rotated element with rotary
    /// positions. The conventions of [`ponder_core::transformer_layer_flops`]: for a
    /// GPT-2 block `step_flops(0)` equals `transformer_layer_flops(1, …)`.
    pub fn step_flops(&self, cache_len: u64) -> u64 {
        let (d, ff, h) = (
            self.d_model() as u64,
            self.d_ff() as u64,
            self.n_heads as u64,
        );
        let (dq, dkv) = (
            h * self.d_head as u64,
            self.n_kv_heads as u64 * self.d_head as u64,
        );
        let positions = cache_len + 1;
        let projections = 2 * linear_flops(1, d, dq) + 2 * linear_flops(1, d, dkv);
        let attention = 2 * 2 * positions * dq;
        let gated = self.ff_gate.is_some();
        let mlp = if gated { 2 } else { 1 } * linear_flops(1, d, ff)
            + linear_flops(1, ff, d)
            + if gated { ff } else { 0 };
        let elementwise = ELEMENTWISE * (h * positions + 2 * d + ff);
        let rotary = if self.rope_theta.is_some() {
            3 * (dq + dkv)
        } else {
            0
        };
        projections + attention + mlp + elementwise + rotary
    }

    /// FLOPs of [`DecoderBlock::kv`] for one row: a norm, the key and value linears and
    /// the keys' rotation with rotary positions.
    pub fn kv_flops(&self) -> u64 {
        let d = self.d_model() as u64;
        let dkv = self.n_kv_heads as u64 * self.d_head as u64;
        let rotary = if self.rope_theta.is_some() {
            3 * dkv
        } else {
            0
        };
        ELEMENTWISE * d + 2 * linear_flops(1, d, dkv) + rotary
    }

    /// FLOPs of [`DecoderBlock::forward`] for one row of `seq_len` positions
    /// ([`ponder_core::transformer_layer_flops`]: the full `seq_len²` score matrix).
    pub fn forward_flops(&self, seq_len: u64) -> u64 {
        transformer_layer_flops(
            seq_len,
            self.d_model() as u64,
            self.d_ff() as u64,
            self.n_heads as u64,
        )
    }
}

/// A decoder language model: token embeddings (plus learned positions, or rotary ones
/// inside the blocks), pre-norm [`DecoderBlock`]s, a final norm and the output head.
#[derive(Module, Debug)]
pub struct DecoderLm {
    /// Token embedding `[vocab_size, d_model]`.
    pub token_embedding: Embedding,
    /// Learned positions `[max_len, d_model]`; `None` with rotary positions.
    pub position_embedding: Option<Embedding>,
    /// The longest sequence the model accepts (the learned positions' count, or the
    /// rotary model's configured `max_len`).
    pub max_positions: usize,
    /// The blocks.
    pub layers: Vec<DecoderBlock>,
    /// Final norm, applied before the output head at every exit.
    pub norm_f: NormLayer,
    /// Untied output head `d → vocab` (no bias); `None` reuses the token embedding.
    pub lm_head: Option<Linear>,
}

impl DecoderLm {
    /// Number of blocks.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Model width d.
    pub fn d_model(&self) -> usize {
        self.token_embedding.weight.dims()[1]
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.token_embedding.weight.dims()[0]
    }

    /// Positions `0..max_len` are valid.
    pub fn max_len(&self) -> usize {
        self.max_positions
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.token_embedding.weight.val().device()
    }

    /// The cache before the first token: one empty [`LayerKv`] per block.
    pub fn initial_cache(&self) -> KvCache {
        KvCache::initial(self.n_layers())
    }

    /// Token embeddings plus (learned) position embeddings of positions `start..start +
    /// seq_len`.
    ///
    /// # Shapes
    /// - ids: `[batch_size, seq_len]`
    /// - output: `[batch_size, seq_len, d_model]`
    ///
    /// # Panics
    /// If `start + seq_len > max_len` (the caller checks the length).
    pub fn embed(&self, ids: Tensor<2, Int>, start: usize) -> Tensor<3> {
        let [_, seq_len] = ids.dims();
        assert!(
            start + seq_len <= self.max_len(),
            "positions {start}..{} exceed the decoder's {} learned positions",
            start + seq_len,
            self.max_len()
        );
        let tokens = self.token_embedding.forward(ids.clone());
        match &self.position_embedding {
            Some(table) => {
                let positions =
                    Tensor::<1, Int>::arange(start as i64..(start + seq_len) as i64, &ids.device())
                        .reshape([1, seq_len]);
                tokens + table.forward(positions)
            }
            None => tokens,
        }
    }

    /// Token plus position embedding of one token per row at `position`.
    ///
    /// # Shapes
    /// - ids: `[batch_size]`
    /// - output: `[batch_size, d_model]`
    ///
    /// # Panics
    /// If `position >= max_len`.
    pub fn embed_step(&self, ids: Tensor<1, Int>, position: usize) -> Tensor<2> {
        let [batch] = ids.dims();
        self.embed(ids.reshape([batch, 1]), position)
            .reshape([batch, self.d_model()])
    }

    /// The final norm `norm_f` (of any layer's residual stream).
    ///
    /// # Shapes
    /// - h: `[..., d_model]`, output the same
    pub fn norm<const D: usize>(&self, h: Tensor<D>) -> Tensor<D> {
        self.norm_f.forward(h)
    }

    /// Logits of hidden states already through [`DecoderLm::norm`]: `h·Eᵀ` (tied) or the
    /// untied head. Applied to the normalised residual stream after any block, this is
    /// that block's intermediate prediction.
    ///
    /// # Shapes
    /// - normed: `[..., d_model]`
    /// - output: `[..., vocab_size]`
    pub fn logits<const D: usize>(&self, normed: Tensor<D>) -> Tensor<D> {
        match &self.lm_head {
            Some(head) => head.forward(normed),
            None => {
                let w = self.token_embedding.weight.val().transpose(); // [d, vocab]
                normed.matmul(w.unsqueeze())
            }
        }
    }

    /// The residual stream after each block (`n_layers` entries, not normalised) of
    /// whole sequences starting at position 0.
    ///
    /// # Shapes
    /// - ids: `[batch_size, seq_len]`
    /// - each entry: `[batch_size, seq_len, d_model]`
    pub fn hidden_states(&self, ids: Tensor<2, Int>) -> Vec<Tensor<3>> {
        let mut x = self.embed(ids, 0);
        let mut out = Vec::with_capacity(self.n_layers());
        for layer in &self.layers {
            x = layer.forward(x);
            out.push(x.clone());
        }
        out
    }

    /// Logits of every position of whole sequences starting at position 0.
    ///
    /// # Shapes
    /// - ids: `[batch_size, seq_len]`
    /// - output: `[batch_size, seq_len, vocab_size]`
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let mut x = self.embed(ids, 0);
        for layer in &self.layers {
            x = layer.forward(x);
        }
        self.logits(self.norm(x))
    }

    /// Logits of every prompt position and the cache after the prompt (which starts at
    /// position 0).
    ///
    /// # Shapes
    /// - ids: `[batch_size, seq_len]`
    /// - output: `[batch_size, seq_len, vocab_size]`; the cache holds `seq_len`
    ///   positions
    pub fn forward_prefill(&self, ids: Tensor<2, Int>) -> (Tensor<3>, KvCache) {
        let mut x = self.embed(ids, 0);
        let mut layers = Vec::with_capacity(self.n_layers());
        for layer in &self.layers {
            let (next, kv) = layer.forward_with_kv(x);
            x = next;
            layers.push(kv);
        }
        (self.logits(self.norm(x)), KvCache { layers })
    }

    /// Next-token logits after feeding `ids` at position `cache.len()`; extends every
    /// layer's cache by that position.
    ///
    /// # Shapes
    /// - ids: `[batch_size]`
    /// - output: `[batch_size, vocab_size]`
    ///
    /// # Panics
    /// If the cache does not have one entry per block, its layers hold different numbers
    /// of positions, or the position reaches `max_len`.
    pub fn step(&self, ids: Tensor<1, Int>, cache: &mut KvCache) -> Tensor<2> {
        assert_eq!(
            cache.layers.len(),
            self.n_layers(),
            "DecoderLm::step: the cache has {} layers, the model {}",
            cache.layers.len(),
            self.n_layers()
        );
        let position = cache.len();
        assert!(
            cache.layers.iter().all(|l| l.len() == position),
            "DecoderLm::step: layer caches hold different numbers of positions"
        );
        let mut x = self.embed_step(ids, position);
        for (layer, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = layer.step(x, kv);
        }
        self.logits(self.norm(x))
    }

    /// FLOPs of [`DecoderLm::embed_step`] for one row: the sum of the token and learned
    /// position embeddings (the look-ups are free; rotary positions are charged in the
    /// blocks).
    pub fn embed_flops(&self) -> u64 {
        if self.position_embedding.is_some() {
            self.d_model() as u64
        } else {
            0
        }
    }

    /// FLOPs of one row's prediction at an exit: [`DecoderLm::norm`] (5 per element)
    /// then [`DecoderLm::logits`] (`2·d·vocab`).
    pub fn head_flops(&self) -> u64 {
        let (d, vocab) = (self.d_model() as u64, self.vocab_size() as u64);
        let bias = match &self.lm_head {
            Some(head) if head.bias.is_some() => vocab,
            _ => 0,
        };
        ELEMENTWISE * d + 2 * d * vocab + bias
    }

    /// Number of parameters (the tied head counts once).
    pub fn n_params(&self) -> usize {
        self.num_params()
    }
}
