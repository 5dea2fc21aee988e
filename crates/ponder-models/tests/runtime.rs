//! Equivalence tests that would catch a wrong adaptive runtime: cutting, full depth,
//! per-row exits inside mixed batches, row order, FLOP accounting.

mod support;

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use ponder_core::{ExitPolicy, LayerwiseBackbone};
use ponder_exits::{FixedLayer, HaltingHeadConfig, NeverExit};
use ponder_mamba::{MambaConfig, MambaEncoderConfig, Pooling};
use ponder_models::{Backbone, MultiExitClassifier, MultiExitConfig};
use ponder_transformer::{EncoderConfig, EncoderInput};
use support::{Planned, host, max_abs_diff, text_input};

fn device() -> Device {
    let d = Device::flex();
    d.seed(7);
    d
}

fn text_model(share_layers: bool, norm_first: bool) -> MultiExitClassifier {
    let mut encoder = EncoderConfig::tiny()
        .with_dropout(0.0)
        .with_share_layers(share_layers)
        .with_norm_first(norm_first);
    if share_layers {
        encoder = encoder.with_d_embed(Some(16));
    }
    MultiExitConfig::new(encoder.into(), 3)
        .with_head_dropout(0.0)
        .init(&device())
        .valid()
}

fn mamba_model(pooling: Pooling, halting: bool) -> MultiExitClassifier {
    let mamba = MambaConfig::new(100, 16, 4).with_d_state(4);
    let mut config = MultiExitConfig::new(
        MambaEncoderConfig::new(mamba).with_pooling(pooling).into(),
        3,
    )
    .with_head_dropout(0.0);
    if halting {
        config = config
            .with_shared_head(true)
            .with_halting(Some(HaltingHeadConfig::palbert(16).with_dropout(0.0)));
    }
    config.init(&device()).valid()
}

fn vit_model() -> MultiExitClassifier {
    MultiExitConfig::new(EncoderConfig::tiny_vit().with_dropout(0.0).into(), 10)
        .with_head_dropout(0.0)
        .init(&device())
        .valid()
}

fn image_input(batch: usize, device: &Device) -> EncoderInput {
    EncoderInput::Images(Tensor::<4>::random(
        [batch, 1, 28, 28],
        Distribution::Normal(0.0, 1.0),
        device,
    ))
}

/// The logits of the model cut after `layer` layers (1-based), without the runner.
fn cut_logits(model: &MultiExitClassifier, input: EncoderInput, layer: usize) -> Vec<f32> {
    let state = model.backbone.forward_cut(input, layer);
    host(model.heads.logits(layer - 1, model.backbone.pooled(&state)))
}

fn check_cut_and_full(model: &MultiExitClassifier, input: EncoderInput) {
    let n = model.n_layers();
    for layer in 1..=n {
        let out = model.adaptive(input.clone(), &FixedLayer::new(layer).unwrap(), None);
        assert!(out.exit_layer.iter().all(|&l| l == layer));
        let expected = cut_logits(model, input.clone(), layer);
        assert_eq!(
            host(out.logits),
            expected,
            "exit at layer {layer} differs from the cut model"
        );
    }
    let out = model.adaptive(input.clone(), &NeverExit, None);
    assert!(out.exit_layer.iter().all(|&l| l == n));
    let full = model.forward_all(input.clone());
    assert_eq!(
        host(out.logits),
        host(full.logits[n - 1].clone()),
        "never-exit differs from full depth"
    );
    // forward_all's layer-l logits are the cut model's too
    for layer in 1..=n {
        assert_eq!(
            host(full.logits[layer - 1].clone()),
            cut_logits(model, input.clone(), layer)
        );
    }
}

#[test]
fn exit_at_l_equals_cut_model_and_never_exit_equals_full_depth_text() {
    let d = device();
    check_cut_and_full(&text_model(false, false), text_input(&[5, 9, 3, 9], &d));
}

#[test]
fn exit_at_l_equals_cut_model_and_never_exit_equals_full_depth_albert() {
    let d = device();
    let model = text_model(true, false);
    assert_eq!(
        match &model.backbone {
            Backbone::Transformer(e) => e.layers.len(),
            Backbone::Mamba(_) => unreachable!(),
        },
        1,
        "ALBERT form has one shared layer"
    );
    check_cut_and_full(&model, text_input(&[4, 8, 6], &d));
}

#[test]
fn exit_at_l_equals_cut_model_and_never_exit_equals_full_depth_vit() {
    let d = device();
    check_cut_and_full(&vit_model(), image_input(5, &d));
}

fn check_mixed_batch(
    model: &MultiExitClassifier,
    input: EncoderInput,
    alone: impl Fn(usize) -> EncoderInput,
    plan: Vec<usize>,
) {
    let d = model.backbone.device();
    let out = model.adaptive(input.clone(), &Planned(plan.clone()), None);
    assert_eq!(out.exit_layer, plan);
    let logits = host(out.logits);
    let c = model.heads.n_classes;
    for (row, &layer) in plan.iter().enumerate() {
        let single = model.adaptive(alone(row), &FixedLayer::new(layer).unwrap(), None);
        let diff = max_abs_diff(&logits[row * c..(row + 1) * c], &host(single.logits));
        assert!(
            diff < 1e-5,
            "row {row} (exit at {layer}) differs from its run alone by {diff}"
        );
    }
    // FLOPs grow with the exit layer
    for (i, &li) in plan.iter().enumerate() {
        for (j, &lj) in plan.iter().enumerate() {
            if li < lj {
                assert!(
                    out.flops[i] < out.flops[j],
                    "rows {i} and {j}: FLOPs do not grow with depth"
                );
            }
        }
    }
    let _ = d;
}

/// Row `row` of `text_input(lengths)`, unpadded and alone.
fn text_row_alone(lengths: &[usize], row: usize, device: &Device) -> EncoderInput {
    let EncoderInput::Tokens { ids, .. } = text_input(lengths, device) else {
        unreachable!()
    };
    EncoderInput::Tokens {
        ids: ids.slice([row..row + 1, 0..lengths[row]]),
        type_ids: None,
        mask_pad: None,
    }
}

#[test]
fn mean_pooling_reads_the_real_tokens_only() {
    // sentence-transformers' pooling: the cut/full equivalences hold, a padded row
    // equals the row alone, and the pooled features are the pooler on the mean of the
    // real tokens' states
    let d = device();
    let model = MultiExitConfig::new(
        EncoderConfig::tiny()
            .with_dropout(0.0)
            .with_mean_pool(true)
            .into(),
        3,
    )
    .with_head_dropout(0.0)
    .init(&d)
    .valid();
    let lengths = [6usize, 3, 9, 4];
    check_cut_and_full(&model, text_input(&lengths, &d));
    check_mixed_batch(
        &model,
        text_input(&lengths, &d),
        |row| text_row_alone(&lengths, row, &d),
        vec![3, 1, 4, 2],
    );
    let Backbone::Transformer(encoder) = &model.backbone else {
        unreachable!()
    };
    let state = encoder.layer_forward(0, encoder.embed_input(text_input(&lengths, &d)));
    let pooled = host(encoder.pooled(&state));
    let [_, seq_len, h] = state.x.dims();
    let x = state.x.clone().reshape([lengths.len() * seq_len, h]);
    let x = x.try_into_vec_as::<f32>().unwrap();
    for (r, &len) in lengths.iter().enumerate() {
        let mean: Vec<f32> = (0..h)
            .map(|j| (0..len).map(|t| x[(r * seq_len + t) * h + j]).sum::<f32>() / len as f32)
            .collect();
        let mean = Tensor::<2>::from_data(TensorData::new(mean, [1, h]), &d);
        let want = host(encoder.pooler.forward(mean).tanh());
        let diff = max_abs_diff(&pooled[r * h..(r + 1) * h], &want);
        assert!(diff < 1e-5, "row {r}: {diff}");
    }
    // the [CLS] pooling of the same weights differs
    let cls = Backbone::Transformer(ponder_transformer::Encoder {
        mean_pool: false,
        ..encoder.clone()
    });
    let Backbone::Transformer(cls) = &cls else {
        unreachable!()
    };
    assert!(max_abs_diff(&host(cls.pooled(&state)), &pooled) > 1e-3);
}

#[test]
fn mixed_exits_in_a_padded_text_batch_equal_each_row_alone() {
    let d = device();
    let model = text_model(false, false);
    let lengths = [6usize, 3, 9, 4, 7, 2];
    check_mixed_batch(
        &model,
        text_input(&lengths, &d),
        |row| text_row_alone(&lengths, row, &d),
        vec![3, 1, 4, 2, 1, 4],
    );
}

#[test]
fn mamba_exit_at_l_equals_cut_model_and_rows_leave_the_batch_unchanged() {
    let d = device();
    let lengths = [6usize, 3, 9, 4, 7, 2];
    for pooling in [Pooling::Last, Pooling::Mean] {
        let model = mamba_model(pooling, false);
        check_cut_and_full(&model, text_input(&lengths, &d));
        check_mixed_batch(
            &model,
            text_input(&lengths, &d),
            |row| text_row_alone(&lengths, row, &d),
            vec![3, 1, 4, 2, 1, 4],
        );
    }
    // With PALBERT's Lambda layer (which keeps the previous layer's features per row).
    let model = mamba_model(Pooling::Last, true);
    check_mixed_batch(
        &model,
        text_input(&lengths, &d),
        |row| text_row_alone(&lengths, row, &d),
        vec![2, 4, 1, 3, 4, 2],
    );
}

#[test]
fn mixed_exits_in_an_image_batch_equal_each_row_alone() {
    let d = device();
    let model = vit_model();
    let input = image_input(5, &d);
    let EncoderInput::Images(images) = input.clone() else {
        unreachable!()
    };
    check_mixed_batch(
        &model,
        input,
        |row| EncoderInput::Images(images.clone().narrow(0, row, 1)),
        vec![4, 2, 1, 3, 2],
    );
}

#[test]
fn mixed_exits_with_albert_pre_norm() {
    let d = device();
    let model = text_model(true, true);
    let lengths = [5usize, 8, 3];
    check_mixed_batch(
        &model,
        text_input(&lengths, &d),
        |row| text_row_alone(&lengths, row, &d),
        vec![2, 4, 1],
    );
}

#[test]
fn flops_of_full_depth_match_the_full_depth_count() {
    let d = device();
    let model = vit_model();
    let input = image_input(3, &d);
    let out = model.adaptive(input.clone(), &NeverExit, None);
    // the full-depth model: embedding, every layer, the features and the final head
    let hidden = model.backbone.embed(input.clone());
    let full = model.backbone.embed_flops(&hidden)
        + (0..model.n_layers())
            .map(|l| model.backbone.layer_flops(l, &hidden))
            .sum::<u64>()
        + model.backbone.features_flops(&hidden)
        + ponder_core::ExitHeads::flops(&model.heads, model.n_layers() - 1);
    assert_eq!(out.full_depth_flops, full);
    // never-exit evaluates every head, so it costs the full-depth FLOPs plus the
    // internal heads
    let heads: u64 = (0..model.n_layers() - 1)
        .map(|l| {
            ponder_core::ExitHeads::flops(&model.heads, l)
                + model
                    .backbone
                    .features_flops(&model.backbone.embed(input.clone()))
        })
        .sum();
    assert!(
        out.flops.iter().all(|&f| f == full + heads),
        "{:?} vs {}",
        out.flops,
        full + heads
    );
    // a row exiting after layer l is charged what `exit_flops` says (JEI-DNN's costs)
    let costs = ponder_core::exit_flops(&model.backbone, &model.heads, &hidden);
    assert_eq!(costs.last(), Some(&(full + heads)));
    for l in 1..=model.n_layers() {
        let out = model.adaptive(input.clone(), &FixedLayer::new(l).unwrap(), None);
        assert!(out.flops.iter().all(|&f| f == costs[l - 1]), "layer {l}");
    }
}

#[test]
fn threshold_extremes_exit_everything_at_layer_1_or_never() {
    use ponder_exits::{EntropyThreshold, MaxProbThreshold, Policy};
    let d = device();
    let model = text_model(false, false);
    let input = text_input(&[5, 9, 3, 9, 2], &d);
    let n = model.n_layers();
    let cases = [
        (Policy::MaxProb(MaxProbThreshold::new(0.0).unwrap()), 1),
        (Policy::MaxProb(MaxProbThreshold::new(1.0).unwrap()), n),
        (
            Policy::Entropy(EntropyThreshold::new(f32::INFINITY).unwrap()),
            1,
        ),
        (Policy::Entropy(EntropyThreshold::new(0.0).unwrap()), n),
    ];
    for (policy, layer) in cases {
        let out = model.adaptive(input.clone(), &policy, None);
        assert_eq!(out.exit_layer, vec![layer; 5], "{}", policy.name());
        // and the logits are those of the model cut at that layer
        assert_eq!(host(out.logits), cut_logits(&model, input.clone(), layer));
    }
}
