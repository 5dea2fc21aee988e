//! `ponder train`: train one model and report the test accuracy of each exit.

use anyhow::{Result, bail};
use burn::module::Module;
use ponder_experiments::config::Experiment;
use ponder_experiments::data::{LoadedData, Splits};
use ponder_experiments::pipeline::{self, ModelResult};
use ponder_experiments::run::RunFolder;
use ponder_experiments::{DeviceChoice, parse_method};
use ponder_models::{ClassificationSource, Method, layer_accuracies, make_batches};

use super::open_run;
use crate::RunArgs;

fn train_one<S: ClassificationSource>(
    experiment: &Experiment,
    splits: &Splits<S>,
    run: &RunFolder,
    dev: &burn::tensor::Device,
    method: Method,
    seed: Option<u64>,
) -> Result<ModelResult> {
    let (model, best, seconds) =
        pipeline::train_or_load(experiment, method, seed, splits, run, dev)?;
    let model = model.valid();
    let batches = make_batches(&splits.test, experiment.compare.batch_size, dev);
    let layers = layer_accuracies(&model, &batches);
    let kind = experiment.model_kind(method);
    Ok(ModelResult::new(
        kind,
        kind.name(seed),
        seed.unwrap_or(experiment.train.seed),
        model.num_params(),
        layers,
        best,
        seconds,
    ))
}

pub(crate) fn train_cmd(
    device: DeviceChoice,
    args: RunArgs,
    method: Option<String>,
    seed: Option<u64>,
) -> Result<()> {
    let (dev, _) = device.device()?;
    let (run, experiment, loaded) = open_run(&args)?;
    let seeds = &experiment.compare.seeds;
    let seed = match (seed, seeds.first()) {
        (Some(s), Some(_)) if !seeds.contains(&s) => {
            bail!("--seed {s} is not one of the experiment's `compare.seeds` {seeds:?}")
        }
        (Some(s), Some(_)) => Some(s),
        (None, Some(&first)) => Some(first),
        (Some(s), None) => bail!(
            "--seed {s}: the experiment has no `compare.seeds`; set `train.seed` instead (--set train.seed={s})"
        ),
        (None, None) => None,
    };
    let method = match method {
        Some(m) => parse_method(&m)?,
        None => experiment.train.method,
    };
    let result = match &loaded {
        LoadedData::Images(s) => train_one(&experiment, s, &run, &dev, method, seed)?,
        LoadedData::Text(s) => train_one(&experiment, s, &run, &dev, method, seed)?,
    };
    run.write(
        &format!(
            "models/{}/test.json",
            experiment.model_kind(method).name(seed)
        ),
        &serde_json::to_vec_pretty(&result)?,
    )?;
    let layers: Vec<String> = result
        .test_layer_accuracy
        .iter()
        .enumerate()
        .map(|(l, a)| format!("  exit {:>2}: {:.2}", l + 1, a * 100.0))
        .collect();
    println!(
        "{} trained ({:.0} s); test {} of each exit with all layers run:\n{}",
        result.method,
        result.train_seconds,
        if experiment.is_regression() {
            "Pearson correlation ×100"
        } else {
            "accuracy %"
        },
        layers.join("\n")
    );
    println!("run folder: {}", run.root().display());
    Ok(())
}
