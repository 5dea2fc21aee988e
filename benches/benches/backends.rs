//! The CPU backend choice, measured on our models, and the Rust side of
//! `scripts/torch_bench.py` (the PyTorch peer, which times the same shapes):
//!
//! * `encoder-4x128`: a forward pass of a 4-layer, H = 128 pre-norm encoder (4 heads,
//!   FFN 512) on 32 sequences of 64 tokens (the pooled features), and one training step
//!   (every exit's logits, cross-entropy on the last, backward, AdamW) of the same model;
//! * `minilm-6x384`: the same at MiniLM's size (6 post-norm layers, H = 384, 12 heads,
//!   FFN 1536, vocabulary 30522) on 32 sequences of 128 tokens;
//! * `decoder-4x128`: the token-exit bench's GPT-2-style decoder (vocabulary 84, d 128,
//!   4 heads, FFN 256): the prefill of 8 prompts of 64 tokens (logits and KV cache), and
//!   32 generated tokens at batch 8 from that cache (the time of all 32).
//!
//! on burn's `flex` backend and, when built with `--features ndarray`, on the
//! deprecated `ndarray` backend (with `simd` and `rayon`):
//!
//! ```sh
//! cargo bench -p ponder-benches --bench backends --features ndarray
//! ```
//!
//! The Mamba cases of the PyTorch peer are `benches/mamba.rs`.
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::time::{Duration, Instant};

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use criterion::{Criterion, criterion_group, criterion_main};
use ponder_models::{MultiExitClassifier, MultiExitConfig};
use ponder_transformer::{DecoderConfig, EmbeddingKind, EncoderConfig, EncoderInput};

/// An encoder case: the model and its input shape.
struct EncoderCase {
    name: &'static str,
    config: EncoderConfig,
    batch: usize,
    seq: usize,
}

fn encoder_cases() -> Vec<EncoderCase> {
    let text = |vocab_size, max_position, type_vocab_size| EmbeddingKind::Text {
        vocab_size,
        max_position,
        type_vocab_size,
    };
    vec![
        EncoderCase {
            name: "encoder-4x128",
            config: EncoderConfig::new(text(1000, 64, 0), 4, 128, 4, 512)
                .with_norm_first(true)
                .with_dropout(0.0),
            batch: 32,
            seq: 64,
        },
        EncoderCase {
            name: "minilm-6x384",
            config: EncoderConfig::new(text(30522, 512, 2), 6, 384, 12, 1536)
                .with_layer_norm_eps(1e-12)
                .with_dropout(0.0),
            batch: 32,
            seq: 128,
        },
    ]
}

fn model(case: &EncoderCase, device: &Device) -> MultiExitClassifier {
    device.seed(1);
    MultiExitConfig::new(case.config.clone().into(), 2)
        .with_head_dropout(0.0)
        .init(device)
}

fn input(case: &EncoderCase, device: &Device) -> EncoderInput {
    let (batch, seq) = (case.batch, case.seq);
    let ids: Vec<i64> = (0..batch * seq).map(|i| ((i * 37) % 997) as i64).collect();
    EncoderInput::Tokens {
        ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, seq]), device),
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

fn bench_encoders(c: &mut Criterion, backend: &str, device: &Device) {
    for case in encoder_cases() {
        let mut group = c.benchmark_group(format!("backend/{backend}/{}", case.name));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(6));
        let (batch, seq) = (case.batch, case.seq);
        let m = model(&case, device).valid();
        let x = input(&case, device);
        let n = m.n_layers();
        group.bench_function(format!("forward-{batch}x{seq}"), |b| {
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
        let mut trained = Some(model(&case, &ad));
        let mut optim = AdamWConfig::new().init();
        let xa = input(&case, &ad);
        let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64; batch], [batch]), &ad);
        group.bench_function(format!("train-step-{batch}x{seq}"), |b| {
            b.iter(|| {
                let model = trained.take().expect("model");
                let out = model.forward_all(xa.clone());
                let logits = out.logits.into_iter().last().expect("logits");
                let loss = ponder_exits::loss::cross_entropy(logits, targets.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                trained = Some(optim.step(1e-4, model, grads));
            })
        });
        group.finish();
    }
}

/// Decoder prefill and KV-cache steps (the shapes of the PyTorch peer's `decoder-4x128`).
fn bench_decoder(c: &mut Criterion, backend: &str, device: &Device) {
    const VOCAB: usize = 84;
    const BATCH: usize = 8;
    const PROMPT: usize = 64;
    const GENERATED: usize = 32;
    device.seed(7);
    let lm = DecoderConfig::new(VOCAB, 128, 4, 4, 256, 128)
        .init_lm(device)
        .valid();
    let ids: Vec<i64> = (0..BATCH * PROMPT)
        .map(|i| ((i * 31) % VOCAB) as i64)
        .collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [BATCH, PROMPT]), device);
    let tokens: Vec<Tensor<1, Int>> = (0..GENERATED)
        .map(|i| {
            let token = ((i * 13 + 5) % VOCAB) as i64;
            Tensor::from_data(TensorData::new(vec![token; BATCH], [BATCH]), device)
        })
        .collect();
    let sync = || device.sync().expect("device sync");
    let mut group = c.benchmark_group(format!("backend/{backend}/decoder-4x128"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    group.bench_function(format!("prefill-{BATCH}x{PROMPT}"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let (logits, cache) = lm.forward_prefill(ids.clone());
                sync();
                drop((logits, cache));
            }
            start.elapsed()
        })
    });
    let (_, cache) = lm.forward_prefill(ids.clone());
    group.bench_function(
        format!("{GENERATED}-steps-batch{BATCH}-after{PROMPT}"),
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut cache = cache.clone();
                    let start = Instant::now();
                    let mut logits = None;
                    for token in &tokens {
                        logits = Some(lm.step(token.clone(), &mut cache));
                    }
                    sync();
                    total += start.elapsed();
                    drop((logits, cache));
                }
                total
            })
        },
    );
    group.finish();
}

fn bench_backends(c: &mut Criterion) {
    for (name, device) in backends() {
        bench_encoders(c, name, &device);
        bench_decoder(c, name, &device);
    }
}

criterion_group!(benches, bench_backends);
criterion_main!(benches);
