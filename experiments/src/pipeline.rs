//! Training and evaluating the models of an experiment.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use ponder_core::{ExitPolicy, LayerwiseBackbone};
use ponder_data::{GlueScore, GlueTask, glue_classification_score, glue_regression_score};
use ponder_exits::{HaltingHeadConfig, NeverExit, Policy, PonderSample};
use ponder_models::{
    Batch, ClassificationSource, EvalOutput, GateData, GateReport, HaltingOptimum,
    JEI_ALTERNATION_STAGE, LayerAccuracy, Method, MultiExitClassifier, MultiExitConfig, evaluate,
    fit, gate_report, halting_optimum, layer_accuracies, layer_outputs, make_batches, refit_gates,
};
use serde::{Deserialize, Serialize};

use crate::calibrate::{
    CalibrationResult, ConformalResult, ModelCalibration, PolicyOutputs, PosteriorResult,
    policy_calibration, posterior_result,
};
use crate::config::{BackboneKind, Experiment};
use crate::data::Splits;
use crate::progress::TrainProgress;
use crate::run::{ModelKind, RunFolder};

/// One evaluated (model, policy) pair: a row of the comparison table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyResult {
    /// Training method of the model.
    pub method: String,
    /// Policy family (`max_prob`, `entropy`, `patience`, `fixed`, `full`, `oracle`).
    pub family: String,
    /// Policy with its parameter.
    pub policy: String,
    /// Test accuracy (regression tasks: the Pearson correlation of the exited outputs
    /// with the scores).
    pub accuracy: f64,
    /// GLUE: the task's official scores (F1, Matthews, Pearson and Spearman, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_score: Option<GlueScore>,
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
    /// Calibration of the outputs and conformal sets (calibrated on the validation
    /// split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationResult>,
}

/// Everything measured about one trained model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelResult {
    /// Training method, prefixed by the backbone when it is not the transformer
    /// (`mamba/pabee`).
    pub method: String,
    /// Backbone (`transformer`, `mamba`).
    #[serde(default = "default_backbone")]
    pub backbone: String,
    /// The model's folder under `models/` (empty in results written before it was
    /// recorded).
    #[serde(default)]
    pub name: String,
    /// Trainable parameters of the model (backbone and heads).
    #[serde(default)]
    pub n_params: usize,
    /// Training seed.
    #[serde(default)]
    pub seed: u64,
    /// Test accuracy of every exit with all layers run.
    pub test_layer_accuracy: Vec<f64>,
    /// With a halting head: test accuracy under the exit distribution (λ_N = 1), the
    /// mean accuracy of sampling.
    #[serde(default)]
    pub test_exit_distribution_accuracy: Option<f64>,
    /// With a halting head: the mean expected exit layer on the test set.
    #[serde(default)]
    pub test_expected_depth: Option<f64>,
    /// With a halting head: how much each example's exit layer varies over repeated
    /// evaluations (`compare.repeats`).
    #[serde(default)]
    pub exit_spread: Vec<SpreadResult>,
    /// Best validation metric and where it was reached.
    pub best_valid_metric: Option<f64>,
    /// Seconds spent training in this process (0 when the model was already trained).
    pub train_seconds: f64,
    /// One row per policy.
    pub policies: Vec<PolicyResult>,
    /// With JEI-DNN's gates: the posterior `Σ_l P_l·p_l` (every exit computed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posterior: Option<PosteriorResult>,
    /// With a halting head: the learned exit distribution on the test set against the
    /// per-row optimum of the PonderNet loss it was trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halting_optimum: Option<HaltingOptimum>,
    /// With JEI-DNN's gates and `compare.jei_refit`: each gate's weights, targets and
    /// objective on the training split (for a `+refit` model: of the refitted gates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<GateReport>,
}

/// Repeated evaluations of one policy: the spread of each example's exit layer
/// (PALBERT's argument: Q-exit is deterministic, sampling is not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpreadResult {
    /// The policy (for sampling: the first seed's name; seeds 0, 1, … were used).
    pub policy: String,
    /// Number of evaluations.
    pub repeats: usize,
    /// Mean over examples of the standard deviation of the exit layer across repeats.
    pub mean_exit_layer_std: f64,
    /// Largest such standard deviation.
    pub max_exit_layer_std: f64,
    /// Fraction of examples whose exit layer is not the same in every repeat.
    pub varying_fraction: f64,
    /// Accuracy of each repeat.
    pub accuracies: Vec<f64>,
    /// Mean exit layer of each repeat.
    pub mean_exit_layers: Vec<f64>,
}

/// One (method, policy) over every seed of a run: mean ± standard deviation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedSummary {
    /// Training method.
    pub method: String,
    /// Policy.
    pub policy: String,
    /// Policy family.
    pub family: String,
    /// Number of seeds.
    pub n_seeds: usize,
    /// Mean test accuracy.
    pub accuracy_mean: f64,
    /// Standard deviation of the test accuracy over seeds (n − 1 denominator).
    pub accuracy_std: f64,
    /// GLUE: the task's single number ([`GlueScore::primary`]): mean, std over seeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_metric: Option<(f64, f64)>,
    /// Mean of the mean exit layer.
    pub mean_exit_layer_mean: f64,
    /// Its standard deviation over seeds.
    pub mean_exit_layer_std: f64,
    /// Mean FLOP speed-up.
    pub flop_speedup_mean: f64,
    /// Mean wall-clock speed-up.
    pub wall_speedup_mean: f64,
    /// Calibration over seeds (when measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationSummary>,
}

/// Calibration of one (method, policy) over seeds: mean ± std.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationSummary {
    /// ECE with 15 equal-mass bins: mean, std.
    pub ece: (f64, f64),
    /// ECE after per-exit temperature scaling: mean, std (when measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ece_scaled: Option<(f64, f64)>,
    /// NLL: mean, std.
    pub nll: (f64, f64),
    /// Brier: mean, std.
    pub brier: (f64, f64),
    /// Every conformal predictor: coverage and mean set size, mean and std over seeds.
    pub conformal: Vec<ConformalSummary>,
}

/// One conformal predictor over seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConformalSummary {
    /// Miscoverage level α.
    pub alpha: f64,
    /// `lac` or `aps`.
    pub score: String,
    /// `split` or `per_exit`.
    pub variant: String,
    /// Coverage: mean, std.
    pub coverage: (f64, f64),
    /// Mean set size: mean, std.
    pub mean_set_size: (f64, f64),
}

impl CalibrationSummary {
    /// The summary of `results` (one per seed), or `None` when any is missing.
    pub fn of(results: &[Option<&CalibrationResult>]) -> Option<Self> {
        let results: Vec<&CalibrationResult> = results.iter().copied().collect::<Option<_>>()?;
        let first = results.first()?;
        let stat = |f: &dyn Fn(&CalibrationResult) -> f64| {
            mean_std(&results.iter().map(|r| f(r)).collect::<Vec<_>>())
        };
        Some(Self {
            ece: stat(&|r| r.ece),
            ece_scaled: results
                .iter()
                .map(|r| r.ece_scaled)
                .collect::<Option<Vec<f64>>>()
                .map(|v| mean_std(&v)),
            nll: stat(&|r| r.nll),
            brier: stat(&|r| r.brier),
            conformal: first
                .conformal
                .iter()
                .map(|c| {
                    let pick = |f: &dyn Fn(&ConformalResult) -> f64| {
                        mean_std(
                            &results
                                .iter()
                                .filter_map(|r| r.conformal(&c.score, &c.variant, c.alpha))
                                .map(f)
                                .collect::<Vec<_>>(),
                        )
                    };
                    ConformalSummary {
                        alpha: c.alpha,
                        score: c.score.clone(),
                        variant: c.variant.clone(),
                        coverage: pick(&|x| x.coverage),
                        mean_set_size: pick(&|x| x.mean_set_size),
                    }
                })
                .collect(),
        })
    }

    /// The summary of (`score`, `variant`, `alpha`), if measured.
    pub fn conformal(&self, score: &str, variant: &str, alpha: f64) -> Option<&ConformalSummary> {
        self.conformal
            .iter()
            .find(|c| c.score == score && c.variant == variant && c.alpha == alpha)
    }
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
    /// GLUE: the task (`MRPC`, `STS-B`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// A regression task (STS-B): "accuracy" columns hold Pearson correlations.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub regression: bool,
    /// One entry per trained model (per method and seed).
    pub models: Vec<ModelResult>,
    /// With several seeds: every (method, policy) as mean ± std over seeds.
    #[serde(default)]
    pub seed_summary: Vec<SeedSummary>,
}

fn default_backbone() -> String {
    BackboneKind::Transformer.name().to_string()
}

impl CompareResults {
    /// The results of `models` (with the mean ± std over seeds when the experiment
    /// has `compare.seeds`).
    pub fn new(
        experiment: &Experiment,
        device_name: &str,
        n_test: usize,
        models: Vec<ModelResult>,
    ) -> Self {
        Self {
            experiment: experiment.name.clone(),
            device: device_name.to_string(),
            n_test,
            n_layers: experiment.model.n_layers,
            task: experiment
                .glue_task()
                .ok()
                .flatten()
                .map(|t| t.name().to_string()),
            regression: experiment.is_regression(),
            seed_summary: if experiment.compare.seeds.is_empty() {
                Vec::new()
            } else {
                seed_summary(&models)
            },
            models,
        }
    }
}

impl ModelResult {
    /// The result of one model from its all-layers test pass, without policy rows or
    /// exit spread yet.
    pub fn new(
        kind: ModelKind,
        name: String,
        seed: u64,
        n_params: usize,
        layers: LayerAccuracy,
        best_valid_metric: Option<f64>,
        train_seconds: f64,
    ) -> Self {
        Self {
            method: kind.label(),
            backbone: kind.backbone.name().to_string(),
            name,
            n_params,
            seed,
            test_layer_accuracy: layers.accuracy,
            test_exit_distribution_accuracy: layers.exit_distribution_accuracy,
            test_expected_depth: layers.expected_depth,
            exit_spread: Vec::new(),
            best_valid_metric,
            train_seconds,
            policies: Vec::new(),
            posterior: None,
            halting_optimum: None,
            gates: None,
        }
    }
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Aggregates the models of each method over seeds, one row per (method, policy), in
/// the order they first appear.
pub fn seed_summary(models: &[ModelResult]) -> Vec<SeedSummary> {
    let mut keys: Vec<(String, String, String)> = Vec::new();
    for m in models {
        for r in &m.policies {
            let key = (m.method.clone(), r.policy.clone(), r.family.clone());
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys.into_iter()
        .map(|(method, policy, family)| {
            let rows: Vec<&PolicyResult> = models
                .iter()
                .filter(|m| m.method == method)
                .flat_map(|m| m.policies.iter().filter(|r| r.policy == policy))
                .collect();
            let pick = |f: fn(&PolicyResult) -> f64| {
                mean_std(&rows.iter().map(|r| f(r)).collect::<Vec<_>>())
            };
            let (accuracy_mean, accuracy_std) = pick(|r| r.accuracy);
            let task_metric = rows
                .iter()
                .map(|r| r.task_score.as_ref().map(GlueScore::primary))
                .collect::<Option<Vec<f64>>>()
                .map(|v| mean_std(&v));
            let (mean_exit_layer_mean, mean_exit_layer_std) = pick(|r| r.mean_exit_layer);
            SeedSummary {
                method,
                policy,
                family,
                n_seeds: rows.len(),
                accuracy_mean,
                accuracy_std,
                task_metric,
                mean_exit_layer_mean,
                mean_exit_layer_std,
                flop_speedup_mean: pick(|r| r.flop_speedup).0,
                wall_speedup_mean: pick(|r| r.wall_speedup).0,
                calibration: CalibrationSummary::of(
                    &rows
                        .iter()
                        .map(|r| r.calibration.as_ref())
                        .collect::<Vec<_>>(),
                ),
            }
        })
        .collect()
}

/// The model of `method` for this experiment: PABEE's per-layer heads; DeeBERT's
/// off-ramps also get a pooler each (`model.offramp_pooler`: their own on the layer's
/// pre-pooler features, or stacked on the main pooler's output); PALBERT has one head
/// shared by every layer and
/// the Lambda layer (with the head dropout on its input); PonderNet one shared head and
/// a linear λ head; JEI-DNN per-layer heads and a gate per early exit.
pub fn model_config(
    experiment: &Experiment,
    method: Method,
    n_classes: usize,
    vocab_size: usize,
) -> Result<MultiExitConfig> {
    let backbone = experiment.backbone_config(vocab_size.max(1), experiment.data.max_tokens)?;
    if matches!(method, Method::DeeBert | Method::JeiDnn) && backbone.n_layers() < 2 {
        bail!(
            "invalid value for `model.n_layers`: {} trains internal exits, so it needs at least 2 layers, not {}",
            experiment.model_kind(method).label(),
            backbone.n_layers()
        );
    }
    if method == Method::JeiDnn && n_classes < 2 {
        bail!(
            "jei_dnn's gates read the confidence of a prediction over at least 2 classes; the data has {n_classes}"
        );
    }
    let shared_head = experiment.model.shared_head.unwrap_or(method.has_halting());
    if shared_head && matches!(method, Method::DeeBert | Method::JeiDnn) {
        bail!(
            "invalid value for `model.shared_head`: {} trains its early exits' heads apart from the final one, so they cannot be one shared head",
            experiment.model_kind(method).label()
        );
    }
    let d = backbone.d_model();
    let halting = match method {
        Method::Palbert => {
            Some(HaltingHeadConfig::palbert(d).with_dropout(experiment.model.head_dropout))
        }
        Method::PonderNet => Some(HaltingHeadConfig::new(d)),
        Method::Pabee | Method::DeeBert | Method::FinalOnly | Method::JeiDnn => None,
    };
    Ok(MultiExitConfig::new(backbone, n_classes)
        .with_offramp_pooler((method == Method::DeeBert).then(|| experiment.offramp_pooler()))
        .with_shared_head(shared_head)
        .with_halting(halting)
        .with_gates(method.has_gates())
        .with_head_dropout(experiment.model.head_dropout))
}

/// Replaces `model`'s encoder by `model.pretrained`'s, when the experiment names one;
/// the heads, and a pooler the checkpoint lacks, stay freshly initialised. The
/// checkpoint's pooler is the main pooler (the final exit's): DeeBERT's separate
/// off-ramp poolers are copies of it once stage 1 has fine-tuned it. Only a model that
/// starts training needs it: a trained or resumed one loads its own checkpoint.
pub fn load_pretrained(
    experiment: &Experiment,
    model: &mut MultiExitClassifier,
    vocab_size: usize,
    device: &Device,
) -> Result<()> {
    let Some(dir) = &experiment.model.pretrained else {
        return Ok(());
    };
    let hf = ponder_transformer::HfConfig::read(dir.join("config.json"))?;
    let file = ponder_core::SafeTensors::open(dir.join("model.safetensors"))?;
    let config = experiment.pretrained_config(dir, Some(vocab_size), experiment.data.max_tokens)?;
    let loaded = ponder_transformer::load_with_config(&hf, config, &file, device)
        .with_context(|| format!("loading the pretrained encoder in {}", dir.display()))?;
    let ponder_models::Backbone::Transformer(encoder) = &mut model.backbone else {
        bail!("`model.pretrained` needs the transformer backbone");
    };
    *encoder = loaded.encoder;
    Ok(())
}

/// Trains the model of `method` (with `seed`, in a run of several seeds; else with
/// `train.seed`), or resumes its training, or loads it when finished.
pub fn train_or_load<S: ClassificationSource>(
    experiment: &Experiment,
    method: Method,
    seed: Option<u64>,
    splits: &Splits<S>,
    run: &RunFolder,
    device: &Device,
) -> Result<(MultiExitClassifier, Option<f64>, f64)> {
    let config = experiment.train_config(method, seed.unwrap_or(experiment.train.seed));
    let ad = device.clone().autodiff();
    ad.seed(config.seed);
    let mut model =
        model_config(experiment, method, splits.n_classes, splits.vocab_size)?.init(&ad);
    let kind = experiment.model_kind(method);
    let files = run.checkpoints(kind, seed);
    let name = &kind.name(seed);
    if files.has_last() {
        let state_done = files
            .load_state::<ponder_models::TrainState>()
            .with_context(|| format!("reading the checkpoint of {name}"))?;
        if state_done.finished {
            let best = files
                .load_best_classifier(model.valid())
                .with_context(|| format!("loading the trained {name} model"))?;
            eprintln!(
                "{name:>12} already trained: loaded {}",
                files.best_model().display()
            );
            return Ok((best, state_done.best_metric, 0.0));
        }
    }
    // In a λ_cost sweep, JEI-DNN's models share the backbone and the warm-up: start from
    // the alternation's snapshot of an already trained sibling when there is one
    if !files.has_last()
        && kind.cost_weight.is_some()
        && let Some(sibling) = experiment
            .cost_variants(method)
            .into_iter()
            .map(|c| run.checkpoints(experiment.with_cost_weight(c).model_kind(method), seed))
            .find(|f| f.has_stage_start(JEI_ALTERNATION_STAGE))
    {
        files
            .fork_from(&sibling, JEI_ALTERNATION_STAGE)
            .with_context(|| format!("starting {name} from {}", sibling.dir().display()))?;
        eprintln!(
            "{name:>12} starts from the frozen backbone and warmed-up modules of {}",
            sibling.dir().display()
        );
    }
    let resume = files.has_last();
    if !resume {
        // a resumed (or forked) run's checkpoint holds the encoder already
        load_pretrained(experiment, &mut model, splits.vocab_size, &ad)?;
    }
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

/// The policies of `policies` that apply to a model: those reading halting
/// probabilities only for models with a halting head, JEI-DNN's gate rule only for
/// models with gates.
pub fn applicable(policies: &[Policy], model: &MultiExitClassifier) -> Vec<Policy> {
    policies
        .iter()
        .filter(|p| model.halting.is_some() || !p.needs_halting())
        .filter(|p| model.gates.is_some() || !p.needs_gates())
        .cloned()
        .collect()
}

/// The prepared batches a model is evaluated on: the test split, and the validation
/// split that calibrates the conformal sets.
#[derive(Debug, Clone, Copy)]
pub struct EvalData<'a> {
    /// Test batches (accuracy, compute, calibration, conformal coverage).
    pub test: &'a [Batch],
    /// Validation batches (conformal thresholds).
    pub calibration: &'a [Batch],
    /// GLUE: the task whose official scores every policy gets.
    pub task: Option<GlueTask>,
}

impl<'a> EvalData<'a> {
    /// The batches of an experiment (its GLUE task, if any).
    pub fn new(experiment: &Experiment, test: &'a [Batch], calibration: &'a [Batch]) -> Self {
        Self {
            test,
            calibration,
            task: experiment.glue_task().ok().flatten(),
        }
    }
}

/// The GLUE task's scores of one evaluation.
fn task_score(task: Option<GlueTask>, out: &EvalOutput) -> Result<Option<GlueScore>> {
    let Some(task) = task else {
        return Ok(None);
    };
    let score = if task.is_regression() {
        let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        if let Some(bad) = out.values.iter().find(|v| !v.is_finite()) {
            // a diverged model: its correlation column says 0 (`correlation`), its
            // official score is absent
            eprintln!(
                "warning: {} on {} gave a non-finite output ({bad}): no official score",
                out.policy,
                task.name()
            );
            return Ok(None);
        }
        glue_regression_score(&f(&out.values), &f(&out.scores)).map(|mut s| {
            // an undefined correlation (a constant prediction) counts 0, as in
            // `correlation`, the column beside it
            for c in [&mut s.pearson, &mut s.spearman] {
                *c = c.map(|v| if v.is_nan() { 0.0 } else { v });
            }
            s
        })
    } else {
        glue_classification_score(task, &out.predictions, &out.targets)
    };
    Ok(Some(score.with_context(|| {
        format!("scoring {} on {}", out.policy, task.name())
    })?))
}

/// Evaluates every applicable policy on one model over the prepared test batches, with
/// its calibration and conformal sets (calibrated on the validation batches; these runs
/// are not timed) unless `calibration_model` is `None` (regression).
pub fn evaluate_policies(
    label: &str,
    model: &MultiExitClassifier,
    data: EvalData<'_>,
    calibration_model: Option<&ModelCalibration>,
    policies: &[Policy],
) -> Result<Vec<PolicyResult>> {
    let batches = data.test;
    let policies = &applicable(policies, model);
    let bar = ProgressBar::new(policies.len() as u64 + 1);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} policies {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("eval {label}"));
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
        // full depth on the validation split is the last exit of its all-layers pass
        let out = match policy {
            Policy::Full(_) => full.clone(),
            _ => evaluate(model, batches, policy),
        };
        let calibration = match calibration_model {
            None => None,
            Some(calibration_model) => {
                let calibration_out = match policy {
                    Policy::Full(_) => None,
                    _ => Some(evaluate(model, data.calibration, policy)),
                };
                let calibration_outputs = calibration_out
                    .as_ref()
                    .map_or_else(|| calibration_model.full_depth(), PolicyOutputs::from);
                Some(
                    policy_calibration((&out).into(), calibration_outputs, calibration_model)
                        .with_context(|| format!("calibration of {label} under {}", out.policy))?,
                )
            }
        };
        let task_score = task_score(data.task, &out)?;
        rows.push(PolicyResult {
            method: label.to_string(),
            family: policy.family().to_string(),
            policy: out.policy,
            accuracy: out.accuracy,
            task_score,
            mean_exit_layer: out.stats.mean_exit_layer,
            layer_speedup: out.stats.layer_speedup,
            flop_speedup: out.stats.flop_speedup,
            wall_speedup: full.wall_seconds / out.wall_seconds.max(1e-12),
            wall_seconds: out.wall_seconds,
            exit_histogram: out.stats.histogram,
            calibration,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(rows)
}

/// Evaluates a policy `repeats` times and measures how much each example's exit layer
/// varies. For sampling, repeat `k` uses seed `k`.
pub fn exit_spread(
    model: &MultiExitClassifier,
    batches: &[Batch],
    policy: &Policy,
    repeats: usize,
) -> SpreadResult {
    let mut layers: Vec<Vec<usize>> = Vec::with_capacity(repeats);
    let mut accuracies = Vec::with_capacity(repeats);
    let mut means = Vec::with_capacity(repeats);
    for k in 0..repeats {
        let out = match policy {
            Policy::Sample(_) => {
                evaluate(model, batches, &Policy::Sample(PonderSample::new(k as u64)))
            }
            p => evaluate(model, batches, p),
        };
        accuracies.push(out.accuracy);
        means.push(out.stats.mean_exit_layer);
        layers.push(out.exit_layers);
    }
    let n = layers.first().map_or(0, Vec::len);
    let stds: Vec<f64> = (0..n)
        .map(|i| {
            let v: Vec<f64> = layers.iter().map(|l| l[i] as f64).collect();
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
        })
        .collect();
    SpreadResult {
        policy: policy.name(),
        repeats,
        mean_exit_layer_std: stds.iter().sum::<f64>() / n.max(1) as f64,
        max_exit_layer_std: stds.iter().copied().fold(0.0, f64::max),
        varying_fraction: stds.iter().filter(|&&s| s > 0.0).count() as f64 / n.max(1) as f64,
        accuracies,
        mean_exit_layers: means,
    }
}

/// Trains (or loads) every method's model (once per seed) and evaluates every policy on
/// the test set.
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
    let calibration_batches = make_batches(&splits.valid, experiment.compare.batch_size, device);
    let data = EvalData::new(experiment, &test_batches, &calibration_batches);
    let several = !experiment.compare.seeds.is_empty();
    let mut models = Vec::new();
    for backbone in experiment.backbones() {
        let experiment = &experiment.with_backbone(backbone);
        for seed in experiment.seeds() {
            for &method in methods {
                for cost in experiment.cost_variants(method) {
                    models.extend(train_and_evaluate(
                        &experiment.with_cost_weight(cost),
                        method,
                        seed,
                        several,
                        splits,
                        data,
                        &policies,
                        run,
                        device,
                    )?);
                }
            }
        }
    }
    Ok(CompareResults::new(
        experiment,
        device_name,
        splits.test.len(),
        models,
    ))
}

/// A trained model of `experiment` (its `model.backbone`, and its
/// `train.jei.cost_weight` in a λ_cost sweep) evaluated on `data`: the
/// accuracy of each exit with all layers run, every applicable policy with its
/// calibration, and JEI-DNN's posterior for a model with gates.
pub fn evaluate_model(
    experiment: &Experiment,
    kind: ModelKind,
    seed: u64,
    model: &MultiExitClassifier,
    data: EvalData<'_>,
    policies: &[Policy],
    best_valid_metric: Option<f64>,
    train_seconds: f64,
) -> Result<ModelResult> {
    let label = kind.label();
    let several = !experiment.compare.seeds.is_empty();
    // every exit on the validation split, once: the per-exit conformal fallback, the
    // exits' temperatures and the posterior's calibration (class probabilities: none
    // for a regression task)
    let calibration = match experiment.is_regression() {
        true => None,
        false => Some(
            ModelCalibration::new(layer_outputs(model, data.calibration))
                .with_context(|| format!("calibrating {label}"))?,
        ),
    };
    let posterior = match (&model.gates, &calibration) {
        (Some(_), Some(calibration)) => Some(
            posterior_result(&layer_outputs(model, data.test), &calibration.layers)
                .with_context(|| format!("JEI-DNN posterior of {label}"))?,
        ),
        _ => None,
    };
    Ok(ModelResult {
        policies: evaluate_policies(&label, model, data, calibration.as_ref(), policies)?,
        posterior,
        halting_optimum: halting_optimum(model, data.test, &experiment.train.ponder),
        ..ModelResult::new(
            kind,
            kind.name(several.then_some(seed)),
            seed,
            model.num_params(),
            layer_accuracies(model, data.test),
            best_valid_metric,
            train_seconds,
        )
    })
}

/// Trains (or loads) one model of `compare` and evaluates every policy on it (and,
/// with `compare.jei_refit`, on its copy with refitted gates).
fn train_and_evaluate<S: ClassificationSource>(
    experiment: &Experiment,
    method: Method,
    seed: u64,
    several: bool,
    splits: &Splits<S>,
    data: EvalData<'_>,
    policies: &[Policy],
    run: &RunFolder,
    device: &Device,
) -> Result<Vec<ModelResult>> {
    let (model, best, seconds) = train_or_load(
        experiment,
        method,
        several.then_some(seed),
        splits,
        run,
        device,
    )?;
    let model = model.valid();
    let kind = experiment.model_kind(method);
    let mut result = evaluate_model(
        experiment, kind, seed, &model, data, policies, best, seconds,
    )?;
    if model.halting.is_some() && experiment.compare.repeats > 0 {
        // Q-exit is deterministic: its repeats measure that, they do not assume it
        let first_q = policies.iter().find(|p| matches!(p, Policy::QExit(_)));
        let sample = Policy::Sample(PonderSample::new(0));
        let sample = experiment.compare.sample.then_some(&sample);
        for p in first_q.into_iter().chain(sample) {
            result.exit_spread.push(exit_spread(
                &model,
                data.test,
                p,
                experiment.compare.repeats,
            ));
        }
    }
    let refit = gate_refit(
        experiment,
        kind,
        seed,
        &model,
        &splits.train,
        data,
        policies,
    )?;
    Ok(match refit {
        Some((report, refit)) => {
            result.gates = Some(report);
            vec![result, refit]
        }
        None => vec![result],
    })
}

/// With `compare.jei_refit` and a model with gates: the trained gates' report on the
/// training split, and the model with every gate refitted there to convergence,
/// evaluated as `kind` with `+refit`.
pub fn gate_refit<S: ClassificationSource>(
    experiment: &Experiment,
    kind: ModelKind,
    seed: u64,
    model: &MultiExitClassifier,
    train: &S,
    data: EvalData<'_>,
    policies: &[Policy],
) -> Result<Option<(GateReport, ModelResult)>> {
    if !experiment.compare.jei_refit || model.gates.is_none() {
        return Ok(None);
    }
    let label = kind.label();
    let device = model.backbone.device();
    let batches = make_batches(train, experiment.compare.batch_size, &device);
    let gate_data = GateData::new(model, &batches, data.calibration, &experiment.train.jei)
        .with_context(|| format!("the gates of {label} on the training split"))?;
    let trained = gate_report(model, &gate_data);
    let (refit, refit_report) = refit_gates(model, &gate_data);
    let refit_kind = ModelKind {
        gates_refit: true,
        ..kind
    };
    let mut result = evaluate_model(
        experiment, refit_kind, seed, &refit, data, policies, None, 0.0,
    )?;
    result.gates = Some(refit_report);
    Ok(Some((trained, result)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ponder_data::ImageSet;
    use ponder_models::ImageSource;

    use super::*;
    use crate::report;

    /// Random 28×28 images in 3 classes (the models are untrained: only the plumbing is
    /// under test).
    fn source(n: usize, seed: u64) -> ImageSource {
        let mut state = seed;
        let pixels = (0..n * 28 * 28)
            .map(|_| (ponder_core::splitmix64(&mut state) % 256) as u8)
            .collect();
        let labels = (0..n).map(|i| i % 3).collect();
        let set = ImageSet {
            n_images: n,
            n_channels: 1,
            n_rows: 28,
            n_cols: 28,
            pixels,
        };
        ImageSource::new(Arc::new(set), Arc::new(labels), (0..n).collect(), 3)
    }

    fn experiment() -> Experiment {
        Experiment::parse(
            r#"
name = "t"
[data]
dataset = "fashion-mnist"
path = "unused"
[model]
n_layers = 3
d_model = 16
n_heads = 2
d_ff = 32
patch_size = 7
[compare]
methods = ["jei_dnn", "pabee"]
max_prob = [0.5, 0.9]
entropy = []
patience = [1]
fixed_layers = false
oracle = false
q_exit = [0.5]
sample = false
expectation = false
gate = [0.5, 0.3]
"#,
        )
        .unwrap()
    }

    #[test]
    fn jei_refit_reports_the_gates_and_evaluates_a_refitted_copy_and_halting_models_their_optimum()
    {
        let mut experiment = experiment();
        let device = Device::flex();
        let (train, test, valid) = (source(80, 4), source(90, 1), source(60, 2));
        let test = make_batches(&test, 32, &device);
        let calibration = make_batches(&valid, 32, &device);
        let data = EvalData {
            test: &test,
            calibration: &calibration,
            task: None,
        };
        let policies = experiment.policies().unwrap();
        device.seed(3);
        let model = model_config(&experiment, Method::JeiDnn, 3, 0)
            .unwrap()
            .init(&device);
        let kind = experiment.model_kind(Method::JeiDnn);
        // off by default
        let none = gate_refit(&experiment, kind, 1, &model, &train, data, &policies).unwrap();
        assert!(none.is_none());
        experiment.compare.jei_refit = true;
        let (trained, refit) = gate_refit(&experiment, kind, 1, &model, &train, data, &policies)
            .unwrap()
            .unwrap();
        assert_eq!(trained.rows, 80);
        assert_eq!(trained.gates.len(), 2);
        assert!(trained.gates.iter().all(|g| g.iterations.is_none()));
        assert_eq!(refit.method, "jei_dnn+refit");
        let report = refit.gates.as_ref().unwrap();
        for (before, after) in trained.gates.iter().zip(&report.gates) {
            assert!(after.iterations.is_some());
            assert!(after.loss <= before.loss + 1e-9);
        }
        assert!(refit.policies.iter().any(|r| r.family == "gate"));
        let table = report::table(&CompareResults::new(&experiment, "cpu", 90, vec![refit]));
        assert!(table.contains("gate 2: w (p_max"), "{table}");
        // a model without gates has nothing to refit
        let pabee = model_config(&experiment, Method::Pabee, 3, 0)
            .unwrap()
            .init(&device);
        let pabee_kind = experiment.model_kind(Method::Pabee);
        assert!(
            gate_refit(&experiment, pabee_kind, 1, &pabee, &train, data, &policies)
                .unwrap()
                .is_none()
        );
        // a halting model is compared with the optimum of its loss; others are not
        let palbert = model_config(&experiment, Method::Palbert, 3, 0)
            .unwrap()
            .init(&device);
        let kind = experiment.model_kind(Method::Palbert);
        let result =
            evaluate_model(&experiment, kind, 1, &palbert, data, &policies, None, 0.0).unwrap();
        let optimum = result.halting_optimum.unwrap();
        assert_eq!(optimum.rows, 90);
        assert!((1.0..=3.0).contains(&optimum.learned_depth));
        assert!((1.0..=3.0).contains(&optimum.optimal_depth));
        let pabee = evaluate_model(
            &experiment,
            pabee_kind,
            1,
            &pabee,
            data,
            &policies,
            None,
            0.0,
        )
        .unwrap();
        assert!(pabee.halting_optimum.is_none());
    }

    #[test]
    fn every_policy_gets_calibration_and_conformal_sets_and_gated_models_a_posterior() {
        let experiment = experiment();
        let device = Device::flex();
        let (test, valid) = (source(90, 1), source(60, 2));
        let test = make_batches(&test, 32, &device);
        let calibration = make_batches(&valid, 32, &device);
        let data = EvalData {
            test: &test,
            calibration: &calibration,
            task: None,
        };
        let policies = experiment.policies().unwrap();
        let mut models = Vec::new();
        for method in [Method::JeiDnn, Method::Pabee] {
            device.seed(3);
            let model = model_config(&experiment, method, 3, 0)
                .unwrap()
                .init(&device);
            let kind = experiment.model_kind(method);
            let result =
                evaluate_model(&experiment, kind, 1, &model, data, &policies, None, 0.0).unwrap();
            let families: Vec<&str> = result.policies.iter().map(|r| r.family.as_str()).collect();
            // Q-exit needs a halting head; the gate rule only applies to JEI-DNN's gates
            assert!(!families.contains(&"q_exit"));
            assert_eq!(
                families.contains(&"gate"),
                method == Method::JeiDnn,
                "{families:?}"
            );
            assert_eq!(result.posterior.is_some(), method == Method::JeiDnn);
            for r in &result.policies {
                let c = r.calibration.as_ref().expect("every row is calibrated");
                assert!((0.0..=1.0).contains(&c.ece) && c.nll > 0.0 && c.brier > 0.0);
                assert_eq!(c.conformal.len(), 8, "2 α × 2 scores × 2 variants");
                for x in &c.conformal {
                    assert!((0.0..=1.0).contains(&x.coverage));
                    assert!(x.mean_set_size >= 0.0 && x.mean_set_size <= 3.0);
                }
                // the reliability diagram covers every test row
                let rows: usize = c.reliability.iter().map(|b| b.count).sum();
                assert_eq!(rows, 90);
            }
            // the full-depth row's sets are calibrated on the last exit of the validation
            // split's all-layers pass: the same as running full depth there
            let calibration =
                ModelCalibration::new(layer_outputs(&model, data.calibration)).unwrap();
            let full_test = evaluate(&model, data.test, &NeverExit);
            let full_valid = evaluate(&model, data.calibration, &NeverExit);
            let expected =
                policy_calibration((&full_test).into(), (&full_valid).into(), &calibration)
                    .unwrap();
            assert_eq!(result.policies[0].family, "full");
            assert_eq!(result.policies[0].calibration.as_ref(), Some(&expected));
            models.push(result);
        }
        let results = CompareResults::new(&experiment, "cpu", 90, models);
        let table = report::table(&results);
        assert!(table.contains("calibration on the test set"), "{table}");
        assert!(table.contains("JEI-DNN posterior"), "{table}");
        let plots = report::reliability_plots(&results).unwrap();
        assert_eq!(
            plots.len(),
            results
                .models
                .iter()
                .map(|m| m.policies.len())
                .sum::<usize>()
        );
        assert!(
            plots
                .iter()
                .any(|(p, _)| p == "reliability/jei_dnn/max_prob_gt_0.9.svg")
        );
        assert!(
            plots
                .iter()
                .all(|(p, svg)| !p.contains(['>', '<', '=']) && svg.contains("<svg"))
        );
        assert!(report::ece_plot(&results).unwrap().contains("<svg"));
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn a_pretrained_encoder_is_checked_and_loaded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/ponder-transformer/tests/data/tiny-bert");
        let text = |d_model: usize, max_tokens: usize| {
            format!(
                "name = \"t\"\n[data]\ndataset = \"spamassassin\"\npath = \"x\"\ntokenizer = \"vocab.txt\"\nmax_tokens = {max_tokens}\n[model]\npretrained = {:?}\nn_layers = 3\nd_model = {d_model}\nn_heads = 4\nd_ff = 24\n[train]\nmethod = \"pabee\"\n[compare]\nmethods = [\"pabee\"]\n",
                dir.display().to_string()
            )
        };
        let experiment = Experiment::parse(&text(16, 8)).unwrap();
        let device = Device::default();
        let mut model = model_config(&experiment, Method::Pabee, 2, 40)
            .unwrap()
            .init(&device);
        load_pretrained(&experiment, &mut model, 40, &device).unwrap();
        let ponder_models::Backbone::Transformer(encoder) = &model.backbone else {
            panic!("a transformer")
        };
        let file = ponder_core::SafeTensors::open(dir.join("model.safetensors")).unwrap();
        let want = file
            .read("bert.embeddings.word_embeddings.weight", &[40, 16])
            .unwrap();
        let got = ponder_core::to_host(encoder.text.as_ref().unwrap().tokens.weight.val());
        assert_eq!(got, want);
        // sizes, vocabulary and positions that do not fit the checkpoint are named
        let e = Experiment::parse(&text(32, 8)).unwrap_err();
        assert!(format!("{e:#}").contains("model.d_model"), "{e:#}");
        let e = model_config(&experiment, Method::Pabee, 2, 41).unwrap_err();
        assert!(format!("{e:#}").contains("tokenizer"), "{e:#}");
        let e = model_config(
            &Experiment::parse(&text(16, 20)).unwrap(),
            Method::Pabee,
            2,
            40,
        );
        assert!(format!("{:#}", e.unwrap_err()).contains("data.max_tokens"));
        // images cannot use it
        let images = text(16, 8).replace("spamassassin", "fashion-mnist");
        assert!(Experiment::parse(&images).is_err());
    }

    #[test]
    fn methods_that_need_internal_exits_or_classes_are_refused_before_building_a_model() {
        // `--methods jei_dnn` or `--method dee_bert` on a one-layer experiment (whose own
        // method list passed validation) is an error naming the key, not a panic
        let experiment = Experiment::parse(
            "name = \"t\"\n[data]\ndataset = \"fashion-mnist\"\npath = \"x\"\n[model]\nn_layers = 1\nd_model = 16\nn_heads = 2\nd_ff = 32\n[train]\nmethod = \"pabee\"\n[compare]\nmethods = [\"pabee\"]\n",
        )
        .unwrap();
        for method in [Method::JeiDnn, Method::DeeBert] {
            let e = model_config(&experiment, method, 3, 0).unwrap_err();
            assert!(format!("{e:#}").contains("model.n_layers"), "{e:#}");
        }
        assert!(model_config(&experiment, Method::Pabee, 3, 0).is_ok());
        let two = Experiment::parse(
            "name = \"t\"\n[data]\ndataset = \"fashion-mnist\"\npath = \"x\"\n[model]\nn_layers = 2\nd_model = 16\nn_heads = 2\nd_ff = 32\n",
        )
        .unwrap();
        let e = model_config(&two, Method::JeiDnn, 1, 0).unwrap_err();
        assert!(format!("{e:#}").contains("2 classes"), "{e:#}");
    }

    #[test]
    fn model_shared_head_gives_palbert_per_layer_heads_and_is_refused_where_it_cannot_be() {
        let with = |shared: &str| {
            Experiment::parse(&format!(
                "name = \"t\"\n[data]\ndataset = \"fashion-mnist\"\npath = \"x\"\n[model]\nn_layers = 3\nd_model = 16\nn_heads = 2\nd_ff = 32\n{shared}"
            ))
            .unwrap()
        };
        let device = Device::flex();
        let heads = |e: &Experiment, method: Method| {
            model_config(e, method, 3, 0)
                .unwrap()
                .init(&device)
                .heads
                .classifiers
                .len()
        };
        // by default the halting methods share one head, the others have one per layer
        assert_eq!(heads(&with(""), Method::Palbert), 1);
        assert_eq!(heads(&with(""), Method::Pabee), 3);
        let per_layer = with("shared_head = false\n");
        assert_eq!(heads(&per_layer, Method::Palbert), 3);
        assert_eq!(heads(&per_layer, Method::PonderNet), 3);
        let shared = with("shared_head = true\n");
        assert_eq!(heads(&shared, Method::Pabee), 1);
        for method in [Method::DeeBert, Method::JeiDnn] {
            let e = model_config(&shared, method, 3, 0).unwrap_err();
            assert!(format!("{e:#}").contains("model.shared_head"), "{e:#}");
        }
    }
}
