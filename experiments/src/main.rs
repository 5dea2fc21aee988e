//! `ponder`: train, evaluate and compare early-exit models. See `ponder --help`.
//!
//! This file is the command line (its options and help) and the dispatch to the
//! commands, whose bodies are in `commands/`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ponder_experiments::DeviceChoice;

mod commands;

use commands::{compare_cmd, eval_cmd, lm_cmd, parity_cmd, train_cmd};

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
    /// Compute device: `cpu` (burn's flex backend), `wgpu` or `cuda` (each needs a
    /// build with that cargo feature: `--features wgpu`, `--features cuda`).
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
