//! The CPU backend choice, measured on our encoder: a forward pass of a 4-layer,
//! H = 128 pre-norm encoder (4 heads, FFN 512) on 32 sequences of 64 tokens, and one
//! training step (forward, backward, AdamW) of the same model, on burn's `flex`
//! backend and, when built with `--features ndarray`, on the deprecated `ndarray`
//! backend (with `simd` and `rayon`):
//!
//! ```sh
//! cargo bench -p ponder-benches --bench backends --features ndarray
//! ```
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::time::Duration;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use criterion::{Criterion, criterion_group, criterion_main};
use ponder_models::{MultiExitClassifier, MultiExitConfig};
use ponder_transformer::{EmbeddingKind, EncoderConfig, EncoderInput};

const BATCH: usize = 32;
const SEQ: usize = 64;

fn model(device: &Device) -> MultiExitClassifier {
    device.seed(1);
    let encoder = EncoderConfig::new(
        EmbeddingKind::Text {
            vocab_size: 1000,
            max_position: SEQ,
            type_vocab_size: 0,
        },
        4,
        128,
        4,
        512,
    )
    .with_norm_first(true)
    .with_dropout(0.0);
    MultiExitConfig::new(encoder.into(), 2)
        .with_head_dropout(0.0)
        .init(device)
}

fn input(device: &Device) -> EncoderInput {
    let ids: Vec<i64> = (0..BATCH * SEQ).map(|i| ((i * 37) % 997) as i64).collect();
    EncoderInput::Tokens {
        ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [BATCH, SEQ]), device),
        type_ids: None,
        mask_pad: None,
    }
}

fn backends() -> Vec<(&'static str, Device)> {
    #[allow(unused_mut)]
    let mut out = vec![("flex", Device::flex())];
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    out.push(("ndarray", Device::ndarray()));
    out
}

fn bench_backends(c: &mut Criterion) {
    let mut group = c.benchmark_group("backend");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(6));
    for (name, device) in backends() {
        let m = model(&device).valid();
        let x = input(&device);
        let n = m.n_layers();
        group.bench_function(format!("{name}/forward-4x128-32x64"), |b| {
            b.iter(|| {
                let state = m.backbone.forward_cut(x.clone(), n);
                let _ = m
                    .backbone
                    .pooled(&state)
                    .try_into_vec_as::<f32>()
                    .expect("features");
            })
        });
        let ad = device.clone().autodiff();
        let mut trained = Some(model(&ad));
        let mut optim = AdamWConfig::new().init();
        let xa = input(&ad);
        let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64; BATCH], [BATCH]), &ad);
        group.bench_function(format!("{name}/train-step-4x128-32x64"), |b| {
            b.iter(|| {
                let model = trained.take().expect("model");
                let out = model.forward_all(xa.clone());
                let logits = out.logits.into_iter().last().expect("logits");
                let loss = ponder_exits::loss::cross_entropy(logits, targets.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                trained = Some(optim.step(1e-4, model, grads));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_backends);
criterion_main!(benches);
