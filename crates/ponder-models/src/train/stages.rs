//! The stages of every method and what each optimises: the loss of a step (PABEE's
//! depth-weighted loss, the final exit's, DeeBERT's internal exits on the frozen
//! backbone, the PonderNet loss, JEI-DNN's warm-up and alternation) and the validation
//! metric the stage keeps its best epoch on.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use ponder_core::{LayerwiseBackbone, to_host};
use ponder_exits::{jei, loss};
use serde::{Deserialize, Serialize};

use super::config::{JeiConfig, Method, TrainConfig};
use crate::classifier::MultiExitClassifier;
use crate::eval::LayerAccuracy;
use crate::source::Batch;

/// What one stage optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageLoss {
    /// PABEE's loss over all exits, weighted by [`ExitWeights`] (depth by default);
    /// validation: mean exit accuracy.
    DepthWeighted,
    /// PABEE's heads-first stage: the same loss over all exits on the features of the
    /// frozen backbone (run without autodiff, in evaluation mode), so only the heads
    /// train; validation: mean exit accuracy.
    HeadsFirst,
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
        matches!(
            self,
            Self::HeadsFirst | Self::Internal | Self::JeiWarmup | Self::JeiJoint
        )
    }
}

impl Method {
    /// The stages of this method with their epoch counts.
    pub fn stages(&self, config: &TrainConfig) -> Vec<(StageLoss, usize)> {
        match self {
            Method::Pabee if config.heads_first_epochs > 0 => vec![
                (StageLoss::HeadsFirst, config.heads_first_epochs),
                (StageLoss::DepthWeighted, config.epochs),
            ],
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

/// What a step's loss needs besides the model and the batch.
pub(super) struct StepContext<'a> {
    pub(super) config: &'a TrainConfig,
    /// JEI-DNN: `ĉ_l` of every exit.
    pub(super) exit_costs: &'a [f64],
    /// JEI-DNN: the gates' positive-class weights of this epoch.
    pub(super) gate_positive_weight: &'a [f32],
    /// JEI-DNN: whether this step is in a gate phase (else an inference-module phase).
    pub(super) gate_phase: bool,
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

pub(super) fn stage_loss(
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
            context.config.exit_weights.combine(
                out.logits
                    .into_iter()
                    .map(|l| exit_loss(l, &targets, scores.as_ref()))
                    .collect(),
            )
        }
        StageLoss::HeadsFirst => {
            let losses = frozen_features(model, batch, model.n_layers())
                .into_iter()
                .enumerate()
                .map(|(l, f)| exit_loss(model.heads.logits(l, f), &targets, scores.as_ref()))
                .collect();
            context.config.exit_weights.combine(losses)
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

pub(super) fn valid_metric(kind: StageLoss, layers: &LayerAccuracy) -> f64 {
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
        StageLoss::DepthWeighted | StageLoss::HeadsFirst => accuracy.iter().sum::<f64>() / n as f64,
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
