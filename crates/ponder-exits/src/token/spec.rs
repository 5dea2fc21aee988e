//! What a DYNAMAX exit classifier is (Nogales, Gambella & Roveri 2025, arXiv:2504.20922):
//! its [`ExitClassifierSpec`], plain data saved next to its weights. The modules
//! themselves (`ExitClassifier` in `ponder-models`) join this spec with a Mamba block,
//! which this crate does not depend on.
//!
//! **Linear** (the reference code): `Linear(f → 2)` per exit position on the layer's
//! classifier input (Mamba: `[hidden_states; residual]`, 2d wide; transformer: the
//! layer's output); `P(exit) = softmax(logits)[1]`.
//!
//! **Mamba** (our design): one small Mamba block reads each layer's summary along the
//! depth; `ponder_models::ExitClassifier` documents it.

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use ponder_core::{PonderError, Result};
use serde::{Deserialize, Serialize};

/// Number of confidence numbers in a [`SummaryInput::Confidence`] summary.
pub const N_SUMMARY_CONFIDENCE: usize = 5;

/// Which classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassifierKind {
    /// One linear head per exit position (DYNAMAX's code).
    Linear,
    /// One small Mamba over the layer axis.
    Mamba,
}

/// What the Mamba classifier reads from each layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SummaryInput {
    /// The layer's classifier input, projected to d_s.
    Hidden,
    /// Five confidence numbers of the layer's intermediate prediction (needs the shared
    /// head at every layer).
    Confidence,
}

fn default_summary() -> SummaryInput {
    SummaryInput::Hidden
}
fn default_d_summary() -> usize {
    16
}
fn default_d_state() -> usize {
    8
}

/// What a classifier is: kind, exit positions, labels, and the Mamba classifier's
/// sizes. Saved next to its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitClassifierSpec {
    /// Linear or Mamba.
    pub kind: ClassifierKind,
    /// Layers (1-based: "after layer e") where a token may exit, increasing, each
    /// below the number of layers.
    pub exits: Vec<usize>,
    /// Labels: exiting after layer e is right when the final model's greedy token is
    /// among the top `top_k` tokens of layer e's intermediate prediction (DYNAMAX's
    /// training script: 15; CALM's consistency: 1).
    pub top_k: usize,
    /// Mamba classifier: what each layer offers. Default: hidden.
    #[serde(default = "default_summary")]
    pub summary: SummaryInput,
    /// Mamba classifier: width d_s. Default: 16.
    #[serde(default = "default_d_summary")]
    pub d_summary: usize,
    /// Mamba classifier: SSM state size. Default: 8.
    #[serde(default = "default_d_state")]
    pub d_state: usize,
}

impl ExitClassifierSpec {
    /// A linear classifier.
    pub fn linear(exits: Vec<usize>, top_k: usize) -> Self {
        Self {
            kind: ClassifierKind::Linear,
            exits,
            top_k,
            summary: default_summary(),
            d_summary: default_d_summary(),
            d_state: default_d_state(),
        }
    }

    /// A Mamba classifier with default sizes.
    pub fn mamba(exits: Vec<usize>, top_k: usize, summary: SummaryInput) -> Self {
        Self {
            kind: ClassifierKind::Mamba,
            summary,
            ..Self::linear(exits, top_k)
        }
    }

    /// Short name for tables: `linear[k=15]`, `mamba-hidden[k=1]`.
    pub fn name(&self) -> String {
        match self.kind {
            ClassifierKind::Linear => format!("linear[k={}]", self.top_k),
            ClassifierKind::Mamba => format!(
                "mamba-{}[k={}]",
                match self.summary {
                    SummaryInput::Hidden => "hidden",
                    SummaryInput::Confidence => "confidence",
                },
                self.top_k
            ),
        }
    }

    /// The deepest exit position.
    pub fn last_exit(&self) -> usize {
        self.exits.last().copied().unwrap_or(0)
    }

    /// Checks the spec against a model of `n_layers` layers and `vocab` tokens;
    /// `field` names it in errors.
    pub fn validate(&self, n_layers: usize, vocab: usize, field: &str) -> Result<()> {
        validate_exits(&self.exits, n_layers, &format!("{field}.exits"))?;
        if self.top_k == 0 || self.top_k > vocab {
            return Err(PonderError::config(
                format!("{field}.top_k"),
                format!("{} is not in 1..={vocab} (the vocabulary)", self.top_k),
            ));
        }
        if self.kind == ClassifierKind::Mamba {
            for (key, value) in [("d_summary", self.d_summary), ("d_state", self.d_state)] {
                if value == 0 {
                    return Err(PonderError::config(
                        format!("{field}.{key}"),
                        "must be at least 1",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Checks exit positions: non-empty, increasing, each in `1..n_layers`.
pub fn validate_exits(exits: &[usize], n_layers: usize, field: &str) -> Result<()> {
    if exits.is_empty() {
        return Err(PonderError::config(
            field,
            "needs at least one exit position",
        ));
    }
    if let Some(&bad) = exits.iter().find(|&&e| e == 0 || e >= n_layers) {
        return Err(PonderError::config(
            field,
            format!(
                "{bad} is not an early exit of a {n_layers}-layer model (1..={})",
                n_layers.saturating_sub(1)
            ),
        ));
    }
    if exits.windows(2).any(|w| w[0] >= w[1]) {
        return Err(PonderError::config(field, "must be increasing"));
    }
    Ok(())
}

/// `P(exit) = softmax(logits)[1]` of classifier logits `[n, 2]` → `[n]`.
pub fn exit_probability(logits: Tensor<2>) -> Tensor<1> {
    let [n, _] = logits.dims();
    softmax(logits, 1).narrow(1, 1, 1).reshape([n])
}
