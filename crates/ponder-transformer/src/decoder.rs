//! A causal (GPT-2 style, pre-norm) transformer decoder language model with a KV cache.
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
//! Block: `x ← x + W_o·attn(LN₁(x))`, then `x ← x + W₂·GELU(W₁·LN₂(x))` (exact, erf-based
//! GELU). Learned absolute positions, a final layer norm `norm_f`, and an output head
//! tied to the token embedding unless [`DecoderConfig::tie_embeddings`] is false.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{
    Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Bool, Device, Int, Tensor};
use ponder_core::{PonderError, linear_flops, transformer_layer_flops};

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
            position_embedding: embedding(self.max_len),
            layers: (0..self.n_layers)
                .map(|_| self.init_block(device))
                .collect(),
            norm_f: self.layer_norm(device),
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
        let residual_std = 0.02 / (2.0 * self.n_layers as f64).sqrt();
        DecoderBlock {
            ln1: self.layer_norm(device),
            wq: gpt2_linear(d, d, 0.02, device),
            wk: gpt2_linear(d, d, 0.02, device),
            wv: gpt2_linear(d, d, 0.02, device),
            wo: gpt2_linear(d, d, residual_std, device),
            ln2: self.layer_norm(device),
            ff_in: gpt2_linear(d, self.d_ff, 0.02, device),
            ff_out: gpt2_linear(self.d_ff, d, residual_std, device),
            n_heads: self.n_heads,
            d_head: self.d_head(),
        }
    }

    fn layer_norm(&self, device: &Device) -> LayerNorm {
        LayerNormConfig::new(self.d_model)
            .with_epsilon(self.norm_eps)
            .init(device)
    }
}

/// A linear layer with weight `N(0, std)` and zero bias.
fn gpt2_linear(d_in: usize, d_out: usize, std: f64, device: &Device) -> Linear {
    let mut linear = LinearConfig::new(d_in, d_out)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device);
    linear.bias = Some(Initializer::Zeros.init([d_out], device));
    linear
}

/// One pre-norm decoder block: causal multi-head self-attention and a GELU MLP, each
/// with a residual connection.
#[derive(Module, Debug)]
pub struct DecoderBlock {
    /// Layer norm before attention.
    pub ln1: LayerNorm,
    /// Query projection `d → d`.
    pub wq: Linear,
    /// Key projection `d → d`.
    pub wk: Linear,
    /// Value projection `d → d`.
    pub wv: Linear,
    /// Attention output projection `d → d`.
    pub wo: Linear,
    /// Layer norm before the MLP.
    pub ln2: LayerNorm,
    /// MLP input `d → d_ff`.
    pub ff_in: Linear,
    /// MLP output `d_ff → d`.
    pub ff_out: Linear,
    /// Attention heads H.
    pub n_heads: usize,
    /// Width of one head, `d / H`.
    pub d_head: usize,
}

impl DecoderBlock {
    /// Model width d.
    pub fn d_model(&self) -> usize {
        self.n_heads * self.d_head
    }

    /// Inner size of the MLP.
    pub fn d_ff(&self) -> usize {
        self.ff_in.weight.dims()[1]
    }

    /// `[batch, seq_len, d]` → `[batch, H, seq_len, d_head]`.
    fn split_heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [batch, seq_len, _] = x.dims();
        x.reshape([batch, seq_len, self.n_heads, self.d_head])
            .swap_dims(1, 2)
    }

    /// `[n, d]` → `[n, H, 1, d_head]`.
    fn split_heads_row(&self, x: Tensor<2>) -> Tensor<4> {
        let [n, _] = x.dims();
        x.reshape([n, self.n_heads, 1, self.d_head])
    }

    /// `1/√d_head`.
    fn scale(&self) -> f64 {
        1.0 / (self.d_head as f64).sqrt()
    }

    /// The MLP with its residual: `x + W₂·GELU(W₁·LN₂(x))`.
    fn mlp_residual<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let inner = gelu(self.ff_in.forward(self.ln2.forward(x.clone())));
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
        let [batch, seq_len, d] = x.dims();
        let h = self.ln1.forward(x.clone());
        let q = self.split_heads(self.wq.forward(h.clone()));
        let k = self.split_heads(self.wk.forward(h.clone()));
        let v = self.split_heads(self.wv.forward(h));
        let scores = q.matmul(k.clone().swap_dims(2, 3)).mul_scalar(self.scale());
        // `true` strictly above the diagonal: the future positions.
        let future = Tensor::<2, Bool>::tril_mask([seq_len, seq_len], 0, &x.device())
            .reshape([1, 1, seq_len, seq_len])
            .expand([batch, self.n_heads, seq_len, seq_len]);
        let weights = softmax(scores.mask_fill(future, MASKED), 3);
        let context = weights
            .matmul(v.clone())
            .swap_dims(1, 2)
            .reshape([batch, seq_len, d]);
        let x = x + self.wo.forward(context);
        (
            self.mlp_residual(x),
            LayerKv {
                k: Some(k),
                v: Some(v),
            },
        )
    }

    /// The key and value this layer writes for input `x` at one position: `LN₁` then
    /// `W_k`, `W_v`. Fills the cache of a layer a token skipped.
    ///
    /// # Shapes
    /// - x: `[n, d_model]`
    /// - k, v: `[n, n_heads, 1, d_head]`
    pub fn kv(&self, x: Tensor<2>) -> (Tensor<4>, Tensor<4>) {
        let h = self.ln1.forward(x);
        (
            self.split_heads_row(self.wk.forward(h.clone())),
            self.split_heads_row(self.wv.forward(h)),
        )
    }

    /// Query, key and value of input `x` at one position.
    ///
    /// # Shapes
    /// - x: `[n, d_model]`
    /// - q, k, v: `[n, n_heads, 1, d_head]`
    pub fn qkv(&self, x: Tensor<2>) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let h = self.ln1.forward(x);
        (
            self.split_heads_row(self.wq.forward(h.clone())),
            self.split_heads_row(self.wk.forward(h.clone())),
            self.split_heads_row(self.wv.forward(h)),
        )
    }

    /// The rest of the block at one position, given its query and the keys and values
    /// of every position it may see (all cached positions, the current one included, so
    /// no mask): `softmax(q·kᵀ/√d_head)·v`, `W_o`, the residual, then the MLP and its
    /// residual.
    ///
    /// # Shapes
    /// - x (the block input): `[n, d_model]`
    /// - q: `[n, n_heads, 1, d_head]`
    /// - k_all, v_all: `[n, n_heads, len, d_head]`
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
        let [n, d] = x.dims();
        let (h, dh) = (self.n_heads, self.d_head);
        assert_eq!(q.dims(), [n, h, 1, dh], "DecoderBlock::attend: query shape");
        let [kn, kh, len, kd] = k_all.dims();
        assert!(
            kn == n && kh == h && kd == dh && len > 0 && v_all.dims() == [kn, kh, len, kd],
            "DecoderBlock::attend: keys {:?} and values {:?} do not fit rows {n} × {h} heads × {dh}",
            k_all.dims(),
            v_all.dims()
        );
        let scores = q.matmul(k_all.swap_dims(2, 3)).mul_scalar(self.scale()); // [n, H, 1, len]
        let context = softmax(scores, 3).matmul(v_all).reshape([n, d]);
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
        let (q, k, v) = self.qkv(x.clone());
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
    /// earlier positions: the four `d × d` projections, scores and context over
    /// `cache_len + 1` positions (2 multiply-adds per position and channel), the MLP,
    /// and 5 FLOPs per element for the softmax, the two layer norms and the activation.
    /// The conventions of [`ponder_core::transformer_layer_flops`]: `step_flops(0)`
    /// equals `transformer_layer_flops(1, …)`.
    pub fn step_flops(&self, cache_len: u64) -> u64 {
        let (d, ff, h) = (
            self.d_model() as u64,
            self.d_ff() as u64,
            self.n_heads as u64,
        );
        let positions = cache_len + 1;
        let projections = 4 * linear_flops(1, d, d);
        let attention = 2 * 2 * positions * d;
        let mlp = linear_flops(1, d, ff) + linear_flops(1, ff, d);
        let elementwise = ELEMENTWISE * (h * positions + 2 * d + ff);
        projections + attention + mlp + elementwise
    }

    /// FLOPs of [`DecoderBlock::kv`] for one row: a layer norm and two `d × d` linears.
    pub fn kv_flops(&self) -> u64 {
        let d = self.d_model() as u64;
        ELEMENTWISE * d + 2 * linear_flops(1, d, d)
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

/// A GPT-2 style decoder language model: token and learned position embeddings,
/// pre-norm [`DecoderBlock`]s, a final layer norm and the output head.
#[derive(Module, Debug)]
pub struct DecoderLm {
    /// Token embedding `[vocab_size, d_model]`.
    pub token_embedding: Embedding,
    /// Learned positions `[max_len, d_model]`.
    pub position_embedding: Embedding,
    /// The blocks.
    pub layers: Vec<DecoderBlock>,
    /// Final layer norm, applied before the output head at every exit.
    pub norm_f: LayerNorm,
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

    /// Number of learned positions: positions `0..max_len` are valid.
    pub fn max_len(&self) -> usize {
        self.position_embedding.weight.dims()[0]
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.token_embedding.weight.val().device()
    }

    /// The cache before the first token: one empty [`LayerKv`] per block.
    pub fn initial_cache(&self) -> KvCache {
        KvCache::initial(self.n_layers())
    }

    /// Token plus position embeddings of positions `start..start + seq_len`.
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
        let positions =
            Tensor::<1, Int>::arange(start as i64..(start + seq_len) as i64, &ids.device())
                .reshape([1, seq_len]);
        self.token_embedding.forward(ids) + self.position_embedding.forward(positions)
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

    /// The final layer norm `norm_f` (of any layer's residual stream).
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

    /// FLOPs of [`DecoderLm::embed_step`] for one row: the sum of the token and position
    /// embeddings (the look-ups are free).
    pub fn embed_flops(&self) -> u64 {
        self.d_model() as u64
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
