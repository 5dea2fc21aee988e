//! `ponder parity`: PonderNet on the parity task.

use std::path::PathBuf;

use anyhow::Result;
use ponder_experiments::DeviceChoice;
use ponder_experiments::parity::{self, ParityExperiment};

use super::{finish_run, open_or_create};
use crate::FolderArgs;

pub(crate) fn parity_cmd(device: DeviceChoice, path: PathBuf, args: FolderArgs) -> Result<()> {
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
