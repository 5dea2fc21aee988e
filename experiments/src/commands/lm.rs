//! `ponder lm`: train and evaluate a language model on a text corpus.

use std::path::PathBuf;

use anyhow::Result;
use ponder_experiments::DeviceChoice;
use ponder_experiments::lm::{self, LmExperiment};

use super::{finish_run, open_or_create_with};
use crate::FolderArgs;

pub(crate) fn lm_cmd(device: DeviceChoice, path: PathBuf, args: FolderArgs) -> Result<()> {
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
