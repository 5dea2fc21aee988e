//! Training and evaluating the models of an experiment.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use ponder_core::ExitPolicy;
use ponder_exits::{NeverExit, Policy};
use ponder_models::{
    Batch, ClassificationSource, Method, MultiExitClassifier, MultiExitConfig, evaluate, fit,
    layer_accuracies, make_batches,
};
use serde::{Deserialize, Serialize};

use crate::config::Experiment;
use crate::data::Splits;
use crate::progress::TrainProgress;
use crate::run::{RunFolder, method_name};

/// One evaluated (model, policy) pair: a row of the comparison table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyResult {
    /// Training method of the model.
    pub method: String,
    /// Policy family (`max_prob`, `entropy`, `patience`, `fixed`, `full`, `oracle`).
    pub family: String,
    /// Policy with its parameter.
    pub policy: String,
    /// Test accuracy.
    pub accuracy: f64,
    /// Mean exit layer (1-based).
    pub mean_exit_layer: f64,
    /// `n_layers / mean_exit_layer`.
    pub layer_speedup: f64,
    /// Full-depth FLOPs over mean FLOPs spent (heads included).
    pub flop_speedup: f64,
    /// Measured wall-clock time of full-depth inference over this policy's.
    pub wall_speedup: f64,
    /// Seconds of inference over the test set.
    pub wall_seconds: f64,
    /// Exit-layer histogram (index 0 = layer 1).
    pub exit_histogram: Vec<u64>,
}

/// Everything measured about one trained model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelResult {
    /// Training method.
    pub method: String,
    /// Test accuracy of every exit with all layers run.
    pub test_layer_accuracy: Vec<f64>,
    /// Best validation metric and where it was reached.
    pub best_valid_metric: Option<f64>,
    /// Seconds spent training in this process (0 when the model was already trained).
    pub train_seconds: f64,
    /// One row per policy.
    pub policies: Vec<PolicyResult>,
}

/// The results of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareResults {
    /// Experiment name.
    pub experiment: String,
    /// Device the numbers were measured on.
    pub device: String,
    /// Number of test examples.
    pub n_test: usize,
    /// Number of layers.
    pub n_layers: usize,
    /// One entry per trained model.
    pub models: Vec<ModelResult>,
}

/// The model of `method` for this experiment (PABEE's per-layer heads; DeeBERT's
/// off-ramps also get a pooler each).
pub fn model_config(
    experiment: &Experiment,
    method: Method,
    n_classes: usize,
    vocab_size: usize,
) -> Result<MultiExitConfig> {
    let encoder = experiment.encoder_config(vocab_size.max(1), experiment.data.max_tokens)?;
    Ok(MultiExitConfig::new(encoder, n_classes)
        .with_pooler_per_head(method == Method::DeeBert)
        .with_head_dropout(experiment.model.head_dropout))
}

/// Trains the model of `method`, or resumes its training, or loads it when finished.
pub fn train_or_load<S: ClassificationSource>(
    experiment: &Experiment,
    method: Method,
    splits: &Splits<S>,
    run: &RunFolder,
    device: &Device,
) -> Result<(MultiExitClassifier, Option<f64>, f64)> {
    let config = experiment.train_config(method);
    let ad = device.clone().autodiff();
    ad.seed(config.seed);
    let model = model_config(experiment, method, splits.n_classes, splits.vocab_size)?.init(&ad);
    let files = run.checkpoints(method);
    let name = method_name(method);
    if files.has_last() {
        let state_done = files
            .load_state()
            .with_context(|| format!("reading the checkpoint of {name}"))?;
        if state_done.finished {
            let best = files
                .load_best(model.valid())
                .with_context(|| format!("loading the trained {name} model"))?;
            eprintln!(
                "{name:>12} already trained: loaded {}",
                files.best_model().display()
            );
            return Ok((best, state_done.best_metric, 0.0));
        }
    }
    let resume = files.has_last();
    let mut progress = TrainProgress::new(name, run.clone(), format!("models/{name}/metrics.json"));
    let start = Instant::now();
    let outcome = fit(
        model,
        &splits.train,
        &splits.valid,
        &config,
        &ad,
        Some(&files),
        resume,
        &mut progress,
    );
    progress.finish();
    let outcome = outcome.with_context(|| format!("training {name}"))?;
    if let Some(e) = progress.write_error {
        return Err(e.context("writing the metrics log"));
    }
    Ok((
        outcome.model,
        outcome.state.best_metric,
        start.elapsed().as_secs_f64(),
    ))
}

/// Evaluates every policy on one model over the prepared test batches.
pub fn evaluate_policies(
    method: Method,
    model: &MultiExitClassifier,
    batches: &[Batch],
    policies: &[Policy],
) -> Vec<PolicyResult> {
    let bar = ProgressBar::new(policies.len() as u64 + 1);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} policies {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("eval {}", method_name(method)));
    // warm-up: allocators and caches reach steady state before anything is timed
    bar.set_message("warm-up");
    let _ = evaluate(model, batches, &NeverExit);
    bar.inc(1);
    // the full-depth pass is the baseline of every wall-clock speed-up; a `full` row in
    // the list reuses it instead of running full depth again
    let full = evaluate(model, batches, &NeverExit);
    let mut rows = Vec::with_capacity(policies.len());
    for policy in policies {
        bar.set_message(policy.name());
        let out = match policy {
            Policy::Full(_) => full.clone(),
            _ => evaluate(model, batches, policy),
        };
        rows.push(PolicyResult {
            method: method_name(method).to_string(),
            family: policy.family().to_string(),
            policy: out.policy,
            accuracy: out.accuracy,
            mean_exit_layer: out.stats.mean_exit_layer,
            layer_speedup: out.stats.layer_speedup,
            flop_speedup: out.stats.flop_speedup,
            wall_speedup: full.wall_seconds / out.wall_seconds.max(1e-12),
            wall_seconds: out.wall_seconds,
            exit_histogram: out.stats.histogram,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    rows
}

/// Trains (or loads) every method's model and evaluates every policy on the test set.
pub fn compare<S: ClassificationSource>(
    experiment: &Experiment,
    splits: &Splits<S>,
    run: &RunFolder,
    device: &Device,
    device_name: &str,
    methods: &[Method],
) -> Result<CompareResults> {
    if methods.is_empty() {
        bail!("no method to compare");
    }
    let policies = experiment.policies()?;
    let test_batches = make_batches(&splits.test, experiment.compare.batch_size, device);
    let mut models = Vec::new();
    for &method in methods {
        let (model, best, seconds) = train_or_load(experiment, method, splits, run, device)?;
        let model = model.valid();
        let layers = layer_accuracies(&model, &test_batches).accuracy;
        let rows = evaluate_policies(method, &model, &test_batches, &policies);
        models.push(ModelResult {
            method: method_name(method).to_string(),
            test_layer_accuracy: layers,
            best_valid_metric: best,
            train_seconds: seconds,
            policies: rows,
        });
    }
    Ok(CompareResults {
        experiment: experiment.name.clone(),
        device: device_name.to_string(),
        n_test: splits.test.len(),
        n_layers: experiment.model.n_layers,
        models,
    })
}
