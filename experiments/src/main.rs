//! `ponder`: train, evaluate and compare early-exit models. See `ponder --help`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use clap::{Parser, Subcommand};
use ponder_exits::Policy;
use ponder_experiments::config::BackboneKind;
use ponder_experiments::config::Experiment;
use ponder_experiments::data::{self, LoadedData, Splits};
use ponder_experiments::lm::{self, LmExperiment};
use ponder_experiments::parity::{self, ParityExperiment};
use ponder_experiments::pipeline::{self, CompareResults, ModelResult};
use ponder_experiments::report;
use ponder_experiments::run::RunFolder;
use ponder_experiments::token_exit::{self, TokenExitExperiment};
use ponder_experiments::{ALL_METHODS, DeviceChoice, parse_method, parse_policy};
use ponder_models::{ClassificationSource, Method, layer_accuracies, make_batches};

const DEFAULT_EXPERIMENT: &str = "experiments/configs/fashion-mnist-vit.toml";
const DEFAULT_PARITY: &str = "experiments/configs/parity-interpolation.toml";
const DEFAULT_LM: &str = "experiments/configs/shakespeare-mamba.toml";

/// Early-exit (adaptive-depth) networks: train multi-exit models, evaluate exit
/// policies, and compare accuracy against compute.
///
/// A run is described by an experiment file (TOML, see experiments/configs/) and
/// writes a run folder with the resolved config, checkpoints, per-epoch metrics,
/// results.json, a Markdown table and SVG plots. Missing data sets are fetched with
/// scripts/fetch-data.sh when it is in the working directory. GLUE cannot be fetched:
/// with its files, an experiment with `dataset = "glue"`, `task = "mrpc"` (any of the
/// nine tasks) and `path = "glue_data/MRPC"` trains on train.tsv and reports the
/// task's official metric on dev.tsv (experiments/configs/glue.toml). Your own data:
/// `[data]` with `format = "tsv" | "csv" | "jsonl" | "image-folder" | "idx"` and
/// `train` (optionally `valid`, `test`) runs every method and policy on it
/// (experiments/configs/own-*.toml); `ponder lm` reads any text corpus with `format =
/// "text"` (experiments/configs/lm-text.toml).
#[derive(Parser, Debug)]
#[command(name = "ponder", version, about, long_about)]
struct Cli {
    /// Compute device: `cpu` (burn's flex backend) or `wgpu` (needs a build with
    /// `--features wgpu`).
    #[arg(long, value_enum, default_value = "cpu", global = true)]
    device: DeviceChoice,
    #[command(subcommand)]
    command: Command,
}

/// The run-folder options of every command that creates a run.
#[derive(clap::Args, Debug)]
struct FolderArgs {
    /// Override a value of the experiment, as `section.key=value` (TOML value;
    /// repeatable), e.g. `--set train.epochs=2 --set compare.patience=[1,2]`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Where to create the run folder (default: runs/NAME-TIMESTAMP).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Continue this run folder with its own config.toml (the experiment file and
    /// --set are ignored): finish or resume its training from the last checkpoints, or
    /// only evaluate what is already trained.
    #[arg(long, value_name = "RUN_FOLDER", conflicts_with = "run_dir")]
    resume: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train every method of the experiment (default: PABEE and DeeBERT; also
    /// final_only, palbert, ponder_net, jei_dnn), once per seed of `compare.seeds` and on
    /// each backbone of `compare.backbones` (transformer, mamba; text only), evaluate
    /// every policy of its sweep on the test set (thresholds, patience, fixed layers;
    /// Q-exit, sampling and the expectation for models with a halting head; JEI-DNN's
    /// gate rule for models with gates), score each for calibration (ECE, NLL, Brier,
    /// conformal sets calibrated on the validation split), print the tables and plot
    /// accuracy and ECE against compute and every policy's reliability diagram. On a
    /// token-exit experiment (a file with a `[token_exit]` table, e.g.
    /// experiments/configs/shakespeare-token-exit.toml): train DYNAMAX's exit classifiers
    /// on each frozen language model, sweep every exit rule's threshold (classifiers,
    /// CALM's softmax, margin and saturation measures), measure compute saved against
    /// consistency with full-depth greedy decoding, and calibrate each threshold with
    /// Learn-then-Test.
    Compare {
        #[command(flatten)]
        run: RunArgs,
        /// Only these methods (comma-separated: pabee, dee_bert, final_only, palbert,
        /// ponder_net, jei_dnn).
        #[arg(long, value_delimiter = ',')]
        methods: Vec<String>,
    },
    /// Train one model (the method given by --method, default: the experiment's
    /// `train.method`, on the backbone `model.backbone`, e.g. `--set
    /// model.backbone=mamba`) and report the test accuracy of each exit.
    Train {
        #[command(flatten)]
        run: RunArgs,
        /// Training method: pabee, dee_bert, final_only, palbert, ponder_net or jei_dnn.
        #[arg(long)]
        method: Option<String>,
        /// In an experiment with `compare.seeds`: which of its seeds to train (default:
        /// the first), into the model folder `compare` uses for it.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// PonderNet on the parity task: train the GRU step model with the PonderNet loss,
    /// then report accuracy and pondering steps per difficulty for sampling, Q-exit,
    /// the expectation and full depth, with a steps-vs-difficulty plot. Presets:
    /// experiments/configs/parity-interpolation.toml (default) and
    /// parity-extrapolation.toml.
    Parity {
        /// Parity experiment file (TOML).
        #[arg(default_value = DEFAULT_PARITY)]
        experiment: PathBuf,
        #[command(flatten)]
        run: FolderArgs,
    },
    /// A language model (Mamba, or a causal transformer decoder with `model.backbone =
    /// "transformer"`) on a text corpus, over characters or the tokens of a
    /// tokenizer.json: train it (resumable checkpoints every few hundred steps), report
    /// validation (and test) bits per token and per character and the loss curve,
    /// generate a sample token by token, and measure the generation state (recurrent
    /// state or KV cache) at two lengths. Your own text: experiments/configs/lm-text.toml
    /// (`[data]` with `format = "text"`, `train`, `valid`, `test`, `tokenizer`). The
    /// complete works of Shakespeare: experiments/configs/shakespeare-mamba.toml (about 25
    /// minutes on 2 cores) and shakespeare-transformer.toml (about 11 minutes); token-level
    /// early exit on both: `ponder compare experiments/configs/shakespeare-token-exit.toml`.
    Lm {
        /// LM experiment file (TOML).
        #[arg(default_value = DEFAULT_LM)]
        experiment: PathBuf,
        #[command(flatten)]
        run: FolderArgs,
    },
    /// Evaluate policies on the models already trained in a run folder.
    Eval {
        /// The run folder.
        #[arg(long)]
        run: PathBuf,
        /// Policies to evaluate (repeatable): full, oracle, max_prob=T, entropy=S,
        /// patience=T, fixed=L, for models with a halting head (palbert, ponder_net)
        /// q_exit=Q, sample=SEED, expectation, and for JEI-DNN models gate=A; on a
        /// regression task (GLUE's STS-B) full, fixed=L and patience=T,tol=TAU. Default:
        /// the experiment's comparison sweep. Every classification policy is also scored
        /// for calibration and conformal sets.
        #[arg(long = "policy")]
        policies: Vec<String>,
        /// Do not fetch missing data sets.
        #[arg(long)]
        no_fetch: bool,
    },
}

/// The options of `ponder compare` and `ponder train`: an experiment file and its run folder.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Experiment file (TOML).
    #[arg(default_value = DEFAULT_EXPERIMENT)]
    experiment: PathBuf,
    #[command(flatten)]
    folder: FolderArgs,
    /// Do not fetch missing data sets.
    #[arg(long)]
    no_fetch: bool,
}

/// The run of `ponder compare` / `train`: a resumed run folder with its own experiment,
/// or a new one. The data is loaded first, and a new run folder is only created once it
/// has loaded, with the values the data decided (class order, image size and
/// normalisation) in its `config.toml`; bad data leaves no run folder behind.
fn open_run(args: &RunArgs) -> Result<(RunFolder, Experiment, LoadedData)> {
    if let Some(root) = &args.folder.resume {
        let (run, mut experiment) = RunFolder::open(root)?;
        eprintln!("resuming run {}", run.root().display());
        let loaded = load_data(&mut experiment, !args.no_fetch)?;
        return Ok((run, experiment, loaded));
    }
    let mut experiment =
        Experiment::load(&args.experiment)?.with_overrides(&args.folder.overrides)?;
    let loaded = load_data(&mut experiment, !args.no_fetch)
        .with_context(|| format!("loading the data of {}", args.experiment.display()))?;
    let run = match &args.folder.run_dir {
        Some(dir) => RunFolder::create_at(dir.clone(), &experiment)?,
        None => RunFolder::create(Path::new("runs"), &experiment)?,
    };
    eprintln!("run folder: {}", run.root().display());
    Ok((run, experiment, loaded))
}

/// Loads the experiment's data, fills in what the data decides and checks the
/// experiment again with those values (e.g. the patch size against the image size).
fn load_data(experiment: &mut Experiment, fetch_missing: bool) -> Result<LoadedData> {
    let loaded = data::load(&mut experiment.data, experiment.train.seed, fetch_missing)?;
    experiment
        .validate()
        .context("with the values read from the data")?;
    Ok(loaded)
}

fn write_results(run: &RunFolder, stem: &str, results: &CompareResults) -> Result<String> {
    let table = report::table(results);
    run.write(
        &format!("{stem}.json"),
        &serde_json::to_vec_pretty(results)?,
    )?;
    run.write(&format!("{stem}.md"), table.as_bytes())?;
    Ok(table)
}

fn compare_cmd(device: DeviceChoice, args: RunArgs, methods: Vec<String>) -> Result<()> {
    let config_path = match &args.folder.resume {
        Some(root) => root.join("config.toml"),
        None => args.experiment.clone(),
    };
    if TokenExitExperiment::is_token_exit(&config_path) {
        if !methods.is_empty() {
            bail!("--methods does not apply to a token-exit experiment (it compares exit rules)");
        }
        return token_exit_cmd(device, args);
    }
    let (dev, dev_name) = device.device()?;
    let (run, experiment, loaded) = open_run(&args)?;
    let methods = if methods.is_empty() {
        experiment.methods()
    } else {
        methods
            .iter()
            .map(|m| parse_method(m))
            .collect::<Result<_>>()?
    };
    let results = match &loaded {
        LoadedData::Images(s) => {
            pipeline::compare(&experiment, s, &run, &dev, &dev_name, &methods)?
        }
        LoadedData::Text(s) => pipeline::compare(&experiment, s, &run, &dev, &dev_name, &methods)?,
    };
    let table = write_results(&run, "results", &results)?;
    run.write(
        "accuracy_vs_flops.svg",
        report::accuracy_plot(&results)?.as_bytes(),
    )?;
    run.write(
        "exit_histogram.svg",
        report::histogram_plot(&results)?.as_bytes(),
    )?;
    println!("{table}");
    if results.regression {
        // calibration needs class probabilities: a regression task has none
        println!(
            "wrote {0}/results.json, results.md, accuracy_vs_flops.svg (Pearson correlation) and exit_histogram.svg",
            run.root().display()
        );
        return Ok(());
    }
    run.write("ece_vs_flops.svg", report::ece_plot(&results)?.as_bytes())?;
    let diagrams = report::reliability_plots(&results)?;
    for (path, svg) in &diagrams {
        run.write(path, svg.as_bytes())?;
    }
    println!(
        "wrote {0}/results.json, results.md, accuracy_vs_flops.svg, exit_histogram.svg, ece_vs_flops.svg and {1} reliability diagrams in {0}/reliability/",
        run.root().display(),
        diagrams.len()
    );
    Ok(())
}

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

fn train_cmd(
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

fn eval_cmd(device: DeviceChoice, root: PathBuf, specs: Vec<String>, no_fetch: bool) -> Result<()> {
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
            for method in ALL_METHODS {
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
        models.push(pipeline::evaluate_model(
            experiment, kind, seed, &model, data, policies, None, 0.0,
        )?);
        if let Some((report, refit)) = pipeline::gate_refit(
            experiment,
            kind,
            seed,
            &model,
            &splits.train,
            data,
            policies,
        )? {
            if let Some(last) = models.last_mut() {
                last.gates = Some(report);
            }
            models.push(refit);
        }
    }
    Ok(CompareResults::new(
        experiment,
        dev_name,
        splits.test.len(),
        models,
    ))
}

fn open_or_create<E: serde::Serialize>(
    resume: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    load_saved: impl FnOnce(&Path) -> Result<E>,
    load_new: impl FnOnce() -> Result<(String, E)>,
) -> Result<(RunFolder, E)> {
    if let Some(root) = resume {
        let run = RunFolder::existing(&root)?;
        let experiment = load_saved(&root.join("config.toml"))?;
        return Ok((run, experiment));
    }
    let (name, experiment) = load_new()?;
    let root = run_dir.unwrap_or_else(|| RunFolder::timestamped(Path::new("runs"), &name));
    let text = toml::to_string_pretty(&experiment).context("serialising the experiment")?;
    Ok((RunFolder::create_with_config(root, &text)?, experiment))
}

/// [`open_or_create`] that also reads the experiment's data with `read` before a new run
/// folder is made, so that bad data leaves no folder behind.
fn open_or_create_with<E: serde::Serialize, D>(
    resume: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    load_saved: impl FnOnce(&Path) -> Result<E>,
    load_new: impl FnOnce() -> Result<(String, E)>,
    read: impl FnOnce(&E) -> Result<D>,
) -> Result<(RunFolder, E, D)> {
    if let Some(root) = resume {
        let run = RunFolder::existing(&root)?;
        let experiment = load_saved(&root.join("config.toml"))?;
        let data = read(&experiment)?;
        return Ok((run, experiment, data));
    }
    let (name, experiment) = load_new()?;
    let data = read(&experiment)?;
    let root = run_dir.unwrap_or_else(|| RunFolder::timestamped(Path::new("runs"), &name));
    let text = toml::to_string_pretty(&experiment).context("serialising the experiment")?;
    Ok((
        RunFolder::create_with_config(root, &text)?,
        experiment,
        data,
    ))
}

fn parity_cmd(device: DeviceChoice, path: PathBuf, args: FolderArgs) -> Result<()> {
    let (dev, _) = device.device()?;
    let (run, experiment) = open_or_create(
        args.resume,
        args.run_dir,
        |root| ParityExperiment::load(root, &[]),
        || {
            let e = ParityExperiment::load(&path, &args.overrides)?;
            Ok((e.name.clone(), e))
        },
    )?;
    eprintln!("run folder: {}", run.root().display());
    let results = parity::run(&experiment, &run, &dev)?;
    finish_run(
        &run,
        &results,
        &parity::table(&results),
        ("steps_vs_difficulty.svg", parity::steps_plot(&results)?),
        "metrics.json, model.bpk",
    )
}

fn token_exit_cmd(device: DeviceChoice, args: RunArgs) -> Result<()> {
    let (dev, _) = device.device()?;
    let path = args.experiment.clone();
    let overrides = args.folder.overrides.clone();
    let (run, experiment, corpus) = open_or_create_with(
        args.folder.resume,
        args.folder.run_dir,
        |root| TokenExitExperiment::load(root, &[]),
        || {
            let e = TokenExitExperiment::load(&path, &overrides)?;
            Ok((e.name.clone(), e))
        },
        token_exit::load_corpus,
    )?;
    eprintln!("run folder: {}", run.root().display());
    let results = token_exit::run(&experiment, &corpus, &run, &dev)?;
    let mut plots = Vec::new();
    for b in &results.backbones {
        let name = format!("compute_vs_consistency_{}.svg", b.name);
        run.write(&name, token_exit::plot(b)?.as_bytes())?;
        plots.push(name);
    }
    run.write("results.json", &serde_json::to_vec_pretty(&results)?)?;
    let table = token_exit::table(&results);
    run.write("results.md", table.as_bytes())?;
    println!("{table}");
    println!(
        "wrote {}/results.json, results.md, {}, classifiers/ and curves/",
        run.root().display(),
        plots.join(", ")
    );
    Ok(())
}

fn lm_cmd(device: DeviceChoice, path: PathBuf, args: FolderArgs) -> Result<()> {
    let (dev, _) = device.device()?;
    // the corpus is read and checked before a run folder is made
    let (run, experiment, inputs) = open_or_create_with(
        args.resume,
        args.run_dir,
        |root| LmExperiment::load(root, &[]),
        || {
            let e = LmExperiment::load(&path, &args.overrides)?;
            Ok((e.name.clone(), e))
        },
        LmExperiment::inputs,
    )?;
    eprintln!("run folder: {}", run.root().display());
    let (results, logs) = lm::run(&experiment, &inputs, &run, &dev)?;
    finish_run(
        &run,
        &results,
        &lm::table(&results, &logs),
        ("loss_curve.svg", lm::loss_plot(&experiment.name, &logs)?),
        if experiment.model.backbone == lm::LmBackbone::Mamba {
            "metrics.json, sample.txt, model.bpk, model.safetensors"
        } else {
            "metrics.json, sample.txt, model.bpk"
        },
    )
}

/// Writes `results.json`, `results.md` and a plot into the run, prints the table and
/// what was written (`also`: the files the run wrote before).
fn finish_run(
    run: &RunFolder,
    results: &impl serde::Serialize,
    table: &str,
    (plot_name, plot): (&str, String),
    also: &str,
) -> Result<()> {
    run.write("results.json", &serde_json::to_vec_pretty(results)?)?;
    run.write("results.md", table.as_bytes())?;
    run.write(plot_name, plot.as_bytes())?;
    println!("{table}");
    println!(
        "wrote {}/results.json, results.md, {plot_name}, {also}",
        run.root().display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Compare { run, methods } => compare_cmd(cli.device, run, methods),
        Command::Train { run, method, seed } => train_cmd(cli.device, run, method, seed),
        Command::Eval {
            run,
            policies,
            no_fetch,
        } => eval_cmd(cli.device, run, policies, no_fetch),
        Command::Parity { experiment, run } => parity_cmd(cli.device, experiment, run),
        Command::Lm { experiment, run } => lm_cmd(cli.device, experiment, run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
