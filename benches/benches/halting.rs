//! The per-layer overhead of PALBERT's exit decision: the Lambda layer (on the current
//! and previous pooled features) plus the host copy of λ and the Q-exit decision,
//! against one application of the (shared) encoder layer, at batch 1 and batch 32.
//!
//! Two encoder shapes: the ALBERT-form encoder of `experiments/configs/spamassassin-palbert.toml`
//! (H = 64, FFN 128, 64 tokens) and a wider one (H = 256, FFN 1024, 128 tokens). The
//! summary prints the medians and the overhead as a fraction of one layer.
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::time::{Duration, Instant};

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use criterion::{Criterion, criterion_group, criterion_main};
use ponder_core::{ExitPolicy, ExitSignals, to_host};
use ponder_exits::{HaltingHead, HaltingHeadConfig, QExit};
use ponder_transformer::{EmbeddingKind, Encoder, EncoderConfig, EncoderInput, EncoderState};

struct Case {
    name: String,
    encoder: Encoder,
    lambda: HaltingHead,
    state: EncoderState,
    current: Tensor<2>,
    previous: Tensor<2>,
}

fn case(d_model: usize, d_ff: usize, seq_len: usize, batch: usize, device: &Device) -> Case {
    device.seed(3);
    let config = EncoderConfig::new(
        EmbeddingKind::Text {
            vocab_size: 1000,
            max_position: seq_len,
            type_vocab_size: 2,
        },
        6,
        d_model,
        4,
        d_ff,
    )
    .with_d_embed(Some(32))
    .with_share_layers(true)
    .with_dropout(0.0);
    let encoder = config.init(device).valid();
    let lambda = HaltingHeadConfig::palbert(d_model).init(device).valid();
    let ids: Vec<i64> = (0..batch * seq_len)
        .map(|i| (1 + i * 7 % 997) as i64)
        .collect();
    let input = EncoderInput::Tokens {
        ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, seq_len]), device),
        type_ids: None,
        mask_pad: None,
    };
    let state = encoder.layer_forward(0, encoder.embed_input(input));
    let previous = encoder.pooled(&state);
    let state = encoder.layer_forward(1, state);
    let current = encoder.pooled(&state);
    Case {
        name: format!("H{d_model}-T{seq_len}/batch{batch}"),
        encoder,
        lambda,
        state,
        current,
        previous,
    }
}

/// One encoder layer on the case's state, synced by reading one value back.
fn layer(c: &Case) {
    let out = c.encoder.layer_forward(2, c.state.clone());
    let _ = to_host(out.x.slice([0..1, 0..1, 0..1]));
}

/// The Lambda layer, λ to the host, and the Q-exit decision for every row.
fn decision(c: &Case, policy: &QExit) -> Vec<bool> {
    let lambda = to_host(
        c.lambda
            .forward(c.current.clone(), Some(c.previous.clone())),
    );
    let rows = lambda.len();
    let logits = vec![0.0f32; rows * 2];
    let signals = ExitSignals::new(2, 6, 2, &logits).with_halting(&lambda);
    let mut carry = policy.start(rows);
    policy.decide(&signals, &mut carry)
}

fn median(mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..41)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn bench_halting(c: &mut Criterion) {
    let device = Device::flex();
    let policy = QExit::new(0.5).expect("q in range");
    let cases: Vec<Case> = [(64, 128, 64), (256, 1024, 128)]
        .into_iter()
        .flat_map(|(d, ff, t)| [1, 32].map(|b| case(d, ff, t, b, &device)))
        .collect();
    let mut group = c.benchmark_group("halting/cpu-flex");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3));
    for case in &cases {
        group.bench_function(format!("{}/encoder-layer", case.name), |b| {
            b.iter(|| layer(case))
        });
        group.bench_function(format!("{}/lambda+q-exit", case.name), |b| {
            b.iter(|| decision(case, &policy))
        });
    }
    group.finish();

    println!("\nLambda layer + Q-exit decision vs one encoder layer (cpu-flex, median of 41):");
    for case in &cases {
        let layer_time = median(|| layer(case));
        let decision_time = median(|| {
            decision(case, &policy);
        });
        println!(
            "  {:<22} layer {:>9.3} ms   lambda+q-exit {:>7.3} ms   overhead {:>5.1}% of a layer",
            case.name,
            layer_time.as_secs_f64() * 1e3,
            decision_time.as_secs_f64() * 1e3,
            decision_time.as_secs_f64() / layer_time.as_secs_f64() * 100.0
        );
    }
}

criterion_group!(benches, bench_halting);
criterion_main!(benches);
