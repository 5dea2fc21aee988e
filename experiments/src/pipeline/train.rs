//! Training one model, or resuming its training, or loading it when finished.

use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::Module;
use burn::tensor::Device;
use ponder_models::{
    ClassificationSource, FitOptions, JEI_ALTERNATION_STAGE, Method, MultiExitClassifier, fit,
};

use super::{load_pretrained, model_config};
use crate::config::Experiment;
use crate::data::Splits;
use crate::progress::TrainProgress;
use crate::run::RunFolder;

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
        FitOptions::new(&ad)
            .with_checkpoints(&files)
            .with_resume(resume)
            .with_observer(&mut progress),
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
