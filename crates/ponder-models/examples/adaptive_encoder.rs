//! A multi-exit transformer encoder with adaptive inference: every row of a batch leaves
//! at the first layer whose exit head is confident enough, and the layers it skips are
//! never computed for it.
//!
//! ```text
//! cargo run --release -p ponder-models --example adaptive_encoder
//! ```
//!
//! It trains a tiny ViT (4 layers, H = 32, an exit head after every layer, PABEE's loss)
//! for a few seconds on synthetic 28×28 images in 3 classes, then runs a test batch under
//! a max-probability threshold and under never-exit, and prints each row's exit layer,
//! the exit statistics and the FLOP speed-up. Without the training step the same code
//! runs on random weights; the exits are then as arbitrary as the heads' confidences.

use std::error::Error;
use std::sync::Arc;

use burn::tensor::Device;
use ponder_core::{ExitPolicy, ExitStats};
use ponder_data::ImageSet;
use ponder_exits::{MaxProbThreshold, NeverExit, Policy};
use ponder_models::{
    ClassificationSource, FitOptions, ImageSource, Method, MultiExitConfig, TrainConfig, fit,
};
use ponder_transformer::EncoderConfig;

const N_CLASSES: usize = 3;

fn main() -> Result<(), Box<dyn Error>> {
    // Data: 600 training, 100 validation and 48 test images (see `synthetic_images`).
    let (images, labels) = synthetic_images(748);
    let split = |range: std::ops::Range<usize>| {
        ImageSource::new(images.clone(), labels.clone(), range.collect(), N_CLASSES)
    };
    let (train, valid, test) = (split(0..600), split(600..700), split(700..748));

    // The model: a pre-norm ViT encoder (28×28 grey images, 7×7 patches, 4 layers,
    // H = 32) with one linear classifier per layer on the pooled [CLS] vector.
    let device = Device::flex().autodiff(); // training needs the autodiff device
    device.seed(7);
    let model = MultiExitConfig::new(EncoderConfig::tiny_vit().into(), N_CLASSES).init(&device);

    // Training: PABEE's depth-weighted loss over all exits, 8 epochs of 38 steps.
    let config = TrainConfig {
        method: Method::Pabee,
        epochs: 8,
        batch_size: 16,
        learning_rate: 3e-3,
        ..TrainConfig::default()
    };
    let outcome = fit(model, &train, &valid, &config, FitOptions::new(&device))?;
    let model = outcome.model; // the best epoch's weights, without autodiff or dropout
    let last = outcome.state.history.last().expect("one epoch at least");
    println!(
        "validation accuracy of each exit: {:.2?}",
        last.valid_layer_accuracy
    );

    // Adaptive inference on one test batch (the trained model runs without autodiff).
    let n_layers = model.n_layers();
    let batch = test.batch(&(0..test.len()).collect::<Vec<_>>(), &Device::flex());
    let out = model.adaptive(batch.input.clone(), &MaxProbThreshold::new(0.9)?, None);
    println!(
        "max_prob > 0.9, exit layer of each test row: {:?}",
        out.exit_layer
    );

    // The trade-off: a lower threshold exits earlier. `ExitStats` summarises exit layers
    // and FLOPs; the FLOP speed-up is against full depth with the final head only, so
    // never-exit, which also evaluates every internal head, is just under 1. (`Policy`
    // is the sum of the policies, for picking one at run time.)
    println!("\npolicy        accuracy  exits per layer  mean exit  FLOP speed-up");
    let policies = [
        Policy::MaxProb(MaxProbThreshold::new(0.8)?),
        Policy::MaxProb(MaxProbThreshold::new(0.9)?),
        Policy::MaxProb(MaxProbThreshold::new(0.95)?),
        Policy::Full(NeverExit),
    ];
    for policy in &policies {
        let out = model.adaptive(batch.input.clone(), policy, None);
        let predictions = out.logits.argmax(1).try_into_vec_as::<i64>()?;
        let correct = predictions
            .iter()
            .zip(&batch.targets)
            .filter(|&(&p, &t)| p as usize == t)
            .count();
        let stats = ExitStats::new(&out.exit_layer, &out.flops, n_layers, out.full_depth_flops);
        println!(
            "{:<13} {correct:>3}/{}    {:<15}  {:>9.2}  {:>12.2}×",
            policy.name(),
            batch.targets.len(),
            format!("{:?}", stats.histogram),
            stats.mean_exit_layer,
            stats.flop_speedup
        );
    }

    // Never exiting is exactly the full-depth model: the runner adds no error.
    let adaptive = model.adaptive(batch.input.clone(), &NeverExit, None).logits;
    let full = model.forward_all(batch.input).logits[n_layers - 1].clone();
    let (adaptive, full) = (
        adaptive.try_into_vec_as::<f32>()?,
        full.try_into_vec_as::<f32>()?,
    );
    assert_eq!(adaptive, full, "never-exit differs from full depth");
    println!("\nnever-exit logits equal the full-depth logits exactly");
    Ok(())
}

/// `n` grey 28×28 images: noise, plus a bright square whose corner depends on the class.
/// The square's brightness varies from barely visible to white, so some images are easy
/// (they can exit early) and some are hard.
fn synthetic_images(n: usize) -> (Arc<ImageSet>, Arc<Vec<usize>>) {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move |bound: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % bound
    };
    let corners = [(1, 1), (1, 17), (17, 9)];
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for i in 0..n {
        let class = i % N_CLASSES;
        let (r0, c0) = corners[class];
        let (r0, c0) = (r0 + next(4) as usize, c0 + next(4) as usize);
        let brightness = 40 + next(120);
        for r in 0..28 {
            for c in 0..28 {
                let inside = (r0..r0 + 8).contains(&r) && (c0..c0 + 8).contains(&c);
                let noise = next(100);
                pixels.push(if inside { noise.max(brightness) } else { noise } as u8);
            }
        }
        labels.push(class);
    }
    let set = ImageSet {
        n_images: n,
        n_channels: 1,
        n_rows: 28,
        n_cols: 28,
        pixels,
    };
    (Arc::new(set), Arc::new(labels))
}
