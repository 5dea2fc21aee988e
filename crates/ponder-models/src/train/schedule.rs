//! The optimiser and learning rate of each stage: AdamW with linear warm-up and decay,
//! or JEI-DNN's SGD with a per-epoch cosine annealing.

use burn::grad_clipping::GradientClippingConfig;
use burn::lr_scheduler::LrSchedulerConfig;
use burn::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::lr_scheduler::sequential::SequentialLrSchedulerConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer, SgdConfig};
use ponder_core::{PonderError, Result};
use serde::{Deserialize, Serialize};

use super::config::{JeiOptimizer, TrainConfig};
use super::stages::StageLoss;

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

/// The optimiser of a stage: AdamW, or JEI-DNN's SGD in its alternation when configured.
pub(super) fn new_optimizer(config: &TrainConfig, kind: StageLoss) -> ModuleOptimizer {
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
    let peak = config.stage_peak_rate(kind.frozen_backbone());
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
pub(super) enum StageRate {
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
    pub(super) fn new(
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
    pub(super) fn step(&mut self, step: usize) -> f64 {
        match self {
            Self::Scheduled(scheduler) => scheduler.step().base(),
            Self::Cosine { .. } => self.at(step),
        }
    }
}
