//! The training loop of multi-exit classifiers.

use std::time::Instant;

use burn::grad_clipping::GradientClippingConfig;
use burn::lr_scheduler::LrSchedulerConfig;
use burn::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::lr_scheduler::sequential::SequentialLrSchedulerConfig;
use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Int, Tensor};
use ponder_core::{LayerwiseBackbone, PonderError, Result, to_host};
use ponder_exits::ponder::{self, KlDirection, LastLayer};
use ponder_exits::{jei, loss};
use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointFiles;
use crate::classifier::MultiExitClassifier;
use crate::eval::{LayerAccuracy, layer_accuracies, make_batches};
use crate::source::{Batch, ClassificationSource};

/// How the exits are trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// PABEE: all heads and the backbone together, loss `Σ i·L_i / Σ i`.
    Pabee,
    /// DeeBERT: stage 1 trains the backbone and the final head on the final loss;
    /// stage 2 freezes them and trains the internal heads on `Σ_{i<N} L_i`.
    DeeBert,
    /// Only the final head (the baseline a multi-exit model is compared with).
    FinalOnly,
    /// PALBERT: a shared head and the Lambda layer, trained on the PonderNet loss
    /// ([`PonderConfig`]); inference by Q-exit.
    Palbert,
    /// PonderNet: a shared head and a linear λ head, trained on the same loss (PALBERT's
    /// "PonderNet-ALBERT" ablation); inference by sampling.
    PonderNet,
    /// JEI-DNN: the backbone and its final head are trained first (as DeeBERT's stage 1)
    /// and then frozen; per-layer inference modules are warmed up on its features, then
    /// the gates and the inference modules are trained in alternation ([`JeiConfig`]);
    /// inference by [`LearnedGate`](ponder_exits::LearnedGate).
    JeiDnn,
}

impl Method {
    /// Whether the method learns an exit distribution (its model has a halting head).
    pub fn has_halting(&self) -> bool {
        matches!(self, Method::Palbert | Method::PonderNet)
    }

    /// Whether the method learns JEI-DNN's gates (its model has them).
    pub fn has_gates(&self) -> bool {
        matches!(self, Method::JeiDnn)
    }

    /// Whether the method trains one-output heads on a regression task (PABEE's
    /// regression variant; DeeBERT and final-only train the same exits in stages). The
    /// halting and gating methods read class confidences and have none.
    pub fn has_regression_variant(&self) -> bool {
        matches!(self, Method::Pabee | Method::DeeBert | Method::FinalOnly)
    }
}

/// The stage of [`Method::JeiDnn`] at which its alternation starts (after the backbone's
/// and the warm-up's): models of different `jei.cost_weight` are the same up to there.
pub const JEI_ALTERNATION_STAGE: usize = 2;

/// JEI-DNN's training after the backbone (Regol, Chataoui, Coates, ICLR 2024,
/// arXiv:2310.09163, as its reference code `networkslab/dynn` schedules it): a warm-up of
/// the inference modules on the frozen backbone, then phases alternating between the
/// gates and the inference modules. Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JeiConfig {
    /// Epochs of the inference modules' warm-up on the frozen backbone, loss
    /// `Σ_l (G + 1 − l)·CE_l`; the epoch with the best mean validation accuracy of the
    /// inference modules is kept (the reference instead freezes each module once its
    /// validation accuracy has not improved for 2 epochs, up to a maximum). Default: 2.
    pub warmup_epochs: usize,
    /// Epochs of the alternating training of gates and inference modules; the epoch with
    /// the best validation accuracy under the gates (a_l ≥ 0.5) is kept, JEI-DNN's
    /// selection protocol, which ignores cost (reproduce the protocol, not only the
    /// model, to compare with its numbers). Default: 3.
    pub epochs: usize,
    /// λ_cost of the cost-aware gate targets `argmin_l CE_l + λ_cost·ĉ_l` (the reference's
    /// `--ce_ic_tradeoff`: 0.7 in its argparse, 0.15 in its README). Default: 0.15.
    pub cost_weight: f64,
    /// Batches per phase before switching (the reference's `bilevel_batch_count`); the
    /// first phase is the gates'. Default: 200.
    pub phase_batches: usize,
    /// Detach the ratio of the weighted IM loss `P_l·CE_l·(Σ_j CE_j / Σ_j P_j·CE_j)`
    /// (the intended per-sample weighting, emphasising the modules a row is likely to
    /// exit at) instead of the reference code's non-detached ratio: summed over l it is
    /// `Σ_l CE_l`, so in value and gradient the loss is the plain mean cross-entropy.
    /// Default: false.
    pub detach_ratio: bool,
    /// Cap of the gates' positive-class weights. Default: 5.
    pub positive_weight_cap: f32,
    /// How the positive weights count a gate's positives: `best_exit` (JEI-DNN's: the
    /// rows whose best exit is that gate's) or `cumulative` (the gate's actual
    /// positives, the rows whose best exit is that gate's or earlier). Default:
    /// `best_exit`.
    pub positive_count: jei::PositiveCount,
    /// The alternation's optimiser: `adamw` (the run's AdamW at `frozen_learning_rate`,
    /// with linear warm-up and decay over the stage's steps) or `sgd` (the reference
    /// code's: SGD with momentum, weight decay and a per-epoch cosine annealing, set
    /// by [`JeiConfig::sgd`]). The warm-up always uses AdamW. Default: `adamw`.
    pub optimizer: JeiOptimizer,
    /// The settings of `optimizer = "sgd"`.
    pub sgd: SgdSchedule,
    /// Positive weight 1 for every gate in the first alternation epoch, the validation
    /// set's weights from the second, as the reference code (which computes them only
    /// after an epoch). Default: false (validation weights from the first epoch).
    pub unit_weights_first_epoch: bool,
}

/// The optimiser of JEI-DNN's alternation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JeiOptimizer {
    /// AdamW with the run's settings.
    #[default]
    Adamw,
    /// SGD with momentum ([`SgdSchedule`]).
    Sgd,
}

/// SGD with momentum and a cosine annealing stepped once per epoch, as JEI-DNN's
/// reference code trains its gates and inference modules: epoch `e` of `E` runs at
/// `min + (max − min)·(1 + cos(π·e/E))/2`. Every field has a default (the reference's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdSchedule {
    /// Rate of the first epoch. Default: 0.01.
    pub learning_rate: f64,
    /// Rate the cosine ends at after the last epoch. Default: 2e-4.
    pub min_learning_rate: f64,
    /// Momentum (no dampening, PyTorch's convention). Default: 0.9.
    pub momentum: f64,
    /// L2 penalty added to the gradient. Default: 5e-4.
    pub weight_decay: f32,
}

impl Default for SgdSchedule {
    fn default() -> Self {
        Self {
            learning_rate: 0.01,
            min_learning_rate: 2e-4,
            momentum: 0.9,
            weight_decay: 5e-4,
        }
    }
}

impl SgdSchedule {
    /// The rate of epoch `epoch` (0-based) of `epochs`.
    pub fn rate(&self, epoch: usize, epochs: usize) -> f64 {
        let phase = std::f64::consts::PI * epoch as f64 / epochs.max(1) as f64;
        self.min_learning_rate
            + (self.learning_rate - self.min_learning_rate) * (1.0 + phase.cos()) / 2.0
    }

    /// The optimiser: SGD with momentum (dampening 0) and weight decay.
    pub fn optimizer(&self) -> ModuleOptimizer {
        SgdConfig::new()
            .with_momentum(Some(
                MomentumConfig::new()
                    .with_momentum(self.momentum)
                    .with_dampening(0.0),
            ))
            .with_weight_decay(
                (self.weight_decay > 0.0).then(|| WeightDecayConfig::new(self.weight_decay)),
            )
            .init()
    }
}

impl Default for JeiConfig {
    fn default() -> Self {
        Self {
            warmup_epochs: 2,
            epochs: 3,
            cost_weight: 0.15,
            phase_batches: 200,
            detach_ratio: false,
            positive_weight_cap: 5.0,
            positive_count: jei::PositiveCount::BestExit,
            optimizer: JeiOptimizer::Adamw,
            sgd: SgdSchedule::default(),
            unit_weights_first_epoch: false,
        }
    }
}

impl JeiConfig {
    /// Checks every value, naming the key at fault (under `prefix`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let err = |k: &str, m: String| Err(PonderError::config(format!("{prefix}.{k}"), m));
        if self.warmup_epochs == 0 {
            return err("warmup_epochs", "must be at least 1".into());
        }
        if self.epochs == 0 {
            return err("epochs", "must be at least 1".into());
        }
        if !(self.cost_weight >= 0.0 && self.cost_weight.is_finite()) {
            return err("cost_weight", format!("{} is not ≥ 0", self.cost_weight));
        }
        if self.phase_batches == 0 {
            return err("phase_batches", "must be at least 1".into());
        }
        if !(self.positive_weight_cap > 0.0 && self.positive_weight_cap.is_finite()) {
            return err(
                "positive_weight_cap",
                format!("{} is not > 0", self.positive_weight_cap),
            );
        }
        let sgd = &self.sgd;
        if !(sgd.learning_rate > 0.0 && sgd.learning_rate <= 1.0) {
            return err(
                "sgd.learning_rate",
                format!("{} is not in (0, 1]", sgd.learning_rate),
            );
        }
        if !(sgd.min_learning_rate >= 0.0 && sgd.min_learning_rate <= sgd.learning_rate) {
            return err(
                "sgd.min_learning_rate",
                format!(
                    "{} is not in [0, sgd.learning_rate = {}]",
                    sgd.min_learning_rate, sgd.learning_rate
                ),
            );
        }
        if !(0.0..1.0).contains(&sgd.momentum) {
            return err("sgd.momentum", format!("{} is not in [0, 1)", sgd.momentum));
        }
        if !(sgd.weight_decay >= 0.0 && sgd.weight_decay.is_finite()) {
            return err(
                "sgd.weight_decay",
                format!("{} is not ≥ 0", sgd.weight_decay),
            );
        }
        Ok(())
    }
}

/// The PonderNet loss of [`Method::Palbert`] and [`Method::PonderNet`]:
/// `Σ_n mean_b(p_n·ℓ_n) + β·KL` (the task term averaged over the batch per layer, then
/// summed over layers), with `p_n = λ_n·Π_{j<n}(1 − λ_j)` the probability of exiting at
/// layer n and the KL against a geometric prior `p_G(n) = λ_p(1 − λ_p)^{n−1}` (PonderNet,
/// Banino, Balaguer, Blundell 2021, arXiv:2107.05407; PALBERT, Balagansky, Gavrilov 2022,
/// arXiv:2204.03276). The default is PALBERT's
/// (the parity model's is labml's); a `[train.ponder]` table that is present must name
/// every key, so a partial table never mixes in another method's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PonderConfig {
    /// Weight β of the KL term. Default: 0.5 (PALBERT's README).
    pub beta: f32,
    /// Parameter λ_p of the geometric prior (mean ≈ 1/λ_p layers). Default: 0.1.
    pub lambda_p: f64,
    /// Put the prior's mass beyond the last layer on the last layer (PALBERT) instead of
    /// truncating it (labml). Default: true.
    pub prior_leftover_on_last: bool,
    /// Direction of the KL: `prior_to_exits` = KL(p_G ‖ p), what the reference code
    /// computes; `exits_to_prior` = KL(p ‖ p_G), what the paper writes. Default:
    /// `prior_to_exits`.
    pub kl: KlDirection,
    /// The last layer: `force_halt` (λ_N = 1, Σp = 1) or `{ epsilon_floor = ε }`
    /// (PALBERT). Default: `{ epsilon_floor = 0.05 }`.
    pub last_layer: LastLayer,
}

impl Default for PonderConfig {
    fn default() -> Self {
        Self {
            beta: 0.5,
            lambda_p: 0.1,
            prior_leftover_on_last: true,
            kl: KlDirection::PriorToExits,
            last_layer: LastLayer::EpsilonFloor(0.05),
        }
    }
}

impl PonderConfig {
    /// Checks the values for a model of `n_layers` exits (the prior must be positive
    /// wherever the chosen KL takes its log), naming the key at fault (under `prefix`).
    pub fn validate_for(&self, prefix: &str, n_layers: usize) -> Result<()> {
        self.validate(prefix)?;
        let prior = ponder::geometric_prior(self.lambda_p, n_layers, self.prior_leftover_on_last);
        if self.kl == KlDirection::ExitsToPrior
            && let Some(k) = prior.iter().position(|&g| !(g > 0.0 && g.is_finite()))
        {
            return Err(PonderError::config(
                format!("{prefix}.lambda_p"),
                format!(
                    "with λ_p = {} the prior of layer {} of {n_layers} is {} in f32, and KL(p ‖ prior) takes its log: use a smaller λ_p or kl = \"prior_to_exits\"",
                    self.lambda_p,
                    k + 1,
                    prior[k]
                ),
            ));
        }
        Ok(())
    }

    /// Checks every value, naming the key at fault (under `prefix`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return Err(PonderError::config(
                format!("{prefix}.beta"),
                format!("{} is not ≥ 0", self.beta),
            ));
        }
        if !(self.lambda_p > 0.0 && self.lambda_p <= 1.0) {
            return Err(PonderError::config(
                format!("{prefix}.lambda_p"),
                format!("{} is not in (0, 1]", self.lambda_p),
            ));
        }
        if let LastLayer::EpsilonFloor(eps) = self.last_layer
            && !(eps > 0.0 && eps < 1.0)
        {
            return Err(PonderError::config(
                format!("{prefix}.last_layer"),
                format!("epsilon_floor = {eps} is not in (0, 1)"),
            ));
        }
        if self.kl == KlDirection::ExitsToPrior && self.lambda_p >= 1.0 {
            return Err(PonderError::config(
                format!("{prefix}.kl"),
                "KL(p ‖ prior) needs a prior > 0 at every layer: λ_p must be < 1",
            ));
        }
        Ok(())
    }

    /// The loss of one batch from the logits and halting probabilities of every layer.
    ///
    /// # Shapes
    /// - logits: `N` tensors `[batch_size, n_classes]`
    /// - lambdas: `N` tensors `[batch_size]`
    /// - targets: `[batch_size]`
    pub fn loss(
        &self,
        logits: Vec<Tensor<2>>,
        lambdas: &[Tensor<1>],
        targets: Tensor<1, Int>,
    ) -> ponder::PonderLoss {
        let n = logits.len();
        let p = ponder::exit_distribution(lambdas, self.last_layer);
        let losses: Vec<Tensor<1>> = logits
            .into_iter()
            .map(|l| loss::cross_entropy_per_row(l, targets.clone()))
            .collect();
        let prior = ponder::geometric_prior(self.lambda_p, n, self.prior_leftover_on_last);
        ponder::ponder_loss(&p, &losses, &prior, self.beta, self.kl)
    }
}

/// Training hyper-parameters. Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// How the exits are trained. Default: `pabee`.
    pub method: Method,
    /// Epochs (for DeeBERT: of stage 1). Default: 4.
    pub epochs: usize,
    /// Epochs of DeeBERT's stage 2 (internal heads, frozen backbone). Default: `epochs`,
    /// as DeeBERT's reference scripts train both stages equally long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage2_epochs: Option<usize>,
    /// Training batch size. Default: 64.
    pub batch_size: usize,
    /// Evaluation batch size. Default: 256.
    pub eval_batch_size: usize,
    /// Peak learning rate of AdamW. Default: 1e-3.
    pub learning_rate: f64,
    /// Peak learning rate of the stages that train heads on a frozen backbone
    /// (DeeBERT's stage 2, JEI-DNN's warm-up and alternation). Fine-tuning a pretrained
    /// encoder wants a small `learning_rate`, at which freshly initialised heads on its
    /// frozen features barely move in an epoch. Default: `learning_rate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen_learning_rate: Option<f64>,
    /// Fraction of each stage's steps spent warming up linearly to the peak rate,
    /// which then decays linearly towards 0. Default: 0.1.
    pub warmup_fraction: f64,
    /// AdamW's decoupled weight decay. Default: 0.01.
    pub weight_decay: f32,
    /// Clip each parameter's gradient to this L2 norm (0: no clipping). Default: 1.0.
    pub grad_clip: f32,
    /// Seed of initialisation, data order and dropout. Default: 42.
    pub seed: u64,
    /// Also write a resumable checkpoint every this many steps (0: only at the end of
    /// each epoch). Default: 0.
    pub checkpoint_every: usize,
    /// The PonderNet loss of PALBERT and PonderNet.
    pub ponder: PonderConfig,
    /// JEI-DNN's stages after the backbone's.
    pub jei: JeiConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            method: Method::Pabee,
            epochs: 4,
            stage2_epochs: None,
            batch_size: 64,
            eval_batch_size: 256,
            learning_rate: 1e-3,
            frozen_learning_rate: None,
            warmup_fraction: 0.1,
            weight_decay: 0.01,
            grad_clip: 1.0,
            seed: 42,
            checkpoint_every: 0,
            ponder: PonderConfig::default(),
            jei: JeiConfig::default(),
        }
    }
}

impl TrainConfig {
    /// Checks every value, naming the key at fault.
    pub fn validate(&self) -> Result<()> {
        let err = |k: &str, m: String| Err(PonderError::config(format!("train.{k}"), m));
        if self.epochs == 0 {
            return err("epochs", "must be at least 1".into());
        }
        if self.method == Method::DeeBert && self.stage2_epochs == Some(0) {
            return err(
                "stage2_epochs",
                "DeeBERT needs at least 1 epoch of stage 2".into(),
            );
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return err("batch_size", "batch sizes must be at least 1".into());
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return err(
                "learning_rate",
                format!("{} is not in (0, 1]", self.learning_rate),
            );
        }
        if let Some(rate) = self.frozen_learning_rate
            && !(rate > 0.0 && rate <= 1.0)
        {
            return err("frozen_learning_rate", format!("{rate} is not in (0, 1]"));
        }
        if !(0.0..1.0).contains(&self.warmup_fraction) {
            return err(
                "warmup_fraction",
                format!("{} is not in [0, 1)", self.warmup_fraction),
            );
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return err("weight_decay", format!("{} is not ≥ 0", self.weight_decay));
        }
        if !(self.grad_clip >= 0.0 && self.grad_clip.is_finite()) {
            return err("grad_clip", format!("{} is not ≥ 0", self.grad_clip));
        }
        self.ponder.validate("train.ponder")?;
        self.jei.validate("train.jei")
    }
}

/// What one stage optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageLoss {
    /// PABEE's depth-weighted loss over all exits; validation: mean exit accuracy.
    DepthWeighted,
    /// Cross-entropy of the final exit; validation: final exit accuracy.
    Final,
    /// Sum of the internal exits' losses on the features of the frozen backbone (run
    /// without autodiff, in evaluation mode); validation: mean accuracy of the internal
    /// exits.
    Internal,
    /// The PonderNet loss over all exits ([`PonderConfig`]); validation: accuracy under
    /// the exit distribution with λ_N = 1, `mean_b Σ_n p_n·[exit n is right]` (what
    /// sampling gets on average: PonderNet's inference).
    Ponder,
    /// The same loss; validation: accuracy of Q-exit at q = 0.5 (PALBERT's inference
    /// and default threshold).
    PonderQExit,
    /// JEI-DNN's warm-up of the inference modules on the frozen backbone,
    /// `Σ_l (G + 1 − l)·CE_l`; validation: mean accuracy of the inference modules.
    JeiWarmup,
    /// JEI-DNN's alternation on the frozen backbone: gate phases (cost-aware BCE) and
    /// inference-module phases (weighted CE), switching every `jei.phase_batches`
    /// batches, gates first; validation: accuracy under the gates (a_l ≥ 0.5).
    JeiJoint,
}

impl StageLoss {
    /// Whether the stage trains heads on a frozen backbone (and so runs at
    /// `frozen_learning_rate`).
    pub fn frozen_backbone(self) -> bool {
        matches!(self, Self::Internal | Self::JeiWarmup | Self::JeiJoint)
    }
}

impl Method {
    /// The stages of this method with their epoch counts.
    pub fn stages(&self, config: &TrainConfig) -> Vec<(StageLoss, usize)> {
        match self {
            Method::Pabee => vec![(StageLoss::DepthWeighted, config.epochs)],
            Method::FinalOnly => vec![(StageLoss::Final, config.epochs)],
            Method::Palbert => vec![(StageLoss::PonderQExit, config.epochs)],
            Method::PonderNet => vec![(StageLoss::Ponder, config.epochs)],
            Method::DeeBert => vec![
                (StageLoss::Final, config.epochs),
                (
                    StageLoss::Internal,
                    config.stage2_epochs.unwrap_or(config.epochs),
                ),
            ],
            Method::JeiDnn => vec![
                (StageLoss::Final, config.epochs),
                (StageLoss::JeiWarmup, config.jei.warmup_epochs),
                (StageLoss::JeiJoint, config.jei.epochs),
            ],
        }
    }
}

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

/// The end of [`fit`].
#[derive(Debug)]
pub struct TrainOutcome {
    /// The best model (on validation) of the last stage, without autodiff.
    pub model: MultiExitClassifier,
    /// The final training state (history included).
    pub state: TrainState,
    /// Whether the observer stopped training before the end.
    pub interrupted: bool,
}

/// The optimiser of a stage: AdamW, or JEI-DNN's SGD in its alternation when configured.
fn new_optimizer(config: &TrainConfig, kind: StageLoss) -> ModuleOptimizer {
    if kind == StageLoss::JeiJoint && config.jei.optimizer == JeiOptimizer::Sgd {
        return config.jei.sgd.optimizer();
    }
    let mut adamw = AdamWConfig::new().with_weight_decay(config.weight_decay);
    if config.grad_clip > 0.0 {
        adamw = adamw.with_grad_clipping(Some(GradientClippingConfig::Norm(config.grad_clip)));
    }
    adamw.init()
}

/// Linear warm-up to the peak rate, then linear decay to 1% of it, over `total` steps,
/// advanced to `done` steps; with the rate of the last of those steps (0 if none).
fn new_scheduler(
    config: &TrainConfig,
    kind: StageLoss,
    total: usize,
    done: usize,
) -> Result<(ModuleLrScheduler, f64)> {
    let peak = match config.frozen_learning_rate {
        Some(rate) if kind.frozen_backbone() => rate,
        _ => config.learning_rate,
    };
    let warmup =
        ((total as f64 * config.warmup_fraction).round() as usize).clamp(1, total.max(2) - 1);
    let decay = total.saturating_sub(warmup).max(1);
    let mut scheduler = SequentialLrSchedulerConfig::new(
        vec![
            LrSchedulerConfig::Linear(LinearLrSchedulerConfig::new(
                peak / warmup as f64,
                peak,
                warmup,
            )),
            LrSchedulerConfig::Linear(LinearLrSchedulerConfig::new(peak, peak * 0.01, decay)),
        ],
        vec![warmup],
    )
    .init()
    .map_err(|e| PonderError::config("train.learning_rate", e))?;
    let mut last = 0.0;
    for _ in 0..done {
        last = scheduler.step().base();
    }
    Ok((scheduler, last))
}

/// The learning rate of a stage's steps.
enum StageRate {
    /// Per step, from burn's scheduler (linear warm-up and decay).
    Scheduled(ModuleLrScheduler),
    /// Per epoch: JEI-DNN's SGD with cosine annealing.
    Cosine {
        schedule: SgdSchedule,
        epochs: usize,
        steps_per_epoch: usize,
    },
}

impl StageRate {
    /// The rate of a stage, advanced to `done` steps, with the rate of the last of
    /// those steps (0 if none).
    fn new(
        config: &TrainConfig,
        kind: StageLoss,
        epochs: usize,
        steps_per_epoch: usize,
        done: usize,
    ) -> Result<(Self, f64)> {
        if kind == StageLoss::JeiJoint && config.jei.optimizer == JeiOptimizer::Sgd {
            let rate = Self::Cosine {
                schedule: config.jei.sgd.clone(),
                epochs,
                steps_per_epoch,
            };
            let last = match done {
                0 => 0.0,
                d => rate.at(d - 1),
            };
            return Ok((rate, last));
        }
        let (scheduler, last) = new_scheduler(config, kind, epochs * steps_per_epoch, done)?;
        Ok((Self::Scheduled(scheduler), last))
    }

    fn at(&self, step: usize) -> f64 {
        match self {
            Self::Scheduled(_) => unreachable!("a scheduler's rate is only known by stepping it"),
            Self::Cosine {
                schedule,
                epochs,
                steps_per_epoch,
            } => schedule.rate(step / steps_per_epoch.max(&1), *epochs),
        }
    }

    /// The rate of stage step `step` (0-based; steps are taken in order).
    fn step(&mut self, step: usize) -> f64 {
        match self {
            Self::Scheduled(scheduler) => scheduler.step().base(),
            Self::Cosine { .. } => self.at(step),
        }
    }
}

/// A seed for data order that differs per stage and epoch.
fn epoch_seed(seed: u64, stage: usize, epoch: usize) -> u64 {
    seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(1 + stage as u64 * 1_000 + epoch as u64))
}

/// What a step's loss needs besides the model and the batch.
struct StepContext<'a> {
    config: &'a TrainConfig,
    /// JEI-DNN: `ĉ_l` of every exit.
    exit_costs: &'a [f64],
    /// JEI-DNN: the gates' positive-class weights of this epoch.
    gate_positive_weight: &'a [f32],
    /// JEI-DNN: whether this step is in a gate phase (else an inference-module phase).
    gate_phase: bool,
}

/// The features the heads of the first `n` layers read from the frozen backbone (the
/// pooled state, or the pre-pooler state for DeeBERT's separate off-ramp poolers), run
/// as a feature extractor (without autodiff, in evaluation mode), lifted back to the
/// autodiff device as constants.
fn frozen_features(model: &MultiExitClassifier, batch: &Batch, n: usize) -> Vec<Tensor<2>> {
    let backbone = model.backbone.valid();
    let mut state = backbone.embed(batch.input.clone().without_autodiff());
    let mut features = Vec::with_capacity(n);
    for l in 0..n {
        state = backbone.forward_layer(l, state);
        features.push(backbone.head_input(&model.heads, l, &state).autodiff());
    }
    features
}

fn stage_loss(
    model: &MultiExitClassifier,
    batch: &Batch,
    kind: StageLoss,
    context: &StepContext<'_>,
    device: &Device,
) -> Tensor<1> {
    let targets = batch.targets_tensor(device);
    let scores = batch.scores_tensor(device);
    match kind {
        StageLoss::DepthWeighted => {
            let out = model.forward_all(batch.input.clone());
            loss::depth_weighted(
                out.logits
                    .into_iter()
                    .map(|l| exit_loss(l, &targets, scores.as_ref()))
                    .collect(),
            )
        }
        StageLoss::Final => {
            let n = model.n_layers();
            let state = model.backbone.forward_cut(batch.input.clone(), n);
            let logits = model.heads.logits(n - 1, model.backbone.pooled(&state));
            exit_loss(logits, &targets, scores.as_ref())
        }
        StageLoss::Ponder | StageLoss::PonderQExit => {
            let out = model.forward_all(batch.input.clone());
            let lambdas: Vec<Tensor<1>> = out
                .halting
                .into_iter()
                .map(|h| h.unwrap_or_else(|| unreachable!("fit checks for a halting head")))
                .collect();
            context
                .config
                .ponder
                .loss(out.logits, &lambdas, targets)
                .total
        }
        // The backbone is frozen: train only the internal heads on its features.
        StageLoss::Internal => loss::sum(internal_losses(model, batch, targets, scores)),
        StageLoss::JeiWarmup => jei::warmup_loss(internal_losses(model, batch, targets, scores)),
        StageLoss::JeiJoint => jei_joint_loss(model, batch, context, targets),
    }
}

/// One exit's loss: cross-entropy against the classes, or for a regression batch the
/// squared error of its single output against the scores (PABEE's regression heads).
fn exit_loss(logits: Tensor<2>, targets: &Tensor<1, Int>, scores: Option<&Tensor<1>>) -> Tensor<1> {
    match scores {
        Some(scores) => loss::mse(logits, scores.clone()),
        None => loss::cross_entropy(logits, targets.clone()),
    }
}

/// The loss of every internal head on the features of the frozen backbone.
fn internal_losses(
    model: &MultiExitClassifier,
    batch: &Batch,
    targets: Tensor<1, Int>,
    scores: Option<Tensor<1>>,
) -> Vec<Tensor<1>> {
    frozen_features(model, batch, model.n_layers() - 1)
        .into_iter()
        .enumerate()
        .map(|(l, f)| exit_loss(model.heads.logits(l, f), &targets, scores.as_ref()))
        .collect()
}

/// One step of JEI-DNN's alternation on the frozen backbone (arXiv:2310.09163): in a
/// gate phase, the gates' weighted BCE on the targets `1[l ≥ argmin_l CE_l + λ_cost·ĉ_l]`
/// with the inference modules as constants; in a module phase, the inference modules'
/// weighted loss under the exit distribution of the gates, run without gradient.
fn jei_joint_loss(
    model: &MultiExitClassifier,
    batch: &Batch,
    context: &StepContext<'_>,
    targets: Tensor<1, Int>,
) -> Tensor<1> {
    let n = model.n_layers();
    let gates = model
        .gates
        .as_ref()
        .unwrap_or_else(|| unreachable!("fit checks for gates"));
    let jei = &context.config.jei;
    if context.gate_phase {
        // (b) gates only: the inference modules as they are, as constants; every exit's
        // loss (the final one's too) makes the targets
        let features = frozen_features(model, batch, n);
        let heads = model.heads.valid();
        let logits: Vec<Tensor<2>> = features
            .into_iter()
            .enumerate()
            .map(|(l, f)| heads.logits(l, f.inner()))
            .collect();
        let inner_targets = targets.inner();
        let ce: Vec<Vec<f32>> = logits
            .iter()
            .map(|l| {
                to_host(loss::cross_entropy_per_row(
                    l.clone(),
                    inner_targets.clone(),
                ))
            })
            .collect();
        let best = jei::best_exits(&ce, context.exit_costs, jei.cost_weight);
        let gate_logits = logits[..n - 1]
            .iter()
            .enumerate()
            .map(|(l, x)| gates.gate_logit(l, x.clone().autodiff()))
            .collect();
        jei::gate_loss(gate_logits, &best, context.gate_positive_weight)
    } else {
        // (a) inference modules only: the gates evaluated without gradient
        let valid_gates = gates.valid();
        // the final layer is not needed: only the early exits' modules train
        let logits: Vec<Tensor<2>> = frozen_features(model, batch, n - 1)
            .into_iter()
            .enumerate()
            .map(|(l, f)| model.heads.logits(l, f))
            .collect();
        let g: Vec<Tensor<1>> = logits
            .iter()
            .enumerate()
            .map(|(l, x)| valid_gates.forward(l, x.clone().inner()))
            .collect();
        let p: Vec<Tensor<1>> = jei::exit_distribution(&g)[..n - 1]
            .iter()
            .map(|p| p.clone().autodiff())
            .collect();
        let ce = logits
            .into_iter()
            .map(|l| loss::cross_entropy_per_row(l, targets.clone()))
            .collect();
        jei::im_loss(ce, &p, jei.detach_ratio)
    }
}

/// JEI-DNN's gate positive weights from the validation set: the best exit of every
/// validation row under the current inference modules.
pub(crate) fn gate_positive_weights(
    model: &MultiExitClassifier,
    batches: &[Batch],
    exit_costs: &[f64],
    config: &JeiConfig,
) -> Vec<f32> {
    let mut best = Vec::new();
    for batch in batches {
        let out = model.forward_all(batch.input.clone());
        let targets = batch.targets_tensor(&model.backbone.device());
        let ce: Vec<Vec<f32>> = out
            .logits
            .into_iter()
            .map(|l| to_host(loss::cross_entropy_per_row(l, targets.clone())))
            .collect();
        best.extend(jei::best_exits(&ce, exit_costs, config.cost_weight));
    }
    jei::gate_positive_weights(
        &best,
        model.n_layers() - 1,
        config.positive_weight_cap,
        config.positive_count,
    )
}

fn valid_metric(kind: StageLoss, layers: &LayerAccuracy) -> f64 {
    let accuracy = &layers.accuracy;
    let n = accuracy.len();
    match kind {
        StageLoss::Ponder => layers
            .exit_distribution_accuracy
            .unwrap_or_else(|| unreachable!("fit checks for a halting head")),
        StageLoss::PonderQExit => layers
            .q_exit_accuracy
            .unwrap_or_else(|| unreachable!("fit checks for a halting head")),
        StageLoss::JeiJoint => layers
            .gate_accuracy
            .unwrap_or_else(|| unreachable!("fit checks for gates")),
        StageLoss::DepthWeighted => accuracy.iter().sum::<f64>() / n as f64,
        StageLoss::Final => accuracy[n - 1],
        StageLoss::Internal | StageLoss::JeiWarmup => {
            if n == 1 {
                accuracy[0]
            } else {
                accuracy[..n - 1].iter().sum::<f64>() / (n - 1) as f64
            }
        }
    }
}

/// Trains `model` (created on an autodiff `device`) on `train`, choosing the best epoch
/// on `valid`.
///
/// With `checkpoints`, a resumable checkpoint is written at the end of every epoch (and
/// every `checkpoint_every` steps) and the best weights are kept in `best.bpk`; with
/// `resume`, training continues from the latest checkpoint there, and ends exactly as an
/// uninterrupted run would: data order, dropout masks (the device is re-seeded from the
/// step number before every step), optimizer state and schedule all resume.
///
/// # Errors
/// A bad configuration, a checkpoint that cannot be written or read, or a loss that
/// becomes NaN or infinite (the error names the step).
pub fn fit<S: ClassificationSource>(
    mut model: MultiExitClassifier,
    train: &S,
    valid: &S,
    config: &TrainConfig,
    device: &Device,
    checkpoints: Option<&CheckpointFiles>,
    resume: bool,
    observer: &mut dyn TrainObserver,
) -> Result<TrainOutcome> {
    config.validate()?;
    if train.is_empty() || valid.is_empty() {
        return Err(PonderError::config(
            "data",
            format!(
                "{} training and {} validation examples: both must be non-empty",
                train.len(),
                valid.len()
            ),
        ));
    }
    let regression = train.scores().is_some();
    if regression != valid.scores().is_some() {
        return Err(PonderError::config(
            "data",
            "the training and validation sources must both be regression or both classification",
        ));
    }
    if regression && !config.method.has_regression_variant() {
        return Err(PonderError::config(
            "train.method",
            format!(
                "{:?} has no regression variant; a regression task (STS-B) trains with pabee, dee_bert or final_only",
                config.method
            ),
        ));
    }
    if regression && model.heads.n_classes != 1 {
        return Err(PonderError::config(
            "data",
            format!(
                "a regression task needs heads with one output; the model has {}",
                model.heads.n_classes
            ),
        ));
    }
    let mismatch = |part: &str, needs: bool, has: bool| {
        (needs != has).then(|| {
            PonderError::config(
                "train.method",
                format!(
                    "{:?} {} {part}, but the model has {}",
                    config.method,
                    if needs { "needs" } else { "does not train" },
                    if has { "them" } else { "none" }
                ),
            )
        })
    };
    if let Some(e) = mismatch(
        "a halting head",
        config.method.has_halting(),
        model.halting.is_some(),
    )
    .or_else(|| mismatch("gates", config.method.has_gates(), model.gates.is_some()))
    {
        return Err(e);
    }
    if config.method.has_halting() {
        config
            .ponder
            .validate_for("train.ponder", model.n_layers())?;
    }
    if config.method == Method::JeiDnn && model.heads.n_classes < 2 {
        return Err(PonderError::config(
            "train.method",
            format!(
                "JEI-DNN's gates read the confidence of a prediction over at least 2 classes; the model has {}",
                model.heads.n_classes
            ),
        ));
    }
    if matches!(config.method, Method::DeeBert | Method::JeiDnn) && model.n_layers() < 2 {
        return Err(PonderError::config(
            "train.method",
            format!(
                "{:?} trains internal exits, so the model needs at least 2 layers",
                config.method
            ),
        ));
    }
    let stages = config.method.stages(config);
    let steps_per_epoch = train.len().div_ceil(config.batch_size);
    let total_steps: usize = stages.iter().map(|(_, e)| e * steps_per_epoch).sum();
    let valid_device = device.clone().inner();
    let valid_batches = make_batches(valid, config.eval_batch_size, &valid_device);
    // JEI-DNN's normalised exit costs (the same for every row of a data set), computed
    // when first needed: parameters are initialised lazily, on first use, and computing
    // the costs runs the embedding, so doing it before the first step would draw its
    // initial weights from another point of the random stream
    let mut exit_costs: Vec<f64> = Vec::new();

    let mut optim = new_optimizer(config, stages[0].0);
    let mut state = TrainState::default();
    let mut best: Option<MultiExitClassifier> = None;
    if resume {
        let files = checkpoints
            .ok_or_else(|| PonderError::config("resume", "no checkpoint folder given"))?;
        if !files.has_last() {
            return Err(PonderError::Checkpoint {
                path: files.dir().to_path_buf(),
                message: "no checkpoint to resume from (no last/state.json)".into(),
            });
        }
        // the optimiser of the stage the checkpoint is in, for its state to load into
        let saved: TrainState = files.load_state()?;
        if let Some(&(kind, _)) = stages.get(saved.stage) {
            optim = new_optimizer(config, kind);
        }
        let (m, o, s) = files.load_last::<_, TrainState>(model, optim)?;
        model = m;
        optim = o;
        state = s;
        if files.best_model().is_file()
            && state.best_at.is_some_and(|(stage, _)| stage == state.stage)
        {
            best = Some(files.load_best_classifier(model.valid())?);
        }
    }
    observer.on_start(total_steps, &state);

    while !state.finished {
        let (kind, epochs) = stages[state.stage];
        // `lr`: the rate of the latest step, for the epoch's log (carried over from the
        // checkpoint when resuming after the epoch's last step, before its evaluation)
        let (mut rate, mut lr) =
            StageRate::new(config, kind, epochs, steps_per_epoch, state.stage_step)?;
        while state.epoch < epochs {
            let epoch_start = Instant::now();
            let order = ponder_data::shuffled_indices(
                train.len(),
                epoch_seed(config.seed, state.stage, state.epoch),
            );
            let chunks: Vec<&[usize]> = order.chunks(config.batch_size).collect();
            if kind == StageLoss::JeiJoint && exit_costs.is_empty() {
                exit_costs = model.valid().exit_costs(valid_batches[0].input.clone());
            }
            if kind == StageLoss::JeiJoint && state.batch == 0 {
                state.gate_positive_weight = if config.jei.unit_weights_first_epoch
                    && state.epoch == 0
                {
                    vec![1.0; model.n_layers() - 1]
                } else {
                    gate_positive_weights(&model.valid(), &valid_batches, &exit_costs, &config.jei)
                };
            }
            while state.batch < chunks.len() {
                device.seed(
                    config
                        .seed
                        .wrapping_mul(1_000_003)
                        .wrapping_add(state.global_step as u64),
                );
                let batch = train.batch(chunks[state.batch], device);
                let context = StepContext {
                    config,
                    exit_costs: &exit_costs,
                    gate_positive_weight: &state.gate_positive_weight,
                    gate_phase: (state.stage_step / config.jei.phase_batches).is_multiple_of(2),
                };
                let loss = stage_loss(&model, &batch, kind, &context, device);
                let value = loss.clone().into_scalar::<f32>() as f64;
                if !value.is_finite() {
                    return Err(PonderError::NonFinite {
                        what: format!(
                            "training loss (stage {}, epoch {})",
                            state.stage, state.epoch
                        ),
                        step: state.global_step,
                        value,
                    });
                }
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                lr = rate.step(state.stage_step);
                model = optim.step(lr, model, grads);
                state.batch += 1;
                state.global_step += 1;
                state.stage_step += 1;
                state.epoch_loss_sum += value;
                observer.on_step(&state, value);
                if let Some(files) = checkpoints
                    && config.checkpoint_every > 0
                    && state.global_step.is_multiple_of(config.checkpoint_every)
                {
                    files.save_last(&model, &optim, &state)?;
                }
                if observer.should_stop(&state) {
                    return Ok(TrainOutcome {
                        model: best.unwrap_or_else(|| model.valid()),
                        state,
                        interrupted: true,
                    });
                }
            }
            let eval_model = model.valid();
            let layers = layer_accuracies(&eval_model, &valid_batches);
            let metric = valid_metric(kind, &layers);
            let accuracy = layers.accuracy;
            let log = EpochLog {
                stage: state.stage,
                epoch: state.epoch,
                step: state.global_step,
                train_loss: state.epoch_loss_sum / chunks.len() as f64,
                valid_metric: metric,
                valid_layer_accuracy: accuracy,
                learning_rate: lr,
                seconds: epoch_start.elapsed().as_secs_f64(),
            };
            if state.best_metric.is_none_or(|b| metric > b) {
                state.best_metric = Some(metric);
                state.best_at = Some((state.stage, state.epoch));
                if let Some(files) = checkpoints {
                    files.save_best(&eval_model)?;
                }
                best = Some(eval_model);
            }
            observer.on_epoch(&log);
            state.history.push(log);
            state.epoch += 1;
            state.batch = 0;
            state.epoch_loss_sum = 0.0;
            if state.epoch == epochs {
                // Stage over: continue from its best weights with a fresh optimizer.
                if let Some(b) = &best {
                    model = model.load_record(b.clone().into_record());
                }
                if state.stage + 1 < stages.len() {
                    state.stage += 1;
                    optim = new_optimizer(config, stages[state.stage].0);
                    if stages[state.stage].0 == StageLoss::Internal {
                        // DeeBERT's off-ramps start from the trained final exit's pooler
                        model = model.init_offramp_poolers();
                    }
                    state.epoch = 0;
                    state.stage_step = 0;
                    state.best_metric = None;
                } else {
                    state.finished = true;
                }
            }
            if let Some(files) = checkpoints {
                files.save_last(&model, &optim, &state)?;
                // JEI-DNN's models of different λ_cost share everything before the
                // alternation: keep its start for them
                if state.epoch == 0
                    && !state.finished
                    && stages[state.stage].0 == StageLoss::JeiJoint
                {
                    files.save_stage_start(state.stage)?;
                }
            }
            if state.epoch == 0 || state.finished {
                break;
            }
        }
    }
    Ok(TrainOutcome {
        model: best.unwrap_or_else(|| model.valid()),
        state,
        interrupted: false,
    })
}
