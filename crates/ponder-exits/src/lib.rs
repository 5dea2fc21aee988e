//! # ponder-exits: exit heads, exit policies and their losses
//!
//! Everything that sits after a backbone layer: the heads that turn its features into a
//! prediction (and a halting signal), the policies that decide per row whether to stop
//! there, and the losses that train them.
//!
//! ## Where it sits
//!
//! On top of `ponder-core` and burn, and nothing else of ours: heads implement [`ponder_core::ExitHeads`] and policies
//! [`ponder_core::ExitPolicy`], so they work with any backbone, the transformer of
//! `ponder-transformer` or the Mamba of `ponder-mamba`, through
//! [`ponder_core::run_adaptive`]. `ponder-models` joins them into trained models (see
//! `docs/architecture.md` in the repository).
//!
//! ## Entry points
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
//! * **Token-level exits** ([`token`], DYNAMAX and CALM): the parts that need no
//!   language model: what an exit classifier is (its spec; the classifier modules,
//!   linear and Mamba-based, are in `ponder-models`, which sees both this crate and
//!   `ponder-mamba`), its training labels and loss, CALM's confidence measures and the
//!   rules that decide when a token exits.
//!
//! ## Example
//!
//! Policies read host copies of the heads' logits, so they can be tried on hand-made
//! signals; [`ponder_core::run_adaptive`] feeds them a real batch layer by layer.
//!
//! ```
//! use ponder_core::{ExitPolicy, ExitSignals};
//! use ponder_exits::{MaxProbThreshold, Patience};
//!
//! // Logits of two rows (three classes) after layer 1 (index 0) of 6.
//! let layer1 = [4.0, 0.0, 0.0, 0.4, 0.3, 0.2];
//! let signals = ExitSignals::new(0, 6, 3, &layer1);
//!
//! // Exit when the softmax maximum is above 0.9: only row 0 is that confident.
//! let max_prob = MaxProbThreshold::new(0.9)?;
//! assert_eq!(max_prob.decide(&signals, &mut max_prob.start(2)), [true, false]);
//!
//! // PABEE's patience keeps a counter per row in its carry: with patience 1, a row exits
//! // when two consecutive exits agree.
//! let patience = Patience::new(1);
//! let mut carry = patience.start(2);
//! assert_eq!(patience.decide(&signals, &mut carry), [false, false]);
//! let layer2 = [3.0, 0.0, 0.0, 0.0, 0.5, 0.2]; // row 0 still class 0, row 1 now class 1
//! let signals = ExitSignals::new(1, 6, 3, &layer2);
//! assert_eq!(patience.decide(&signals, &mut carry), [true, false]);
//! # Ok::<(), ponder_core::PonderError>(())
//! ```

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
    ClassifierHeads, ClassifierHeadsConfig, INPUT_NORM_EPSILON, OffRampHeads, OffRampPooler,
    pooler_flops,
};
pub use jei::{ExitGates, ExitGatesConfig, GatedHeads};
pub use policy::{
    EntropyThreshold, Expectation, FixedLayer, GateCarry, HaltingCarry, LearnedGate,
    MaxProbThreshold, MixtureCarry, NeverExit, Oracle, Patience, PatienceRegression, Policy,
    PolicyCarry, PonderSample, QExit, SampleCarry, entropy,
};
