//! DeeBERT's off-ramps (Xin et al., ACL 2020, arXiv:2004.12993). In the reference form
//! ([`OffRampPooler::Separate`]) each off-ramp has its own pooler on the layer's
//! pre-pooler features, a copy of the main pooler from stage 2 on, and the final exit is
//! a final-only model's; these tests follow that form through the copy, the forward
//! pass, adaptive inference, FLOP counting and training, and check that the stacked form
//! computes what it always did.
//!
//! The CPU backend keeps one random generator for the whole process (`Device::seed`
//! replaces it), so tests that initialise or train a model take [`serial`]'s lock
//! first.

mod support;

use std::sync::Arc;

use burn::nn::Linear;
use burn::optim::GradientsParams;
use burn::tensor::Device;
use ponder_core::{LayerwiseBackbone, linear_flops};
use ponder_data::Encoded;
use ponder_exits::{FixedLayer, NeverExit, OffRampPooler, loss};
use ponder_mamba::{MambaConfig, MambaEncoderConfig};
use ponder_models::{
    FitOptions, Method, MultiExitClassifier, MultiExitConfig, TextSource, TrainConfig,
    TrainObserver, TrainState, fit, make_batches,
};
use ponder_transformer::{EncoderConfig, EncoderInput};
use support::{Planned, host, lcg, serial, text_input};

const N_LAYERS: usize = 3;
const N_CLASSES: usize = 3;
const D_MODEL: usize = 32;

/// The encoders the tests run on: post-norm with `[CLS]`, pre-norm (a final norm before
/// the pooler) with `[CLS]`, and mean pooling.
const ENCODERS: [(bool, bool); 3] = [(false, false), (true, false), (false, true)];

/// A 3-layer text encoder (`EncoderConfig::tiny`'s sizes: H = 32, 4 heads, FFN 64, 100
/// token ids).
fn encoder(norm_first: bool, mean_pool: bool, dropout: f64) -> EncoderConfig {
    EncoderConfig {
        n_layers: N_LAYERS,
        ..EncoderConfig::tiny()
    }
    .with_norm_first(norm_first)
    .with_mean_pool(mean_pool)
    .with_dropout(dropout)
}

/// A model with the off-ramp form `form`, initialised after seeding `device` with
/// `seed`, without dropout.
fn model(
    form: Option<OffRampPooler>,
    (norm_first, mean_pool): (bool, bool),
    seed: u64,
    device: &Device,
) -> MultiExitClassifier {
    device.seed(seed);
    MultiExitConfig::new(encoder(norm_first, mean_pool, 0.0).into(), N_CLASSES)
        .with_head_dropout(0.0)
        .with_offramp_pooler(form)
        .init(device)
}

const LENGTHS: [usize; 5] = [5, 9, 3, 7, 9];

fn weights(linear: &Linear) -> (Vec<f32>, Vec<f32>) {
    (
        host(linear.weight.val()),
        host(linear.bias.as_ref().unwrap().val()),
    )
}

fn main_pooler(model: &MultiExitClassifier) -> &Linear {
    model.backbone.main_pooler().unwrap()
}

/// The logits of exit `layer` (1-based) of the model cut after `layer` layers, without
/// the runner: the head reads what [`ponder_models::Backbone::head_input`] gives it.
fn cut_logits(model: &MultiExitClassifier, input: EncoderInput, layer: usize) -> Vec<f32> {
    let state = model.backbone.forward_cut(input, layer);
    let features = model.backbone.head_input(&model.heads, layer - 1, &state);
    host(model.heads.logits(layer - 1, features))
}

/// The stacked form as ponder computed it before the reference form: each head's own
/// pooler on the main pooler's output.
fn stacked_logits(model: &MultiExitClassifier, input: EncoderInput, layer: usize) -> Vec<f32> {
    let state = model.backbone.forward_cut(input, layer);
    let pooled = model.backbone.pooled(&state);
    let own = model.heads.poolers[layer - 1].forward(pooled).tanh();
    host(model.heads.classifiers[layer - 1].forward(own))
}

#[test]
fn separate_off_ramps_have_their_own_poolers_and_the_final_exit_none() {
    let _guard = serial();
    let device = Device::flex();
    let separate = model(Some(OffRampPooler::Separate), ENCODERS[0], 1, &device);
    assert_eq!(separate.heads.poolers.len(), N_LAYERS - 1);
    assert_eq!(separate.heads.offramp_pooler, Some(OffRampPooler::Separate));
    assert!((0..N_LAYERS - 1).all(|l| separate.heads.reads_pre_pooler(l)));
    assert!(!separate.heads.reads_pre_pooler(N_LAYERS - 1));
    let stacked = model(Some(OffRampPooler::Stacked), ENCODERS[0], 1, &device);
    assert_eq!(stacked.heads.poolers.len(), N_LAYERS);
    assert!((0..N_LAYERS).all(|l| !stacked.heads.reads_pre_pooler(l)));
    let plain = model(None, ENCODERS[0], 1, &device);
    assert!(plain.heads.poolers.is_empty());
}

#[test]
fn init_offramp_poolers_copies_the_main_pooler_into_parameters_of_their_own() {
    let _guard = serial();
    let device = Device::flex().autodiff();
    let before = model(Some(OffRampPooler::Separate), ENCODERS[0], 2, &device);
    let main = weights(main_pooler(&before));
    assert!(
        before.heads.poolers.iter().all(|p| weights(p) != main),
        "the off-ramp poolers start random"
    );
    let after = before.clone().init_offramp_poolers();
    // the backbone (with its main pooler) and the classifiers are untouched
    assert_eq!(weights(main_pooler(&after)), main);
    for (a, b) in after
        .heads
        .classifiers
        .iter()
        .zip(&before.heads.classifiers)
    {
        assert_eq!(weights(a), weights(b));
    }
    let main_id = main_pooler(&after).weight.id;
    let mut ids = vec![main_id];
    for (own, old) in after.heads.poolers.iter().zip(&before.heads.poolers) {
        assert_eq!(
            weights(own),
            main,
            "an off-ramp pooler is not the main pooler's copy"
        );
        // each keeps its own parameter id, so the optimiser trains it on its own
        assert_eq!(own.weight.id, old.weight.id);
        assert!(!ids.contains(&own.weight.id));
        ids.push(own.weight.id);
        assert!(own.weight.val().is_require_grad());
        assert!(own.bias.as_ref().unwrap().val().is_require_grad());
    }

    // The copies are separate parameters: the off-ramps' loss reaches their poolers and
    // not the main pooler, the final exit's loss the main pooler and not theirs.
    let input = text_input(&LENGTHS, &device);
    let out = after.forward_all(input.clone());
    let offramps = out.logits[0].clone().sum() + out.logits[1].clone().sum();
    let grads = GradientsParams::from_grads(offramps.backward(), &after);
    assert!(grads.get::<2>(main_id).is_none());
    for own in &after.heads.poolers {
        assert!(grads.get::<2>(own.weight.id).is_some());
    }
    let out = after.forward_all(input);
    let final_exit = out.logits[N_LAYERS - 1].clone().sum();
    let grads = GradientsParams::from_grads(final_exit.backward(), &after);
    assert!(grads.get::<2>(main_id).is_some());
    for own in &after.heads.poolers {
        assert!(grads.get::<2>(own.weight.id).is_none());
    }

    // Any other form is left as it was.
    for form in [Some(OffRampPooler::Stacked), None] {
        let other = model(form, ENCODERS[0], 3, &device);
        let copied = other.clone().init_offramp_poolers();
        for (a, b) in copied.heads.poolers.iter().zip(&other.heads.poolers) {
            assert_eq!(weights(a), weights(b));
        }
    }
}

#[test]
fn the_final_exit_is_the_final_only_model_and_the_copies_make_every_exit_its_too() {
    let _guard = serial();
    let device = Device::flex();
    for (i, &encoder) in ENCODERS.iter().enumerate() {
        let separate = model(
            Some(OffRampPooler::Separate),
            encoder,
            10 + i as u64,
            &device,
        );
        // a final-only model (no pooler in its heads) with the same weights
        let mut plain = model(None, encoder, 20 + i as u64, &device);
        plain.backbone = separate.backbone.clone();
        plain.heads.classifiers = separate.heads.classifiers.clone();
        let input = text_input(&LENGTHS, &device);
        let ours = separate.forward_all(input.clone());
        let theirs = plain.forward_all(input.clone());
        let last = N_LAYERS - 1;
        assert_eq!(
            host(ours.logits[last].clone()),
            host(theirs.logits[last].clone()),
            "encoder {encoder:?}: the final exit is not the final-only model's"
        );
        // each off-ramp: its own pooler on the pre-pooler features
        for l in 0..last {
            let state = separate.backbone.forward_cut(input.clone(), l + 1);
            let pre = separate.backbone.pre_pooled(&state);
            let own = separate.heads.poolers[l].forward(pre).tanh();
            let expected = host(separate.heads.classifiers[l].forward(own));
            assert_eq!(host(ours.logits[l].clone()), expected);
            assert_ne!(host(theirs.logits[l].clone()), expected);
        }
        // once the off-ramps' poolers are copies of the main pooler, every exit computes
        // what the model without poolers in its heads computes
        let copied = separate.init_offramp_poolers();
        let ours = copied.forward_all(input);
        for l in 0..N_LAYERS {
            assert_eq!(
                host(ours.logits[l].clone()),
                host(theirs.logits[l].clone()),
                "encoder {encoder:?}: exit {l} after the copy"
            );
        }
    }
}

#[test]
fn adaptive_inference_in_the_reference_form_is_the_cut_model() {
    let _guard = serial();
    let device = Device::flex();
    for (i, &encoder) in ENCODERS.iter().enumerate() {
        // random off-ramp poolers, apart from the main pooler: a head fed the wrong
        // features shows
        let model = model(
            Some(OffRampPooler::Separate),
            encoder,
            30 + i as u64,
            &device,
        );
        let input = text_input(&LENGTHS, &device);
        let all = model.forward_all(input.clone());
        let full = model.adaptive(input.clone(), &NeverExit, None);
        assert!(full.exit_layer.iter().all(|&l| l == N_LAYERS));
        assert_eq!(
            host(full.logits),
            host(all.logits[N_LAYERS - 1].clone()),
            "encoder {encoder:?}: never exiting is not full depth"
        );
        for layer in 1..=N_LAYERS {
            let out = model.adaptive(input.clone(), &FixedLayer::new(layer).unwrap(), None);
            assert!(out.exit_layer.iter().all(|&l| l == layer));
            let cut = cut_logits(&model, input.clone(), layer);
            assert_eq!(
                host(out.logits),
                cut,
                "encoder {encoder:?}: exit at {layer}"
            );
            assert_eq!(host(all.logits[layer - 1].clone()), cut);
        }
        // rows leaving at different layers: each row's logits are its cut model's
        let plan = vec![2, 1, 3, 1, 2];
        let out = model.adaptive(input.clone(), &Planned(plan.clone()), None);
        assert_eq!(out.exit_layer, plan);
        let got = host(out.logits);
        for (row, &layer) in plan.iter().enumerate() {
            let cut = cut_logits(&model, input.clone(), layer);
            let (a, b) = (
                &got[row * N_CLASSES..(row + 1) * N_CLASSES],
                &cut[row * N_CLASSES..(row + 1) * N_CLASSES],
            );
            let diff = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(
                diff < 1e-5,
                "encoder {encoder:?}: row {row} at {layer}: {diff}"
            );
        }
    }
}

#[test]
fn flops_count_each_exit_s_pooler_once() {
    let _guard = serial();
    let device = Device::flex();
    let input = text_input(&[8, 8, 8], &device);
    let separate = model(Some(OffRampPooler::Separate), ENCODERS[0], 40, &device);
    let hidden = separate.backbone.embed(input.clone());
    let d = D_MODEL as u64;
    let pooler = linear_flops(1, d, d) + 5 * d;
    let classifier = linear_flops(1, d, N_CLASSES as u64);
    // the cost of leaving at each exit: the embedding, the layers run, and at each exit
    // passed one pooler (the off-ramp's own, or the main pooler at the final exit) and
    // one classifier
    let mut spent = separate.backbone.embed_flops(&hidden);
    let expected: Vec<u64> = (0..N_LAYERS)
        .map(|l| {
            spent += separate.backbone.layer_flops(l, &hidden) + pooler + classifier;
            spent
        })
        .collect();
    let full_depth = separate.backbone.embed_flops(&hidden)
        + (0..N_LAYERS)
            .map(|l| separate.backbone.layer_flops(l, &hidden))
            .sum::<u64>()
        + pooler
        + classifier;
    let stacked = model(Some(OffRampPooler::Stacked), ENCODERS[0], 41, &device);
    let plain = model(None, ENCODERS[0], 42, &device);
    for (name, model, extra) in [
        ("separate", &separate, 0),
        ("plain", &plain, 0),
        ("stacked", &stacked, pooler),
    ] {
        for layer in 1..=N_LAYERS {
            let out = model.adaptive(input.clone(), &FixedLayer::new(layer).unwrap(), None);
            let want = expected[layer - 1] + layer as u64 * extra;
            assert!(
                out.flops.iter().all(|&f| f == want),
                "{name}: exit {layer} costs {:?}, not {want}",
                out.flops
            );
            assert_eq!(out.full_depth_flops, full_depth + extra, "{name}");
        }
        let costs = model.exit_costs(input.clone());
        let last = (expected[N_LAYERS - 1] + N_LAYERS as u64 * extra) as f64;
        for (l, c) in costs.iter().enumerate() {
            let want = (expected[l] + (l as u64 + 1) * extra) as f64 / last;
            assert!((c - want).abs() < 1e-12, "{name}: ĉ_{l} = {c}, not {want}");
        }
    }
}

#[test]
fn the_stacked_form_computes_what_it_did() {
    let _guard = serial();
    let device = Device::flex();
    for (i, &encoder) in ENCODERS.iter().enumerate() {
        let model = model(
            Some(OffRampPooler::Stacked),
            encoder,
            50 + i as u64,
            &device,
        );
        let input = text_input(&LENGTHS, &device);
        let all = model.forward_all(input.clone());
        for layer in 1..=N_LAYERS {
            let expected = stacked_logits(&model, input.clone(), layer);
            assert_eq!(host(all.logits[layer - 1].clone()), expected);
            let out = model.adaptive(input.clone(), &FixedLayer::new(layer).unwrap(), None);
            assert_eq!(
                host(out.logits),
                expected,
                "encoder {encoder:?}: exit {layer}"
            );
            assert_eq!(cut_logits(&model, input.clone(), layer), expected);
        }
    }
}

#[test]
fn on_mamba_the_reference_form_has_no_pooler_to_copy() {
    let _guard = serial();
    let device = Device::flex();
    let mamba =
        || MambaEncoderConfig::new(MambaConfig::new(100, 16, N_LAYERS).with_d_state(4)).into();
    device.seed(60);
    let separate = MultiExitConfig::new(mamba(), N_CLASSES)
        .with_head_dropout(0.0)
        .with_offramp_pooler(Some(OffRampPooler::Separate))
        .init(&device);
    // every exit is a plain classifier on the pooled state, as PABEE's heads are
    assert!(separate.backbone.main_pooler().is_none());
    assert!(separate.heads.poolers.is_empty());
    assert_eq!(separate.heads.offramp_pooler, None);
    assert!((0..N_LAYERS).all(|l| !separate.heads.reads_pre_pooler(l)));
    let input = text_input(&LENGTHS, &device);
    let out = separate.forward_all(input.clone());
    for l in 0..N_LAYERS {
        let state = separate.backbone.forward_cut(input.clone(), l + 1);
        let pooled = separate.backbone.pooled(&state);
        assert_eq!(
            host(separate.backbone.head_input(&separate.heads, l, &state)),
            host(pooled.clone())
        );
        assert_eq!(
            host(out.logits[l].clone()),
            host(separate.heads.classifiers[l].forward(pooled))
        );
    }
    // and there is nothing to copy
    let copied = separate.clone().init_offramp_poolers();
    let again = copied.forward_all(input);
    for l in 0..N_LAYERS {
        assert_eq!(host(again.logits[l].clone()), host(out.logits[l].clone()));
    }
    let stacked = MultiExitConfig::new(mamba(), N_CLASSES)
        .with_offramp_pooler(Some(OffRampPooler::Stacked))
        .init(&device);
    assert_eq!(stacked.heads.poolers.len(), N_LAYERS);
}

#[test]
#[should_panic(expected = "separate off-ramp poolers need per-layer heads")]
fn the_reference_form_refuses_a_shared_head() {
    let device = Device::flex();
    MultiExitConfig::new(encoder(false, false, 0.0).into(), N_CLASSES)
        .with_shared_head(true)
        .with_offramp_pooler(Some(OffRampPooler::Separate))
        .init(&device);
}

const N_TRAIN: usize = 96;
const N_VALID: usize = 32;

/// Texts of 6–12 tokens whose class `c` shows as token `10 + c` repeated among random
/// tokens, `[CLS]`-like id 1 first, in `N_TRAIN + N_VALID` examples.
fn sources() -> (TextSource, TextSource) {
    let n = N_TRAIN + N_VALID;
    let mut next = lcg(0x2545_F491_4F6C_DD1D);
    let mut encoded = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % N_CLASSES;
        let len = 6 + (next() % 7) as usize;
        let mut ids = vec![1];
        ids.extend((1..len).map(|_| {
            if next().is_multiple_of(3) {
                10 + class as u32
            } else {
                20 + next() % 80
            }
        }));
        encoded.push(Encoded {
            type_ids: vec![0; ids.len()],
            ids,
        });
        labels.push(class);
    }
    let (encoded, labels) = (Arc::new(encoded), Arc::new(labels));
    (
        TextSource::new(
            encoded.clone(),
            labels.clone(),
            (0..N_TRAIN).collect(),
            N_CLASSES,
            0,
        ),
        TextSource::new(encoded, labels, (N_TRAIN..n).collect(), N_CLASSES, 0),
    )
}

/// Records the loss of the first step of stage 2 and stops training there.
#[derive(Default)]
struct FirstStage2Step {
    loss: Option<f64>,
}

impl TrainObserver for FirstStage2Step {
    fn on_step(&mut self, state: &TrainState, loss: f64) {
        if state.stage == 1 && self.loss.is_none() {
            self.loss = Some(loss);
        }
    }
    fn should_stop(&mut self, _state: &TrainState) -> bool {
        self.loss.is_some()
    }
}

#[test]
fn deebert_trains_the_reference_form_end_to_end() {
    let _guard = serial();
    let (train, valid) = sources();
    let device = Device::flex();
    let ad = device.clone().autodiff();
    // One step per epoch on the whole training set, so that stage 2's first loss can be
    // computed again from the model alone; `stage2_epochs` unset: as many as stage 1.
    let config = TrainConfig {
        method: Method::DeeBert,
        epochs: 2,
        stage2_epochs: None,
        batch_size: N_TRAIN,
        eval_batch_size: N_VALID,
        learning_rate: 5e-3,
        warmup_fraction: 0.0,
        seed: 5,
        ..TrainConfig::default()
    };
    let build = || {
        ad.seed(config.seed);
        MultiExitConfig::new(encoder(false, false, 0.1).into(), N_CLASSES)
            .with_head_dropout(0.0)
            .with_offramp_pooler(Some(OffRampPooler::Separate))
            .init(&ad)
    };

    // Stopped at the first step of stage 2: the model is stage 1's best, and that step's
    // loss is the off-ramps' summed loss with their poolers copied from its main pooler,
    // on the features inference gives them.
    let mut first = FirstStage2Step::default();
    let stopped = fit(
        build(),
        &train,
        &valid,
        &config,
        FitOptions::new(&ad).with_observer(&mut first),
    )
    .unwrap();
    assert!(stopped.interrupted);
    let stage1 = stopped.model;
    // Stage 1 is the training of a final-only model (no pooler in its heads), bit for bit.
    let final_only = TrainConfig {
        method: Method::FinalOnly,
        ..config.clone()
    };
    let plain = || {
        ad.seed(config.seed);
        MultiExitConfig::new(encoder(false, false, 0.1).into(), N_CLASSES)
            .with_head_dropout(0.0)
            .init(&ad)
    };
    let fo = fit(plain(), &train, &valid, &final_only, FitOptions::new(&ad)).unwrap();
    assert_eq!(fo.state.history.len(), stopped.state.history.len());
    for (a, b) in fo.state.history.iter().zip(&stopped.state.history) {
        assert_eq!(
            (a.train_loss, a.valid_metric),
            (b.train_loss, b.valid_metric)
        );
    }
    let valid_batch = &make_batches(&valid, N_VALID, &device)[0];
    let last = N_LAYERS - 1;
    let final_exit = |m: &MultiExitClassifier| {
        host(m.forward_all(valid_batch.input.clone()).logits[last].clone())
    };
    assert_eq!(final_exit(&stage1), final_exit(&fo.model));

    let batch = &make_batches(&train, N_TRAIN, &device)[0];
    let start = stage1.clone().init_offramp_poolers();
    let out = start.forward_all(batch.input.clone());
    let targets = batch.targets_tensor(&device);
    let expected: f64 = out.logits[..N_LAYERS - 1]
        .iter()
        .map(|l| f64::from(loss::cross_entropy(l.clone(), targets.clone()).into_scalar::<f32>()))
        .sum();
    let got = first.loss.unwrap();
    assert!(
        (got - expected).abs() < 1e-4 * expected.max(1.0),
        "stage 2's first loss {got} is not the off-ramps' loss {expected} on the copied poolers: stage 2 trains them on other features than inference feeds them"
    );

    // The whole run: both stages, stage 2 as long as stage 1.
    let done = fit(build(), &train, &valid, &config, FitOptions::new(&ad)).unwrap();
    assert!(!done.interrupted && done.state.finished);
    let stages: Vec<usize> = done.state.history.iter().map(|l| l.stage).collect();
    assert_eq!(stages, vec![0, 0, 1, 1]);
    let model = done.model;
    // stage 2 kept the backbone, its main pooler and the final classifier ...
    assert_eq!(weights(main_pooler(&model)), weights(main_pooler(&stage1)));
    assert_eq!(final_exit(&model), final_exit(&stage1));
    // ... and trained the off-ramps' poolers away from their copies
    for pooler in &model.heads.poolers {
        assert_ne!(weights(pooler), weights(main_pooler(&model)));
    }
}
