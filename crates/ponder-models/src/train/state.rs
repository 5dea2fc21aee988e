//! What training records and reports: the epoch log, the state saved with every
//! checkpoint (from which a run resumes), the observer's hooks and the outcome.

use serde::{Deserialize, Serialize};

use crate::classifier::MultiExitClassifier;

/// One epoch's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// Stage (0-based; DeeBERT has two).
    pub stage: usize,
    /// Epoch within the stage (0-based).
    pub epoch: usize,
    /// Global optimisation step at the end of the epoch.
    pub step: usize,
    /// Mean training loss of the epoch.
    pub train_loss: f64,
    /// The validation metric the best checkpoint is chosen on.
    pub valid_metric: f64,
    /// Validation accuracy of every exit.
    pub valid_layer_accuracy: Vec<f64>,
    /// Learning rate of the epoch's last step.
    pub learning_rate: f64,
    /// Wall-clock seconds of the epoch (training and validation).
    pub seconds: f64,
    /// Share of the validation set in its most frequent class (classification; absent
    /// for regression and in logs written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_majority_rate: Option<f64>,
}

/// How far above the majority-class rate an exit must be to count as having learned.
pub const LEARNED_MARGIN: f64 = 0.01;

impl EpochLog {
    /// A warning naming the exits that have not learned on validation
    /// ([`unlearned_warning`]).
    pub fn unlearned_warning(&self) -> Option<String> {
        unlearned_warning(&self.valid_layer_accuracy, self.valid_majority_rate?)
    }
}

/// The exits (1-based) whose accuracy is within [`LEARNED_MARGIN`] (one point) of the
/// majority-class rate, or below it: they have not learned more than to predict the most
/// frequent class.
pub fn unlearned_exits(accuracy: &[f64], majority: f64) -> Vec<usize> {
    accuracy
        .iter()
        .enumerate()
        .filter(|&(_, &a)| a < majority + LEARNED_MARGIN)
        .map(|(l, _)| l + 1)
        .collect()
}

/// A warning naming the exits that have not learned, with their accuracy and the
/// majority-class rate, `None` when every exit has:
/// `exits 1, 2 have not learned: 63.7%, 63.9% (majority class 63.7%)`.
pub fn unlearned_warning(accuracy: &[f64], majority: f64) -> Option<String> {
    let exits = unlearned_exits(accuracy, majority);
    if exits.is_empty() {
        return None;
    }
    let names: Vec<String> = exits.iter().map(|e| e.to_string()).collect();
    let rates: Vec<String> = exits
        .iter()
        .map(|&e| format!("{:.1}%", 100.0 * accuracy[e - 1]))
        .collect();
    let one = exits.len() == 1;
    Some(format!(
        "exit{} {} {} not learned: {} (majority class {:.1}%)",
        if one { "" } else { "s" },
        names.join(", "),
        if one { "has" } else { "have" },
        rates.join(", "),
        100.0 * majority
    ))
}

/// The share of the most frequent class among `targets` (`None` when empty).
pub fn majority_rate(targets: impl IntoIterator<Item = usize>) -> Option<f64> {
    let mut counts = std::collections::BTreeMap::new();
    let mut n = 0usize;
    for t in targets {
        *counts.entry(t).or_insert(0usize) += 1;
        n += 1;
    }
    let top = counts.values().copied().max()?;
    Some(top as f64 / n as f64)
}

/// Where training is; saved with every checkpoint so a run resumes exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainState {
    /// Current stage.
    pub stage: usize,
    /// Current epoch within the stage.
    pub epoch: usize,
    /// Next batch within the epoch.
    pub batch: usize,
    /// Optimisation steps done so far, all stages together.
    pub global_step: usize,
    /// Steps done within the current stage (drives the learning-rate schedule).
    pub stage_step: usize,
    /// Sum of the losses of the current epoch so far (for its mean).
    pub epoch_loss_sum: f64,
    /// Best validation metric of the current stage.
    pub best_metric: Option<f64>,
    /// `(stage, epoch)` of the best checkpoint.
    pub best_at: Option<(usize, usize)>,
    /// All finished epochs.
    pub history: Vec<EpochLog>,
    /// Whether training has finished.
    pub finished: bool,
    /// JEI-DNN: the gates' positive-class weights of the current epoch (from the
    /// validation set at its start), kept so a resumed epoch uses the same ones.
    #[serde(default)]
    pub gate_positive_weight: Vec<f32>,
}

/// Hooks for progress display and interruption.
pub trait TrainObserver {
    /// Training is about to start (or resume) with `total_steps` steps in all.
    fn on_start(&mut self, _total_steps: usize, _state: &TrainState) {}
    /// A step finished with this loss.
    fn on_step(&mut self, _state: &TrainState, _loss: f64) {}
    /// An epoch finished.
    fn on_epoch(&mut self, _log: &EpochLog) {}
    /// Asked after every step: `true` stops training at once, as a kill would (nothing
    /// is saved beyond the checkpoints already written).
    fn should_stop(&mut self, _state: &TrainState) -> bool {
        false
    }
}

impl TrainObserver for () {}

/// The end of [`fit`](fn@super::fit).
#[derive(Debug)]
pub struct TrainOutcome {
    /// The best model (on validation) of the last stage, without autodiff.
    pub model: MultiExitClassifier,
    /// The final training state (history included).
    pub state: TrainState,
    /// Whether the observer stopped training before the end.
    pub interrupted: bool,
}
