//! `ponder compare`: train and evaluate every method of an experiment and write its
//! tables and plots; on a token-exit experiment, sweep the exit rules of its language
//! models.

use anyhow::{Result, bail};
use ponder_experiments::data::LoadedData;
use ponder_experiments::pipeline;
use ponder_experiments::report;
use ponder_experiments::token_exit::{self, TokenExitExperiment};
use ponder_experiments::{DeviceChoice, parse_method};

use super::{open_or_create_with, open_run, write_results};
use crate::RunArgs;

pub(crate) fn compare_cmd(device: DeviceChoice, args: RunArgs, methods: Vec<String>) -> Result<()> {
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
