//! DYNAMAX's exit classifiers trained on a frozen language model, and the metrics of
//! token-level early exit (DYNAMAX, Nogales, Gambella, Roveri 2025, arXiv:2504.20922, as
//! its reference code does it; CALM, Schuster et al. 2022, arXiv:2207.07061, for the
//! confidence rules and the state propagation of skipped layers).
//!
//! Training reads random windows of the training text, runs the frozen model over them
//! once (without autodiff), labels every token at every exit position with
//! [`agreement_labels`] (the final greedy token is in the top-k of that layer's
//! intermediate prediction, through the final norm and the shared head) and trains the
//! classifier with the depth-weighted two-class cross-entropy.

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use ponder_core::{PonderError, Result, SkipRule, TokenLm, to_host};
use ponder_data::LmCorpus;
use ponder_exits::token::{
    ExitClassifierSpec, agreement_labels, confidence_summary, depth_weighted_exit_loss,
    exit_probability,
};
use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;

mod classifier;
mod decode;

pub use classifier::{ClassifierState, ExitClassifier, LinearExitClassifier, MambaExitClassifier};
pub use decode::{Decoded, decode};

/// Hyper-parameters of [`fit_exit_classifier`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierTrainConfig {
    /// Optimisation steps.
    pub steps: usize,
    /// Windows per step.
    pub batch_size: usize,
    /// Tokens per window (every position is a labelled token).
    pub seq_len: usize,
    /// Learning rate (Adam, constant).
    pub learning_rate: f64,
    /// Validation windows (from the held-out text) for the exit-decision metrics.
    pub valid_windows: usize,
    /// Seed of the initialisation and of the windows.
    pub seed: u64,
}

impl Default for ClassifierTrainConfig {
    fn default() -> Self {
        Self {
            steps: 300,
            batch_size: 16,
            seq_len: 128,
            learning_rate: 2e-3,
            valid_windows: 32,
            seed: 42,
        }
    }
}

impl ClassifierTrainConfig {
    /// Checks every value, naming the first bad one (`classifier_train.*`).
    pub fn validate(&self) -> Result<()> {
        for (key, value) in [
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("seq_len", self.seq_len),
            ("valid_windows", self.valid_windows),
        ] {
            if value == 0 {
                return Err(PonderError::config(
                    format!("classifier_train.{key}"),
                    "must be at least 1",
                ));
            }
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(PonderError::config(
                "classifier_train.learning_rate",
                format!("{} is not a positive number", self.learning_rate),
            ));
        }
        Ok(())
    }
}

/// How well the exit decisions `P(exit) > 0.5` match the labels at one exit position
/// (what DYNAMAX logs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitDecisionMetrics {
    /// Exit position (1-based layer).
    pub layer: usize,
    /// Share of tokens labelled "exit" (the final token is in this layer's top-k).
    pub positive_rate: f64,
    /// Accuracy of the decision.
    pub accuracy: f64,
    /// Precision of "exit".
    pub precision: f64,
    /// Recall of "exit".
    pub recall: f64,
    /// F1 of "exit".
    pub f1: f64,
}

/// What [`fit_exit_classifier`] reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierReport {
    /// The classifier's name (`linear[k=15]`, ...).
    pub name: String,
    /// Its spec.
    pub spec: ExitClassifierSpec,
    /// Trainable parameters.
    pub n_params: usize,
    /// Mean training loss over the last tenth of the steps.
    pub final_loss: f64,
    /// Decision metrics per exit on held-out windows.
    pub valid: Vec<ExitDecisionMetrics>,
    /// Seconds of training.
    pub seconds: f64,
}

/// Labels, classifier inputs and confidence summaries of a batch of windows.
struct Labelled {
    features: Vec<Tensor<2>>,
    confidence: Vec<Tensor<2>>,
    labels: Vec<Tensor<1, Int>>,
}

fn ids_tensor(ids: &[u32], shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// Runs the frozen `lm` over `ids` `[b, t]` and labels every token at every layer up
/// to the classifier's last exit.
fn label<L: TokenLm>(
    lm: &L,
    spec: &ExitClassifierSpec,
    ids: Tensor<2, Int>,
    need_confidence: bool,
) -> Labelled {
    let [b, t] = ids.dims();
    let n = b * t;
    let layers = lm.sequence_layers(ids);
    let n_layers = lm.n_layers();
    let final_logits = lm.sequence_logits(layers.streams[n_layers - 1].clone());
    let vocab = final_logits.dims()[2];
    let final_argmax = final_logits.reshape([n, vocab]).argmax(1).reshape([n]);
    let mut features = Vec::new();
    let mut confidence = Vec::new();
    let mut labels = Vec::new();
    for l in 0..spec.last_exit() {
        let f = layers.features[l].clone();
        let width = f.dims()[2];
        features.push(f.reshape([n, width]));
        let is_exit = spec.exits.contains(&(l + 1));
        if is_exit || need_confidence {
            let logits = lm
                .sequence_logits(layers.streams[l].clone())
                .reshape([n, vocab]);
            if need_confidence {
                let previous = if l == 0 {
                    layers.input.clone()
                } else {
                    layers.streams[l - 1].clone()
                };
                let d = previous.dims()[2];
                confidence.push(confidence_summary(
                    logits.clone(),
                    previous.reshape([n, d]),
                    layers.streams[l].clone().reshape([n, d]),
                ));
            }
            if is_exit {
                labels.push(agreement_labels(logits, final_argmax.clone(), spec.top_k));
            }
        }
    }
    Labelled {
        features,
        confidence,
        labels,
    }
}

/// Trains an exit classifier `spec` on the frozen `lm` (on a plain device) with windows
/// of `corpus`'s training ids (characters or subword tokens), on `device` (an autodiff device); `on_step` gets each
/// step's number (1-based) and loss. Returns the classifier without autodiff and its
/// report.
pub fn fit_exit_classifier<L: TokenLm>(
    lm: &L,
    spec: &ExitClassifierSpec,
    corpus: &LmCorpus,
    config: &ClassifierTrainConfig,
    device: &Device,
    on_step: &mut dyn FnMut(usize, f64),
) -> Result<(ExitClassifier, ClassifierReport)> {
    config.validate()?;
    spec.validate(lm.n_layers(), lm.vocab_size(), "classifier")?;
    if let Some(max) = lm.max_len()
        && config.seq_len > max
    {
        return Err(PonderError::config(
            "classifier_train.seq_len",
            format!("{} exceeds the model's {max} positions", config.seq_len),
        ));
    }
    // The held-out windows of the decision metrics, checked before training.
    spread_windows(&corpus.valid.ids, config.seq_len, config.valid_windows)?;
    let lm_device = lm.device();
    device.seed(config.seed);
    let mut classifier = ExitClassifier::new(spec, lm.feature_size(), device);
    let need_confidence = classifier.needs_confidence(spec);
    let mut optim = AdamConfig::new().init();
    let start = Instant::now();
    let tail = (config.steps / 10).max(1);
    let mut tail_loss = 0.0;
    for step in 0..config.steps {
        let seed = config
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(step as u64);
        let windows = corpus
            .train_windows(config.batch_size, config.seq_len - 1, seed)
            .map_err(|e| PonderError::config("data", e.to_string()))?;
        let ids = ids_tensor(&windows, [config.batch_size, config.seq_len], &lm_device);
        let data = label(lm, spec, ids, need_confidence);
        let features: Vec<Tensor<2>> = data.features.into_iter().map(|f| f.autodiff()).collect();
        let confidence: Vec<Tensor<2>> =
            data.confidence.into_iter().map(|f| f.autodiff()).collect();
        let labels: Vec<Tensor<1, Int>> = data.labels.into_iter().map(|y| y.autodiff()).collect();
        let logits = classifier.forward_exits(spec, &features, &confidence);
        let loss = depth_weighted_exit_loss(&logits, &labels);
        let value = loss.clone().into_scalar::<f32>() as f64;
        if !value.is_finite() {
            return Err(PonderError::NonFinite {
                what: format!("exit classifier {} training loss", spec.name()),
                step,
                value,
            });
        }
        if step + tail >= config.steps {
            tail_loss += value / tail as f64;
        }
        on_step(step + 1, value);
        let grads = GradientsParams::from_grads(loss.backward(), &classifier);
        classifier = optim.step(config.learning_rate, classifier, grads);
    }
    let seconds = start.elapsed().as_secs_f64();
    let classifier = classifier.valid();
    let valid = decision_metrics(lm, &classifier, spec, corpus, config)?;
    let report = ClassifierReport {
        name: spec.name(),
        spec: spec.clone(),
        n_params: classifier.num_params(),
        final_loss: tail_loss,
        valid,
        seconds,
    };
    Ok((classifier, report))
}

/// Exit-decision metrics on windows spread over the held-out text.
fn decision_metrics<L: TokenLm>(
    lm: &L,
    classifier: &ExitClassifier,
    spec: &ExitClassifierSpec,
    corpus: &LmCorpus,
    config: &ClassifierTrainConfig,
) -> Result<Vec<ExitDecisionMetrics>> {
    let windows = spread_windows(&corpus.valid.ids, config.seq_len, config.valid_windows)?;
    let mut counts = vec![[0usize; 4]; spec.exits.len()]; // tp, fp, fn, tn
    for group in windows.chunks(config.batch_size) {
        let flat: Vec<u32> = group.iter().flat_map(|w| w.iter().copied()).collect();
        let ids = ids_tensor(&flat, [group.len(), config.seq_len], &lm.device());
        let data = label(lm, spec, ids, classifier.needs_confidence(spec));
        let logits = classifier.forward_exits(spec, &data.features, &data.confidence);
        for (i, (l, y)) in logits.into_iter().zip(data.labels).enumerate() {
            let p = to_host(exit_probability(l));
            let y = to_host(y.float());
            for (p, y) in p.iter().zip(&y) {
                let slot = match (*p > 0.5, *y > 0.5) {
                    (true, true) => 0,
                    (true, false) => 1,
                    (false, true) => 2,
                    (false, false) => 3,
                };
                counts[i][slot] += 1;
            }
        }
    }
    Ok(spec
        .exits
        .iter()
        .zip(counts)
        .map(|(&layer, [tp, fp, fneg, tn])| {
            let total = (tp + fp + fneg + tn).max(1) as f64;
            let precision = tp as f64 / (tp + fp).max(1) as f64;
            let recall = tp as f64 / (tp + fneg).max(1) as f64;
            ExitDecisionMetrics {
                layer,
                positive_rate: (tp + fneg) as f64 / total,
                accuracy: (tp + tn) as f64 / total,
                precision,
                recall,
                f1: if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                },
            }
        })
        .collect())
}

/// `count` disjoint windows of `len` tokens spread evenly over `text` (first at 0,
/// last at the end); an error when `text` is shorter than `count · len`.
pub fn spread_windows(text: &[u32], len: usize, count: usize) -> Result<Vec<&[u32]>> {
    if text.len() < len.saturating_mul(count) || count == 0 {
        return Err(PonderError::config(
            "data",
            format!(
                "{} held-out tokens cannot give {count} disjoint windows of {len}",
                text.len()
            ),
        ));
    }
    let span = text.len() - len;
    Ok((0..count)
        .map(|i| {
            let start = if count == 1 {
                0
            } else {
                i * span / (count - 1)
            };
            &text[start..start + len]
        })
        .collect())
}

/// Saves a classifier as `DIR/classifier.bpk` and its spec as `DIR/spec.json`.
pub fn save_exit_classifier(
    dir: &Path,
    classifier: &ExitClassifier,
    report: &ClassifierReport,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| PonderError::Io {
        action: "creating",
        path: dir.to_path_buf(),
        source,
    })?;
    let tmp = dir.join("classifier.tmp.bpk");
    classifier
        .clone()
        .save_file(&tmp)
        .map_err(|e| PonderError::Checkpoint {
            path: tmp.clone(),
            message: e.to_string(),
        })?;
    std::fs::rename(&tmp, dir.join("classifier.bpk")).map_err(|source| PonderError::Io {
        action: "renaming",
        path: tmp.clone(),
        source,
    })?;
    write_atomic(
        &dir.join("report.json"),
        &serde_json::to_vec_pretty(report).expect("a report serialises"),
    )
}

/// Loads what [`save_exit_classifier`] wrote, for a model with classifier inputs
/// `feature_size` wide; `None` when `DIR` holds no finished classifier of `spec`.
pub fn load_exit_classifier(
    dir: &Path,
    spec: &ExitClassifierSpec,
    feature_size: usize,
    device: &Device,
) -> Result<Option<(ExitClassifier, ClassifierReport)>> {
    let report_path = dir.join("report.json");
    let Ok(bytes) = std::fs::read(&report_path) else {
        return Ok(None);
    };
    let report: ClassifierReport =
        serde_json::from_slice(&bytes).map_err(|e| PonderError::Checkpoint {
            path: report_path.clone(),
            message: format!("not a classifier report: {e}"),
        })?;
    if &report.spec != spec {
        return Ok(None);
    }
    let path = dir.join("classifier.bpk");
    let classifier = ExitClassifier::new(spec, feature_size, device)
        .try_load_file(&path)
        .map_err(|e| PonderError::Checkpoint {
            path: path.clone(),
            message: e.to_string(),
        })?;
    Ok(Some((classifier, report)))
}

/// Compute, consistency and speed of one decoding configuration against full depth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenExitMetrics {
    /// Stepped tokens measured (all rows).
    pub tokens: usize,
    /// Mean layers run per token.
    pub mean_layers: f64,
    /// `1 − mean_layers / N`.
    pub layers_saved: f64,
    /// `1 − FLOPs / full-depth FLOPs` (measures, classifier and cache recomputation
    /// included).
    pub flops_saved: f64,
    /// DYNAMAX's speed-up `total / (total − skipped + penalty)` ([`dynamax_speedup`]), with
    /// the recompute penalty when the skip rule recomputes: DYNAMAX's own bookkeeping
    /// from exit layers, which counts the last layer as skipped even when it runs.
    pub dynamax_speedup: f64,
    /// Teacher-forced token consistency: fed the full model's continuation, the share of
    /// positions where the exiting decoder emits the full model's token.
    pub consistency: f64,
    /// Free-running agreement: the share of positions where free greedy decoding with
    /// exits emits the same token as full-depth greedy decoding.
    pub free_agreement: f64,
    /// Share of sequences whose whole free-running continuation equals full depth's.
    pub exact_match: f64,
    /// Bits per token (per character with a character vocabulary) of the held-out text
    /// with exits (teacher forcing); NaN when not measured.
    pub bpc: f64,
    /// Per-sequence teacher-forced inconsistency (1 − consistency of the row): the
    /// losses Learn-then-Test calibrates on.
    pub row_inconsistency: Vec<f64>,
    /// Wall-clock seconds of the free-running decoding.
    pub seconds: f64,
}

/// The constants of DYNAMAX's speed-up formula for one model and skip rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DynamaxConstants {
    /// Added to each exited token's skipped layers (1 for Mistral, 0 for Mamba).
    pub skip_offset: f64,
    /// The recompute penalty c per skipped layer, when the rule recomputes.
    pub penalty: Option<f64>,
}

impl DynamaxConstants {
    /// The model's constants under `rule` (the penalty only for
    /// [`SkipRule::Recompute`]).
    pub fn of<L: TokenLm>(lm: &L, rule: SkipRule) -> Self {
        Self {
            skip_offset: lm.dynamax_skip_offset(),
            penalty: (rule == SkipRule::Recompute).then(|| lm.dynamax_penalty()),
        }
    }
}

/// DYNAMAX's speed-up (its reference code's `main_eval.py`) from the exit layers (1-based;
/// N = no exit) of stepped tokens: `total = tokens·N`, `skipped = Σ (N − e + offset)`
/// and `penalty = Σ (N − e + 1)·c` over exited tokens, `total / (total − skipped +
/// penalty)`.
pub fn dynamax_speedup(exit_layers: &[usize], n_layers: usize, constants: DynamaxConstants) -> f64 {
    let n = n_layers as f64;
    let total = exit_layers.len() as f64 * n;
    let (mut skipped, mut pen) = (0.0, 0.0);
    for &e in exit_layers.iter().filter(|&&e| e < n_layers) {
        skipped += n - e as f64 + constants.skip_offset;
        if let Some(c) = constants.penalty {
            pen += (n - e as f64 + 1.0) * c;
        }
    }
    total / (total - skipped + pen)
}

/// Metrics of a configuration: `forced` decoded with the full model's continuation as
/// input, `free` decoded freely, `full` the full-depth free decoding, `text` (optional)
/// teacher-forced on the true text with its targets.
pub fn token_exit_metrics(
    n_layers: usize,
    dynamax: DynamaxConstants,
    full: &Decoded,
    forced: &Decoded,
    free: &Decoded,
    text: Option<&Decoded>,
) -> TokenExitMetrics {
    let rows = full.tokens.len();
    let mut row_inconsistency = Vec::with_capacity(rows);
    let (mut agree, mut free_agree, mut exact, mut count) = (0usize, 0usize, 0usize, 0usize);
    for r in 0..rows {
        let stepped = 1..full.tokens[r].len();
        let same = stepped
            .clone()
            .filter(|&s| forced.tokens[r][s] == full.tokens[r][s])
            .count();
        let n = stepped.len();
        row_inconsistency.push(1.0 - same as f64 / n.max(1) as f64);
        agree += same;
        free_agree += stepped
            .clone()
            .filter(|&s| free.tokens[r][s] == full.tokens[r][s])
            .count();
        exact += usize::from(free.tokens[r] == full.tokens[r]);
        count += n;
    }
    let layers: Vec<usize> = forced.layers_run.iter().flatten().copied().collect();
    let exits: Vec<usize> = forced.exit_layers.iter().flatten().copied().collect();
    let flops: u64 = forced.flops.iter().flatten().sum();
    let full_flops: u64 = forced.full_flops.iter().flatten().sum();
    let mean_layers = layers.iter().sum::<usize>() as f64 / layers.len().max(1) as f64;
    let bpc = text
        .and_then(|t| t.target_log_probs.as_ref())
        .map(|lp| {
            let all: Vec<f64> = lp.iter().flatten().copied().collect();
            -all.iter().sum::<f64>() / all.len().max(1) as f64 / std::f64::consts::LN_2
        })
        .unwrap_or(f64::NAN);
    TokenExitMetrics {
        tokens: count,
        mean_layers,
        layers_saved: 1.0 - mean_layers / n_layers as f64,
        flops_saved: 1.0 - flops as f64 / full_flops.max(1) as f64,
        dynamax_speedup: dynamax_speedup(&exits, n_layers, dynamax),
        consistency: agree as f64 / count.max(1) as f64,
        free_agreement: free_agree as f64 / count.max(1) as f64,
        exact_match: exact as f64 / rows.max(1) as f64,
        bpc,
        row_inconsistency,
        seconds: free.seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamax_speedup_follows_the_formula() {
        // 4 layers, tokens exiting at 1, 2 and one not exiting: total 12, skipped 3 + 2.
        let c = |skip_offset, penalty| DynamaxConstants {
            skip_offset,
            penalty,
        };
        assert!((dynamax_speedup(&[1, 2, 4], 4, c(0.0, None)) - 12.0 / 7.0).abs() < 1e-12);
        // with c = 0.5: penalty (4 + 3)·0.5 = 3.5
        assert!((dynamax_speedup(&[1, 2, 4], 4, c(0.0, Some(0.5))) - 12.0 / 10.5).abs() < 1e-12);
        // Mistral's +1 per exit: skipped 5 + 2
        assert!((dynamax_speedup(&[1, 2, 4], 4, c(1.0, None)) - 12.0 / 5.0).abs() < 1e-12);
        assert_eq!(dynamax_speedup(&[4, 4], 4, c(1.0, Some(0.5))), 1.0);
    }

    #[test]
    fn windows_spread_over_the_text() {
        let text: Vec<u32> = (0..100).collect();
        let w = spread_windows(&text, 10, 4).unwrap();
        assert_eq!(w[0][0], 0);
        assert_eq!(w[3][9], 99);
        assert_eq!(w[1][0], 30);
        assert!(spread_windows(&text, 200, 2).is_err());
        assert!(spread_windows(&text, 30, 4).is_err(), "would overlap");
        let w = spread_windows(&text, 25, 4).unwrap();
        assert!(w.windows(2).all(|p| p[0][24] < p[1][0]));
    }
}
