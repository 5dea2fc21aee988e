//! JEI-DNN's gates looked at on their frozen inference modules: the targets they are
//! trained on (each row's best exit), how well the trained gates fit them, and the best
//! gates the features allow (every gate refitted to convergence). With the inference
//! modules frozen each gate is a convex weighted logistic regression
//! ([`ponder_exits::gate_fit`]), so a trained gate that collapses where its refit does
//! not was under-fitted, and one whose refit collapses too is collapsing for real
//! (Regol, Chataoui, Coates, ICLR 2024, arXiv:2310.09163).

use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use ponder_core::{LayerwiseBackbone, PonderError, Result, to_host};
use ponder_exits::gate_fit::{GateParams, GateRows, fit_gate, gate_objective};
use ponder_exits::jei::{self, N_CONFIDENCE_FEATURES, confidence_features_row};
use ponder_exits::loss;
use serde::{Deserialize, Serialize};

use crate::classifier::MultiExitClassifier;
use crate::source::Batch;
use crate::train::{JeiConfig, gate_positive_weights};

/// What the gates of a model are trained on, over some rows: the confidence features of
/// every early exit's logits and each row's best exit.
#[derive(Debug, Clone)]
pub struct GateData {
    /// `features[l][i]`: the confidence features of exit `l`'s logits for row `i`
    /// (one vector per gate).
    pub features: Vec<Vec<[f32; N_CONFIDENCE_FEATURES]>>,
    /// Each row's best exit `l* = argmin_l CE_l + λ_cost·ĉ_l` (0-based, the final exit
    /// included).
    pub best: Vec<usize>,
    /// The gates' positive weights `w⁺_l` (from the validation rows, as training uses
    /// them).
    pub positive_weight: Vec<f32>,
}

impl GateData {
    /// The data of `model`'s gates on `batches`, with the positive weights of the
    /// validation `valid` batches, for the λ_cost and weighting of `config`.
    ///
    /// # Errors
    /// If the model has no gates.
    pub fn new(
        model: &MultiExitClassifier,
        batches: &[Batch],
        valid: &[Batch],
        config: &JeiConfig,
    ) -> Result<Self> {
        let n_gates = model
            .gates
            .as_ref()
            .map(|g| g.n_gates())
            .ok_or_else(|| PonderError::config("train.method", "the model has no gates"))?;
        let first = batches
            .first()
            .ok_or_else(|| PonderError::config("data", "no rows to fit the gates on"))?;
        let costs = model.exit_costs(first.input.clone());
        let n_classes = model.heads.n_classes;
        let mut features = vec![Vec::new(); n_gates];
        let mut best = Vec::new();
        let device = model.backbone.device();
        for batch in batches {
            let out = model.forward_all(batch.input.clone());
            let targets = batch.targets_tensor(&device);
            let mut ce = Vec::with_capacity(out.logits.len());
            for (l, logits) in out.logits.into_iter().enumerate() {
                ce.push(to_host(loss::cross_entropy_per_row(
                    logits.clone(),
                    targets.clone(),
                )));
                if l < n_gates {
                    let host = to_host(logits);
                    features[l].extend(host.chunks(n_classes).map(confidence_features_row));
                }
            }
            best.extend(jei::best_exits(&ce, &costs, config.cost_weight));
        }
        let positive_weight = gate_positive_weights(model, valid, &costs, config);
        Ok(Self {
            features,
            best,
            positive_weight,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.best.len()
    }

    /// Gate `l`'s targets `1[l ≥ l*]`.
    pub fn targets(&self, gate: usize) -> Vec<bool> {
        self.best.iter().map(|&b| gate >= b).collect()
    }

    /// How many rows have each exit as their best (`n_layers` counts).
    pub fn best_exit_histogram(&self) -> Vec<u64> {
        let mut histogram = vec![0u64; self.features.len() + 1];
        for &b in &self.best {
            histogram[b] += 1;
        }
        histogram
    }
}

/// One gate: its parameters and how well they fit its objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateSummary {
    /// Weights of the four confidence features: max-probability, entropy, margin of
    /// the top two, entropy of the squared probabilities.
    pub weights: [f64; N_CONFIDENCE_FEATURES],
    /// Bias.
    pub bias: f64,
    /// Share of the rows whose target is 1 ("exit here or earlier").
    pub positive_share: f64,
    /// The positive weight `w⁺` of the objective.
    pub positive_weight: f32,
    /// The weighted BCE on the rows at these parameters.
    pub loss: f64,
    /// Norm of its gradient.
    pub gradient_norm: f64,
    /// Newton iterations (a refit only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<usize>,
}

/// The gates of one model on some rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    /// Rows the objective was measured on.
    pub rows: usize,
    /// How many rows have each exit as their best (index 0 = layer 1, the final exit
    /// last).
    pub best_exit_histogram: Vec<u64>,
    /// One summary per gate.
    pub gates: Vec<GateSummary>,
}

/// Tolerance on the gradient norm of a refit.
pub const REFIT_TOLERANCE: f64 = 1e-9;
/// Newton iterations at most in a refit.
pub const REFIT_MAX_ITERATIONS: usize = 100;

fn params_of(model: &MultiExitClassifier, gate: usize) -> GateParams {
    let linear = &model
        .gates
        .as_ref()
        .unwrap_or_else(|| unreachable!("GateData::new checks for gates"))
        .gates[gate];
    let weight = to_host(linear.weight.val());
    let bias = linear.bias.as_ref().map_or(0.0, |b| to_host(b.val())[0]);
    let mut params = [0.0; N_CONFIDENCE_FEATURES + 1];
    for (p, w) in params.iter_mut().zip(&weight) {
        *p = *w as f64;
    }
    params[N_CONFIDENCE_FEATURES] = bias as f64;
    params
}

fn summary(
    data: &GateData,
    gate: usize,
    params: GateParams,
    iterations: Option<usize>,
) -> GateSummary {
    let targets = data.targets(gate);
    let rows = GateRows {
        features: &data.features[gate],
        targets: &targets,
        positive_weight: data.positive_weight[gate] as f64,
    };
    let objective = gate_objective(&rows, &params);
    let mut weights = [0.0; N_CONFIDENCE_FEATURES];
    weights.copy_from_slice(&params[..N_CONFIDENCE_FEATURES]);
    GateSummary {
        weights,
        bias: params[N_CONFIDENCE_FEATURES],
        positive_share: targets.iter().filter(|&&t| t).count() as f64 / targets.len() as f64,
        positive_weight: data.positive_weight[gate],
        loss: objective.loss,
        gradient_norm: objective.gradient_norm(),
        iterations,
    }
}

/// The model's trained gates on `data`.
pub fn gate_report(model: &MultiExitClassifier, data: &GateData) -> GateReport {
    GateReport {
        rows: data.rows(),
        best_exit_histogram: data.best_exit_histogram(),
        gates: (0..data.features.len())
            .map(|l| summary(data, l, params_of(model, l), None))
            .collect(),
    }
}

/// The model with every gate refitted to convergence on `data` (Newton's method from
/// the trained parameters), and the refitted gates' report.
pub fn refit_gates(
    model: &MultiExitClassifier,
    data: &GateData,
) -> (MultiExitClassifier, GateReport) {
    let mut refit = model.clone();
    let gates = refit
        .gates
        .as_mut()
        .unwrap_or_else(|| unreachable!("GateData::new checks for gates"));
    let mut summaries = Vec::with_capacity(gates.n_gates());
    for (l, linear) in gates.gates.iter_mut().enumerate() {
        let targets = data.targets(l);
        let rows = GateRows {
            features: &data.features[l],
            targets: &targets,
            positive_weight: data.positive_weight[l] as f64,
        };
        let fit = fit_gate(
            &rows,
            &params_of(model, l),
            REFIT_TOLERANCE,
            REFIT_MAX_ITERATIONS,
        );
        let device = linear.weight.val().device();
        let weight: Vec<f32> = fit.params[..N_CONFIDENCE_FEATURES]
            .iter()
            .map(|&w| w as f32)
            .collect();
        linear.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(weight, [N_CONFIDENCE_FEATURES, 1]),
            &device,
        ));
        linear.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![fit.params[N_CONFIDENCE_FEATURES] as f32], [1]),
            &device,
        )));
        summaries.push(summary(data, l, fit.params, Some(fit.iterations)));
    }
    let report = GateReport {
        rows: data.rows(),
        best_exit_histogram: data.best_exit_histogram(),
        gates: summaries,
    };
    (refit, report)
}
