//! # ponder-transformer: a transformer encoder that runs one layer at a time
//!
//! [`Encoder`] is a BERT/RoBERTa-style encoder (one weight set per layer) or, with
//! [`EncoderConfig::share_layers`], an ALBERT-style encoder (one layer applied
//! `n_layers` times, with a factorised embedding `E < H`). Its input is either token ids
//! with a padding mask ([`TextEmbedding`]) or images cut into patches
//! ([`PatchEmbedding`], ViT-style), so the same encoder classifies text and images.
//! Features for exit heads are the `[CLS]` vector through one shared pooler
//! (`tanh(W·h_cls + b)`), as PABEE and PALBERT use. Post-norm (BERT) and pre-norm
//! (with a final layer norm before the pooler) are both supported.
//!
//! [`Encoder`] implements [`ponder_core::LayerwiseBackbone`], so every exit policy and
//! the batched adaptive runner of `ponder-core` work on it.
//!
//! [`DecoderLm`] is a causal GPT-2 style (pre-norm) decoder language model with a
//! [`KvCache`], whose [`DecoderBlock`]s can be driven one layer and one token at a time
//! (token-level early exit), with helpers to fill the caches of skipped layers.

mod config;
mod decoder;
mod embedding;
mod encoder;
mod loader;
mod token;

pub use config::{EmbeddingKind, EncoderConfig};
pub use decoder::{DecoderBlock, DecoderConfig, DecoderLm, KvCache, LayerKv};
pub use embedding::{PatchEmbedding, TextEmbedding};
pub use encoder::{Encoder, EncoderInput, EncoderState};
pub use loader::{HfConfig, HfLayout, LoadedEncoder, load_from, load_hf_encoder, load_with_config};
