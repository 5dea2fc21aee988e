//! Encoder configuration and presets.

use burn::config::Config;
use ponder_core::PonderError;

/// What the encoder reads.
#[derive(Config, Debug, PartialEq)]
pub enum EmbeddingKind {
    /// Token ids (WordPiece etc.) with learned position and token-type embeddings.
    Text {
        /// Vocabulary size.
        vocab_size: usize,
        /// Longest sequence (number of learned positions).
        max_position: usize,
        /// Number of token types (segments); 0 for none.
        type_vocab_size: usize,
    },
    /// Images cut into non-overlapping square patches (ViT), with a learned `[CLS]`
    /// token and learned positions.
    Patch {
        /// Height and width of the (square) image.
        image_size: usize,
        /// Side of a square patch; must divide `image_size`.
        patch_size: usize,
        /// Number of image channels.
        channels: usize,
    },
}

/// Configuration of an [`Encoder`](crate::Encoder).
#[derive(Config, Debug)]
pub struct EncoderConfig {
    /// The input embedding.
    pub embedding: EmbeddingKind,
    /// Number of layers (for ALBERT: applications of the shared layer).
    pub n_layers: usize,
    /// Hidden size H.
    pub d_model: usize,
    /// Number of attention heads; must divide `d_model`.
    pub n_heads: usize,
    /// Inner size of the feed-forward block.
    pub d_ff: usize,
    /// Embedding size E; when different from `d_model` a linear map E→H follows the
    /// embedding (ALBERT's factorised embedding). Default: `None` (E = H).
    #[config(default = "None")]
    pub d_embed: Option<usize>,
    /// One layer shared by all depths (ALBERT). Default: false.
    #[config(default = false)]
    pub share_layers: bool,
    /// Pre-norm layers (layer norm before attention and feed-forward, plus a final layer
    /// norm before the pooler); post-norm (BERT) otherwise. Default: false.
    #[config(default = false)]
    pub norm_first: bool,
    /// Dropout probability of hidden states and attention weights. Default: 0.1.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Layer-norm epsilon. Default: 1e-12 (BERT).
    #[config(default = 1e-12)]
    pub layer_norm_eps: f64,
    /// The feed-forward block's GELU in its tanh approximation (ALBERT's and GPT-2's
    /// `gelu_new`) instead of the exact erf form (BERT's `gelu`). Default: false.
    #[config(default = false)]
    pub gelu_approximate: bool,
    /// The pooler reads the mean of the real tokens' states instead of the `[CLS]`
    /// state (sentence-transformers' pooling, what all-MiniLM-L6-v2 was trained with).
    /// Default: false.
    #[config(default = false)]
    pub mean_pool: bool,
}

impl EncoderConfig {
    /// A tiny text encoder for tests: 4 layers, H = 32, 4 heads, FFN 64, vocabulary 100.
    pub fn tiny() -> Self {
        Self::new(
            EmbeddingKind::Text {
                vocab_size: 100,
                max_position: 64,
                type_vocab_size: 2,
            },
            4,
            32,
            4,
            64,
        )
    }

    /// A tiny ViT-style encoder for tests: 28×28 grey images, 7×7 patches, 4 layers,
    /// H = 32.
    pub fn tiny_vit() -> Self {
        Self::new(
            EmbeddingKind::Patch {
                image_size: 28,
                patch_size: 7,
                channels: 1,
            },
            4,
            32,
            4,
            64,
        )
        .with_norm_first(true)
    }

    /// The shape of `bert-base-uncased`: 12 layers, H = 768, 12 heads, FFN 3072.
    pub fn bert_base() -> Self {
        Self::new(
            EmbeddingKind::Text {
                vocab_size: 30522,
                max_position: 512,
                type_vocab_size: 2,
            },
            12,
            768,
            12,
            3072,
        )
    }

    /// The shape of `albert-base-v2`: one shared layer applied 12 times, E = 128,
    /// H = 768, 12 heads, FFN 3072, no dropout in the backbone.
    pub fn albert_base() -> Self {
        Self::new(
            EmbeddingKind::Text {
                vocab_size: 30000,
                max_position: 512,
                type_vocab_size: 2,
            },
            12,
            768,
            12,
            3072,
        )
        .with_d_embed(Some(128))
        .with_share_layers(true)
        .with_dropout(0.0)
    }

    /// The embedding size E.
    pub fn embed_size(&self) -> usize {
        self.d_embed.unwrap_or(self.d_model)
    }

    /// Checks that the sizes fit together, naming the field at fault.
    pub fn validate(&self) -> ponder_core::Result<()> {
        let positive = [
            ("n_layers", self.n_layers),
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("d_ff", self.d_ff),
            ("d_embed", self.embed_size()),
        ];
        check_sizes(&positive, self.d_model, self.n_heads)?;
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(PonderError::config(
                "dropout",
                format!("{} is not in [0, 1)", self.dropout),
            ));
        }
        match &self.embedding {
            EmbeddingKind::Text {
                vocab_size,
                max_position,
                ..
            } => {
                if *vocab_size == 0 || *max_position == 0 {
                    return Err(PonderError::config(
                        "embedding",
                        "vocab_size and max_position must be positive",
                    ));
                }
            }
            EmbeddingKind::Patch {
                image_size,
                patch_size,
                channels,
            } => {
                if *patch_size == 0 || *channels == 0 || image_size % patch_size != 0 {
                    return Err(PonderError::config(
                        "embedding.patch_size",
                        format!(
                            "patch size {patch_size} must be positive and divide image size {image_size}"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Every size in `positive` at least 1 (named when not), and `n_heads` dividing
/// `d_model`: what any multi-head attention stack needs.
pub(crate) fn check_sizes(
    positive: &[(&str, usize)],
    d_model: usize,
    n_heads: usize,
) -> ponder_core::Result<()> {
    for &(key, value) in positive {
        if value == 0 {
            return Err(PonderError::config(key, "must be at least 1"));
        }
    }
    if !d_model.is_multiple_of(n_heads) {
        return Err(PonderError::config(
            "n_heads",
            format!("{n_heads} heads do not divide d_model = {d_model}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for c in [
            EncoderConfig::tiny(),
            EncoderConfig::tiny_vit(),
            EncoderConfig::bert_base(),
            EncoderConfig::albert_base(),
        ] {
            c.validate().unwrap();
        }
        assert_eq!(EncoderConfig::albert_base().embed_size(), 128);
    }

    #[test]
    fn bad_sizes_name_the_field() {
        let mut config = EncoderConfig::tiny();
        config.n_heads = 3;
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("n_heads"), "{err}");
        let err = EncoderConfig::tiny()
            .with_dropout(1.5)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("dropout"), "{err}");
    }
}
