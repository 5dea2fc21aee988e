//! The `results.json` of `ponder compare` and `ponder eval` (and a model's
//! `models/NAME/test.json`): one row per (model, policy), everything measured about
//! each trained model, and the mean ± std over seeds.

use ponder_data::GlueScore;
use ponder_models::{GateReport, HaltingOptimum, LayerAccuracy};
use serde::{Deserialize, Serialize};

use crate::calibrate::{CalibrationResult, ConformalResult, PosteriorResult};
use crate::config::{BackboneKind, Experiment};
use crate::run::ModelKind;

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
    /// Share of the test set in its most frequent class (classification; absent in
    /// results written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_majority_rate: Option<f64>,
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
    /// A warning naming the exits that have not learned on the test set (within one
    /// point of the majority-class rate, or below it), `None` when every exit has.
    pub fn unlearned_warning(&self) -> Option<String> {
        ponder_models::unlearned_warning(&self.test_layer_accuracy, self.test_majority_rate?)
    }

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
            test_majority_rate: None,
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
