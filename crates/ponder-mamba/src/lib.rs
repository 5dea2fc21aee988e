//! # ponder-mamba: the Mamba selective-SSM backbone
//!
//! Mamba (Gu & Dao 2023) as a backbone for adaptive-depth models: the mixer
//! ([`MambaMixer`]: in_proj, causal depthwise conv, x_proj → Δ, B, C, softplus Δ with
//! its bias, `A = −exp(A_log)`, the D skip and the SiLU(z) gate, out_proj) in pre-norm
//! RMSNorm residual blocks ([`MambaBlock`]), with Mamba's initialisation.
//!
//! **Two execution modes share one caller-owned state** ([`LayerState`] per layer,
//! [`MambaState`] per stack): the full-sequence selective scan
//! ([`MambaMixer::forward`], used for training and for prompt prefill, which also
//! returns the state after the last token and can continue from a given state) and the
//! one-token recurrent step ([`MambaMixer::step`], generation). The state's size is
//! fixed by the model and the batch: generation memory does not grow with length.
//!
//! ## Where it sits
//!
//! A backbone crate on top of `ponder-core` (and burn), beside `ponder-transformer`:
//! [`MambaEncoder`] implements [`ponder_core::LayerwiseBackbone`] and [`MambaLm`]
//! implements [`ponder_core::TokenLm`], so every exit head, exit policy and the batched
//! runner apply unchanged. `ponder-models` uses it as the `Mamba` backbone of its
//! classifiers and language models (see `docs/architecture.md` in the repository).
//!
//! ## Entry points
//!
//! * [`MambaConfig`] → [`Mamba`] ([`init`](MambaConfig::init)) or [`MambaLm`]
//!   ([`init_lm`](MambaConfig::init_lm)): `forward` over a whole sequence,
//!   `forward_prefill` (the scan from an optional state, returning the state after the
//!   last token) and `step` (one token from a state); [`generate`] with [`Sampling`].
//! * [`MambaEncoderConfig`] → [`MambaEncoder`]: the layer-wise classifier trunk, pooled
//!   at the last real token or averaged over real tokens ([`Pooling`]).
//! * `state-spaces/mamba` safetensors: [`load_state_spaces`] (the configuration is read
//!   from the shapes), [`state_spaces_bytes`].
//!
//! ## Example
//!
//! ```
//! use burn::tensor::{Device, Int, Tensor, TensorData};
//! use ponder_core::to_host;
//! use ponder_mamba::MambaConfig;
//!
//! let device = Device::flex();
//! // a vocabulary of 50, d = 16, 2 layers, state size 4 (random weights)
//! let lm = MambaConfig::new(50, 16, 2).with_d_state(4).init_lm(&device);
//! let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![3i64, 14, 15, 9, 2], [1, 5]), &device);
//!
//! // The scan over a 4-token prompt returns the state after its last token ...
//! let (_, mut state) = lm.forward_prefill(ids.clone().narrow(1, 0, 4), None);
//! // ... and one recurrent step from it gives the 5th position's logits of the full scan.
//! let stepped = to_host(lm.step(ids.clone().narrow(1, 4, 1).reshape([1]), &mut state));
//! let full = to_host(lm.forward(ids).narrow(1, 4, 1));
//! let gap = stepped.iter().zip(&full).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
//! assert!(gap < 1e-4, "{gap}");
//! ```

mod config;
mod encoder;
mod generate;
mod import;
mod mixer;
mod model;
mod token;

pub use config::MambaConfig;
pub use encoder::{MambaEncoder, MambaEncoderConfig, MambaEncoderState, MambaInput, Pooling};
pub use generate::{Generation, Sampling, generate, pick};
pub use import::{load_hf_mamba, load_state_spaces, state_spaces_bytes};
pub use mixer::{LayerState, MambaBlock, MambaMixer, selective_scan};
pub use model::{Mamba, MambaLm, MambaState};
pub use token::MambaCache;
