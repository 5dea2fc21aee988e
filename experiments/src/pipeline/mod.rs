//! Training and evaluating the models of an experiment.
//!
//! `compare` (this file) trains or loads every method's model and evaluates it:
//! `model.rs` builds a method's model, `train.rs` trains or loads it, `evaluate.rs`
//! evaluates its exits and policies, `gates.rs` refits JEI-DNN's gates, and
//! `results.rs` holds what `results.json` records.

use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::Device;
use ponder_exits::{Policy, PonderSample};
use ponder_models::{ClassificationSource, Method, make_batches};

use crate::config::Experiment;
use crate::data::Splits;
use crate::run::RunFolder;

mod evaluate;
mod gates;
mod model;
mod results;
mod train;

pub use evaluate::{EvalData, applicable, evaluate_model, evaluate_policies, exit_spread};
pub use gates::with_gate_refit;
pub use model::{load_pretrained, model_config};
pub use results::{
    CalibrationSummary, CompareResults, ConformalSummary, ModelResult, PolicyResult, SeedSummary,
    SpreadResult, seed_summary,
};
pub use train::train_or_load;

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
    with_gate_refit(
        result,
        experiment,
        kind,
        seed,
        &model,
        &splits.train,
        data,
        policies,
    )
}
