//! Evaluating a trained model: the accuracy of each exit, every applicable policy on
//! the test set (accuracy, compute, wall-clock time, the GLUE task's scores) with its
//! calibration and conformal sets, JEI-DNN's posterior, the halting optimum, and the
//! spread of exit layers over repeated evaluations.

use anyhow::{Context, Result};
use burn::module::Module;
use indicatif::{ProgressBar, ProgressStyle};
use ponder_core::ExitPolicy;
use ponder_data::{GlueScore, GlueTask, glue_classification_score, glue_regression_score};
use ponder_exits::{NeverExit, Policy, PonderSample};
use ponder_models::{
    Batch, EvalOutput, MultiExitClassifier, evaluate, halting_optimum, layer_accuracies,
    layer_outputs, majority_rate,
};

use super::{ModelResult, PolicyResult, SpreadResult};
use crate::calibrate::{ModelCalibration, PolicyOutputs, policy_calibration, posterior_result};
use crate::config::Experiment;
use crate::run::ModelKind;

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
        test_majority_rate: match experiment.is_regression() {
            true => None,
            false => majority_rate(data.test.iter().flat_map(|b| b.targets.iter().copied())),
        },
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
