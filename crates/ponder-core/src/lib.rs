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
//! ## Where it sits
//!
//! The bottom of the workspace: it depends on burn only (re-exported as `ponder_core::burn`
//! so every crate uses the same version). Nothing here knows about transformers, data
//! sets or files: `ponder-transformer` and `ponder-mamba` implement the backbone traits,
//! `ponder-exits` the heads and policies, and `ponder-models` joins them into trainable
//! models (the crate map is `docs/architecture.md` in the repository).
//!
//! ## Entry points
//!
//! * The contracts: [`LayerwiseBackbone`], [`ExitHeads`], [`ExitPolicy`] with
//!   [`ExitSignals`]; token level: [`TokenLm`], [`LayerCall`] / [`LayerStep`], [`Rows`],
//!   [`SkipRule`].
//! * Running them: [`run_adaptive`] → [`AdaptiveOutput`] (inference, rows leave the batch
//!   at their exit), [`forward_all_layers`] → [`AllLayersOutput`] (training and analysis:
//!   every head on every row).
//! * Measuring: [`ExitStats`], [`transformer_layer_flops`], [`linear_flops`].
//! * Utilities: [`SafeTensors`] / [`write_safetensors`] (weight files), [`splitmix64`] /
//!   [`uniform01`] (seeded streams), [`to_host`], [`PonderError`].
//!
//! ## Example
//!
//! A policy of your own, tried on hand-made signals (no backbone, no tensors); passed to
//! [`run_adaptive`] it would decide for every row of a real batch.
//!
//! ```
//! use ponder_core::{ExitPolicy, ExitSignals, ExitStats};
//!
//! /// Exit once the top logit leads the runner-up by more than a margin.
//! struct Margin(f32);
//!
//! impl ExitPolicy for Margin {
//!     type Carry = (); // no per-row state
//!     fn name(&self) -> String {
//!         format!("margin>{}", self.0)
//!     }
//!     fn start(&self, _batch_size: usize) {}
//!     fn decide(&self, signals: &ExitSignals<'_>, _carry: &mut ()) -> Vec<bool> {
//!         (0..signals.rows())
//!             .map(|r| {
//!                 let mut row = signals.row(r).to_vec();
//!                 row.sort_by(|a, b| b.total_cmp(a));
//!                 row[0] - row[1] > self.0
//!             })
//!             .collect()
//!     }
//!     fn retain_rows(&self, _carry: (), _rows: &[usize]) {}
//! }
//!
//! // Two rows of three-class logits after layer 1 (0-based index 0) of 4.
//! let logits = [3.0, 0.5, 0.0, 1.0, 0.9, 0.8];
//! let signals = ExitSignals::new(0, 4, 3, &logits);
//! assert_eq!(Margin(1.0).decide(&signals, &mut ()), [true, false]);
//!
//! // Row 0 exited at layer 1 (10 FLOPs), row 1 went on to layer 4 (40 FLOPs).
//! let stats = ExitStats::new(&[1, 4], &[10, 40], 4, 40);
//! assert_eq!(stats.mean_exit_layer, 2.5);
//! assert_eq!(stats.flop_speedup, 1.6);
//! ```

mod backbone;
mod device;
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
pub use device::device_named;
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
pub use weights::{NamedTensor, SafeTensors, read_config_json, write_safetensors};

/// Re-export of burn so downstream crates and tests use the same version.
pub use burn;
