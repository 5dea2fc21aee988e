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
//! Stacks: [`MambaLm`] (language model, head tied to the embedding by default, with
//! [`generate`]) and [`MambaEncoder`] (sequence classifier trunk with last-token or mean
//! pooling) which implements [`ponder_core::LayerwiseBackbone`], so every exit head,
//! exit policy and the batched runner apply unchanged.
//!
//! Weights load from and save to the `state-spaces/mamba` safetensors naming
//! ([`load_state_spaces`], [`state_spaces_bytes`]).

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
pub use import::{load_state_spaces, state_spaces_bytes};
pub use mixer::{LayerState, MambaBlock, MambaMixer, selective_scan};
pub use model::{Mamba, MambaLm, MambaState};
pub use token::MambaCache;
