//! A run-time choice among the policies.

use ponder_core::{ExitPolicy, ExitSignals};

use super::patience::{PatienceCarry, RegressionCarry};
use super::{
    EntropyThreshold, FixedLayer, MaxProbThreshold, NeverExit, Oracle, Patience, PatienceRegression,
};

/// Any of the policies of this crate, chosen at run time (from a config file or the
/// command line).
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    /// See [`MaxProbThreshold`].
    MaxProb(MaxProbThreshold),
    /// See [`EntropyThreshold`].
    Entropy(EntropyThreshold),
    /// See [`Patience`].
    Patience(Patience),
    /// See [`PatienceRegression`].
    PatienceRegression(PatienceRegression),
    /// See [`FixedLayer`].
    Fixed(FixedLayer),
    /// See [`NeverExit`].
    Full(NeverExit),
    /// See [`Oracle`].
    Oracle(Oracle),
}

/// The carry of a [`Policy`].
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyCarry {
    /// Stateless policies.
    None,
    /// [`Patience`].
    Patience(PatienceCarry),
    /// [`PatienceRegression`].
    Regression(RegressionCarry),
}

impl Policy {
    /// The family name, without parameters (`max_prob`, `entropy`, `patience`, …).
    pub fn family(&self) -> &'static str {
        match self {
            Self::MaxProb(_) => "max_prob",
            Self::Entropy(_) => "entropy",
            Self::Patience(_) => "patience",
            Self::PatienceRegression(_) => "patience_regression",
            Self::Fixed(_) => "fixed",
            Self::Full(_) => "full",
            Self::Oracle(_) => "oracle",
        }
    }
}

impl ExitPolicy for Policy {
    type Carry = PolicyCarry;

    fn name(&self) -> String {
        match self {
            Self::MaxProb(p) => p.name(),
            Self::Entropy(p) => p.name(),
            Self::Patience(p) => p.name(),
            Self::PatienceRegression(p) => p.name(),
            Self::Fixed(p) => p.name(),
            Self::Full(p) => p.name(),
            Self::Oracle(p) => p.name(),
        }
    }

    fn start(&self, batch_size: usize) -> PolicyCarry {
        match self {
            Self::Patience(p) => PolicyCarry::Patience(p.start(batch_size)),
            Self::PatienceRegression(p) => PolicyCarry::Regression(p.start(batch_size)),
            _ => PolicyCarry::None,
        }
    }

    fn decide(&self, signals: &ExitSignals<'_>, carry: &mut PolicyCarry) -> Vec<bool> {
        match (self, carry) {
            (Self::MaxProb(p), _) => p.decide(signals, &mut ()),
            (Self::Entropy(p), _) => p.decide(signals, &mut ()),
            (Self::Fixed(p), _) => p.decide(signals, &mut ()),
            (Self::Full(p), _) => p.decide(signals, &mut ()),
            (Self::Oracle(p), _) => p.decide(signals, &mut ()),
            (Self::Patience(p), PolicyCarry::Patience(c)) => p.decide(signals, c),
            (Self::PatienceRegression(p), PolicyCarry::Regression(c)) => p.decide(signals, c),
            (p, c) => panic!("policy {} given a carry of another policy: {c:?}", p.name()),
        }
    }

    fn retain_rows(&self, carry: PolicyCarry, rows: &[usize]) -> PolicyCarry {
        match (self, carry) {
            (Self::Patience(p), PolicyCarry::Patience(c)) => {
                PolicyCarry::Patience(p.retain_rows(c, rows))
            }
            (Self::PatienceRegression(p), PolicyCarry::Regression(c)) => {
                PolicyCarry::Regression(p.retain_rows(c, rows))
            }
            (_, c) => c,
        }
    }
}
