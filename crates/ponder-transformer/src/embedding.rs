//! Input embeddings: token ids (BERT-style) and image patches (ViT-style).

use burn::module::{Module, Param};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig,
    Linear, LinearConfig,
};
use burn::tensor::{Device, Int, Tensor};

/// Token, position and token-type embeddings, summed, then layer norm and dropout
/// (BERT; ALBERT with a smaller embedding size E).
#[derive(Module, Debug)]
pub struct TextEmbedding {
    /// Token embedding `[vocab_size, E]`.
    pub tokens: Embedding,
    /// Learned positions `[max_position, E]`.
    pub positions: Embedding,
    /// Token types (segments), when the vocabulary of types is non-empty.
    pub token_types: Option<Embedding>,
    /// Layer norm after the sum.
    pub norm: LayerNorm,
    /// Dropout after the norm.
    pub dropout: Dropout,
}

impl TextEmbedding {
    /// A text embedding of size `d_embed`.
    pub fn new(
        vocab_size: usize,
        max_position: usize,
        type_vocab_size: usize,
        d_embed: usize,
        dropout: f64,
        layer_norm_eps: f64,
        device: &Device,
    ) -> Self {
        let init = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        Self {
            tokens: EmbeddingConfig::new(vocab_size, d_embed)
                .with_initializer(init.clone())
                .init(device),
            positions: EmbeddingConfig::new(max_position, d_embed)
                .with_initializer(init.clone())
                .init(device),
            token_types: (type_vocab_size > 0).then(|| {
                EmbeddingConfig::new(type_vocab_size, d_embed)
                    .with_initializer(init)
                    .init(device)
            }),
            norm: LayerNormConfig::new(d_embed)
                .with_epsilon(layer_norm_eps)
                .init(device),
            dropout: DropoutConfig::new(dropout).init(),
        }
    }

    /// Longest sequence this embedding accepts.
    pub fn max_position(&self) -> usize {
        self.positions.weight.dims()[0]
    }

    /// Embeds token ids.
    ///
    /// # Shapes
    /// - ids, type_ids: `[batch_size, seq_len]`
    /// - output: `[batch_size, seq_len, d_embed]`
    ///
    /// # Panics
    /// If `seq_len` exceeds the number of learned positions.
    pub fn forward(&self, ids: Tensor<2, Int>, type_ids: Option<Tensor<2, Int>>) -> Tensor<3> {
        let [batch_size, seq_len] = ids.dims();
        assert!(
            seq_len <= self.max_position(),
            "sequence of {seq_len} tokens is longer than the {} learned positions",
            self.max_position()
        );
        let device = ids.device();
        let positions = Tensor::<1, Int>::arange(0..seq_len as i64, &device).reshape([1, seq_len]);
        let mut x = self.tokens.forward(ids) + self.positions.forward(positions);
        if let Some(types) = &self.token_types {
            let type_ids =
                type_ids.unwrap_or_else(|| Tensor::<2, Int>::zeros([batch_size, seq_len], &device));
            x = x + types.forward(type_ids);
        }
        self.dropout.forward(self.norm.forward(x))
    }
}

/// ViT patch embedding: non-overlapping `patch_size²` patches, each flattened and
/// projected to E, a learned `[CLS]` token in front and learned positions added.
#[derive(Module, Debug)]
pub struct PatchEmbedding {
    /// Patch projection `channels·patch_size² → E`.
    pub projection: Linear,
    /// The `[CLS]` token `[1, 1, E]`.
    pub cls_token: Param<Tensor<3>>,
    /// Learned positions `[1, 1 + n_patches, E]`.
    pub positions: Param<Tensor<3>>,
    /// Dropout after adding positions.
    pub dropout: Dropout,
    /// Side of the square image.
    pub image_size: usize,
    /// Side of a square patch.
    pub patch_size: usize,
    /// Image channels.
    pub channels: usize,
}

impl PatchEmbedding {
    /// A patch embedding of size `d_embed`.
    pub fn new(
        image_size: usize,
        patch_size: usize,
        channels: usize,
        d_embed: usize,
        dropout: f64,
        device: &Device,
    ) -> Self {
        let n_patches = (image_size / patch_size).pow(2);
        let init = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        Self {
            projection: LinearConfig::new(channels * patch_size * patch_size, d_embed).init(device),
            cls_token: init.init([1, 1, d_embed], device),
            positions: init.init([1, 1 + n_patches, d_embed], device),
            dropout: DropoutConfig::new(dropout).init(),
            image_size,
            patch_size,
            channels,
        }
    }

    /// Number of patches per image.
    pub fn n_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Embeds images.
    ///
    /// # Shapes
    /// - images: `[batch_size, channels, image_size, image_size]`
    /// - output: `[batch_size, 1 + n_patches, d_embed]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<3> {
        let [batch_size, channels, height, width] = images.dims();
        assert!(
            channels == self.channels && height == self.image_size && width == self.image_size,
            "images of shape [{batch_size}, {channels}, {height}, {width}] do not match the \
             patch embedding's [_, {}, {}, {}]",
            self.channels,
            self.image_size,
            self.image_size
        );
        let p = self.patch_size;
        let g = self.image_size / p;
        let patches = images
            .reshape([batch_size, channels, g, p, g, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([batch_size, g * g, channels * p * p]);
        let x = self.projection.forward(patches);
        let d_embed = x.dims()[2];
        let cls = self.cls_token.val().expand([batch_size, 1, d_embed]);
        let x = Tensor::cat(vec![cls, x], 1) + self.positions.val();
        self.dropout.forward(x)
    }
}
