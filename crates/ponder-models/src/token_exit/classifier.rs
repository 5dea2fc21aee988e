//! DYNAMAX's exit classifiers (Nogales, Gambella & Roveri 2025, arXiv:2504.20922): a
//! linear head per exit position, and a small Mamba over the layer axis. What a
//! classifier is (kind, exits, labels, sizes) is its [`ExitClassifierSpec`]
//! (`ponder-exits`); this module builds and runs the modules. They live here, not in
//! `ponder-exits`, because the Mamba classifier is built from `ponder-mamba`'s block.
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
use burn::tensor::{Device, Int, Tensor};
use ponder_core::linear_flops;
use ponder_exits::token::{ClassifierKind, ExitClassifierSpec, N_SUMMARY_CONFIDENCE, SummaryInput};
use ponder_mamba::{LayerState, MambaBlock, MambaConfig};

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

impl ExitClassifier {
    /// A freshly initialised classifier for a model whose classifier input is
    /// `feature_size` wide.
    pub fn new(spec: &ExitClassifierSpec, feature_size: usize, device: &Device) -> Self {
        match spec.kind {
            ClassifierKind::Linear => ExitClassifier::Linear(LinearExitClassifier {
                heads: spec
                    .exits
                    .iter()
                    .map(|_| LinearConfig::new(feature_size, 2).init(device))
                    .collect(),
            }),
            ClassifierKind::Mamba => {
                let input = match spec.summary {
                    SummaryInput::Hidden => feature_size,
                    SummaryInput::Confidence => N_SUMMARY_CONFIDENCE,
                };
                let config = MambaConfig::new(1, spec.d_summary, 1).with_d_state(spec.d_state);
                ExitClassifier::Mamba(MambaExitClassifier {
                    summary: LinearConfig::new(input, spec.d_summary).init(device),
                    block: config.init_block(device),
                    norm: RmsNormConfig::new(spec.d_summary).init(device),
                    out: LinearConfig::new(spec.d_summary, 2).init(device),
                })
            }
        }
    }

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
            let classifier = ExitClassifier::new(&spec, f, &device);
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
