//! Tests of the training loop [`fit`] on a tiny ViT and synthetic images: determinism,
//! exact resumption from checkpoints (PABEE and DeeBERT, mid-epoch and around epoch
//! boundaries), non-finite losses, that training learns, and configuration errors.
//!
//! The CPU backend keeps one random generator for the whole process (`Device::seed`
//! replaces it), so tests that initialise or train a model take [`serial`]'s lock first:
//! otherwise two tests running in parallel threads would draw from each other's stream.

mod support;

use std::cell::Cell;
use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use ponder_core::PonderError;
use ponder_data::ImageSet;
use ponder_models::{
    Batch, CheckpointFiles, ClassificationSource, EpochLog, FitOptions, ImageSource,
    JEI_ALTERNATION_STAGE, Method, MultiExitClassifier, MultiExitConfig, TrainConfig,
    TrainObserver, TrainOutcome, TrainState, fit,
};
use ponder_transformer::{EmbeddingKind, EncoderConfig, EncoderInput};
use support::{host, lcg, serial};

const SIDE: usize = 28;
const N_CLASSES: usize = 3;
const N_TRAIN: usize = 200;
const N_VALID: usize = 64;

/// `N_TRAIN + N_VALID` grey 28×28 images in 3 classes: dim noise everywhere, plus a
/// bright square whose place and size depend on the class (sides 5–6, 9–10, 13–14),
/// its corner jittered by up to 4 pixels. Learnable, but not within a few steps: a tiny
/// ViT needs some 50 steps to pass 80% (so the metrics of short runs still move).
fn synthetic_images() -> (Arc<ImageSet>, Arc<Vec<usize>>) {
    let n = N_TRAIN + N_VALID;
    let mut next = lcg(0x2545_F491_4F6C_DD1D);
    // top-left corner of the block of each class
    let corners = [(2usize, 2usize), (12, 3), (4, 12)];
    let mut pixels = Vec::with_capacity(n * SIDE * SIDE);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % N_CLASSES;
        let (r0, c0) = corners[class];
        let r0 = r0 + (next() % 5) as usize;
        let c0 = c0 + (next() % 5) as usize;
        let side = 5 + 4 * class + (next() % 2) as usize;
        for r in 0..SIDE {
            for c in 0..SIDE {
                let inside = (r0..r0 + side).contains(&r) && (c0..c0 + side).contains(&c);
                let v = if inside {
                    170 + next() % 86
                } else {
                    next() % 100
                };
                pixels.push(v as u8);
            }
        }
        labels.push(class);
    }
    let set = ImageSet {
        n_images: n,
        n_channels: 1,
        n_rows: SIDE,
        n_cols: SIDE,
        pixels,
    };
    (Arc::new(set), Arc::new(labels))
}

fn sources() -> (ImageSource, ImageSource) {
    let (images, labels) = synthetic_images();
    let train = ImageSource::new(
        images.clone(),
        labels.clone(),
        (0..N_TRAIN).collect(),
        N_CLASSES,
    );
    let valid = ImageSource::new(
        images,
        labels,
        (N_TRAIN..N_TRAIN + N_VALID).collect(),
        N_CLASSES,
    );
    (train, valid)
}

/// The autodiff CPU device.
fn device() -> Device {
    Device::flex().autodiff()
}

/// A tiny ViT (3 layers, H = 16, 2 heads, FFN 32) with dropout, initialised after
/// seeding the device with `seed`.
fn model(seed: u64, device: &Device) -> MultiExitClassifier {
    model_with_dropout(seed, 0.1, device)
}

fn model_with_dropout(seed: u64, dropout: f64, device: &Device) -> MultiExitClassifier {
    build_model(seed, dropout, false, device)
}

fn build_model(seed: u64, dropout: f64, gates: bool, device: &Device) -> MultiExitClassifier {
    device.seed(seed);
    let mut encoder = EncoderConfig::tiny_vit().with_dropout(dropout);
    encoder.n_layers = 3;
    encoder.d_model = 16;
    encoder.n_heads = 2;
    encoder.d_ff = 32;
    MultiExitConfig::new(encoder.into(), N_CLASSES)
        .with_head_dropout(dropout)
        .with_gates(gates)
        .init(device)
}

/// The model `config.method` trains: [`model`] plus JEI-DNN's gates when it has them.
fn model_for(config: &TrainConfig, seed: u64, device: &Device) -> MultiExitClassifier {
    build_model(seed, 0.1, config.method.has_gates(), device)
}

/// 200 examples in batches of 32: 7 steps per epoch, the last one of 8 examples.
fn config(method: Method) -> TrainConfig {
    TrainConfig {
        method,
        epochs: 3,
        stage2_epochs: Some(2),
        batch_size: 32,
        eval_batch_size: 64,
        learning_rate: 5e-3,
        seed: 11,
        ..TrainConfig::default()
    }
}

const STEPS_PER_EPOCH: usize = N_TRAIN.div_ceil(32);

/// Stops training after `step` (global, 1-based count of steps done), as a kill would.
/// It also remembers the state training (re)started from.
#[derive(Default)]
struct StopAt {
    step: Option<usize>,
    started_from: Option<TrainState>,
    steps_seen: usize,
}

impl TrainObserver for StopAt {
    fn on_start(&mut self, _total_steps: usize, state: &TrainState) {
        self.started_from = Some(state.clone());
    }
    fn on_step(&mut self, _state: &TrainState, _loss: f64) {
        self.steps_seen += 1;
    }
    fn should_stop(&mut self, state: &TrainState) -> bool {
        self.step == Some(state.global_step)
    }
}

/// The history without its wall-clock times.
fn timeless(history: &[EpochLog]) -> Vec<EpochLog> {
    history
        .iter()
        .map(|log| EpochLog {
            seconds: 0.0,
            ..log.clone()
        })
        .collect()
}

/// Every exit's logits on the first 16 validation images (a fixed batch).
fn probe_logits(model: &MultiExitClassifier, valid: &ImageSource) -> Vec<Vec<f32>> {
    let positions: Vec<usize> = (0..16).collect();
    let batch = valid.batch(&positions, &Device::flex());
    model
        .forward_all(batch.input)
        .logits
        .into_iter()
        .map(host)
        .collect()
}

/// `fit` without checkpoints or observer, which must succeed.
fn train_plain<S: ClassificationSource>(
    model: MultiExitClassifier,
    train: &S,
    valid: &S,
    config: &TrainConfig,
    device: &Device,
) -> TrainOutcome {
    fit(model, train, valid, config, FitOptions::new(device)).unwrap()
}

/// The training losses of a history, as bits.
fn loss_bits(history: &[EpochLog]) -> Vec<u64> {
    history.iter().map(|l| l.train_loss.to_bits()).collect()
}

fn bits(values: &[f64]) -> Vec<u64> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// Asserts that two histories are equal bit for bit (times aside).
fn assert_same_history(a: &[EpochLog], b: &[EpochLog], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: different numbers of epochs");
    for (x, y) in a.iter().zip(b) {
        let at = format!("{what}, stage {} epoch {}", x.stage, x.epoch);
        assert_eq!(
            (x.stage, x.epoch, x.step),
            (y.stage, y.epoch, y.step),
            "{at}: position"
        );
        assert_eq!(
            x.train_loss.to_bits(),
            y.train_loss.to_bits(),
            "{at}: train_loss {} vs {}",
            x.train_loss,
            y.train_loss
        );
        assert_eq!(
            x.valid_metric.to_bits(),
            y.valid_metric.to_bits(),
            "{at}: valid_metric {} vs {}",
            x.valid_metric,
            y.valid_metric
        );
        assert_eq!(
            bits(&x.valid_layer_accuracy),
            bits(&y.valid_layer_accuracy),
            "{at}: valid_layer_accuracy {:?} vs {:?}",
            x.valid_layer_accuracy,
            y.valid_layer_accuracy
        );
        assert_eq!(
            x.learning_rate.to_bits(),
            y.learning_rate.to_bits(),
            "{at}: learning_rate {} vs {}",
            x.learning_rate,
            y.learning_rate
        );
    }
    assert_eq!(timeless(a), timeless(b), "{what}");
}

#[test]
fn same_seed_gives_identical_metrics() {
    let _guard = serial();
    let (train, valid) = sources();
    let d = device();
    let config = config(Method::Pabee);
    let run = |seed: u64| {
        let config = TrainConfig {
            seed,
            ..config.clone()
        };
        train_plain(model(seed, &d), &train, &valid, &config, &d)
    };
    let a = run(11);
    let b = run(11);
    assert!(!a.interrupted && !b.interrupted);
    assert_eq!(a.state.history.len(), 3);
    assert_same_history(&a.state.history, &b.state.history, "same seed");
    assert_eq!(
        probe_logits(&a.model, &valid),
        probe_logits(&b.model, &valid)
    );
    // ... while another seed trains differently (the comparison above is not vacuous)
    let c = run(12);
    assert_ne!(
        loss_bits(&a.state.history),
        loss_bits(&c.state.history),
        "another seed gave the same losses"
    );
}

#[test]
fn dropout_masks_depend_on_the_step_seed() {
    // Same initial weights, same data order: only the dropout draws can differ between
    // a run with dropout and its twin. Two runs with dropout must agree even when the
    // random generator is left in different states between initialisation and training
    // (the masks are reseeded from the step), and a run without dropout must not (so
    // dropout is active in training, and the other tests exercise it).
    let _guard = serial();
    let (train, valid) = sources();
    let d = device();
    let config = TrainConfig {
        epochs: 1,
        ..config(Method::Pabee)
    };
    let run = |dropout: f64, rng_seed: u64| {
        let m = model_with_dropout(5, dropout, &d);
        d.seed(rng_seed);
        let _ = Tensor::<2>::random([4, 4], burn::tensor::Distribution::Default, &d);
        train_plain(m, &train, &valid, &config, &d)
    };
    let a = run(0.3, 1);
    let b = run(0.3, 2);
    let c = run(0.0, 1);
    assert_same_history(&a.state.history, &b.state.history, "dropout 0.3 twice");
    assert_ne!(
        a.state.history[0].train_loss.to_bits(),
        c.state.history[0].train_loss.to_bits(),
        "dropout 0.3 and no dropout gave the same loss: dropout is not active in training"
    );
}

#[test]
fn deebert_stage2_keeps_the_backbone_and_final_head() {
    // DeeBERT's stage 1 is FinalOnly training; stage 2 must then train the internal
    // heads only: the final exit of the result is that of the FinalOnly model, bit for
    // bit, while the internal exits changed.
    let _guard = serial();
    let (train, valid) = sources();
    let d = device();
    let config = TrainConfig {
        epochs: 2,
        stage2_epochs: Some(2),
        ..config(Method::DeeBert)
    };
    let dee = train_plain(model(config.seed, &d), &train, &valid, &config, &d);
    let final_only = TrainConfig {
        method: Method::FinalOnly,
        ..config.clone()
    };
    let fo = train_plain(model(config.seed, &d), &train, &valid, &final_only, &d);
    assert_same_history(
        &dee.state.history[..2],
        &fo.state.history,
        "DeeBERT stage 1 vs FinalOnly",
    );
    assert_eq!(dee.state.history.len(), 4);
    assert!(dee.state.history[2..].iter().all(|l| l.stage == 1));
    let (ld, lf) = (
        probe_logits(&dee.model, &valid),
        probe_logits(&fo.model, &valid),
    );
    assert_eq!(
        ld[2], lf[2],
        "stage 2 changed the backbone or the final head"
    );
    assert_ne!(ld[0], lf[0], "stage 2 did not train the first head");
    assert_ne!(ld[1], lf[1], "stage 2 did not train the second head");
    // stage 2's validation metric is the internal exits' mean accuracy
    let last = dee.state.history.last().unwrap();
    let mean = (last.valid_layer_accuracy[0] + last.valid_layer_accuracy[1]) / 2.0;
    assert_eq!(last.valid_metric, mean);
}

#[test]
fn frozen_learning_rate_drives_only_the_frozen_backbone_stages() {
    // DeeBERT with `frozen_learning_rate`: stage 1 (the backbone) runs as before, bit
    // for bit; stage 2 (heads on the frozen backbone) follows the frozen rate's
    // schedule and ends elsewhere than at the shared rate.
    let _guard = serial();
    let (train, valid) = sources();
    let d = device();
    let shared = TrainConfig {
        epochs: 1,
        stage2_epochs: Some(2),
        ..config(Method::DeeBert)
    };
    let frozen = TrainConfig {
        frozen_learning_rate: Some(shared.learning_rate * 10.0),
        ..shared.clone()
    };
    let a = train_plain(model(shared.seed, &d), &train, &valid, &shared, &d);
    let b = train_plain(model(shared.seed, &d), &train, &valid, &frozen, &d);
    assert_same_history(&a.state.history[..1], &b.state.history[..1], "stage 1");
    for (x, y) in a.state.history[1..].iter().zip(&b.state.history[1..]) {
        assert_eq!(x.stage, 1);
        let ratio = y.learning_rate / x.learning_rate;
        assert!((ratio - 10.0).abs() < 1e-9, "stage 2 rate ratio {ratio}");
    }
    assert_ne!(
        probe_logits(&a.model, &valid)[0],
        probe_logits(&b.model, &valid)[0],
        "the frozen rate did not change the internal head"
    );
}

/// Runs `config` uninterrupted (checkpointing into its own folder), then again stopped
/// after step `stop_at` and resumed from its checkpoints with a fresh model; asserts
/// both end alike and returns the state the resumed run started from.
fn check_resume(config: &TrainConfig, stop_at: usize) -> TrainState {
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
fn timeless_state(state: &TrainState) -> TrainState {
    TrainState {
        history: timeless(&state.history),
        ..state.clone()
    }
}

fn assert_best_file_equal(
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

/// A training source whose `poison_at`-th batch (0-based call count, i.e. the batch of
/// that step) has NaN pixels.
struct Poisoned {
    inner: ImageSource,
    poison_at: usize,
    calls: Cell<usize>,
}

impl ClassificationSource for Poisoned {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn n_classes(&self) -> usize {
        self.inner.n_classes()
    }
    fn targets(&self) -> Vec<usize> {
        self.inner.targets()
    }
    fn batch(&self, positions: &[usize], device: &Device) -> Batch {
        let call = self.calls.get();
        self.calls.set(call + 1);
        let batch = self.inner.batch(positions, device);
        if call != self.poison_at {
            return batch;
        }
        let EncoderInput::Images(images) = batch.input else {
            unreachable!()
        };
        let [b, c, h, w] = images.dims();
        let mut pixels = images.try_into_vec_as::<f32>().unwrap();
        pixels[3] = f32::NAN;
        Batch {
            input: EncoderInput::Images(Tensor::from_data(
                TensorData::new(pixels, [b, c, h, w]),
                device,
            )),
            targets: batch.targets,
            scores: None,
        }
    }
}

#[test]
fn nan_loss_stops_with_the_step() {
    let _guard = serial();
    let (train, valid) = sources();
    let d = device();
    let dir = tempfile::tempdir().unwrap();
    let files = CheckpointFiles::new(dir.path());
    let config = TrainConfig {
        checkpoint_every: 2,
        ..config(Method::Pabee)
    };
    let poison_at = STEPS_PER_EPOCH + 2;
    let train = Poisoned {
        inner: train,
        poison_at,
        calls: Cell::new(0),
    };
    let valid = Poisoned {
        inner: valid,
        poison_at: usize::MAX,
        calls: Cell::new(0),
    };
    let mut observer = StopAt::default();
    let err = fit(
        model(3, &d),
        &train,
        &valid,
        &config,
        FitOptions::new(&d)
            .with_checkpoints(&files)
            .with_observer(&mut observer),
    )
    .unwrap_err();
    match &err {
        PonderError::NonFinite { step, value, what } => {
            assert_eq!(*step, poison_at, "{err}");
            assert!(value.is_nan(), "{err}");
            assert!(what.contains("loss"), "{err}");
        }
        other => panic!("expected a non-finite loss, got {other}"),
    }
    let message = err.to_string();
    assert!(message.contains(&format!("step {poison_at}")), "{message}");
    // no optimisation step happened on the NaN batch
    assert_eq!(observer.steps_seen, poison_at);
    // and the checkpoints hold the last good state
    let (_, _, state) = files
        .load_last::<_, TrainState>(model(3, &d), adamw())
        .unwrap();
    assert_eq!(state.global_step, poison_at / 2 * 2);
}

/// An optimizer to load a checkpoint into (its state is read from the checkpoint).
fn adamw() -> burn::optim::ModuleOptimizer {
    burn::optim::AdamWConfig::new().init()
}

#[test]
fn training_learns() {
    let _guard = serial();
    let (train, valid) = sources();
    let d = device();
    let config = TrainConfig {
        epochs: 6,
        batch_size: 16,
        learning_rate: 1e-2,
        ..config(Method::Pabee)
    };
    let out = train_plain(model(config.seed, &d), &train, &valid, &config, &d);
    let history = &out.state.history;
    let first = &history[0];
    let last = history.last().unwrap();
    let final_exit = *last.valid_layer_accuracy.last().unwrap();
    assert!(
        final_exit > 0.8,
        "last exit reaches only {final_exit} (chance: 1/3): {history:#?}"
    );
    assert!(
        last.train_loss < first.train_loss,
        "the loss does not fall: {history:#?}"
    );
    // every exit learns something under PABEE's loss
    assert!(
        last.valid_layer_accuracy.iter().all(|&a| a > 0.5),
        "an exit is near chance: {:?}",
        last.valid_layer_accuracy
    );
    // the returned model is the best epoch's, and scores what the history says
    let (best_stage, best_epoch) = out.state.best_at.unwrap();
    let best = history
        .iter()
        .find(|l| (l.stage, l.epoch) == (best_stage, best_epoch))
        .unwrap();
    let batches = ponder_models::make_batches(&valid, 64, &Device::flex());
    let accuracy = ponder_models::layer_accuracies(&out.model, &batches).accuracy;
    assert_eq!(bits(&accuracy), bits(&best.valid_layer_accuracy));
}

/// `n` random RGB 12×12 images in 3 classes (only the plumbing is under test), every
/// channel drawn from its own range so that the channels' statistics differ.
fn rgb_images(n: usize) -> (Arc<ImageSet>, Arc<Vec<usize>>) {
    let mut next = lcg(0x9E37_79B9_7F4A_7C15);
    let mut pixels = Vec::with_capacity(n * 3 * 12 * 12);
    for _ in 0..n {
        for (low, span) in [(0, 256), (100, 50), (200, 20)] {
            pixels.extend((0..12 * 12).map(|_| (low + next() % span) as u8));
        }
    }
    let set = ImageSet {
        n_images: n,
        n_channels: 3,
        n_rows: 12,
        n_cols: 12,
        pixels,
    };
    (Arc::new(set), Arc::new((0..n).map(|i| i % 3).collect()))
}

#[test]
fn rgb_images_of_another_size_train() {
    let _guard = serial();
    let (images, labels) = rgb_images(48);
    let train_indices: Vec<usize> = (0..32).collect();
    let (mean, std) = images.channel_stats(&train_indices);
    let source = |indices| {
        ImageSource::new(images.clone(), labels.clone(), indices, N_CLASSES)
            .with_channel_normalisation(mean.clone(), std.clone())
    };
    let (train, valid) = (source(train_indices), source((32..48).collect()));
    assert_eq!(train.normalisation(), (mean.as_slice(), std.as_slice()));

    // batches are [b, 3, 12, 12], each channel standardised with its own statistics
    let all: Vec<usize> = (0..32).collect();
    let EncoderInput::Images(x) = train.batch(&all, &Device::flex()).input else {
        panic!("an image source gives images");
    };
    assert_eq!(x.dims(), [32, 3, 12, 12]);
    let x = x.try_into_vec_as::<f32>().unwrap();
    for c in 0..3 {
        let values: Vec<f32> = x
            .chunks_exact(144)
            .skip(c)
            .step_by(3)
            .flatten()
            .copied()
            .collect();
        let n = values.len() as f32;
        let m = values.iter().sum::<f32>() / n;
        let v = values.iter().map(|x| (x - m) * (x - m)).sum::<f32>() / n;
        assert!(
            m.abs() < 1e-3 && (v.sqrt() - 1.0).abs() < 1e-3,
            "channel {c}: mean {m}, std {}",
            v.sqrt()
        );
    }

    // a tiny ViT on 12×12 RGB patches of 4 trains, and its exits give finite logits
    let d = device();
    d.seed(5);
    let mut encoder = EncoderConfig::tiny_vit();
    encoder.embedding = EmbeddingKind::Patch {
        image_size: 12,
        patch_size: 4,
        channels: 3,
    };
    encoder.n_layers = 2;
    encoder.d_model = 16;
    encoder.n_heads = 2;
    encoder.d_ff = 32;
    let model = MultiExitConfig::new(encoder.into(), N_CLASSES).init(&d);
    let config = TrainConfig {
        epochs: 2,
        batch_size: 16,
        eval_batch_size: 16,
        ..config(Method::Pabee)
    };
    let out = train_plain(model, &train, &valid, &config, &d);
    let history = &out.state.history;
    assert_eq!(out.state.global_step, 4, "{history:#?}");
    assert!(
        history.iter().all(|l| l.train_loss.is_finite()),
        "{history:#?}"
    );
    let logits = probe_logits(&out.model, &valid);
    assert_eq!(logits.len(), 2);
    for exit in &logits {
        assert_eq!(exit.len(), 16 * N_CLASSES);
        assert!(exit.iter().all(|v| v.is_finite()), "{exit:?}");
    }
}

#[test]
#[should_panic(expected = "must have one value per channel (3)")]
fn channel_normalisation_needs_one_value_per_channel() {
    let (images, labels) = rgb_images(3);
    let _ = ImageSource::new(images, labels, vec![0, 1, 2], N_CLASSES)
        .with_channel_normalisation(vec![0.5, 0.5], vec![0.2, 0.2]);
}

fn config_key(config: &TrainConfig) -> String {
    match config.validate() {
        Err(PonderError::InvalidConfig { key, .. }) => key,
        Err(other) => panic!("expected a configuration error, got {other}"),
        Ok(()) => panic!("{config:?} was accepted"),
    }
}

#[test]
fn bad_train_config_is_an_error() {
    let good = TrainConfig::default();
    good.validate().unwrap();
    let bad = |key: &'static str, change: fn(&mut TrainConfig)| {
        let mut config = good.clone();
        change(&mut config);
        (key, config)
    };
    let cases = [
        bad("train.learning_rate", |c| c.learning_rate = 0.0),
        bad("train.learning_rate", |c| c.learning_rate = f64::NAN),
        bad("train.learning_rate", |c| c.learning_rate = 2.0),
        bad("train.frozen_learning_rate", |c| {
            c.frozen_learning_rate = Some(0.0)
        }),
        bad("train.frozen_learning_rate", |c| {
            c.frozen_learning_rate = Some(f64::NAN)
        }),
        bad("train.epochs", |c| c.epochs = 0),
        bad("train.stage2_epochs", |c| {
            c.method = Method::DeeBert;
            c.stage2_epochs = Some(0);
        }),
        bad("train.batch_size", |c| c.batch_size = 0),
        bad("train.batch_size", |c| c.eval_batch_size = 0),
        bad("train.warmup_fraction", |c| c.warmup_fraction = 1.0),
        bad("train.warmup_fraction", |c| c.warmup_fraction = -0.1),
        bad("train.weight_decay", |c| c.weight_decay = -1.0),
        bad("train.grad_clip", |c| c.grad_clip = f32::NAN),
    ];
    for (key, config) in &cases {
        assert_eq!(&config_key(config), key, "{config:?}");
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains(key), "{message} does not name {key}");
    }
    // stage 2 epochs only matter to DeeBERT
    TrainConfig {
        stage2_epochs: Some(0),
        ..good.clone()
    }
    .validate()
    .unwrap();

    // fit refuses a bad configuration before training, and empty data
    let _guard = serial();
    let (train, valid) = sources();
    let d = device();
    let bad = TrainConfig {
        epochs: 0,
        ..good.clone()
    };
    let err = fit(model(1, &d), &train, &valid, &bad, FitOptions::new(&d)).unwrap_err();
    assert!(
        matches!(&err, PonderError::InvalidConfig { key, .. } if key == "train.epochs"),
        "{err}"
    );
    let empty = ImageSource::new(
        Arc::new(ImageSet {
            n_images: 0,
            n_channels: 1,
            n_rows: SIDE,
            n_cols: SIDE,
            pixels: Vec::new(),
        }),
        Arc::new(Vec::new()),
        Vec::new(),
        N_CLASSES,
    );
    let err = fit(model(1, &d), &empty, &valid, &good, FitOptions::new(&d)).unwrap_err();
    assert!(
        matches!(&err, PonderError::InvalidConfig { key, .. } if key == "data"),
        "{err}"
    );
}

#[test]
fn train_config_reads_from_json_with_defaults_and_rejects_unknown_keys() {
    let config: TrainConfig =
        serde_json::from_str(r#"{"method": "dee_bert", "epochs": 2}"#).unwrap();
    assert_eq!(config.method, Method::DeeBert);
    assert_eq!(config.epochs, 2);
    assert_eq!(config.batch_size, TrainConfig::default().batch_size);
    assert!(serde_json::from_str::<TrainConfig>(r#"{"epoch": 2}"#).is_err());
}

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
