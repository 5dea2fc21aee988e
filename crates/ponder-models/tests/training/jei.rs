//! JEI-DNN's stages: what each phase trains, the cost weight, resumption, forking a
//! model of another cost weight, and the reference's SGD option.

use super::*;
use crate::resume::{assert_best_file_equal, check_resume};

/// JEI-DNN on the tiny ViT: 2 epochs of backbone, 1 of warm-up, 2 of alternation with
/// phases of 3 batches (so both phases run in every epoch).
fn jei_config() -> TrainConfig {
    let mut config = TrainConfig {
        epochs: 2,
        ..config(Method::JeiDnn)
    };
    config.jei.warmup_epochs = 1;
    config.jei.epochs = 2;
    config.jei.phase_batches = 3;
    config
}

#[test]
fn jei_dnn_freezes_the_backbone_and_trains_modules_and_gates() {
    let _guard = serial();
    let (train, valid) = sources();
    let d = device();
    let mut config = jei_config();
    config.jei.warmup_epochs = 2;
    config.jei.epochs = 4;
    let start = model_for(&config, config.seed, &d);
    let initial_gates = start.gates.clone().unwrap().valid();
    let jei = train_plain(start, &train, &valid, &config, &d);
    let final_only = TrainConfig {
        method: Method::FinalOnly,
        ..config.clone()
    };
    let fo = train_plain(model(config.seed, &d), &train, &valid, &final_only, &d);
    // stage 0 is FinalOnly training (the same model but for the gates, which it never
    // reads: identical history)
    assert_same_history(
        &jei.state.history[..2],
        &fo.state.history,
        "JEI-DNN stage 0 vs FinalOnly",
    );
    let stages: Vec<usize> = jei.state.history.iter().map(|l| l.stage).collect();
    assert_eq!(stages, vec![0, 0, 1, 1, 2, 2, 2, 2]);
    // the backbone and the final head stay frozen; the inference modules and gates move
    let (lj, lf) = (
        probe_logits(&jei.model, &valid),
        probe_logits(&fo.model, &valid),
    );
    assert_eq!(
        lj[2], lf[2],
        "JEI-DNN changed the backbone or the final head"
    );
    assert_ne!(lj[0], lf[0], "the first inference module did not train");
    let gates = jei.model.gates.as_ref().unwrap();
    for l in 0..2 {
        let before = host(initial_gates.gates[l].weight.val());
        let after = host(gates.gates[l].weight.val());
        assert_ne!(before, after, "gate {l} did not train");
    }
    // the last stage is selected on the accuracy under the gates
    let layers = ponder_models::layer_accuracies(
        &jei.model,
        &ponder_models::make_batches(&valid, 64, &Device::flex()),
    );
    assert!(
        layers.gate_mean_exit_layer.unwrap() < 3.0,
        "the gates never exit early"
    );
    let best = jei.state.best_metric.unwrap();
    assert_eq!(layers.gate_accuracy, Some(best));
    assert!(best > 0.6, "accuracy under the gates {best}");

    assert_eq!(jei.state.gate_positive_weight.len(), 2);
    assert!(
        jei.state
            .gate_positive_weight
            .iter()
            .all(|&w| w > 0.0 && w <= config.jei.positive_weight_cap)
    );
}

#[test]
fn jei_dnn_exits_earlier_when_compute_costs_more() {
    // The gate targets trade loss for cost: a large λ_cost makes the first exit the
    // best for most rows, λ_cost = 0 the most accurate (usually a later) one.
    let _guard = serial();
    let (train, valid) = sources();
    let d = device();
    let batches = ponder_models::make_batches(&valid, 64, &Device::flex());
    let depth = |cost_weight: f64| {
        let mut config = jei_config();
        config.jei.cost_weight = cost_weight;
        config.jei.epochs = 10;
        let out = train_plain(
            model_for(&config, config.seed, &d),
            &train,
            &valid,
            &config,
            &d,
        );
        let layers = ponder_models::layer_accuracies(&out.model, &batches);
        // the batched runner (rows leave the batch as they exit) decides as the
        // all-layers pass does
        let rule = ponder_exits::LearnedGate::new(0.5).unwrap();
        let run = ponder_models::evaluate(&out.model, &batches, &rule);
        assert_eq!(Some(run.accuracy), layers.gate_accuracy);
        assert_eq!(Some(run.stats.mean_exit_layer), layers.gate_mean_exit_layer);
        layers.gate_mean_exit_layer.unwrap()
    };
    let cheap = depth(5.0);
    let free = depth(0.0);
    assert!(
        cheap < free,
        "mean exit layer with λ_cost = 5: {cheap}, with λ_cost = 0: {free}"
    );
    assert!(
        cheap < 1.5,
        "λ_cost = 5 should exit almost everything at layer 1: {cheap}"
    );
    assert!(
        free > 1.2,
        "λ_cost = 0 should use the later exits too: {free}"
    );
}

#[test]
fn resumed_jei_dnn_run_ends_like_uninterrupted_run() {
    let _guard = serial();
    // 7 steps per epoch: stage 0 = steps 1..=14, warm-up 15..=21, alternation 22..=35
    // (gate phase at stage steps 0–2, modules 3–5, gates 6–8, …). Stopped after step 26
    // (alternation epoch 0, 5th batch, a module phase): resumes from step 24 (the first
    // module phase).
    let config = TrainConfig {
        checkpoint_every: 3,
        ..jei_config()
    };
    let started = check_resume(&config, 26);
    assert_eq!((started.stage, started.epoch, started.batch), (2, 0, 3));
    assert_eq!(started.gate_positive_weight.len(), 2);
    // Stopped after step 28 (the epoch's last batch, a gate phase): resumes from step 27,
    // after a module phase changed the inference modules, so gate weights recomputed
    // from the validation set would differ from the epoch's: the run must take them
    // from the checkpoint to end like the uninterrupted one.
    let started = check_resume(&config, 28);
    assert_eq!((started.stage, started.epoch, started.batch), (2, 0, 6));
}

#[test]
fn jei_dnn_phases_train_only_their_own_parameters() {
    // With phases longer than the alternation stage, it is one gate phase: the inference
    // modules end as the warm-up left them while the gates move. With a one-step gate
    // phase followed by module phases, the modules move and the gates take only that
    // first step.
    let _guard = serial();
    let (train, valid) = sources();
    let d = device();
    let mut warm = jei_config();
    warm.jei.epochs = 1;
    let mut gates_only = warm.clone();
    gates_only.jei.phase_batches = 1_000;
    let run = |config: &TrainConfig| {
        train_plain(
            model_for(config, config.seed, &d),
            &train,
            &valid,
            config,
            &d,
        )
    };
    let g = run(&gates_only);
    // the same run stopped after the first step of the alternation: it returns its best
    // model so far, the warm-up's (whose gates are still the initial ones)
    let mut stop = StopAt {
        step: Some(3 * STEPS_PER_EPOCH + 1),
        ..StopAt::default()
    };
    let after_warmup = fit(
        model_for(&gates_only, gates_only.seed, &d),
        &train,
        &valid,
        &gates_only,
        FitOptions::new(&d).with_observer(&mut stop),
    )
    .unwrap();
    assert!(after_warmup.interrupted);
    let warmed = after_warmup.model;
    for l in 0..2 {
        assert_eq!(
            host(g.model.heads.classifiers[l].weight.val()),
            host(warmed.heads.classifiers[l].weight.val()),
            "a gate phase changed inference module {l}"
        );
        assert_ne!(
            host(g.model.gates.as_ref().unwrap().gates[l].weight.val()),
            host(warmed.gates.as_ref().unwrap().gates[l].weight.val()),
            "the gate phase did not train gate {l}"
        );
    }
    // one gate step then module phases: the modules move
    let mut modules = warm.clone();
    modules.jei.phase_batches = 1;
    let m = run(&modules);
    assert_ne!(
        host(m.model.heads.classifiers[0].weight.val()),
        host(warmed.heads.classifiers[0].weight.val()),
        "the module phases did not train inference module 0"
    );
}

#[test]
fn a_jei_dnn_model_of_another_cost_weight_forks_from_the_start_of_the_alternation() {
    // λ_cost only acts in the alternation: a model of another λ_cost started from the
    // first one's snapshot of that stage ends exactly like one trained from scratch
    let _guard = serial();
    let (train, valid) = sources();
    let d = device();
    let first = jei_config();
    let mut other = first.clone();
    other.jei.cost_weight = 3.0;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let files: Vec<_> = dirs
        .iter()
        .map(|d| CheckpointFiles::new(d.path()))
        .collect();
    let train_into = |config: &TrainConfig, seed: u64, files: &CheckpointFiles, resume: bool| {
        fit(
            model_for(config, seed, &d),
            &train,
            &valid,
            config,
            FitOptions::new(&d)
                .with_checkpoints(files)
                .with_resume(resume),
        )
        .unwrap()
    };
    let a = train_into(&first, first.seed, &files[0], false);
    assert!(files[0].has_stage_start(JEI_ALTERNATION_STAGE));
    let scratch = train_into(&other, other.seed, &files[1], false);
    files[2]
        .fork_from(&files[0], JEI_ALTERNATION_STAGE)
        .unwrap();
    // another initialisation: everything must come from the snapshot
    let forked = train_into(&other, other.seed + 1000, &files[2], true);
    assert_same_history(
        &timeless(&forked.state.history),
        &timeless(&scratch.state.history),
        "forked vs from scratch",
    );
    assert_best_file_equal(
        &other,
        &files[2],
        &files[1],
        &valid,
        "forked vs from scratch",
    );
    // and λ_cost did change the gates
    let gates = |o: &TrainOutcome| host(o.model.gates.as_ref().unwrap().gates[0].weight.val());
    assert_ne!(gates(&a), gates(&scratch));
    // a folder without the snapshot is an error, not a silent fresh start
    let empty = tempfile::tempdir().unwrap();
    assert!(
        files[2]
            .fork_from(&CheckpointFiles::new(empty.path()), JEI_ALTERNATION_STAGE)
            .is_err()
    );
}

#[test]
fn jei_dnn_needs_a_model_with_gates() {
    let _guard = serial();
    let (train, valid) = sources();
    let d = device();
    let err = fit(
        model(1, &d),
        &train,
        &valid,
        &jei_config(),
        FitOptions::new(&d),
    )
    .unwrap_err();
    assert!(err.to_string().contains("gates"), "{err}");
    let mut bad = jei_config();
    bad.jei.phase_batches = 0;
    let err = fit(
        model_for(&bad, 1, &d),
        &train,
        &valid,
        &bad,
        FitOptions::new(&d),
    )
    .unwrap_err();
    assert!(err.to_string().contains("train.jei.phase_batches"), "{err}");
}

/// [`jei_config`] with the reference code's optimiser in the alternation (SGD with
/// momentum, per-epoch cosine) and unit positive weights in its first epoch.
fn jei_sgd_config() -> TrainConfig {
    let mut config = jei_config();
    config.jei.optimizer = ponder_models::JeiOptimizer::Sgd;
    config.jei.unit_weights_first_epoch = true;
    config.jei.epochs = 3;
    config
}

#[test]
fn sgd_with_momentum_steps_the_weights_as_a_hand_computation_says() {
    // loss = Σ W: every gradient is 1, plus weight decay λ·W; PyTorch's momentum
    // (no dampening): v₁ = g₁, v₂ = g₂ + μ·v₁; W ← W − lr·v
    let _guard = serial();
    let d = device();
    d.seed(5);
    let schedule = ponder_models::SgdSchedule::default();
    let mut optim = schedule.optimizer();
    let mut layer = burn::nn::LinearConfig::new(3, 2).with_bias(false).init(&d);
    let w0: Vec<f64> = host(layer.weight.val().inner())
        .into_iter()
        .map(f64::from)
        .collect();
    let (lr, mu, wd) = (0.01, schedule.momentum, schedule.weight_decay as f64);
    let mut velocity = vec![0.0; w0.len()];
    let mut expected = w0.clone();
    for step in 0..2 {
        let loss = layer.weight.val().sum();
        let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &layer);
        layer = optim.step(lr, layer, grads);
        for (i, w) in expected.iter_mut().enumerate() {
            let g = 1.0 + wd * *w;
            velocity[i] = if step == 0 { g } else { g + mu * velocity[i] };
            *w -= lr * velocity[i];
        }
    }
    let got = host(layer.weight.val().inner());
    for (g, e) in got.iter().zip(&expected) {
        assert!((*g as f64 - e).abs() < 1e-6, "{g} vs {e}");
    }
}

#[test]
fn jei_dnn_with_sgd_follows_the_per_epoch_cosine_and_resumes_exactly() {
    let _guard = serial();
    let config = jei_sgd_config();
    let schedule = &config.jei.sgd;
    assert_eq!(schedule.rate(0, 3), 0.01);
    assert!((schedule.rate(3, 3) - 2e-4).abs() < 1e-15);
    // stopped in the first alternation epoch (steps 22..=28 with 7 steps per epoch):
    // its positive weights are all 1
    let resumable = TrainConfig {
        checkpoint_every: 3,
        ..config.clone()
    };
    let started = check_resume(&resumable, 24);
    assert_eq!((started.stage, started.epoch), (2, 0));
    assert_eq!(started.gate_positive_weight, vec![1.0, 1.0]);
    // in the second epoch, the validation set's
    let started = check_resume(&resumable, 31);
    assert_eq!((started.stage, started.epoch), (2, 1));
    assert_ne!(started.gate_positive_weight, vec![1.0, 1.0]);
    let (train, valid) = sources();
    let d = device();
    let out = train_plain(
        model_for(&config, config.seed, &d),
        &train,
        &valid,
        &config,
        &d,
    );
    let rates: Vec<f64> = out
        .state
        .history
        .iter()
        .filter(|l| l.stage == JEI_ALTERNATION_STAGE)
        .map(|l| l.learning_rate)
        .collect();
    assert_eq!(
        rates,
        (0..3).map(|e| schedule.rate(e, 3)).collect::<Vec<_>>(),
        "one rate per epoch, on the cosine"
    );
}

#[test]
fn refitted_gates_reach_a_vanishing_gradient_and_never_fit_worse() {
    let _guard = serial();
    let (train, valid) = sources();
    let d = device();
    let config = jei_config();
    let out = train_plain(
        model_for(&config, config.seed, &d),
        &train,
        &valid,
        &config,
        &d,
    );
    let flex = Device::flex();
    let train_batches = ponder_models::make_batches(&train, 64, &flex);
    let valid_batches = ponder_models::make_batches(&valid, 64, &flex);
    let data =
        ponder_models::GateData::new(&out.model, &train_batches, &valid_batches, &config.jei)
            .unwrap();
    assert_eq!(data.rows(), N_TRAIN);
    assert_eq!(
        data.best_exit_histogram().iter().sum::<u64>(),
        N_TRAIN as u64
    );
    let trained = ponder_models::gate_report(&out.model, &data);
    let (refit, report) = ponder_models::refit_gates(&out.model, &data);
    assert_eq!(report.gates.len(), 2);
    for (l, (before, after)) in trained.gates.iter().zip(&report.gates).enumerate() {
        assert!(
            after.gradient_norm < 1e-6,
            "gate {l}: gradient norm {} after {:?} Newton steps",
            after.gradient_norm,
            after.iterations
        );
        assert!(
            after.loss <= before.loss + 1e-9,
            "gate {l}: {after:?} vs {before:?}"
        );
        assert_eq!(before.positive_share, after.positive_share);
    }
    // the refitted model's gates are the fitted parameters (up to f32)
    let again = ponder_models::gate_report(&refit, &data);
    for (a, b) in again.gates.iter().zip(&report.gates) {
        assert!((a.loss - b.loss).abs() < 1e-5, "{} vs {}", a.loss, b.loss);
    }
    // a model without gates has no gate data
    let plain = model(1, &d).valid();
    assert!(
        ponder_models::GateData::new(&plain, &train_batches, &valid_batches, &config.jei).is_err()
    );
}
