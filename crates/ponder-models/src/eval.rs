//! Adaptive evaluation of a policy over a data set.

use std::time::Instant;

use burn::tensor::Device;
use burn::tensor::Tensor;
use ponder_core::{ExitPolicy, ExitSignals, ExitStats, argmax, softmax, to_host};
use ponder_data::stats;
use ponder_exits::ponder::{self, LastLayer};
use ponder_exits::{LearnedGate, QExit};

use crate::classifier::MultiExitClassifier;
use crate::source::{Batch, ClassificationSource};

/// The result of evaluating one policy on one data set.
#[derive(Debug, Clone)]
pub struct EvalOutput {
    /// The policy's name.
    pub policy: String,
    /// Fraction of rows whose exited prediction is right; for a regression task, the
    /// Pearson correlation of the exited outputs with the scores ([`correlation`]).
    pub accuracy: f64,
    /// Exit statistics (mean exit layer, speed-ups, histogram).
    pub stats: ExitStats,
    /// Seconds spent in adaptive inference (the runner and reading its logits back),
    /// summed over batches; batch construction is excluded.
    pub wall_seconds: f64,
    /// Predicted class of each row.
    pub predictions: Vec<usize>,
    /// Probability of the predicted class of each row.
    pub confidences: Vec<f32>,
    /// Class probabilities of each row's output (softmax), row-major
    /// `[rows, n_classes]`: what calibration and conformal sets are measured on.
    pub probs: Vec<f32>,
    /// The true class of each row.
    pub targets: Vec<usize>,
    /// Exit layer (1-based) of each row.
    pub exit_layers: Vec<usize>,
    /// Regression tasks: the exited output of each row (empty for classification).
    pub values: Vec<f32>,
    /// Regression tasks: the true score of each row (empty for classification).
    pub scores: Vec<f32>,
}

/// Pearson correlation ([`stats::pearson`]) of regression outputs with their scores, 0
/// where it is undefined (a constant prediction, which tells nothing about the scores;
/// fewer than two rows; non-finite outputs): the "accuracy" of a regression exit, what
/// checkpoints are chosen on.
pub fn correlation(values: &[f32], scores: &[f32]) -> f64 {
    let x: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    let y: Vec<f64> = scores.iter().map(|&v| v as f64).collect();
    stats::pearson(&x, &y).unwrap_or(0.0)
}

/// Accuracy of every exit when all layers run (one forward pass per batch).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerAccuracy {
    /// `accuracy[l]`: accuracy of the head after layer `l + 1`.
    pub accuracy: Vec<f64>,
    /// With a halting head: the accuracy under the exit distribution (λ_N = 1),
    /// `mean_b Σ_n p_{n,b}·[exit n right on b]`: the mean accuracy of sampling.
    pub exit_distribution_accuracy: Option<f64>,
    /// With a halting head: the mean expected exit layer `mean_b Σ_n n·p_{n,b}`.
    pub expected_depth: Option<f64>,
    /// With a halting head: the accuracy of Q-exit at q = 0.5 (PALBERT's default),
    /// decided from the same pass.
    pub q_exit_accuracy: Option<f64>,
    /// With gates: the accuracy under JEI-DNN's exit rule (a_l ≥ 0.5), decided from the
    /// same pass.
    pub gate_accuracy: Option<f64>,
    /// With gates: the mean exit layer (1-based) under that rule.
    pub gate_mean_exit_layer: Option<f64>,
}

/// Cuts `source` into batches on `device` (done once, outside any timed region).
pub fn make_batches<S: ClassificationSource>(
    source: &S,
    batch_size: usize,
    device: &Device,
) -> Vec<Batch> {
    assert!(batch_size > 0, "batch size must be positive");
    let positions: Vec<usize> = (0..source.len()).collect();
    positions
        .chunks(batch_size)
        .map(|chunk| source.batch(chunk, device))
        .collect()
}

/// Evaluates `policy` on prepared `batches` through the batched adaptive runner.
pub fn evaluate<P: ExitPolicy>(
    model: &MultiExitClassifier,
    batches: &[Batch],
    policy: &P,
) -> EvalOutput {
    let n_layers = model.n_layers();
    let n_classes = model.heads.n_classes;
    let mut predictions = Vec::new();
    let mut confidences = Vec::new();
    let mut probs = Vec::new();
    let mut targets = Vec::new();
    let mut exit_layers = Vec::new();
    let mut flops = Vec::new();
    let mut values = Vec::new();
    let mut scores = Vec::new();
    let mut correct = 0usize;
    let mut seconds = 0.0;
    // full-depth FLOPs of every row, from its own batch's (padded) length
    let mut full_depth_total = 0f64;
    for batch in batches {
        let start = Instant::now();
        let out = model.adaptive(batch.input.clone(), policy, Some(&batch.targets));
        let logits = to_host(out.logits);
        seconds += start.elapsed().as_secs_f64();
        full_depth_total += out.full_depth_flops as f64 * batch.targets.len() as f64;
        for (r, &target) in batch.targets.iter().enumerate() {
            let row = &logits[r * n_classes..(r + 1) * n_classes];
            let pred = argmax(row);
            correct += usize::from(pred == target);
            predictions.push(pred);
            let p = softmax(row);
            confidences.push(p[pred]);
            probs.extend(p);
        }
        targets.extend_from_slice(&batch.targets);
        if let Some(s) = &batch.scores {
            values.extend_from_slice(&logits);
            scores.extend_from_slice(s);
        }
        exit_layers.extend(out.exit_layer);
        flops.extend(out.flops);
    }
    let n = predictions.len().max(1);
    let full_depth_flops = (full_depth_total / n as f64).round() as u64;
    let accuracy = if scores.is_empty() {
        correct as f64 / n as f64
    } else {
        correlation(&values, &scores)
    };
    EvalOutput {
        policy: policy.name(),
        accuracy,
        stats: ExitStats::new(&exit_layers, &flops, n_layers, full_depth_flops),
        wall_seconds: seconds,
        predictions,
        confidences,
        probs,
        targets,
        exit_layers,
        values,
        scores,
    }
}

/// Every exit's class probabilities for every row, all layers run (one forward pass
/// per batch), with the gate values of models with JEI-DNN's gates.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerOutputs {
    /// `probs[l]`: softmax of exit `l`'s logits, row-major `[rows, n_classes]`.
    pub probs: Vec<Vec<f32>>,
    /// With gates: `gates[l][row]`, the value of gate `l` (one per early exit).
    pub gates: Option<Vec<Vec<f32>>>,
    /// The true class of each row.
    pub targets: Vec<usize>,
    /// Number of classes.
    pub n_classes: usize,
}

impl LayerOutputs {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

/// Every exit's probabilities (and gate values) on prepared `batches`.
pub fn layer_outputs(model: &MultiExitClassifier, batches: &[Batch]) -> LayerOutputs {
    let n_layers = model.n_layers();
    let n_classes = model.heads.n_classes;
    let mut probs = vec![Vec::new(); n_layers];
    let mut gates = model.gates.as_ref().map(|g| vec![Vec::new(); g.n_gates()]);
    let mut targets = Vec::new();
    for batch in batches {
        let out = model.forward_all(batch.input.clone());
        for (l, logits) in out.logits.into_iter().enumerate() {
            let host = to_host(logits);
            for row in host.chunks(n_classes) {
                probs[l].extend(softmax(row));
            }
        }
        if let Some(gates) = &mut gates {
            for (l, g) in out.halting.into_iter().flatten().enumerate() {
                gates[l].extend(to_host(g));
            }
        }
        targets.extend_from_slice(&batch.targets);
    }
    LayerOutputs {
        probs,
        gates,
        targets,
        n_classes,
    }
}

/// Accuracy of every exit on prepared `batches`, all layers run on all rows; for a
/// regression task, every exit's [`correlation`] with the scores.
pub fn layer_accuracies(model: &MultiExitClassifier, batches: &[Batch]) -> LayerAccuracy {
    let regression = batches.iter().any(|b| b.scores.is_some());
    let mut outputs = vec![Vec::new(); model.n_layers()];
    let mut scores = Vec::new();
    let mut correct = vec![0usize; model.n_layers()];
    let mut tally = HaltingTally::default();
    let mut gate_tally = RuleTally::default();
    let gate_rule = LearnedGate::new(0.5).unwrap_or_else(|e| unreachable!("{e}"));
    for batch in batches {
        let out = model.forward_all(batch.input.clone());
        let logits: Vec<Vec<f32>> = out.logits.into_iter().map(to_host).collect();
        for (l, layer) in logits.iter().enumerate() {
            if regression {
                outputs[l].extend_from_slice(layer);
            } else {
                correct[l] += right_rows(layer, &batch.targets).filter(|&r| r).count();
            }
        }
        if let Some(s) = &batch.scores {
            scores.extend_from_slice(s);
        }
        if model.gates.is_some() {
            let gates: Vec<Option<Vec<f32>>> =
                out.halting.into_iter().map(|g| g.map(to_host)).collect();
            gate_tally.add(&gate_rule, &logits, &gates, &batch.targets);
        } else if let Some(lambdas) = out.halting.into_iter().collect::<Option<Vec<_>>>() {
            tally.add(&logits, &lambdas, &batch.targets);
        }
    }
    let n = batches
        .iter()
        .map(|b| b.targets.len())
        .sum::<usize>()
        .max(1) as f64;
    let halting = model.halting.as_ref().map(|_| tally);
    let gated = model.gates.as_ref().map(|_| gate_tally);
    LayerAccuracy {
        accuracy: if regression {
            outputs.iter().map(|o| correlation(o, &scores)).collect()
        } else {
            correct.into_iter().map(|c| c as f64 / n).collect()
        },
        exit_distribution_accuracy: halting.as_ref().map(HaltingTally::distribution_accuracy),
        expected_depth: halting.as_ref().map(HaltingTally::expected_depth),
        q_exit_accuracy: halting.as_ref().map(HaltingTally::q_exit_accuracy),
        gate_accuracy: gated.as_ref().map(RuleTally::accuracy),
        gate_mean_exit_layer: gated.as_ref().map(RuleTally::mean_exit_layer),
    }
}

/// An exit policy decided on the host from an all-layers pass, as the runner would
/// decide it (every row exits at the last layer at the latest): its accuracy and mean
/// exit layer. Q-exit at 0.5 for halting models, JEI-DNN's gate rule for gated ones.
#[derive(Debug, Clone, Default)]
pub(crate) struct RuleTally {
    rows: usize,
    correct: usize,
    exit_layers: usize,
}

impl RuleTally {
    /// Adds a batch: every layer's logits on the host (row-major) and, per layer, the
    /// heads' exit signal (λ or a gate value) when there is one.
    fn add<P: ExitPolicy>(
        &mut self,
        policy: &P,
        logits: &[Vec<f32>],
        signals: &[Option<Vec<f32>>],
        targets: &[usize],
    ) {
        let n_layers = logits.len();
        let n_classes = logits[0].len() / targets.len().max(1);
        let mut carry = policy.start(targets.len());
        let mut exited = vec![false; targets.len()];
        for (l, layer) in logits.iter().enumerate() {
            let exits = if l + 1 == n_layers {
                vec![true; targets.len()]
            } else {
                let mut s = ExitSignals::new(l, n_layers, n_classes, layer);
                if let Some(signal) = signals.get(l).and_then(Option::as_deref) {
                    s = s.with_halting(signal);
                }
                policy.decide(&s, &mut carry)
            };
            for (r, right) in right_rows(layer, targets).enumerate() {
                if !exited[r] && exits[r] {
                    exited[r] = true;
                    self.correct += usize::from(right);
                    self.exit_layers += l + 1;
                }
            }
        }
        self.rows += targets.len();
    }

    fn accuracy(&self) -> f64 {
        self.correct as f64 / self.rows.max(1) as f64
    }

    fn mean_exit_layer(&self) -> f64 {
        self.exit_layers as f64 / self.rows.max(1) as f64
    }
}

/// Whether each row's argmax (rows of `logits`, row-major) is its target.
fn right_rows<'a>(logits: &'a [f32], targets: &'a [usize]) -> impl Iterator<Item = bool> + 'a {
    let n_classes = logits.len() / targets.len().max(1);
    targets
        .iter()
        .enumerate()
        .map(move |(r, &t)| argmax(&logits[r * n_classes..(r + 1) * n_classes]) == t)
}

/// Running sums over the rows of models with a halting head, all layers run: accuracy
/// and depth under the exit distribution (λ_N = 1), and the accuracy of Q-exit at
/// q = 0.5 decided by [`QExit`] itself.
#[derive(Debug, Clone, Default)]
pub(crate) struct HaltingTally {
    rows: usize,
    /// Σ_rows Σ_n p_n·[exit n right]
    expected_correct: f64,
    /// Σ_rows Σ_n n·p_n
    expected_layers: f64,
    q_exit: RuleTally,
}

impl HaltingTally {
    /// Adds a batch: every layer's logits on the host (row-major), every layer's λ.
    pub(crate) fn add(&mut self, logits: &[Vec<f32>], lambdas: &[Tensor<1>], targets: &[usize]) {
        let p: Vec<Vec<f32>> = ponder::exit_distribution(lambdas, LastLayer::ForceHalt)
            .into_iter()
            .map(to_host)
            .collect();
        for (l, layer) in logits.iter().enumerate() {
            for (r, right) in right_rows(layer, targets).enumerate() {
                self.expected_correct += f64::from(u8::from(right)) * p[l][r] as f64;
                self.expected_layers += (l + 1) as f64 * p[l][r] as f64;
            }
        }
        let lambdas: Vec<Option<Vec<f32>>> =
            lambdas.iter().map(|l| Some(to_host(l.clone()))).collect();
        let q_exit = QExit::new(0.5).unwrap_or_else(|e| unreachable!("{e}"));
        self.q_exit.add(&q_exit, logits, &lambdas, targets);
        self.rows += targets.len();
    }

    fn n(&self) -> f64 {
        self.rows.max(1) as f64
    }

    /// Mean over rows of `Σ_n p_n·[exit n right]`.
    pub(crate) fn distribution_accuracy(&self) -> f64 {
        self.expected_correct / self.n()
    }

    /// Mean over rows of `Σ_n n·p_n`.
    pub(crate) fn expected_depth(&self) -> f64 {
        self.expected_layers / self.n()
    }

    /// Accuracy of Q-exit at q = 0.5.
    pub(crate) fn q_exit_accuracy(&self) -> f64 {
        self.q_exit.accuracy()
    }
}
