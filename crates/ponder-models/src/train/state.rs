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
