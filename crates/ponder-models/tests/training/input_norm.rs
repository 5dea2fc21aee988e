//! Batch normalisation of the exits' classifier input (`head_input_norm`): the running
//! statistics are learned in every training stage (the heads-first stage on the frozen
//! backbone too), evaluation is the fixed affine map of them (a row's logits do not depend
//! on the batch), resumption keeps them bit for bit, and the FLOPs count them.

use ponder_core::{ExitHeads, LayerwiseBackbone};
use ponder_exits::{ClassifierHeadsConfig, INPUT_NORM_EPSILON};

use super::*;
use crate::groups::{after_steps, heads_first};
use crate::resume::check_resume;

/// Makes [`build_model`] (and so every shared helper) give the heads input
/// normalisation while it lives.
pub(crate) struct WithInputNorm;

impl WithInputNorm {
    pub(crate) fn on() -> Self {
        HEAD_INPUT_NORM.set(true);
        Self
    }
}

impl Drop for WithInputNorm {
    fn drop(&mut self) {
        HEAD_INPUT_NORM.set(false);
    }
}

/// The running mean and variance of every exit's normalisation.
fn running(model: &MultiExitClassifier) -> Vec<(Vec<f32>, Vec<f32>)> {
    model
        .heads
        .norms
        .iter()
        .map(|n| (host(n.running_mean.value()), host(n.running_var.value())))
        .collect()
}

#[test]
fn training_learns_running_statistics_that_evaluation_applies_row_by_row() {
    let _guard = serial();
    let _norm = WithInputNorm::on();
    let heads_first = heads_first();
    // one epoch of the heads on the frozen backbone, and a whole run (that epoch, then
    // one joint epoch)
    // (a clone shares its running statistics with the original, as burn's running
    // states do: the untrained model's are read from a model of its own)
    let (_, after) = after_steps(&heads_first, STEPS_PER_EPOCH);
    let (train, valid) = sources();
    let joint = TrainConfig {
        epochs: 1,
        ..heads_first.clone()
    };
    let joint = train_plain(
        model(joint.seed, &device()),
        &train,
        &valid,
        &joint,
        &device(),
    )
    .model;
    let start = running(&model(heads_first.seed, &device()));
    assert_eq!(start.len(), 3, "one normalisation per exit");
    for (mean, var) in &start {
        assert!(mean.iter().all(|&m| m == 0.0) && var.iter().all(|&v| v == 1.0));
    }
    for (stage, model) in [("heads first", &after), ("joint", &joint)] {
        let now = running(model);
        assert_ne!(now, start, "{stage}: the running statistics did not move");
        for (l, (mean, var)) in now.iter().enumerate() {
            assert!(
                mean.iter().chain(var).all(|x| x.is_finite()) && var.iter().all(|&v| v > 0.0),
                "{stage}: exit {}: {mean:?} {var:?}",
                l + 1
            );
        }
    }
    assert_ne!(running(&after), running(&joint));

    // evaluation: logits = classifier(γ·(f − mean)/√(var + ε) + β) with the running
    // statistics, and a row alone gives what it gives in the batch
    let model = joint.valid();
    let cpu = Device::flex();
    let positions: Vec<usize> = (0..16).collect();
    let batch = valid.batch(&positions, &cpu);
    let alone = valid.batch(&positions[5..6], &cpu);
    let all = model.forward_all(batch.input.clone());
    let single = model.forward_all(alone.input);
    let mut state = model.backbone.embed(batch.input);
    for l in 0..model.n_layers() {
        state = model.backbone.forward_layer(l, state);
        let features = host(model.backbone.head_input(&model.heads, l, &state));
        let norm = &model.heads.norms[l];
        let (mean, var) = (
            host(norm.running_mean.value()),
            host(norm.running_var.value()),
        );
        let (gamma, beta) = (host(norm.gamma.val()), host(norm.beta.val()));
        let d = mean.len();
        let standardised: Vec<f32> = features
            .iter()
            .enumerate()
            .map(|(i, &f)| {
                let j = i % d;
                gamma[j] * (f - mean[j]) / (var[j] + INPUT_NORM_EPSILON as f32).sqrt() + beta[j]
            })
            .collect();
        let by_hand = model.heads.classifiers[l].forward(Tensor::<2>::from_data(
            TensorData::new(standardised, [positions.len(), d]),
            &cpu,
        ));
        let got = host(all.logits[l].clone());
        let want = host(by_hand);
        assert!(
            support::max_abs_diff(&got, &want) < 1e-4,
            "exit {}: {got:?} against {want:?}",
            l + 1
        );
        let row = host(single.logits[l].clone());
        assert!(support::max_abs_diff(&row, &got[5 * N_CLASSES..6 * N_CLASSES]) < 1e-5);
    }
}

#[test]
fn resumption_keeps_the_running_statistics() {
    let _guard = serial();
    let _norm = WithInputNorm::on();
    let pabee = TrainConfig {
        epochs: 2,
        checkpoint_every: 3,
        ..heads_first()
    };
    check_resume(&pabee, STEPS_PER_EPOCH + 4);
    let deebert = TrainConfig {
        checkpoint_every: 3,
        epochs: 1,
        stage2_epochs: Some(1),
        ..config(Method::DeeBert)
    };
    check_resume(&deebert, STEPS_PER_EPOCH + 2);
}

#[test]
fn the_normalisation_is_charged_in_flops() {
    let d = Device::flex();
    let plain = ClassifierHeadsConfig::new(3, 16, 4).init(&d);
    let normed = ClassifierHeadsConfig::new(3, 16, 4)
        .with_input_norm(true)
        .init(&d);
    assert_eq!(normed.norms.len(), 3);
    assert!(plain.norms.is_empty());
    for l in 0..3 {
        assert_eq!(normed.flops(l), plain.flops(l) + 2 * 16);
    }
    // a shared classifier still normalises each exit with its own statistics
    let shared = ClassifierHeadsConfig::new(3, 16, 4)
        .with_shared(true)
        .with_input_norm(true)
        .init(&d);
    assert_eq!((shared.classifiers.len(), shared.norms.len()), (1, 3));
}
