//! # ponder-exits: exit heads, exit policies and their losses
//!
//! * **Heads** ([`ClassifierHeads`]): one linear classifier per layer (PABEE, DeeBERT),
//!   or one classifier shared by all layers (PALBERT), reading the backbone's pooled
//!   features; DeeBERT's off-ramps have their own pooler ([`OffRampPooler`]): in the
//!   reference form on the layer's pre-pooler features, copied from the main pooler
//!   before stage 2 and run through [`OffRampHeads`], or stacked on the pooled features.
//! * **Policies** (all implement [`ponder_core::ExitPolicy`] and work per row):
//!   [`MaxProbThreshold`], [`EntropyThreshold`] (DeeBERT), [`Patience`] (PABEE, with the
//!   counting rules of the reference code), [`PatienceRegression`], [`FixedLayer`],
//!   [`NeverExit`], and the analysis-only [`Oracle`]. [`Policy`] is a sum of them, for
//!   code that picks a policy at run time.
//! * **Halting heads** ([`HaltingHead`]): PonderNet's linear λ head and PALBERT's Lambda
//!   layer (current and previous features, three tanh blocks); [`HaltingHeads`] pairs
//!   one with classifiers as the exit heads of PonderNet and PALBERT, and the policies
//!   [`QExit`] (PALBERT), [`PonderSample`] (PonderNet) and [`Expectation`] read their λ.
//! * **JEI-DNN** ([`jei`]): gates ([`ExitGates`]) on four detached confidence features of
//!   each early exit's logits, paired with per-layer classifiers as [`GatedHeads`]; the
//!   capped-sum exit distribution, the cost-aware gate targets and both phases' losses;
//!   the policy [`LearnedGate`] exits at the first conditional activation `a_l ≥ 0.5`.
//!   [`gate_fit`]: each gate's objective on frozen modules, and its exact minimiser.
//! * **Losses** ([`loss`]): cross-entropy per layer, PABEE's depth-weighted sum
//!   `Σ i·L_i / Σ i`, and DeeBERT's two stages; [`ponder`]: the exit distribution, the
//!   truncated geometric prior, both KL directions and the PonderNet loss.
//! * **Token-level exits** ([`token`], DYNAMAX and CALM): exit classifiers (linear, and a
//!   small Mamba over the layer axis), CALM's confidence measures, and greedy decoding
//!   with per-token exits and explicit rules for the caches of skipped layers.

pub mod gate_fit;
mod halting;
mod heads;
pub mod jei;
pub mod loss;
mod policy;
pub mod ponder;
pub mod token;

pub use halting::{HaltingHead, HaltingHeadConfig, HaltingHeads};
pub use heads::{
    ClassifierHeads, ClassifierHeadsConfig, OffRampHeads, OffRampPooler, pooler_flops,
};
pub use jei::{ExitGates, ExitGatesConfig, GatedHeads};
pub use policy::{
    EntropyThreshold, Expectation, FixedLayer, GateCarry, HaltingCarry, LearnedGate,
    MaxProbThreshold, MixtureCarry, NeverExit, Oracle, Patience, PatienceRegression, Policy,
    PolicyCarry, PonderSample, QExit, SampleCarry, entropy,
};
