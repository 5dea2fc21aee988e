//! Exact resumption: a run stopped anywhere and resumed from its checkpoints ends bit for
//! bit like the uninterrupted run (PABEE, DeeBERT, around epoch boundaries).

use super::*;

/// Runs `config` uninterrupted (checkpointing into its own folder), then again stopped
/// after step `stop_at` and resumed from its checkpoints with a fresh model; asserts
/// both end alike and returns the state the resumed run started from.
pub(crate) fn check_resume(config: &TrainConfig, stop_at: usize) -> TrainState {
    let (train, valid) = sources();
    let d = device();
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let files_a = CheckpointFiles::new(dir_a.path());
    let files_b = CheckpointFiles::new(dir_b.path());

    let a = fit(
        model_for(config, config.seed, &d),
        &train,
        &valid,
        config,
        FitOptions::new(&d).with_checkpoints(&files_a),
    )
    .unwrap();
    assert!(!a.interrupted && a.state.finished);

    let mut stop = StopAt {
        step: Some(stop_at),
        ..StopAt::default()
    };
    let b1 = fit(
        model_for(config, config.seed, &d),
        &train,
        &valid,
        config,
        FitOptions::new(&d)
            .with_checkpoints(&files_b)
            .with_observer(&mut stop),
    )
    .unwrap();
    assert!(b1.interrupted, "the observer did not stop training");
    assert_eq!(b1.state.global_step, stop_at);
    assert_eq!(stop.steps_seen, stop_at);
    assert!(
        files_b.has_last(),
        "no checkpoint written before step {stop_at}"
    );

    // a fresh model, initialised from another seed: everything must come from the folder
    let mut resumed = StopAt::default();
    let b = fit(
        model_for(config, config.seed + 1000, &d),
        &train,
        &valid,
        config,
        FitOptions::new(&d)
            .with_checkpoints(&files_b)
            .with_resume(true)
            .with_observer(&mut resumed),
    )
    .unwrap();
    assert!(!b.interrupted && b.state.finished);
    let started = resumed.started_from.unwrap();
    assert!(
        started.global_step <= stop_at,
        "resumed after the stop: {started:?}"
    );
    assert_eq!(
        started.global_step + resumed.steps_seen,
        a.state.global_step,
        "the resumed run did not do exactly the missing steps"
    );

    let what = format!("{:?} stopped after step {stop_at}", config.method);
    assert_same_history(&a.state.history, &b.state.history, &what);
    assert_eq!(a.state.best_at, b.state.best_at, "{what}: best epoch");
    assert_eq!(
        a.state.best_metric.map(f64::to_bits),
        b.state.best_metric.map(f64::to_bits),
        "{what}: best metric"
    );
    assert_eq!(timeless_state(&a.state), timeless_state(&b.state), "{what}");
    let (la, lb) = (
        probe_logits(&a.model, &valid),
        probe_logits(&b.model, &valid),
    );
    for (l, (x, y)) in la.iter().zip(&lb).enumerate() {
        assert_eq!(x, y, "{what}: final logits of exit {} differ", l + 1);
    }
    // the checkpoint folders end alike too
    assert_best_file_equal(config, &files_a, &files_b, &valid, &what);
    let (ma, _, sa) = files_a
        .load_last(model_for(config, 1, &d), adamw())
        .unwrap();
    let (mb, _, sb) = files_b
        .load_last(model_for(config, 2, &d), adamw())
        .unwrap();
    assert_eq!(
        timeless_state(&sa),
        timeless_state(&sb),
        "{what}: last/state.json"
    );
    assert_eq!(
        timeless_state(&sa),
        timeless_state(&a.state),
        "{what}: last/state.json"
    );
    assert_eq!(
        probe_logits(&ma.valid(), &valid),
        probe_logits(&mb.valid(), &valid),
        "{what}: last/model.bpk"
    );
    started
}

/// The state without wall-clock times.
pub(crate) fn timeless_state(state: &TrainState) -> TrainState {
    TrainState {
        history: timeless(&state.history),
        ..state.clone()
    }
}

pub(crate) fn assert_best_file_equal(
    config: &TrainConfig,
    a: &CheckpointFiles,
    b: &CheckpointFiles,
    valid: &ImageSource,
    what: &str,
) {
    let load = |files: &CheckpointFiles| {
        let d = Device::flex();
        files.load_best(model_for(config, 1, &d).valid()).unwrap()
    };
    assert!(a.best_model().is_file() && b.best_model().is_file());
    assert_eq!(
        probe_logits(&load(a), valid),
        probe_logits(&load(b), valid),
        "{what}: best.bpk differs"
    );
}

#[test]
fn resumed_run_ends_like_uninterrupted_run() {
    let _guard = serial();
    // PABEE, 3 epochs of 7 steps, a checkpoint every 3 steps. Stopped after step 11
    // (epoch 1, its 4th batch; not a checkpoint step): resumes from step 9.
    let config = TrainConfig {
        checkpoint_every: 3,
        ..config(Method::Pabee)
    };
    let started = check_resume(&config, 11);
    assert_eq!(
        (started.global_step, started.epoch, started.batch),
        (9, 1, 2)
    );
    assert_eq!(started.history.len(), 1);
    assert!(started.epoch_loss_sum > 0.0);
}

#[test]
fn resumed_deebert_run_ends_like_uninterrupted_run() {
    let _guard = serial();
    // DeeBERT: stage 1 is steps 1..=14, stage 2 steps 15..=28. Stopped after step 20
    // (stage 2, epoch 0, 6th batch): resumes from the checkpoint of step 18, in stage 2,
    // with the best weights of stage 1 in best.bpk.
    let config = TrainConfig {
        checkpoint_every: 3,
        epochs: 2,
        stage2_epochs: Some(2),
        ..config(Method::DeeBert)
    };
    let started = check_resume(&config, 20);
    assert_eq!((started.stage, started.epoch, started.batch), (1, 0, 4));
    assert_eq!((started.global_step, started.stage_step), (18, 4));
    assert_eq!(started.best_at.map(|(s, _)| s), Some(0));

    // stopped in stage 2's second epoch, after its first epoch's best was saved
    let started = check_resume(&config, 26);
    assert_eq!((started.stage, started.epoch, started.batch), (1, 1, 3));
    assert_eq!(started.best_at, Some((1, 0)));
}

#[test]
fn resumed_run_ends_like_uninterrupted_run_around_epoch_boundaries() {
    let _guard = serial();
    let config = TrainConfig {
        checkpoint_every: 3,
        ..config(Method::Pabee)
    };
    // stopped after the first step of epoch 1: resumes from the end-of-epoch checkpoint
    let started = check_resume(&config, STEPS_PER_EPOCH + 1);
    assert_eq!(
        (started.global_step, started.epoch, started.batch),
        (STEPS_PER_EPOCH, 1, 0)
    );
    assert_eq!(started.history.len(), 1);
    assert_eq!(started.epoch_loss_sum, 0.0);

    // stopped after the last step of epoch 1, which is also a checkpoint step: killed
    // before validation, it resumes from a checkpoint that has all of the epoch's steps
    // but not its evaluation
    let config = TrainConfig {
        checkpoint_every: STEPS_PER_EPOCH,
        ..config
    };
    let started = check_resume(&config, 2 * STEPS_PER_EPOCH);
    assert_eq!(
        (started.global_step, started.epoch, started.batch),
        (2 * STEPS_PER_EPOCH, 1, STEPS_PER_EPOCH)
    );
    assert_eq!(started.history.len(), 1);
}

#[test]
fn resume_without_a_checkpoint_is_an_error() {
    let _guard = serial();
    let (train, valid) = sources();
    let d = device();
    let dir = tempfile::tempdir().unwrap();
    let files = CheckpointFiles::new(dir.path().join("none"));
    let config = config(Method::Pabee);
    let err = fit(
        model(1, &d),
        &train,
        &valid,
        &config,
        FitOptions::new(&d)
            .with_checkpoints(&files)
            .with_resume(true),
    )
    .unwrap_err();
    assert!(matches!(err, PonderError::Checkpoint { .. }), "{err}");
    let err = fit(
        model(1, &d),
        &train,
        &valid,
        &config,
        FitOptions::new(&d).with_resume(true),
    )
    .unwrap_err();
    assert!(
        matches!(&err, PonderError::InvalidConfig { key, .. } if key == "resume"),
        "{err}"
    );
}
