//! The training loop of multi-exit classifiers.

use std::time::Instant;

use burn::grad_clipping::GradientClippingConfig;
use burn::lr_scheduler::LrSchedulerConfig;
use burn::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::lr_scheduler::sequential::SequentialLrSchedulerConfig;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor};
use ponder_core::{LayerwiseBackbone, PonderError, Result};
use ponder_exits::loss;
use ponder_exits::ponder::{self, KlDirection, LastLayer};
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
}

impl Method {
    /// Whether the method learns an exit distribution (its model has a halting head).
    pub fn has_halting(&self) -> bool {
        matches!(self, Method::Palbert | Method::PonderNet)
    }
}

/// The PonderNet loss of [`Method::Palbert`] and [`Method::PonderNet`]:
/// `Σ_n mean_b(p_n·ℓ_n) + β·KL` (`methods.md` §1.2, §2.4). The default is PALBERT's
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
    /// Epochs of DeeBERT's stage 2 (internal heads, frozen backbone). Default: 2.
    pub stage2_epochs: usize,
    /// Training batch size. Default: 64.
    pub batch_size: usize,
    /// Evaluation batch size. Default: 256.
    pub eval_batch_size: usize,
    /// Peak learning rate of AdamW. Default: 1e-3.
    pub learning_rate: f64,
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
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            method: Method::Pabee,
            epochs: 4,
            stage2_epochs: 2,
            batch_size: 64,
            eval_batch_size: 256,
            learning_rate: 1e-3,
            warmup_fraction: 0.1,
            weight_decay: 0.01,
            grad_clip: 1.0,
            seed: 42,
            checkpoint_every: 0,
            ponder: PonderConfig::default(),
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
        if self.method == Method::DeeBert && self.stage2_epochs == 0 {
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
        self.ponder.validate("train.ponder")
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
                (StageLoss::Internal, config.stage2_epochs),
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

fn new_optimizer(config: &TrainConfig) -> ModuleOptimizer {
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
    total: usize,
    done: usize,
) -> Result<(ModuleLrScheduler, f64)> {
    let peak = config.learning_rate;
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

/// A seed for data order that differs per stage and epoch.
fn epoch_seed(seed: u64, stage: usize, epoch: usize) -> u64 {
    seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(1 + stage as u64 * 1_000 + epoch as u64))
}

fn stage_loss(
    model: &MultiExitClassifier,
    batch: &Batch,
    kind: StageLoss,
    ponder_config: &PonderConfig,
    device: &Device,
) -> Tensor<1> {
    let targets = batch.targets_tensor(device);
    match kind {
        StageLoss::DepthWeighted => {
            let out = model.forward_all(batch.input.clone());
            loss::depth_weighted(
                out.logits
                    .into_iter()
                    .map(|l| loss::cross_entropy(l, targets.clone()))
                    .collect(),
            )
        }
        StageLoss::Final => {
            let n = model.n_layers();
            let state = model.backbone.forward_cut(batch.input.clone(), n);
            let logits = model.heads.logits(n - 1, model.backbone.pooled(&state));
            loss::cross_entropy(logits, targets)
        }
        StageLoss::Ponder | StageLoss::PonderQExit => {
            let out = model.forward_all(batch.input.clone());
            let lambdas: Vec<Tensor<1>> = out
                .halting
                .into_iter()
                .map(|h| h.unwrap_or_else(|| unreachable!("fit checks for a halting head")))
                .collect();
            ponder_config.loss(out.logits, &lambdas, targets).total
        }
        StageLoss::Internal => {
            // The backbone is frozen: run it as a feature extractor, without autodiff
            // and in evaluation mode, and train only the heads on its features.
            let n = model.n_layers();
            let backbone = model.backbone.valid();
            let mut state = backbone.embed(batch.input.clone().without_autodiff());
            let mut losses = Vec::with_capacity(n - 1);
            for l in 0..n - 1 {
                state = backbone.forward_layer(l, state);
                let features = backbone.pooled(&state).autodiff();
                losses.push(loss::cross_entropy(
                    model.heads.logits(l, features),
                    targets.clone(),
                ));
            }
            loss::sum(losses)
        }
    }
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
        StageLoss::DepthWeighted => accuracy.iter().sum::<f64>() / n as f64,
        StageLoss::Final => accuracy[n - 1],
        StageLoss::Internal => {
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
    if config.method.has_halting() != model.halting.is_some() {
        return Err(PonderError::config(
            "train.method",
            format!(
                "{:?} {} a halting head, but the model {}",
                config.method,
                if config.method.has_halting() {
                    "needs"
                } else {
                    "does not train"
                },
                if model.halting.is_some() {
                    "has one"
                } else {
                    "has none"
                }
            ),
        ));
    }
    if config.method.has_halting() {
        config
            .ponder
            .validate_for("train.ponder", model.n_layers())?;
    }
    if config.method == Method::DeeBert && model.n_layers() < 2 {
        return Err(PonderError::config(
            "train.method",
            "DeeBERT trains internal exits, so the model needs at least 2 layers",
        ));
    }
    let stages = config.method.stages(config);
    let steps_per_epoch = train.len().div_ceil(config.batch_size);
    let total_steps: usize = stages.iter().map(|(_, e)| e * steps_per_epoch).sum();
    let valid_device = device.clone().inner();
    let valid_batches = make_batches(valid, config.eval_batch_size, &valid_device);

    let mut optim = new_optimizer(config);
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
        let stage_total = epochs * steps_per_epoch;
        // `lr`: the rate of the latest step, for the epoch's log (carried over from the
        // checkpoint when resuming after the epoch's last step, before its evaluation)
        let (mut scheduler, mut lr) = new_scheduler(config, stage_total, state.stage_step)?;
        while state.epoch < epochs {
            let epoch_start = Instant::now();
            let order = ponder_data::shuffled_indices(
                train.len(),
                epoch_seed(config.seed, state.stage, state.epoch),
            );
            let chunks: Vec<&[usize]> = order.chunks(config.batch_size).collect();
            while state.batch < chunks.len() {
                device.seed(
                    config
                        .seed
                        .wrapping_mul(1_000_003)
                        .wrapping_add(state.global_step as u64),
                );
                let batch = train.batch(chunks[state.batch], device);
                let loss = stage_loss(&model, &batch, kind, &config.ponder, device);
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
                let rate = scheduler.step();
                lr = rate.base();
                model = optim.step(rate, model, grads);
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
                    optim = new_optimizer(config);
                    state.stage += 1;
                    state.epoch = 0;
                    state.stage_step = 0;
                    state.best_metric = None;
                } else {
                    state.finished = true;
                }
            }
            if let Some(files) = checkpoints {
                files.save_last(&model, &optim, &state)?;
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
