//! # ponder-transformer: a transformer encoder that runs one layer at a time
//!
//! [`Encoder`] is a BERT/RoBERTa-style encoder (one weight set per layer) or, with
//! [`EncoderConfig::share_layers`], an ALBERT-style encoder (one layer applied
//! `n_layers` times, with a factorised embedding `E < H`). Its input is either token ids
//! with a padding mask ([`TextEmbedding`]) or images cut into patches
//! ([`PatchEmbedding`], ViT-style), so the same encoder classifies text and images.
//! Features for exit heads are the `[CLS]` vector through one shared pooler
//! (`tanh(W·h_cls + b)`), as PABEE and PALBERT use, or the mean of the real tokens
//! ([`EncoderConfig::mean_pool`]). Post-norm (BERT) and pre-norm (with a final layer
//! norm before the pooler) are both supported.
//!
//! [`DecoderLm`] is a causal pre-norm decoder language model with a [`KvCache`], whose
//! [`DecoderBlock`]s can be driven one layer and one token at a time (token-level early
//! exit), with helpers to fill the caches of skipped layers. [`DecoderConfig`] covers
//! GPT-2 (layer norm, learned positions, GELU) and the Llama family (RMSNorm, rotary
//! positions, SwiGLU, grouped-query attention).
//!
//! ## Where it sits
//!
//! A backbone crate on top of `ponder-core` (and burn): [`Encoder`] implements
//! [`ponder_core::LayerwiseBackbone`] and [`DecoderLm`] implements
//! [`ponder_core::TokenLm`], so every exit head and policy of `ponder-exits` and the
//! batched runner of `ponder-core` work on them. It knows nothing of heads or data;
//! `ponder-models` puts heads on it (`MultiExitClassifier`) and trains it (see
//! `docs/architecture.md` in the repository).
//!
//! ## Entry points
//!
//! * [`EncoderConfig`] (presets [`tiny`](EncoderConfig::tiny),
//!   [`tiny_vit`](EncoderConfig::tiny_vit), [`bert_base`](EncoderConfig::bert_base),
//!   [`albert_base`](EncoderConfig::albert_base)) → [`Encoder`]: [`embed_input`](Encoder::embed_input)
//!   an [`EncoderInput`] into an [`EncoderState`], then
//!   [`layer_forward`](Encoder::layer_forward) layer by layer, and
//!   [`pooled`](Encoder::pooled) for the features an exit head reads.
//! * Pretrained Hugging Face BERT, RoBERTa and ALBERT checkpoints (`config.json` +
//!   `model.safetensors`): [`load_hf_encoder`], or [`HfConfig`] with [`load_from`] /
//!   [`load_with_config`] → [`LoadedEncoder`]; missing, misshaped or unused tensors are
//!   errors naming the tensor.
//! * [`DecoderConfig`] → [`DecoderLm`] (`forward`, `forward_prefill`, `step`), with
//!   [`KvCache`] / [`LayerKv`].
//! * Pretrained Hugging Face decoders (GPT-2, Llama / Mistral / Qwen2 without sliding
//!   windows) from a checkpoint folder: [`load_hf_decoder`] → [`LoadedDecoder`];
//!   unsupported variants are refused by name. Mamba checkpoints load through
//!   `ponder_mamba::load_hf_mamba`.
//!
//! The example `hf_encoder` of `ponder-models` loads a checkpoint and puts exit heads on
//! it: `cargo run -p ponder-models --example hf_encoder [FOLDER]`; `pretrained_lm`
//! generates with a pretrained decoder and token exits: `cargo run --release -p
//! ponder-models --example pretrained_lm [FOLDER]`.
//!
//! ## Example
//!
//! ```
//! use burn::tensor::{Device, Int, Tensor, TensorData};
//! use ponder_transformer::{EncoderConfig, EncoderInput};
//!
//! let device = Device::flex();
//! // 4 layers, H = 32, a vocabulary of 100 (random weights)
//! let encoder = EncoderConfig::tiny().init(&device);
//! let ids = TensorData::new(vec![1i64, 5, 7, 2], [1, 4]);
//! let input = EncoderInput::Tokens {
//!     ids: Tensor::<2, Int>::from_data(ids, &device),
//!     type_ids: None,
//!     mask_pad: None, // `true` would mark padding
//! };
//! // Run only the first two layers and read what an exit head after layer 2 sees.
//! let mut state = encoder.embed_input(input);
//! for layer in 0..2 {
//!     state = encoder.layer_forward(layer, state);
//! }
//! assert_eq!(encoder.pooled(&state).dims(), [1, 32]);
//! ```

mod config;
mod decoder;
mod embedding;
mod encoder;
mod hf_decoder;
mod kv_cache;
mod loader;
mod token;

pub use config::{EmbeddingKind, EncoderConfig};
pub use decoder::{
    DecoderActivation, DecoderBlock, DecoderConfig, DecoderLm, DecoderNorm, NormLayer,
};
pub use embedding::{PatchEmbedding, TextEmbedding};
pub use encoder::{Encoder, EncoderInput, EncoderState};
pub use hf_decoder::{
    DecoderFamily, HfDecoderConfig, LoadedDecoder, load_decoder_from, load_hf_decoder,
};
pub use kv_cache::{KvCache, LayerKv};
pub use loader::{HfConfig, HfLayout, LoadedEncoder, load_from, load_hf_encoder, load_with_config};
