//! PABEE's regression variant (STS-B): one-output heads trained on the squared error,
//! checkpoints chosen on the exits' Pearson correlation, and the patience rule on
//! consecutive outputs (`PatienceRegression`).

mod support;

use std::sync::Arc;

use burn::module::Module;
use burn::tensor::Device;
use ponder_core::{PonderError, to_host};
use ponder_data::Encoded;
use ponder_exits::{FixedLayer, NeverExit, PatienceRegression};
use ponder_models::{
    ClassificationSource, FitOptions, Method, MultiExitConfig, TextSource, TrainConfig,
    correlation, evaluate, fit, layer_accuracies, make_batches,
};
use ponder_transformer::EncoderConfig;
use support::{lcg, serial};

/// `[CLS] tokens [SEP]` rows whose score is the number of times token 5 occurs (0–3),
/// the other tokens drawn from 6..40.
fn count_fives(n: usize, seed: u64) -> TextSource {
    let mut rng = lcg(seed);
    let mut next = move || rng() as usize;
    let mut encoded = Vec::new();
    let mut scores = Vec::new();
    for i in 0..n {
        let len = 6 + next() % 6;
        let mut row: Vec<u32> = (0..len).map(|_| (6 + next() % 34) as u32).collect();
        let fives = i % 4;
        for k in 0..fives {
            row[(k * len) / 3 + next() % (len / 3)] = 5;
        }
        let score = row.iter().filter(|&&t| t == 5).count() as f32;
        let mut ids = vec![1];
        ids.extend(row);
        ids.push(2);
        encoded.push(Encoded {
            type_ids: vec![0; ids.len()],
            ids,
        });
        scores.push(score);
    }
    TextSource::regression(Arc::new(encoded), Arc::new(scores), (0..n).collect(), 0)
}

fn model(n_classes: usize, device: &Device) -> ponder_models::MultiExitClassifier {
    let encoder = EncoderConfig {
        n_layers: 3,
        ..EncoderConfig::tiny()
    }
    .with_dropout(0.0);
    MultiExitConfig::new(encoder.into(), n_classes)
        .with_head_dropout(0.0)
        .init(device)
}

#[test]
fn pabee_regression_heads_learn_a_score_and_exit_on_patience() {
    let _guard = serial();
    let device = Device::flex();
    let (train, valid) = (count_fives(320, 1), count_fives(96, 2));
    assert_eq!(train.n_classes(), 1);
    assert!(train.scores().unwrap().contains(&3.0));
    let ad = device.clone().autodiff();
    ad.seed(4);
    let config = TrainConfig {
        epochs: 6,
        batch_size: 16,
        learning_rate: 3e-3,
        ..TrainConfig::default()
    };
    let out = fit(model(1, &ad), &train, &valid, &config, FitOptions::new(&ad)).unwrap();
    let model = out.model;
    let batches = make_batches(&valid, 32, &device);
    let layers = layer_accuracies(&model, &batches).accuracy;
    assert!(
        *layers.last().unwrap() > 0.9,
        "the last exit's correlation is only {layers:?}"
    );
    // the validation metric is the mean correlation of the exits (PABEE's)
    let best = out.state.best_metric.unwrap();
    assert!(best > 0.5 && best <= 1.0, "{best}");

    // full depth: the outputs are the last exit's, and the "accuracy" their correlation
    let full = evaluate(&model, &batches, &NeverExit);
    assert_eq!(full.values.len(), valid.len());
    assert_eq!(full.scores, valid.scores().unwrap());
    assert_eq!(full.accuracy, correlation(&full.values, &full.scores));
    assert!((full.accuracy - layers[2]).abs() < 1e-5);
    let all: Vec<Vec<f32>> = batches
        .iter()
        .map(|b| model.forward_all(b.input.clone()))
        .fold(vec![Vec::new(); 3], |mut acc, out| {
            for (l, logits) in out.logits.into_iter().enumerate() {
                acc[l].extend(to_host(logits));
            }
            acc
        });
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4);
    assert!(close(&full.values, &all[2]));

    // patience 1 with an unbounded tolerance: every row agrees at layer 2 and leaves
    // with layer 2's output; tolerance 0 never agrees: full depth
    let eager = evaluate(
        &model,
        &batches,
        &PatienceRegression::new(1, f32::MAX).unwrap(),
    );
    assert_eq!(eager.stats.mean_exit_layer, 2.0);
    assert!(close(&eager.values, &all[1]));
    let never = evaluate(&model, &batches, &PatienceRegression::new(1, 0.0).unwrap());
    assert_eq!(never.stats.mean_exit_layer, 3.0);
    assert!(close(&never.values, &full.values));
    // a fixed exit at layer 1 is the first head's output
    let first = evaluate(&model, &batches, &FixedLayer::new(1).unwrap());
    assert!(close(&first.values, &all[0]));
    assert!((first.accuracy - layers[0]).abs() < 1e-5);
    // a real tolerance: rows split between layers, outputs stay each row's own exit's
    let some = evaluate(&model, &batches, &PatienceRegression::new(1, 0.1).unwrap());
    for (r, (&v, &l)) in some.values.iter().zip(&some.exit_layers).enumerate() {
        assert!((v - all[l - 1][r]).abs() < 1e-4, "row {r} exited at {l}");
    }
}

#[test]
fn deebert_trains_regression_off_ramps_on_the_frozen_backbone() {
    let _guard = serial();
    let device = Device::flex();
    let (train, valid) = (count_fives(160, 3), count_fives(48, 4));
    let ad = device.clone().autodiff();
    ad.seed(5);
    let config = TrainConfig {
        method: Method::DeeBert,
        epochs: 2,
        stage2_epochs: Some(1),
        batch_size: 16,
        learning_rate: 3e-3,
        ..TrainConfig::default()
    };
    let out = fit(model(1, &ad), &train, &valid, &config, FitOptions::new(&ad)).unwrap();
    let history = &out.state.history;
    assert_eq!(history.len(), 3);
    assert!(history.iter().all(|h| h.train_loss.is_finite()));
    let batches = make_batches(&valid, 48, &device);
    let layers = layer_accuracies(&out.model.valid(), &batches).accuracy;
    assert!(layers.iter().all(|r| r.is_finite() && r.abs() <= 1.0));
}

#[test]
fn methods_without_a_regression_variant_and_classification_heads_are_refused() {
    let _guard = serial();
    let ad = Device::flex().autodiff();
    let (train, valid) = (count_fives(32, 1), count_fives(16, 2));
    for method in [Method::Palbert, Method::PonderNet, Method::JeiDnn] {
        let config = TrainConfig {
            method,
            ..TrainConfig::default()
        };
        let e = fit(model(1, &ad), &train, &valid, &config, FitOptions::new(&ad)).unwrap_err();
        assert!(
            matches!(&e, PonderError::InvalidConfig { key, .. } if key == "train.method"),
            "{e}"
        );
        assert!(e.to_string().contains("regression"), "{e}");
    }
    let e = fit(
        model(2, &ad),
        &train,
        &valid,
        &TrainConfig::default(),
        FitOptions::new(&ad),
    )
    .unwrap_err();
    assert!(e.to_string().contains("one output"), "{e}");
}
