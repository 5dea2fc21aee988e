//! Inputs of other shapes (RGB images of another size, channel normalisation) and
//! configuration errors.

use super::*;

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
