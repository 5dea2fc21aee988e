//! `ponder eval`: evaluate policies on the models already trained in a run folder.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use ponder_exits::Policy;
use ponder_experiments::config::{BackboneKind, Experiment};
use ponder_experiments::data::{LoadedData, Splits};
use ponder_experiments::pipeline::{self, CompareResults};
use ponder_experiments::run::RunFolder;
use ponder_experiments::{DeviceChoice, parse_policy};
use ponder_models::{ClassificationSource, Method, make_batches};

use super::{load_data, write_results};

pub(crate) fn eval_cmd(
    device: DeviceChoice,
    root: PathBuf,
    specs: Vec<String>,
    no_fetch: bool,
) -> Result<()> {
    let (dev, dev_name) = device.device()?;
    let (run, mut experiment) = RunFolder::open(&root)?;
    let policies = if specs.is_empty() {
        experiment.policies()?
    } else {
        specs
            .iter()
            .map(|s| parse_policy(s))
            .collect::<Result<Vec<_>>>()?
    };
    // a regression task's heads have one output: only its own rules apply
    let regression = experiment.is_regression();
    if let Some(p) = policies.iter().find(|p| match p {
        Policy::Full(_) | Policy::Fixed(_) => false,
        Policy::PatienceRegression(_) => !regression,
        _ => regression,
    }) {
        bail!(
            "policy {} does not apply to {}: {}",
            ponder_core::ExitPolicy::name(p),
            root.display(),
            if regression {
                "a regression task takes full, fixed=L and patience=T,tol=TAU"
            } else {
                "patience=T,tol=TAU is PABEE's rule for regression tasks (STS-B)"
            }
        );
    }
    let several = !experiment.compare.seeds.is_empty();
    let mut trained: Vec<(BackboneKind, Method, Option<f64>, u64)> = Vec::new();
    for backbone in experiment.backbones() {
        let experiment = experiment.with_backbone(backbone);
        for seed in experiment.seeds() {
            for method in Method::ALL {
                for cost in experiment.cost_variants(method) {
                    let kind = experiment.with_cost_weight(cost).model_kind(method);
                    if run
                        .checkpoints(kind, several.then_some(seed))
                        .best_model()
                        .is_file()
                    {
                        trained.push((backbone, method, cost, seed));
                    }
                }
            }
        }
    }
    if trained.is_empty() {
        bail!(
            "{} holds no trained model (no models/*/best.bpk); run `ponder train` or `ponder compare` first",
            root.display()
        );
    }
    if !trained.iter().any(|(_, m, _, _)| m.has_halting())
        && let Some(p) = policies.iter().find(|p| p.needs_halting())
    {
        bail!(
            "policy {} reads halting probabilities, but no model of {} has a halting head (train palbert or ponder_net)",
            ponder_core::ExitPolicy::name(p),
            root.display()
        );
    }
    if !trained.iter().any(|(_, m, _, _)| m.has_gates())
        && let Some(p) = policies.iter().find(|p| p.needs_gates())
    {
        bail!(
            "policy {} reads JEI-DNN's gates, but no model of {} has them (train jei_dnn)",
            ponder_core::ExitPolicy::name(p),
            root.display()
        );
    }
    let loaded = load_data(&mut experiment, !no_fetch)?;
    let results = match &loaded {
        LoadedData::Images(s) => {
            eval_models(&experiment, s, &run, &dev, &dev_name, &trained, &policies)?
        }
        LoadedData::Text(s) => {
            eval_models(&experiment, s, &run, &dev, &dev_name, &trained, &policies)?
        }
    };
    let table = write_results(&run, "eval-results", &results)?;
    println!("{table}");
    Ok(())
}

fn eval_models<S: ClassificationSource>(
    experiment: &Experiment,
    splits: &Splits<S>,
    run: &RunFolder,
    dev: &burn::tensor::Device,
    dev_name: &str,
    methods: &[(BackboneKind, Method, Option<f64>, u64)],
    policies: &[ponder_exits::Policy],
) -> Result<CompareResults> {
    let test = make_batches(&splits.test, experiment.compare.batch_size, dev);
    let calibration = make_batches(&splits.valid, experiment.compare.batch_size, dev);
    let data = pipeline::EvalData::new(experiment, &test, &calibration);
    let several = !experiment.compare.seeds.is_empty();
    let mut models = Vec::new();
    for &(backbone, method, cost, seed) in methods {
        let experiment = &experiment.with_backbone(backbone).with_cost_weight(cost);
        let model =
            pipeline::model_config(experiment, method, splits.n_classes, splits.vocab_size)?
                .init(dev);
        let id = several.then_some(seed);
        let kind = experiment.model_kind(method);
        let files = run.checkpoints(kind, id);
        let model = files
            .load_best_classifier(model)
            .with_context(|| format!("loading the {} model", kind.name(id)))?
            .valid();
        let result =
            pipeline::evaluate_model(experiment, kind, seed, &model, data, policies, None, 0.0)?;
        models.extend(pipeline::with_gate_refit(
            result,
            experiment,
            kind,
            seed,
            &model,
            &splits.train,
            data,
            policies,
        )?);
    }
    Ok(CompareResults::new(
        experiment,
        dev_name,
        splits.test.len(),
        models,
    ))
}
