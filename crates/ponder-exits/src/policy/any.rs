//! A run-time choice among the policies.

use ponder_core::{ExitPolicy, ExitSignals};

use super::gate::{GateCarry, LearnedGate};
use super::halting::{HaltingCarry, MixtureCarry, SampleCarry};
use super::patience::{PatienceCarry, RegressionCarry};
use super::{
    EntropyThreshold, Expectation, FixedLayer, MaxProbThreshold, NeverExit, Oracle, Patience,
    PatienceRegression, PonderSample, QExit,
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
    /// See [`QExit`] (needs a halting head).
    QExit(QExit),
    /// See [`PonderSample`] (needs a halting head).
    Sample(PonderSample),
    /// See [`Expectation`] (needs a halting head).
    Expectation(Expectation),
    /// See [`LearnedGate`] (needs JEI-DNN's gates).
    Gate(LearnedGate),
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
    /// [`QExit`].
    Halting(HaltingCarry),
    /// [`PonderSample`].
    Sample(SampleCarry),
    /// [`Expectation`].
    Mixture(MixtureCarry),
    /// [`LearnedGate`].
    Gate(GateCarry),
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
            Self::QExit(_) => "q_exit",
            Self::Sample(_) => "sample",
            Self::Expectation(_) => "expectation",
            Self::Gate(_) => "gate",
        }
    }

    /// Whether the policy reads halting probabilities (so the model needs a halting
    /// head).
    pub fn needs_halting(&self) -> bool {
        matches!(
            self,
            Self::QExit(_) | Self::Sample(_) | Self::Expectation(_)
        )
    }

    /// Whether the policy reads JEI-DNN's gate values (so the model needs gates).
    pub fn needs_gates(&self) -> bool {
        matches!(self, Self::Gate(_))
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
            Self::QExit(p) => p.name(),
            Self::Sample(p) => p.name(),
            Self::Expectation(p) => p.name(),
            Self::Gate(p) => p.name(),
        }
    }

    fn start(&self, batch_size: usize) -> PolicyCarry {
        match self {
            Self::Patience(p) => PolicyCarry::Patience(p.start(batch_size)),
            Self::PatienceRegression(p) => PolicyCarry::Regression(p.start(batch_size)),
            Self::QExit(p) => PolicyCarry::Halting(p.start(batch_size)),
            Self::Sample(p) => PolicyCarry::Sample(p.start(batch_size)),
            Self::Expectation(p) => PolicyCarry::Mixture(p.start(batch_size)),
            Self::Gate(p) => PolicyCarry::Gate(p.start(batch_size)),
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
            (Self::QExit(p), PolicyCarry::Halting(c)) => p.decide(signals, c),
            (Self::Sample(p), PolicyCarry::Sample(c)) => p.decide(signals, c),
            (Self::Expectation(p), PolicyCarry::Mixture(c)) => p.decide(signals, c),
            (Self::Gate(p), PolicyCarry::Gate(c)) => p.decide(signals, c),
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
            (Self::QExit(p), PolicyCarry::Halting(c)) => {
                PolicyCarry::Halting(p.retain_rows(c, rows))
            }
            (Self::Sample(p), PolicyCarry::Sample(c)) => {
                PolicyCarry::Sample(p.retain_rows(c, rows))
            }
            (Self::Expectation(p), PolicyCarry::Mixture(c)) => {
                PolicyCarry::Mixture(p.retain_rows(c, rows))
            }
            (Self::Gate(p), PolicyCarry::Gate(c)) => PolicyCarry::Gate(p.retain_rows(c, rows)),
            (_, c) => c,
        }
    }

    fn mixes_outputs(&self) -> bool {
        matches!(self, Self::Expectation(_))
    }

    fn exit_output(
        &self,
        signals: &ExitSignals<'_>,
        carry: &PolicyCarry,
        rows: &[usize],
    ) -> Vec<f32> {
        match (self, carry) {
            (Self::Expectation(p), PolicyCarry::Mixture(c)) => p.exit_output(signals, c, rows),
            _ => rows
                .iter()
                .flat_map(|&r| signals.row(r).iter().copied())
                .collect(),
        }
    }
}
