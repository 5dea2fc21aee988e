//! # ponder-core: the vocabulary of adaptive-depth networks
//!
//! A multi-exit network is a **backbone** advanced one layer at a time
//! ([`LayerwiseBackbone`]), **exit heads** that turn the features after a layer into a
//! prediction and, optionally, a halting probability ([`ExitHeads`]), and an **exit
//! policy** that turns those signals into a per-row decision ([`ExitPolicy`]).
//!
//! The [adaptive runner](run_adaptive) joins the three: every row of a batch exits on
//! its own; rows that exit are written to the output and *gathered out* of the batch, so
//! later layers run on fewer rows and compute is really saved. Outputs come back in the
//! original row order with each row's exit layer and the FLOPs actually spent on it.
//! [`ExitStats`] summarises exit layers (histogram, mean exit layer, speed-ups).
//!
//! Policies work on host copies of the signals ([`ExitSignals`]): a policy is plain Rust
//! over slices, so it can be tested on hand-made sequences without any tensor.
//!
//! Language models exit per *token* instead ([`TokenLm`]): a decoder drives them one
//! token and one layer at a time, rows that exit skip later layers, and a [`SkipRule`]
//! says what the skipped layers' caches get.
//!
//! Nothing here knows about transformers, data sets or files: backbones live in
//! `ponder-transformer`, heads and policies in `ponder-exits`.

mod backbone;
mod error;
mod flops;
mod policy;
mod pool;
mod rng;
mod runner;
mod stats;
mod token;
mod weights;

pub use backbone::{ExitHeads, LayerwiseBackbone};
pub use error::{PonderError, Result};
pub use flops::{linear_flops, transformer_layer_flops};
pub use policy::{ExitPolicy, ExitSignals, argmax, retain, softmax};
pub use pool::{masked_mean, real_tokens};
pub use rng::{splitmix64, uniform01};
pub use runner::{
    AdaptiveOutput, AllLayersOutput, exit_flops, forward_all_layers, index_tensor, run_adaptive,
    step_flops, to_host,
};
pub use stats::ExitStats;
pub use token::{
    LayerCall, LayerStep, Rows, SequenceLayers, SkipRule, TokenLm, check_prompt, merge_rows,
};
pub use weights::{SafeTensors, write_safetensors};

/// Re-export of burn so downstream crates and tests use the same version.
pub use burn;
