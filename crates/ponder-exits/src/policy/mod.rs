//! Exit policies. Each decides per row, from host copies of the heads' outputs.

mod any;
mod patience;
mod simple;
mod threshold;

pub use any::{Policy, PolicyCarry};
pub use patience::{Patience, PatienceRegression};
pub use simple::{FixedLayer, NeverExit, Oracle};
pub use threshold::{EntropyThreshold, MaxProbThreshold, entropy};
