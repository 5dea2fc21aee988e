//! Adaptive evaluation of a policy over a data set.

use std::time::Instant;

use burn::tensor::Device;
use ponder_core::{ExitPolicy, ExitStats, argmax, softmax, to_host};
use ponder_exits::ponder::{self, LastLayer};

use crate::classifier::MultiExitClassifier;
use crate::source::{Batch, ClassificationSource};

/// The result of evaluating one policy on one data set.
#[derive(Debug, Clone)]
pub struct EvalOutput {
    /// The policy's name.
    pub policy: String,
    /// Fraction of rows whose exited prediction is right.
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
    /// Exit layer (1-based) of each row.
    pub exit_layers: Vec<usize>,
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
    let mut exit_layers = Vec::new();
    let mut flops = Vec::new();
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
            confidences.push(softmax(row)[pred]);
        }
        exit_layers.extend(out.exit_layer);
        flops.extend(out.flops);
    }
    let n = predictions.len().max(1);
    let full_depth_flops = (full_depth_total / n as f64).round() as u64;
    EvalOutput {
        policy: policy.name(),
        accuracy: correct as f64 / n as f64,
        stats: ExitStats::new(&exit_layers, &flops, n_layers, full_depth_flops),
        wall_seconds: seconds,
        predictions,
        confidences,
        exit_layers,
    }
}

/// Accuracy of every exit on prepared `batches`, all layers run on all rows.
pub fn layer_accuracies(model: &MultiExitClassifier, batches: &[Batch]) -> LayerAccuracy {
    let n_layers = model.n_layers();
    let n_classes = model.heads.n_classes;
    let mut correct = vec![0usize; n_layers];
    let mut total = 0usize;
    // Σ over rows of Σ_n p_n·[right], and of Σ_n n·p_n
    let mut expected_correct = 0f64;
    let mut expected_layers = 0f64;
    let mut q_exit_correct = 0usize;
    for batch in batches {
        let out = model.forward_all(batch.input.clone());
        let p: Option<Vec<Vec<f32>>> =
            out.halting
                .iter()
                .cloned()
                .collect::<Option<Vec<_>>>()
                .map(|lambdas| {
                    ponder::exit_distribution(&lambdas, LastLayer::ForceHalt)
                        .into_iter()
                        .map(to_host)
                        .collect()
                });
        let rows = batch.targets.len();
        // the Q-exit layer of each row: the first with cdf > 0.5 (or the last)
        let mut q_exit_layer = vec![n_layers - 1; rows];
        if let Some(p) = &p {
            for (r, layer) in q_exit_layer.iter_mut().enumerate() {
                let mut cdf = 0f64;
                for (l, p_l) in p.iter().enumerate() {
                    cdf += p_l[r] as f64;
                    if cdf > 0.5 {
                        *layer = l;
                        break;
                    }
                }
            }
        }
        for (l, logits) in out.logits.into_iter().enumerate() {
            let logits = to_host(logits);
            for (r, &target) in batch.targets.iter().enumerate() {
                let right = argmax(&logits[r * n_classes..(r + 1) * n_classes]) == target;
                correct[l] += usize::from(right);
                if let Some(p) = &p {
                    expected_correct += f64::from(u8::from(right)) * p[l][r] as f64;
                    expected_layers += (l + 1) as f64 * p[l][r] as f64;
                    q_exit_correct += usize::from(right && q_exit_layer[r] == l);
                }
            }
        }
        total += rows;
    }
    let n = total.max(1) as f64;
    LayerAccuracy {
        accuracy: correct.into_iter().map(|c| c as f64 / n).collect(),
        exit_distribution_accuracy: model.halting.as_ref().map(|_| expected_correct / n),
        expected_depth: model.halting.as_ref().map(|_| expected_layers / n),
        q_exit_accuracy: model.halting.as_ref().map(|_| q_exit_correct as f64 / n),
    }
}
