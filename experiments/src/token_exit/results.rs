//! What a token-exit comparison measures: its `results.json` (per backbone, every rule's
//! sweep with its Learn-then-Test choice, and the skip-rule ablation) and the curves
//! written to `curves/` as they finish.

use ponder_calibration::LttOutcome;
use ponder_core::SkipRule;
use ponder_exits::token::TokenRule;
use ponder_models::{ClassifierReport, TokenExitMetrics};
use serde::{Deserialize, Serialize};

/// One swept point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// The rule and threshold.
    pub rule: TokenRule,
    /// Measured on the test sequences.
    pub test: TokenExitMetrics,
    /// Mean teacher-forced consistency on the calibration sequences.
    pub calibration_consistency: f64,
    /// Per-sequence inconsistency on the calibration sequences (Learn-then-Test's
    /// losses).
    pub calibration_losses: Vec<f64>,
}

/// A threshold sweep of one exit rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// `linear[k=15]`, `softmax`, ...
    pub family: String,
    /// DYNAMAX's always-run-last setting.
    pub always_run_last: bool,
    /// Points, from the most conservative threshold to the least.
    pub points: Vec<SweepPoint>,
    /// Learn-then-Test on the calibration sequences.
    pub ltt: LttOutcome,
    /// The chosen threshold's test metrics (None when nothing could be certified).
    pub ltt_test: Option<TokenExitMetrics>,
    /// The largest share of layers saved among points whose test consistency reaches
    /// the target (None if none does).
    pub layers_saved_at_target: Option<f64>,
    /// What the points were measured under (backbone, exits, lengths, sequences,
    /// classifier training): a resumed run reuses a point of the same rule only under
    /// the same setup.
    #[serde(default)]
    pub setup: Option<serde_json::Value>,
}

/// A skip rule compared at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AblationRow {
    /// The rule.
    pub skip_rule: SkipRule,
    /// DYNAMAX's always-run-last setting.
    pub always_run_last: bool,
    /// Test metrics.
    pub test: TokenExitMetrics,
}

/// Everything measured on one language model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackboneResult {
    /// Name.
    pub name: String,
    /// Layers.
    pub n_layers: usize,
    /// Parameters of the language model.
    pub n_params: usize,
    /// The skip rule of the sweeps.
    pub skip_rule: SkipRule,
    /// Bits per token (per character, with a character vocabulary) of the test
    /// continuations at full depth (teacher forcing).
    pub full_bpc: f64,
    /// Wall-clock seconds of full-depth free decoding of the test sequences (one run,
    /// after a warm-up, timed as every swept point).
    pub full_seconds: f64,
    /// The trained classifiers.
    pub classifiers: Vec<ClassifierReport>,
    /// One sweep per rule and always-run-last setting.
    pub curves: Vec<Curve>,
    /// Skip rules compared.
    pub ablation: Vec<AblationRow>,
}

/// The results of a token-exit comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenExitResults {
    /// Experiment name.
    pub experiment: String,
    /// `characters`, or `tokenizer PATH`: what a token is (the `bpc` columns are bits
    /// per token, which are bits per character only for characters).
    #[serde(default = "characters")]
    pub vocabulary: String,
    /// Target consistency and ε.
    pub target_consistency: f64,
    /// ε.
    pub ltt_epsilon: f64,
    /// Per backbone.
    pub backbones: Vec<BackboneResult>,
}

fn characters() -> String {
    "characters".into()
}
