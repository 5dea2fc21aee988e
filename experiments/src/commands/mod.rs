//! The bodies of `ponder`'s commands, one file each (`compare.rs` also runs a
//! token-exit experiment), and what they share: opening or creating the run folder,
//! loading the data, writing the results.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ponder_experiments::config::Experiment;
use ponder_experiments::data::{self, LoadedData};
use ponder_experiments::pipeline::CompareResults;
use ponder_experiments::report;
use ponder_experiments::run::RunFolder;

use crate::RunArgs;

mod compare;
mod eval;
mod lm;
mod parity;
mod train;

pub(crate) use compare::compare_cmd;
pub(crate) use eval::eval_cmd;
pub(crate) use lm::lm_cmd;
pub(crate) use parity::parity_cmd;
pub(crate) use train::train_cmd;

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
    if !experiment.pretrained_defaults.is_empty() {
        eprintln!(
            "pretrained encoder: the exits get {} (the defaults for a pretrained encoder; set the keys to change them)",
            experiment.pretrained_defaults.join(", ")
        );
    }
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
