//! Experiment files (TOML): what to train, on which data, and which policies to compare.
//!
//! Every section rejects unknown keys, and every value is checked before anything runs,
//! so a typo or an out-of-range threshold is reported with its key and file.
//!
//! This file holds the experiment as a whole and how it is read; `model.rs` the
//! `[model]` section and the backbone it builds, `compare.rs` the `[compare]` section
//! and what `ponder compare` trains and sweeps, `validate.rs` the checks,
//! `overrides.rs` the `--set key=value` overrides, and `data.rs` the `[data]` section.

use std::path::Path;

use anyhow::{Context, Result};
use ponder_data::GlueTask;
use ponder_exits::OffRampPooler;
use ponder_models::TrainConfig;
use serde::{Deserialize, Serialize};

mod compare;
mod data;
mod model;
mod overrides;
#[cfg(test)]
mod tests;
mod validate;

pub use compare::CompareConfig;
pub use data::{DataConfig, DataFormat, Dataset, InputKind};
pub use model::{BackboneKind, ModelConfig};
pub(crate) use model::{default_d_conv, default_d_state, default_expand};
pub use overrides::apply_overrides;
pub(crate) use overrides::load_toml;

/// A whole experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Name of the experiment (used for the run folder).
    pub name: String,
    /// The data set.
    pub data: DataConfig,
    /// The backbone.
    pub model: ModelConfig,
    /// Training hyper-parameters shared by every method.
    #[serde(default)]
    pub train: TrainConfig,
    /// What `ponder compare` trains and evaluates.
    #[serde(default)]
    pub compare: CompareConfig,
}

impl Experiment {
    /// Reads and checks an experiment file (a new experiment: see [`Self::parse`]).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading experiment file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in experiment file {}", path.display()))
    }

    /// Parses and checks a new experiment from TOML text; without `model.offramp_pooler`
    /// it gets DeeBERT's reference form, `separate`.
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_with(text, OffRampPooler::Separate)
    }

    /// Reads and checks the `config.toml` of a run folder: as [`Self::load`], except
    /// that a file without `model.offramp_pooler` was saved before the key existed, when
    /// DeeBERT was trained in the `stacked` form, so that is what it gets.
    pub fn load_saved(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading saved experiment {}", path.display()))?;
        Self::parse_with(&text, OffRampPooler::Stacked)
            .with_context(|| format!("in saved experiment {}", path.display()))
    }

    fn parse_with(text: &str, offramp_pooler: OffRampPooler) -> Result<Self> {
        let mut experiment: Self = toml::from_str(text)?;
        experiment
            .model
            .offramp_pooler
            .get_or_insert(offramp_pooler);
        experiment.validate()?;
        Ok(experiment)
    }

    /// Applies `key=value` overrides (TOML values, dotted keys such as
    /// `train.epochs=2`), then checks the result.
    pub fn with_overrides(self, overrides: &[String]) -> Result<Self> {
        if overrides.is_empty() {
            return Ok(self);
        }
        let mut value = toml::Value::try_from(&self)?;
        apply_overrides(&mut value, overrides)?;
        let text = toml::to_string(&value)?;
        Self::parse(&text).context("after applying the --set overrides")
    }

    /// The GLUE task of a `dataset = "glue"` experiment (`None` for other data sets);
    /// see [`DataConfig::glue_task`].
    pub fn glue_task(&self) -> Result<Option<GlueTask>> {
        self.data.glue_task()
    }

    /// Whether the task is a regression (GLUE's STS-B): one output per exit, scored by
    /// correlation.
    pub fn is_regression(&self) -> bool {
        self.glue_task()
            .ok()
            .flatten()
            .is_some_and(GlueTask::is_regression)
    }
}
