//! JEI-DNN's gates refitted to convergence on the training split (`compare.jei_refit`).

use anyhow::{Context, Result};
use ponder_core::LayerwiseBackbone;
use ponder_exits::Policy;
use ponder_models::{
    ClassificationSource, GateData, MultiExitClassifier, gate_report, make_batches, refit_gates,
};

use super::{EvalData, ModelResult, evaluate_model};
use crate::config::Experiment;
use crate::run::ModelKind;

/// A model's result followed, with `compare.jei_refit` and a model with gates, by its
/// copy with every gate refitted to convergence on the training split, evaluated as
/// `kind` with `+refit`; the model's own result then carries its trained gates' report.
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
    if !experiment.compare.jei_refit || model.gates.is_none() {
        return Ok(vec![result]);
    }
    let label = kind.label();
    let device = model.backbone.device();
    let batches = make_batches(train, experiment.compare.batch_size, &device);
    let gate_data = GateData::new(model, &batches, data.calibration, &experiment.train.jei)
        .with_context(|| format!("the gates of {label} on the training split"))?;
    result.gates = Some(gate_report(model, &gate_data));
    let (refit, refit_report) = refit_gates(model, &gate_data);
    let refit_kind = ModelKind {
        gates_refit: true,
        ..kind
    };
    let mut refit_result = evaluate_model(
        experiment, refit_kind, seed, &refit, data, policies, None, 0.0,
    )?;
    refit_result.gates = Some(refit_report);
    Ok(vec![result, refit_result])
}
