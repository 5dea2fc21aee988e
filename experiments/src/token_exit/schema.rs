//! The token-exit experiment file: its `[[backbones]]`, `[classifier_train]` and
//! `[token_exit]` tables, and the checks that need no language model.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ponder_core::SkipRule;
use ponder_exits::token::{ClassifierKind, ExitClassifierSpec, SummaryInput};
use ponder_models::ClassifierTrainConfig;
use serde::{Deserialize, Serialize};

use crate::lm;

/// A token-exit experiment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenExitExperiment {
    /// Name (used for the run folder).
    pub name: String,
    /// The corpus (its vocabulary must be the one the language models were trained on;
    /// the sequences come from its validation text).
    pub data: lm::LmData,
    /// The language models.
    pub backbones: Vec<BackboneEntry>,
    /// How the exit classifiers train.
    #[serde(default)]
    pub classifier_train: ClassifierTrainConfig,
    /// What is swept and measured.
    pub token_exit: TokenExitSweep,
}

/// One language model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneEntry {
    /// Name in tables (`mamba`, `transformer`).
    pub name: String,
    /// The `ponder lm` experiment that trains it when `run` holds no model.
    pub lm: PathBuf,
    /// The `ponder lm` run folder of the trained model.
    pub run: PathBuf,
    /// What skipped layers' caches get (transformer: copy or recompute; Mamba:
    /// unadvanced or recompute).
    pub skip_rule: SkipRule,
}

/// A classifier to train (its exits are `token_exit.exits`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierEntry {
    /// `linear` or `mamba`.
    pub kind: ClassifierKind,
    /// Labels: the final token in the top-k of the exit's prediction.
    pub top_k: usize,
    /// Mamba classifier input: `hidden` or `confidence`.
    #[serde(default = "default_summary")]
    pub summary: SummaryInput,
}

fn default_summary() -> SummaryInput {
    SummaryInput::Hidden
}

/// The sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenExitSweep {
    /// Exit positions (1-based layers).
    pub exits: Vec<usize>,
    /// DYNAMAX's "always run the last layer" settings to measure (`[false]`: exited
    /// tokens emit their exit layer's prediction; `[true]`: DYNAMAX's rule).
    pub always_run_last: Vec<bool>,
    /// Classifiers to train and sweep.
    pub classifiers: Vec<ClassifierEntry>,
    /// Thresholds of P(exit).
    pub classifier_thresholds: Vec<f64>,
    /// Thresholds of the softmax maximum.
    pub softmax_thresholds: Vec<f64>,
    /// Thresholds of the top-2 margin.
    pub margin_thresholds: Vec<f64>,
    /// Thresholds of the hidden-state saturation (cosine).
    pub saturation_thresholds: Vec<f64>,
    /// Tokens (characters, with a character vocabulary) of each prompt.
    pub prompt_len: usize,
    /// Tokens generated after each prompt (the first from the prompt's full-depth
    /// pass, the rest through the exiting decoder).
    pub gen_len: usize,
    /// Held-out sequences used to calibrate thresholds (Learn-then-Test).
    pub calibration_sequences: usize,
    /// Held-out sequences the results are measured on.
    pub test_sequences: usize,
    /// Rows decoded together.
    pub batch_size: usize,
    /// Target token consistency (Learn-then-Test's δ = 1 − target).
    pub target_consistency: f64,
    /// Learn-then-Test's error level ε.
    pub ltt_epsilon: f64,
    /// The softmax threshold at which every skip rule is compared.
    pub ablation_threshold: f64,
}

impl TokenExitExperiment {
    /// Whether a TOML file is a token-exit experiment (it has a `[token_exit]` table).
    pub fn is_token_exit(path: &Path) -> bool {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
            .is_some_and(|t| t.contains_key("token_exit"))
    }

    /// Reads and checks an experiment file, then applies `key=value` overrides.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let experiment: Self = crate::config::load_toml(path, overrides, "token-exit experiment")?;
        experiment
            .validate()
            .with_context(|| format!("in token-exit experiment {}", path.display()))?;
        Ok(experiment)
    }

    /// Checks what can be checked without the models.
    pub fn validate(&self) -> Result<()> {
        self.data.validate()?;
        self.classifier_train.validate()?;
        let s = &self.token_exit;
        if self.backbones.is_empty() {
            bail!("invalid value for `backbones`: name at least one language model");
        }
        for (key, value) in [
            ("prompt_len", s.prompt_len),
            ("calibration_sequences", s.calibration_sequences),
            ("test_sequences", s.test_sequences),
            ("batch_size", s.batch_size),
        ] {
            if value == 0 {
                bail!("invalid value for `token_exit.{key}`: must be at least 1");
            }
        }
        if s.gen_len < 2 {
            bail!("invalid value for `token_exit.gen_len`: must be at least 2");
        }
        if s.exits.is_empty() || s.exits[0] == 0 || s.exits.windows(2).any(|w| w[0] >= w[1]) {
            bail!(
                "invalid value for `token_exit.exits`: {:?} must be increasing layers from 1",
                s.exits
            );
        }
        if let Some(c) = s.classifiers.iter().find(|c| c.top_k == 0) {
            bail!(
                "invalid value for `token_exit.classifiers`: top_k = {} must be at least 1",
                c.top_k
            );
        }
        if !s.ablation_threshold.is_finite() {
            bail!("invalid value for `token_exit.ablation_threshold`: must be a finite number");
        }
        if s.always_run_last.is_empty() {
            bail!("invalid value for `token_exit.always_run_last`: give [false], [true] or both");
        }
        if !(s.target_consistency > 0.0 && s.target_consistency < 1.0) {
            bail!("invalid value for `token_exit.target_consistency`: must be in (0, 1)");
        }
        if !(s.ltt_epsilon > 0.0 && s.ltt_epsilon < 1.0) {
            bail!("invalid value for `token_exit.ltt_epsilon`: must be in (0, 1)");
        }
        for (key, values) in [
            ("classifier_thresholds", &s.classifier_thresholds),
            ("softmax_thresholds", &s.softmax_thresholds),
            ("margin_thresholds", &s.margin_thresholds),
            ("saturation_thresholds", &s.saturation_thresholds),
        ] {
            if let Some(bad) = values.iter().find(|t| !t.is_finite()) {
                bail!("invalid value for `token_exit.{key}`: {bad} is not a finite number");
            }
        }
        Ok(())
    }

    /// The specs of the classifiers.
    pub fn specs(&self) -> Vec<ExitClassifierSpec> {
        self.token_exit
            .classifiers
            .iter()
            .map(|c| match c.kind {
                ClassifierKind::Linear => {
                    ExitClassifierSpec::linear(self.token_exit.exits.clone(), c.top_k)
                }
                ClassifierKind::Mamba => {
                    ExitClassifierSpec::mamba(self.token_exit.exits.clone(), c.top_k, c.summary)
                }
            })
            .collect()
    }
}
