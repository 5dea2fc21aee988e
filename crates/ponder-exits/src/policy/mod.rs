//! Exit policies. Each decides per row, from host copies of the heads' outputs.

mod any;
mod gate;
mod halting;
mod parse;
mod patience;
mod simple;
mod threshold;

pub use any::{Policy, PolicyCarry};
pub use gate::{GateCarry, LearnedGate};
pub use halting::{Expectation, HaltingCarry, MixtureCarry, PonderSample, QExit, SampleCarry};
pub use patience::{Patience, PatienceRegression};
pub use simple::{FixedLayer, NeverExit, Oracle};
pub use threshold::{EntropyThreshold, MaxProbThreshold, entropy};
