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

/// One language model: trained here (`lm` and `run`) or pretrained (`pretrained`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneEntry {
    /// Name in tables (`mamba`, `transformer`).
    pub name: String,
    /// The `ponder lm` experiment that trains it when `run` holds no model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lm: Option<PathBuf>,
    /// The `ponder lm` run folder of the trained model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<PathBuf>,
    /// A pretrained Hugging Face checkpoint folder instead (`config.json`,
    /// `model.safetensors` and `tokenizer.json`: GPT-2, Llama / Mistral / Qwen2, or Mamba),
    /// whose `tokenizer.json` the experiment's `data.tokenizer` must be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PathBuf>,
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
    /// Labels: the final token in the top-k of the exit's prediction (give `top_k` or
    /// `k_fraction`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// k as a share of the vocabulary, `max(1, round(k_fraction · vocab))`: the same
    /// label strictness whatever the vocabulary (DYNAMAX's k = 15 of 32,000 tokens is
    /// 0.05%; of an 84-character vocabulary it labels most tokens "exit").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k_fraction: Option<f64>,
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
        for b in &self.backbones {
            match (&b.lm, &b.run, &b.pretrained) {
                (Some(_), Some(_), None) | (None, None, Some(_)) => {}
                _ => bail!(
                    "invalid value for backbone `{}`: give either `lm` and `run` (a model trained by `ponder lm`) or `pretrained` (a Hugging Face checkpoint folder)",
                    b.name
                ),
            }
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
        for c in &s.classifiers {
            match (c.top_k, c.k_fraction) {
                (Some(0), None) => {
                    bail!(
                        "invalid value for `token_exit.classifiers`: top_k = 0 must be at least 1"
                    )
                }
                (Some(_), None) => {}
                (None, Some(f)) if f > 0.0 && f <= 1.0 => {}
                (None, Some(f)) => bail!(
                    "invalid value for `token_exit.classifiers`: k_fraction = {f} must be in (0, 1]"
                ),
                _ => bail!(
                    "invalid value for `token_exit.classifiers`: give each classifier `top_k` or `k_fraction` (not both)"
                ),
            }
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

    /// The specs of the classifiers for a vocabulary of `vocab` tokens (which resolves
    /// `k_fraction`).
    pub fn specs(&self, vocab: usize) -> Vec<ExitClassifierSpec> {
        self.token_exit
            .classifiers
            .iter()
            .map(|c| {
                let k = c.k(vocab);
                match c.kind {
                    ClassifierKind::Linear => {
                        ExitClassifierSpec::linear(self.token_exit.exits.clone(), k)
                    }
                    ClassifierKind::Mamba => {
                        ExitClassifierSpec::mamba(self.token_exit.exits.clone(), k, c.summary)
                    }
                }
            })
            .collect()
    }
}

impl ClassifierEntry {
    /// The label's k for a vocabulary of `vocab` tokens: `top_k`, or `max(1,
    /// round(k_fraction · vocab))`.
    pub fn k(&self, vocab: usize) -> usize {
        match (self.top_k, self.k_fraction) {
            (Some(k), _) => k,
            (None, Some(f)) => ((f * vocab as f64).round() as usize).max(1),
            (None, None) => unreachable!("validate() requires top_k or k_fraction"),
        }
    }
}
