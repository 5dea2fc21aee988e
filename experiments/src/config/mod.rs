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
    /// The keys that [`pretrained_defaults`] filled in when this experiment was read (a
    /// new experiment with `model.pretrained` that left them unset), for the program to
    /// say so. Not part of the file: the values themselves are.
    #[serde(skip)]
    pub pretrained_defaults: Vec<String>,
}

/// The exit settings a new experiment on a pretrained encoder (`model.pretrained`) gets
/// for the keys it leaves unset, as `(key, value)`, for its pooling (`mean_pool`: the
/// token mean; otherwise `[CLS]`): the exits train at their own rate of 1e-3 instead of
/// the encoder's fine-tuning rate, PABEE trains its exits alone on the frozen encoder
/// for one epoch first, and every exit's input is batch-normalised; with `[CLS]`
/// pooling the encoder's dropout is also off. Without them, the early exits of
/// all-MiniLM-L6-v2 stay at (or near) the majority class (docs/results.md, "Exits that
/// learn on the pretrained encoder"). A run folder's `config.toml` holds the values it
/// was trained with, so these apply to new experiments only.
pub fn pretrained_defaults(mean_pool: bool) -> Vec<(&'static str, &'static str)> {
    let mut defaults = vec![
        ("train.head_learning_rate", "1e-3"),
        ("train.heads_first_epochs", "1"),
        ("model.head_input_norm", "true"),
    ];
    if !mean_pool {
        defaults.push(("model.dropout", "0.0"));
    }
    defaults
}

impl Experiment {
    /// Reads and checks an experiment file (a new experiment: see [`Self::parse`]).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading experiment file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in experiment file {}", path.display()))
    }

    /// Parses and checks a new experiment from TOML text; without `model.offramp_pooler`
    /// it gets DeeBERT's reference form, `separate`, and with `model.pretrained` the
    /// [`pretrained_defaults`] for the keys it leaves unset.
    pub fn parse(text: &str) -> Result<Self> {
        // errors point into the file as written, before any default is filled in
        let as_written = Self::parse_with(text, OffRampPooler::Separate)?;
        let raw: toml::Table = toml::from_str(text)?;
        let is_set = |key: &str| {
            let (section, name) = key.split_once('.').unwrap_or_else(|| unreachable!());
            raw.get(section)
                .and_then(|s| s.as_table())
                .is_some_and(|s| s.contains_key(name))
        };
        let mean_pool = as_written.model.pooling == ponder_mamba::Pooling::Mean;
        let missing: Vec<(&str, &str)> = if as_written.model.pretrained.is_some() {
            pretrained_defaults(mean_pool)
                .into_iter()
                .filter(|(key, _)| !is_set(key))
                .collect()
        } else {
            Vec::new()
        };
        if missing.is_empty() {
            return Ok(as_written);
        }
        let mut value = toml::Value::Table(raw);
        let sets: Vec<String> = missing.iter().map(|(k, v)| format!("{k}={v}")).collect();
        apply_overrides(&mut value, &sets)?;
        let mut experiment = Self::parse_with(&toml::to_string(&value)?, OffRampPooler::Separate)?;
        experiment.pretrained_defaults =
            missing.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        Ok(experiment)
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
        // what the pretrained defaults filled in is decided again after the overrides
        // (they may change the pooling, or set one of the keys)
        for default in &self.pretrained_defaults {
            let key = default.split(" = ").next().unwrap_or_default();
            if let Some((section, name)) = key.split_once('.')
                && let Some(table) = value.get_mut(section).and_then(|s| s.as_table_mut())
            {
                table.remove(name);
            }
        }
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
