//! DYNAMAX's exit classifiers (Nogales, Gambella & Roveri 2025, arXiv:2504.20922): a
//! linear head per exit position, and a small Mamba over the layer axis.
//!
//! **Linear** (the reference code): `Linear(f → 2)` per exit position on the layer's
//! classifier input (Mamba: `[hidden_states; residual]`, 2d wide; transformer: the
//! layer's output); `P(exit) = softmax(logits)[1]`.
//!
//! **Mamba as the exit classifier** (not in the reference code; our design). For the
//! current token, each layer `l` offers a *summary* `s_l`: either its classifier input
//! projected down (`Linear(f → d_s)`, [`SummaryInput::Hidden`]) or five confidence
//! numbers of its intermediate prediction (p_max, entropy, top-2 margin, pow-entropy,
//! and the cosine between the residual streams before and after the layer;
//! `Linear(5 → d_s)`, [`SummaryInput::Confidence`]). One pre-norm Mamba block of width
//! d_s reads `s_1, s_2, …` as a sequence **along the depth** (its state is reset for
//! every token), then RMSNorm and `Linear(d_s → 2)` give P(exit) after every layer; the
//! exit positions read theirs. One classifier serves every exit, and what it says at
//! layer l depends on the whole trajectory of the token through layers 1..l (a
//! prediction that has been stable for three layers, a stream that stopped moving),
//! which a per-layer linear head cannot see. At inference it costs one Mamba step per
//! layer (its state is a few hundred floats per row); in training the whole depth is
//! one selective scan.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor};
use ponder_core::{PonderError, Result, linear_flops};
use ponder_mamba::{LayerState, MambaBlock, MambaConfig};
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

    /// A freshly initialised classifier for a model whose classifier input is
    /// `feature_size` wide.
    pub fn init(&self, feature_size: usize, device: &Device) -> ExitClassifier {
        match self.kind {
            ClassifierKind::Linear => ExitClassifier::Linear(LinearExitClassifier {
                heads: self
                    .exits
                    .iter()
                    .map(|_| LinearConfig::new(feature_size, 2).init(device))
                    .collect(),
            }),
            ClassifierKind::Mamba => {
                let input = match self.summary {
                    SummaryInput::Hidden => feature_size,
                    SummaryInput::Confidence => N_SUMMARY_CONFIDENCE,
                };
                let config = MambaConfig::new(1, self.d_summary, 1).with_d_state(self.d_state);
                ExitClassifier::Mamba(MambaExitClassifier {
                    summary: LinearConfig::new(input, self.d_summary).init(device),
                    block: config.init_block(device),
                    norm: RmsNormConfig::new(self.d_summary).init(device),
                    out: LinearConfig::new(self.d_summary, 2).init(device),
                })
            }
        }
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

/// One linear head per exit position.
#[derive(Module, Debug)]
pub struct LinearExitClassifier {
    /// `Linear(f → 2)` per exit.
    pub heads: Vec<Linear>,
}

/// The Mamba classifier over the layer axis.
#[derive(Module, Debug)]
pub struct MambaExitClassifier {
    /// Each layer's input → d_s.
    pub summary: Linear,
    /// One pre-norm Mamba block over the layers.
    pub block: MambaBlock,
    /// RMSNorm before the output.
    pub norm: RmsNorm,
    /// d_s → {continue, exit}.
    pub out: Linear,
}

/// An exit classifier: two logits {continue, exit} at each exit position.
// modules are handles to parameters; boxing one would only add indirection
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum ExitClassifier {
    /// Linear heads.
    Linear(LinearExitClassifier),
    /// Mamba over the depth.
    Mamba(MambaExitClassifier),
}

/// The Mamba classifier's state for the current token (one row per batch row still
/// deciding); empty for linear classifiers.
#[derive(Debug, Clone)]
pub struct ClassifierState {
    state: Option<LayerState>,
}

impl ClassifierState {
    /// Keeps some rows (`rows` index the current rows).
    pub fn select_rows(&mut self, rows: Tensor<1, Int>) {
        if let Some(s) = &mut self.state {
            *s = s.select_rows(rows);
        }
    }
}

/// `P(exit) = softmax(logits)[1]` of classifier logits `[n, 2]` → `[n]`.
pub fn exit_probability(logits: Tensor<2>) -> Tensor<1> {
    let [n, _] = logits.dims();
    softmax(logits, 1).narrow(1, 1, 1).reshape([n])
}

impl ExitClassifier {
    /// Whether the classifier reads confidence summaries (which need the intermediate
    /// prediction at every layer up to the last exit).
    pub fn needs_confidence(&self, spec: &ExitClassifierSpec) -> bool {
        matches!(self, ExitClassifier::Mamba(_)) && spec.summary == SummaryInput::Confidence
    }

    /// Whether the classifier runs at layer `layer` (1-based) even where no exit sits.
    pub fn runs_at(&self, spec: &ExitClassifierSpec, layer: usize) -> bool {
        match self {
            ExitClassifier::Linear(_) => spec.exits.contains(&layer),
            ExitClassifier::Mamba(_) => layer <= spec.last_exit(),
        }
    }

    /// Training and evaluation over many tokens at once: `features[l]` and
    /// `confidence[l]` are layer `l + 1`'s classifier input `[n, f]` and confidence
    /// summary `[n, 5]` (only read by a confidence-summary Mamba classifier; pass an
    /// empty slice otherwise). Returns the logits `[n, 2]` at each exit position.
    pub fn forward_exits(
        &self,
        spec: &ExitClassifierSpec,
        features: &[Tensor<2>],
        confidence: &[Tensor<2>],
    ) -> Vec<Tensor<2>> {
        match self {
            ExitClassifier::Linear(linear) => spec
                .exits
                .iter()
                .zip(&linear.heads)
                .map(|(&e, head)| head.forward(features[e - 1].clone()))
                .collect(),
            ExitClassifier::Mamba(m) => {
                let inputs = match spec.summary {
                    SummaryInput::Hidden => &features[..spec.last_exit()],
                    SummaryInput::Confidence => &confidence[..spec.last_exit()],
                };
                let summaries: Vec<Tensor<2>> = inputs
                    .iter()
                    .map(|x| m.summary.forward(x.clone()))
                    .collect();
                let x = Tensor::stack(summaries, 1); // [n, L, d_s]
                let (y, _) = m.block.forward(x, None);
                let logits = m.out.forward(m.norm.forward(y)); // [n, L, 2]
                let n = logits.dims()[0];
                spec.exits
                    .iter()
                    .map(|&e| logits.clone().narrow(1, e - 1, 1).reshape([n, 2]))
                    .collect()
            }
        }
    }

    /// The state before the first layer of a token, for `rows` rows.
    pub fn start(&self, rows: usize, device: &Device) -> ClassifierState {
        ClassifierState {
            state: match self {
                ExitClassifier::Linear(_) => None,
                ExitClassifier::Mamba(m) => Some(LayerState::initial(rows, &m.block.mixer, device)),
            },
        }
    }

    /// Inference, one layer at a time: reads layer `layer`'s (1-based) input and
    /// summary and returns the logits `[rows, 2]` when `layer` is an exit position.
    /// Call it at every layer where [`ExitClassifier::runs_at`] is true.
    pub fn step(
        &self,
        spec: &ExitClassifierSpec,
        layer: usize,
        features: Tensor<2>,
        confidence: Option<Tensor<2>>,
        state: &mut ClassifierState,
    ) -> Option<Tensor<2>> {
        match self {
            ExitClassifier::Linear(linear) => spec
                .exits
                .iter()
                .position(|&e| e == layer)
                .map(|i| linear.heads[i].forward(features)),
            ExitClassifier::Mamba(m) => {
                let input = match spec.summary {
                    SummaryInput::Hidden => features,
                    SummaryInput::Confidence => {
                        confidence.expect("a confidence-summary classifier needs confidence")
                    }
                };
                let s = m.summary.forward(input);
                let st = state
                    .state
                    .as_mut()
                    .expect("a Mamba classifier has a state");
                let y = m.block.step(s, st);
                spec.exits
                    .contains(&layer)
                    .then(|| m.out.forward(m.norm.forward(y)))
            }
        }
    }

    /// FLOPs of [`ExitClassifier::step`] at `layer` for one row (0 where it does not
    /// run).
    pub fn step_flops(&self, spec: &ExitClassifierSpec, layer: usize) -> u64 {
        if !self.runs_at(spec, layer) {
            return 0;
        }
        match self {
            ExitClassifier::Linear(linear) => {
                let [f, _] = linear.heads[0].weight.dims();
                linear_flops(1, f as u64, 2) + 6
            }
            ExitClassifier::Mamba(m) => {
                let [input, d] = m.summary.weight.dims();
                let d = d as u64;
                let mut flops = linear_flops(1, input as u64, d) + m.block.step_flops(d);
                if spec.exits.contains(&layer) {
                    flops += 5 * d + linear_flops(1, d, 2) + 6;
                }
                flops
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use ponder_core::to_host;

    /// The Mamba classifier stepped layer by layer (inference) gives the logits of its
    /// scan over the whole depth (training), for both summaries; so does the linear one.
    #[test]
    fn stepping_the_depth_equals_the_scan() {
        let device = Device::default();
        device.seed(4);
        let (rows, f) = (5, 12);
        let features: Vec<Tensor<2>> = (0..4)
            .map(|_| Tensor::random([rows, f], Distribution::Normal(0.0, 1.0), &device))
            .collect();
        let confidence: Vec<Tensor<2>> = (0..4)
            .map(|_| {
                Tensor::random(
                    [rows, N_SUMMARY_CONFIDENCE],
                    Distribution::Uniform(0.0, 1.0),
                    &device,
                )
            })
            .collect();
        for spec in [
            ExitClassifierSpec::linear(vec![1, 3, 4], 1),
            ExitClassifierSpec::mamba(vec![1, 3, 4], 1, SummaryInput::Hidden),
            ExitClassifierSpec::mamba(vec![2, 4], 1, SummaryInput::Confidence),
        ] {
            let classifier = spec.init(f, &device);
            let scanned = classifier.forward_exits(&spec, &features, &confidence);
            let mut state = classifier.start(rows, &device);
            let mut stepped = Vec::new();
            for layer in 1..=spec.last_exit() {
                if classifier.runs_at(&spec, layer) {
                    let out = classifier.step(
                        &spec,
                        layer,
                        features[layer - 1].clone(),
                        Some(confidence[layer - 1].clone()),
                        &mut state,
                    );
                    assert_eq!(out.is_some(), spec.exits.contains(&layer));
                    stepped.extend(out);
                }
            }
            assert_eq!(scanned.len(), stepped.len());
            for (a, b) in scanned.into_iter().zip(stepped) {
                let (a, b) = (to_host(a), to_host(b));
                let diff = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
                assert!(diff < 1e-4, "{}: {diff}", spec.name());
            }
        }
    }
}
