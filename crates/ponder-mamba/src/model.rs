//! Mamba stacks: the shared trunk, the language model and its generation loop.

use burn::module::Module;
use burn::nn::{
    Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig, RmsNorm, RmsNormConfig,
};
use burn::tensor::{Device, Int, Tensor};

use crate::config::MambaConfig;
use crate::mixer::{LayerState, MambaBlock};

/// The recurrent state of a whole stack: one [`LayerState`] per layer. Its size depends
/// on the batch size and the model, never on how many tokens were consumed.
#[derive(Debug, Clone)]
pub struct MambaState {
    /// Per-layer states.
    pub layers: Vec<LayerState>,
}

impl MambaState {
    /// Number of f32 values held.
    pub fn numel(&self) -> usize {
        self.layers.iter().map(LayerState::numel).sum()
    }

    /// Bytes held (f32).
    pub fn bytes(&self) -> usize {
        4 * self.numel()
    }

    /// Every tensor's shape, layer by layer (`[conv, ssm]`).
    pub fn shapes(&self) -> Vec<[Vec<usize>; 2]> {
        self.layers
            .iter()
            .map(|l| [l.conv.dims().to_vec(), l.ssm.dims().to_vec()])
            .collect()
    }
}

/// Embedding, residual blocks and the final RMSNorm.
#[derive(Module, Debug)]
pub struct Mamba {
    /// Token embedding `[vocab_size, d_model]`.
    pub embedding: Embedding,
    /// The residual blocks.
    pub layers: Vec<MambaBlock>,
    /// Final RMSNorm (`norm_f`).
    pub norm_f: RmsNorm,
    /// d.
    pub d_model: usize,
}

impl MambaConfig {
    /// The trunk, initialised as Mamba does (embedding `N(0, 0.02)`).
    ///
    /// # Panics
    /// If the configuration is invalid ([`MambaConfig::validate`] returns the problem
    /// as an error).
    pub fn init(&self, device: &Device) -> Mamba {
        if let Err(e) = self.validate() {
            panic!("MambaConfig::init: {e}");
        }
        Mamba {
            embedding: EmbeddingConfig::new(self.vocab_size, self.d_model)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device),
            layers: (0..self.n_layers)
                .map(|_| self.init_block(device))
                .collect(),
            norm_f: RmsNormConfig::new(self.d_model)
                .with_epsilon(self.norm_eps)
                .init(device),
            d_model: self.d_model,
        }
    }

    /// A language model (head tied to the embedding unless `tie_embeddings` is false).
    pub fn init_lm(&self, device: &Device) -> MambaLm {
        MambaLm {
            mamba: self.init(device),
            lm_head: (!self.tie_embeddings).then(|| {
                LinearConfig::new(self.d_model, self.vocab_size)
                    .with_bias(false)
                    .init(device)
            }),
        }
    }
}

impl Mamba {
    /// Number of blocks.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// The state before the first token (zeros) for `batch_size` rows.
    pub fn initial_state(&self, batch_size: usize, device: &Device) -> MambaState {
        MambaState {
            layers: self
                .layers
                .iter()
                .map(|l| LayerState::initial(batch_size, &l.mixer, device))
                .collect(),
        }
    }

    /// Token embeddings `[batch, seq_len, d_model]` of ids `[batch, seq_len]`.
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.embedding.forward(ids)
    }

    /// The residual stream after every block, then `norm_f`: `[batch, seq_len, d]`,
    /// continuing from `state` (zeros when `None`), with the state after the last token.
    pub fn forward_prefill(
        &self,
        ids: Tensor<2, Int>,
        state: Option<MambaState>,
    ) -> (Tensor<3>, MambaState) {
        let mut x = self.embed(ids);
        let mut states = state.map(|s| s.layers.into_iter().map(Some).collect::<Vec<_>>());
        let mut out = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let previous = states.as_mut().and_then(|s| s[i].take());
            let (next, state) = layer.forward(x, previous);
            x = next;
            out.push(state);
        }
        (self.norm_f.forward(x), MambaState { layers: out })
    }

    /// The normalised last hidden states of a whole sequence from a zero state.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.forward_prefill(ids, None).0
    }

    /// One token per row: ids `[batch]` → normalised hidden state `[batch, d]`; updates
    /// `state`.
    pub fn step(&self, ids: Tensor<1, Int>, state: &mut MambaState) -> Tensor<2> {
        let [batch] = ids.dims();
        let mut x = self
            .embed(ids.reshape([batch, 1]))
            .reshape([batch, self.d_model]);
        for (layer, s) in self.layers.iter().zip(state.layers.iter_mut()) {
            x = layer.step(x, s);
        }
        self.norm_f.forward(x)
    }
}

/// A Mamba language model.
#[derive(Module, Debug)]
pub struct MambaLm {
    /// The trunk.
    pub mamba: Mamba,
    /// Untied output head; `None` reuses the embedding.
    pub lm_head: Option<Linear>,
}

impl MambaLm {
    /// Logits `[..., vocab]` of hidden states already through `norm_f` (the output head:
    /// the embedding's transpose, or the untied head). Applied to `norm_f` of any
    /// layer's residual stream, this is that layer's intermediate prediction.
    pub fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => {
                let w = self.mamba.embedding.weight.val().transpose(); // [d, vocab]
                hidden.matmul(w.unsqueeze())
            }
        }
    }

    /// Logits `[batch, seq_len, vocab]` of every position.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.logits(self.mamba.forward(ids))
    }

    /// Logits of every prompt position, and the state after the prompt.
    pub fn forward_prefill(
        &self,
        ids: Tensor<2, Int>,
        state: Option<MambaState>,
    ) -> (Tensor<3>, MambaState) {
        let (hidden, state) = self.mamba.forward_prefill(ids, state);
        (self.logits(hidden), state)
    }

    /// Next-token logits `[batch, vocab]` after feeding `ids` `[batch]`.
    pub fn step(&self, ids: Tensor<1, Int>, state: &mut MambaState) -> Tensor<2> {
        self.logits(self.mamba.step(ids, state))
    }

    /// Number of parameters.
    pub fn n_params(&self) -> usize {
        self.num_params()
    }
}
