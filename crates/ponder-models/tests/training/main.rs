//! Tests of the training loop [`fit`] on a tiny ViT and synthetic images: determinism,
//! exact resumption from checkpoints (PABEE and DeeBERT, mid-epoch and around epoch
//! boundaries), non-finite losses, that training learns, and configuration errors.
//! One test binary: the shared fixtures and the determinism tests are here, the rest in
//! modules by subject (`resume`, `inputs`, `jei`).
//!
//! The CPU backend keeps one random generator for the whole process (`Device::seed`
//! replaces it), so tests that initialise or train a model take [`serial`]'s lock first:
//! otherwise two tests running in parallel threads would draw from each other's stream.

mod groups;
mod input_norm;
mod inputs;
mod jei;
mod resume;
#[path = "../support/mod.rs"]
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

thread_local! {
    /// Whether [`build_model`] gives the heads batch normalisation of their input
    /// (`MultiExitConfig::head_input_norm`); set by [`input_norm::WithInputNorm`], so that
    /// the shared helpers ([`model_for`], `resume::check_resume`) build such models too.
    static HEAD_INPUT_NORM: Cell<bool> = const { Cell::new(false) };
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
        .with_head_input_norm(HEAD_INPUT_NORM.get())
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
