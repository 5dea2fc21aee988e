//! The training loop: [`fit`](fn@fit) and its [`FitOptions`]. It runs the stages of a
//! method epoch by epoch, evaluates every epoch on validation, keeps the best weights,
//! and writes and resumes from checkpoints.

use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Gradients};
use ponder_core::{PonderError, Result};

use super::config::{Method, ParamGroup, TrainConfig};
use super::schedule::{StageRate, new_optimizer};
use super::stages::{StageLoss, StepContext, gate_positive_weights, stage_loss, valid_metric};
use super::state::{EpochLog, TrainObserver, TrainOutcome, TrainState, majority_rate};
use crate::checkpoint::CheckpointFiles;
use crate::classifier::MultiExitClassifier;
use crate::eval::{layer_accuracies, make_batches};
use crate::source::{Batch, ClassificationSource};

/// Where [`fit`](fn@fit) runs and what it writes and reports besides the model: the
/// device, checkpoints, resumption and an observer. [`FitOptions::new`] is a run on a
/// device without checkpoints or observer; the `with_` methods add the rest.
pub struct FitOptions<'a> {
    /// The autodiff device the model was created on.
    pub device: &'a Device,
    /// Where a resumable checkpoint is written at the end of every epoch (and every
    /// `checkpoint_every` steps) and the best weights are kept (in `best.bpk`). None:
    /// nothing is written.
    pub checkpoints: Option<&'a CheckpointFiles>,
    /// Continue from the latest checkpoint in `checkpoints` (an error without one).
    pub resume: bool,
    /// Hooks for progress display and interruption. None: no hooks.
    pub observer: Option<&'a mut dyn TrainObserver>,
}

impl<'a> FitOptions<'a> {
    /// Training on `device`, without checkpoints, resumption or observer.
    pub fn new(device: &'a Device) -> Self {
        Self {
            device,
            checkpoints: None,
            resume: false,
            observer: None,
        }
    }

    /// Writes resumable checkpoints and the best weights to `files`.
    pub fn with_checkpoints(self, files: &'a CheckpointFiles) -> Self {
        Self {
            checkpoints: Some(files),
            ..self
        }
    }

    /// Whether to continue from the latest checkpoint.
    pub fn with_resume(self, resume: bool) -> Self {
        Self { resume, ..self }
    }

    /// Reports progress to `observer`, which may also stop training.
    pub fn with_observer(self, observer: &'a mut dyn TrainObserver) -> Self {
        Self {
            observer: Some(observer),
            ..self
        }
    }
}

/// Trains `model` (created on the autodiff device of `options`) on `train`, choosing the
/// best epoch on `valid`.
///
/// With checkpoints ([`FitOptions::with_checkpoints`]), a resumable checkpoint is written
/// at the end of every epoch (and every `checkpoint_every` steps) and the best weights
/// are kept in `best.bpk`; with `resume` ([`FitOptions::with_resume`]), training
/// continues from the latest checkpoint there, and ends exactly as an uninterrupted run
/// would: data order, dropout masks (the device is re-seeded from the step number before
/// every step), optimizer state and schedule all resume.
///
/// # Errors
/// A bad configuration, a checkpoint that cannot be written or read, or a loss that
/// becomes NaN or infinite (the error names the step).
pub fn fit<S: ClassificationSource>(
    model: MultiExitClassifier,
    train: &S,
    valid: &S,
    config: &TrainConfig,
    options: FitOptions<'_>,
) -> Result<TrainOutcome> {
    config.validate()?;
    check_inputs(&model, train, valid, config)?;
    let FitOptions {
        device,
        checkpoints,
        resume,
        observer,
    } = options;
    let mut no_observer = ();
    let observer: &mut dyn TrainObserver = match observer {
        Some(observer) => observer,
        None => &mut no_observer,
    };
    let stages = config.method.stages(config);
    let steps_per_epoch = train.len().div_ceil(config.batch_size);
    let total_steps: usize = stages.iter().map(|(_, e)| e * steps_per_epoch).sum();
    let valid_device = device.clone().inner();
    let valid_batches = make_batches(valid, config.eval_batch_size, &valid_device);

    let optim = new_optimizer(config, stages[0].0);
    let (mut model, optim, state, best) = if resume {
        let files = checkpoints
            .ok_or_else(|| PonderError::config("resume", "no checkpoint folder given"))?;
        load_resume(files, model, optim, config, &stages)?
    } else {
        (model, optim, TrainState::default(), None)
    };
    observer.on_start(total_steps, &state);
    let mut run = Run {
        train,
        config,
        device,
        checkpoints,
        observer,
        stages,
        valid_majority_rate: if valid_batches.iter().any(|b| b.scores.is_some()) {
            None
        } else {
            majority_rate(valid_batches.iter().flat_map(|b| b.targets.iter().copied()))
        },
        valid_batches,
        // JEI-DNN's normalised exit costs (the same for every row of a data set),
        // computed when first needed: parameters are initialised lazily, on first use,
        // and computing the costs runs the embedding, so doing it before the first step
        // would draw its initial weights from another point of the random stream
        exit_costs: Vec::new(),
        optim,
        state,
        best,
    };

    while !run.state.finished {
        let (kind, epochs) = run.stages[run.state.stage];
        // `lr`: the rate of the latest step, for the epoch's log (carried over from the
        // checkpoint when resuming after the epoch's last step, before its evaluation)
        let (mut rate, mut lr) =
            StageRate::new(config, kind, epochs, steps_per_epoch, run.state.stage_step)?;
        while run.state.epoch < epochs {
            let epoch_start = Instant::now();
            let chunks;
            (model, chunks) = match run.train_epoch(model, kind, &mut rate, &mut lr)? {
                Epoch::Trained { model, chunks } => (model, chunks),
                Epoch::Stopped(model) => return Ok(run.outcome(model, true)),
            };
            let log = run.evaluate_epoch(&model, kind, chunks, lr, epoch_start)?;
            run.observer.on_epoch(&log);
            run.state.history.push(log);
            model = run.next_epoch(model, epochs)?;
            if run.state.epoch == 0 || run.state.finished {
                break;
            }
        }
    }
    Ok(run.outcome(model, false))
}

/// Checks that the data and the model suit each other and `config.method`.
fn check_inputs<S: ClassificationSource>(
    model: &MultiExitClassifier,
    train: &S,
    valid: &S,
    config: &TrainConfig,
) -> Result<()> {
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
    Ok(())
}

/// The model, optimiser, state and best model (of the current stage) of the latest
/// checkpoint in `files`; `optim` is replaced by the optimiser of the checkpoint's
/// stage, for its state to load into.
fn load_resume(
    files: &CheckpointFiles,
    model: MultiExitClassifier,
    mut optim: ModuleOptimizer,
    config: &TrainConfig,
    stages: &[(StageLoss, usize)],
) -> Result<(
    MultiExitClassifier,
    ModuleOptimizer,
    TrainState,
    Option<MultiExitClassifier>,
)> {
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
    let (model, optim, state) = files.load_last::<_, TrainState>(model, optim)?;
    let mut best = None;
    if files.best_model().is_file() && state.best_at.is_some_and(|(stage, _)| stage == state.stage)
    {
        best = Some(files.load_best_classifier(model.valid())?);
    }
    Ok((model, optim, state, best))
}

/// A seed for data order that differs per stage and epoch.
fn epoch_seed(seed: u64, stage: usize, epoch: usize) -> u64 {
    seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(1 + stage as u64 * 1_000 + epoch as u64))
}

/// How an epoch's training ended.
enum Epoch {
    /// All its batches ran (`chunks` of them).
    Trained {
        model: MultiExitClassifier,
        chunks: usize,
    },
    /// The observer stopped training.
    Stopped(MultiExitClassifier),
}

/// One optimiser step with every parameter group at its own rate: the backbone at the
/// stage's rate `lr`, each exit-side group at `lr` scaled by its peak rate over the
/// stage's ([`TrainConfig::group_peak_rate`]), so warm-up and decay apply to all. Each
/// parameter is stepped once, by the one optimiser (its state is per parameter); groups
/// at the stage's own rate stay in the common step.
fn grouped_step(
    optim: &mut ModuleOptimizer,
    config: &TrainConfig,
    kind: StageLoss,
    lr: f64,
    model: MultiExitClassifier,
    mut grads: Gradients,
) -> MultiExitClassifier {
    let frozen = kind.frozen_backbone();
    let peak = config.stage_peak_rate(frozen);
    let factor = |group| config.group_peak_rate(group, frozen) / peak;
    let groups: Vec<(GradientsParams, f64)> =
        [ParamGroup::Heads, ParamGroup::Halting, ParamGroup::Gates]
            .into_iter()
            .map(|g| (g, factor(g)))
            .filter(|&(_, f)| f != 1.0)
            .filter_map(|(group, f)| {
                let params = match group {
                    ParamGroup::Heads => GradientsParams::from_module(&mut grads, &model.heads),
                    ParamGroup::Halting => {
                        GradientsParams::from_module(&mut grads, model.halting.as_ref()?)
                    }
                    ParamGroup::Gates => {
                        GradientsParams::from_module(&mut grads, model.gates.as_ref()?)
                    }
                };
                Some((params, f))
            })
            .collect();
    // without group rates this is the one step of every parameter at the stage's rate
    let rest = GradientsParams::from_grads(grads, &model);
    let mut model = optim.step(lr, model, rest);
    for (params, f) in groups {
        if !params.is_empty() {
            model = optim.step(lr * f, model, params);
        }
    }
    model
}

/// A run of [`fit`](fn@fit) in progress: its inputs and everything but the model that
/// changes along it (the model moves through the optimiser's steps by value).
struct Run<'a, S> {
    train: &'a S,
    config: &'a TrainConfig,
    device: &'a Device,
    checkpoints: Option<&'a CheckpointFiles>,
    observer: &'a mut dyn TrainObserver,
    stages: Vec<(StageLoss, usize)>,
    valid_batches: Vec<Batch>,
    /// Share of the most frequent class in validation (classification only).
    valid_majority_rate: Option<f64>,
    exit_costs: Vec<f64>,
    optim: ModuleOptimizer,
    state: TrainState,
    best: Option<MultiExitClassifier>,
}

impl<S: ClassificationSource> Run<'_, S> {
    /// Trains the batches of the current epoch from `state.batch` on, with the learning
    /// rate of `rate`; `lr` is left at the rate of the last step.
    fn train_epoch(
        &mut self,
        mut model: MultiExitClassifier,
        kind: StageLoss,
        rate: &mut StageRate,
        lr: &mut f64,
    ) -> Result<Epoch> {
        let config = self.config;
        let device = self.device;
        let state = &mut self.state;
        let order = ponder_data::shuffled_indices(
            self.train.len(),
            epoch_seed(config.seed, state.stage, state.epoch),
        );
        let chunks: Vec<&[usize]> = order.chunks(config.batch_size).collect();
        if kind == StageLoss::JeiJoint && self.exit_costs.is_empty() {
            self.exit_costs = model
                .valid()
                .exit_costs(self.valid_batches[0].input.clone());
        }
        if kind == StageLoss::JeiJoint && state.batch == 0 {
            state.gate_positive_weight = if config.jei.unit_weights_first_epoch && state.epoch == 0
            {
                vec![1.0; model.n_layers() - 1]
            } else {
                gate_positive_weights(
                    &model.valid(),
                    &self.valid_batches,
                    &self.exit_costs,
                    &config.jei,
                )
            };
        }
        while state.batch < chunks.len() {
            device.seed(
                config
                    .seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add(state.global_step as u64),
            );
            let batch = self.train.batch(chunks[state.batch], device);
            let context = StepContext {
                config,
                exit_costs: &self.exit_costs,
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
            let grads = loss.backward();
            *lr = rate.step(state.stage_step);
            model = grouped_step(&mut self.optim, config, kind, *lr, model, grads);
            model.heads.sync_running_statistics();
            state.batch += 1;
            state.global_step += 1;
            state.stage_step += 1;
            state.epoch_loss_sum += value;
            self.observer.on_step(state, value);
            if let Some(files) = self.checkpoints
                && config.checkpoint_every > 0
                && state.global_step.is_multiple_of(config.checkpoint_every)
            {
                files.save_last(&model, &self.optim, state)?;
            }
            if self.observer.should_stop(state) {
                return Ok(Epoch::Stopped(model));
            }
        }
        Ok(Epoch::Trained {
            model,
            chunks: chunks.len(),
        })
    }

    /// Evaluates `model` on validation at the end of an epoch of `chunks` batches and
    /// keeps it (and saves it) as the best when its metric is; the epoch's log.
    fn evaluate_epoch(
        &mut self,
        model: &MultiExitClassifier,
        kind: StageLoss,
        chunks: usize,
        lr: f64,
        epoch_start: Instant,
    ) -> Result<EpochLog> {
        let state = &mut self.state;
        let eval_model = model.valid();
        let layers = layer_accuracies(&eval_model, &self.valid_batches);
        let metric = valid_metric(kind, &layers);
        let accuracy = layers.accuracy;
        let log = EpochLog {
            stage: state.stage,
            epoch: state.epoch,
            step: state.global_step,
            train_loss: state.epoch_loss_sum / chunks as f64,
            valid_metric: metric,
            valid_layer_accuracy: accuracy,
            learning_rate: lr,
            seconds: epoch_start.elapsed().as_secs_f64(),
            valid_majority_rate: self.valid_majority_rate,
        };
        if state.best_metric.is_none_or(|b| metric > b) {
            state.best_metric = Some(metric);
            state.best_at = Some((state.stage, state.epoch));
            if let Some(files) = self.checkpoints {
                files.save_best(&eval_model)?;
            }
            self.best = Some(eval_model);
        }
        Ok(log)
    }

    /// Moves on to the next epoch of a stage of `epochs`, or at the stage's end to the
    /// next stage (from its best weights, with a fresh optimizer) or the end of
    /// training; then writes the checkpoint.
    fn next_epoch(
        &mut self,
        mut model: MultiExitClassifier,
        epochs: usize,
    ) -> Result<MultiExitClassifier> {
        let config = self.config;
        let stages = &self.stages;
        let state = &mut self.state;
        state.epoch += 1;
        state.batch = 0;
        state.epoch_loss_sum = 0.0;
        if state.epoch == epochs {
            // Stage over: continue from its best weights with a fresh optimizer.
            if let Some(b) = &self.best {
                model = model.load_record(b.clone().into_record());
            }
            if state.stage + 1 < stages.len() {
                state.stage += 1;
                self.optim = new_optimizer(config, stages[state.stage].0);
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
        if let Some(files) = self.checkpoints {
            files.save_last(&model, &self.optim, state)?;
            // JEI-DNN's models of different λ_cost share everything before the
            // alternation: keep its start for them
            if state.epoch == 0 && !state.finished && stages[state.stage].0 == StageLoss::JeiJoint {
                files.save_stage_start(state.stage)?;
            }
        }
        Ok(model)
    }

    /// The outcome: the best model of the last stage (else `model`) and the state.
    fn outcome(self, model: MultiExitClassifier, interrupted: bool) -> TrainOutcome {
        TrainOutcome {
            model: self.best.unwrap_or_else(|| model.valid()),
            state: self.state,
            interrupted,
        }
    }
}
