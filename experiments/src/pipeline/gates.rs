//! JEI-DNN's gates refitted to convergence on the training split (`compare.jei_refit`).

use anyhow::{Context, Result};
use ponder_core::LayerwiseBackbone;
use ponder_exits::Policy;
use ponder_models::{
    ClassificationSource, GateData, GateReport, MultiExitClassifier, gate_report, make_batches,
    refit_gates,
};

use super::{EvalData, ModelResult, evaluate_model};
use crate::config::Experiment;
use crate::run::ModelKind;

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

/// A model's result followed, with `compare.jei_refit` and gates, by its refitted copy's
/// ([`gate_refit`]); the model's own result then carries its trained gates' report.
#[allow(clippy::too_many_arguments)]
pub fn with_gate_refit<S: ClassificationSource>(
    mut result: ModelResult,
    experiment: &Experiment,
    kind: ModelKind,
    seed: u64,
    model: &MultiExitClassifier,
    train: &S,
    data: EvalData<'_>,
    policies: &[Policy],
) -> Result<Vec<ModelResult>> {
    Ok(
        match gate_refit(experiment, kind, seed, model, train, data, policies)? {
            Some((report, refit)) => {
                result.gates = Some(report);
                vec![result, refit]
            }
            None => vec![result],
        },
    )
}
