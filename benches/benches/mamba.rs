//! The two execution modes of the Mamba language model (`ponder-mamba`) at the shape of
//! the Shakespeare LM (vocabulary 84, d = 128, 4 layers, n = 16), evaluation mode, on
//! the flex CPU backend.
//!
//! * **Full-sequence scan** (`MambaLm::forward`, training and prompt prefill) at batch 1
//!   for 256, 512 and 1024 tokens, in tokens/s. The selective scan is a sequential loop
//!   over time steps, so its time should grow linearly with the length: the summary
//!   prints the time per token relative to 256 tokens (≈ 1.0 means linear).
//! * **Recurrent step** (`MambaLm::step`, generation): 64 tokens fed one at a time from
//!   the state after a 16-token prefill, batch 1, in tokens/s. The state has a fixed
//!   size, so the cost per token does not depend on how many tokens came before. No
//!   logits are read back between steps (sampling is not measured).
//! * The scan at the training shape, batch 16 × 128 tokens.
//!
//! Every timed call ends with `device.sync()` before the clock stops, and every shape
//! runs once before it is measured. The summary (stderr) is the median of every
//! timed call, criterion's warm-up phase included (those calls run on an already
//! warmed shape).
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::time::{Duration, Instant};

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ponder_mamba::{MambaConfig, MambaLm, MambaState};

const VOCAB: usize = 84;
const SCAN_LENGTHS: [usize; 3] = [256, 512, 1024];
const PREFILL: usize = 16;
const STEPS: usize = 64;
const TRAIN_SHAPE: (usize, usize) = (16, 128);

/// Deterministic token ids `[batch, len]`.
fn ids(batch: usize, len: usize, device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = (0..batch * len)
        .map(|i| ((i * 31 + 7) % VOCAB) as i64)
        .collect();
    Tensor::from_data(TensorData::new(data, [batch, len]), device)
}

fn sync(device: &Device) {
    device.sync().expect("device sync");
}

/// One full-sequence forward (logits of every position), synced.
fn scan(lm: &MambaLm, ids: &Tensor<2, Int>, device: &Device) -> Duration {
    let start = Instant::now();
    let logits = lm.forward(ids.clone());
    sync(device);
    let elapsed = start.elapsed();
    drop(logits);
    elapsed
}

/// [`STEPS`] recurrent steps from a copy of `state`, synced once at the end.
fn steps(lm: &MambaLm, state: &MambaState, tokens: &[Tensor<1, Int>], device: &Device) -> Duration {
    let mut state = state.clone();
    let start = Instant::now();
    let mut logits = None;
    for token in tokens {
        logits = Some(lm.step(token.clone(), &mut state));
    }
    sync(device);
    let elapsed = start.elapsed();
    drop((logits, state));
    elapsed
}

/// The median, or `None` when the case was filtered out on the command line.
fn median(times: &mut [Duration]) -> Option<f64> {
    times.sort();
    times.get(times.len() / 2).map(Duration::as_secs_f64)
}

fn bench_mamba(c: &mut Criterion) {
    let device = Device::flex();
    let device_name = "cpu-flex";
    device.seed(7);
    let lm = MambaConfig::new(VOCAB, 128, 4)
        .with_d_state(16)
        .init_lm(&device)
        .valid();

    // 1. Full-sequence scan at batch 1.
    let mut scan_times: Vec<Vec<Duration>> = vec![Vec::new(); SCAN_LENGTHS.len()];
    let mut group = c.benchmark_group(format!("mamba/{device_name}/scan/batch1"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (&len, times) in SCAN_LENGTHS.iter().zip(scan_times.iter_mut()) {
        let input = ids(1, len, &device);
        scan(&lm, &input, &device); // warm-up
        group.throughput(Throughput::Elements(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(len), &input, |b, input| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let t = scan(&lm, input, &device);
                        times.push(t);
                        t
                    })
                    .sum()
            })
        });
    }
    group.finish();

    // 2. Recurrent steps after a short prefill, batch 1.
    let (_, state) = lm.forward_prefill(ids(1, PREFILL, &device), None);
    let tokens: Vec<Tensor<1, Int>> = (0..STEPS)
        .map(|i| {
            Tensor::from_data(
                TensorData::new(vec![((i * 13 + 5) % VOCAB) as i64], [1]),
                &device,
            )
        })
        .collect();
    steps(&lm, &state, &tokens, &device); // warm-up
    let mut step_times = Vec::new();
    let mut group = c.benchmark_group(format!("mamba/{device_name}/step/batch1"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(STEPS as u64));
    group.bench_function(format!("{STEPS}-tokens-after-{PREFILL}"), |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let t = steps(&lm, &state, &tokens, &device);
                    step_times.push(t);
                    t
                })
                .sum()
        })
    });
    group.finish();

    // 3. The scan at the training shape.
    let (batch, len) = TRAIN_SHAPE;
    let input = ids(batch, len, &device);
    scan(&lm, &input, &device); // warm-up
    let mut train_times = Vec::new();
    let mut group = c.benchmark_group(format!("mamba/{device_name}/scan/batch{batch}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements((batch * len) as u64));
    group.bench_function(BenchmarkId::from_parameter(len), |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let t = scan(&lm, &input, &device);
                    train_times.push(t);
                    t
                })
                .sum()
        })
    });
    group.finish();

    // Summary: linearity of the scan in the length, and the step's speed.
    eprintln!(
        "\nMamba LM (vocab {VOCAB}, d 128, 4 layers, n 16), {device_name}, medians of every timed call:"
    );
    eprintln!(
        "  {:<26} {:>10} {:>10} {:>12} {:>14}",
        "mode", "calls", "median ms", "tokens/s", "per-token rel."
    );
    let mut base = None;
    for (&len, times) in SCAN_LENGTHS.iter().zip(scan_times.iter_mut()) {
        let calls = times.len();
        let Some(t) = median(times) else { continue };
        let per_token = t / len as f64;
        let base = *base.get_or_insert(per_token);
        eprintln!(
            "  {:<26} {calls:>10} {:>10.1} {:>12.0} {:>14.2}",
            format!("scan batch 1 × {len}"),
            t * 1e3,
            len as f64 / t,
            per_token / base
        );
    }
    let calls = train_times.len();
    if let Some(t) = median(&mut train_times) {
        eprintln!(
            "  {:<26} {calls:>10} {:>10.1} {:>12.0}",
            format!("scan batch {batch} × {len}"),
            t * 1e3,
            (batch * len) as f64 / t
        );
    }
    let calls = step_times.len();
    if let Some(t) = median(&mut step_times) {
        eprintln!(
            "  {:<26} {calls:>10} {:>10.1} {:>12.0}   ({:.2} ms/token)",
            format!("step batch 1, {STEPS} tokens"),
            t * 1e3,
            STEPS as f64 / t,
            t / STEPS as f64 * 1e3
        );
    }
}

criterion_group!(benches, bench_mamba);
criterion_main!(benches);
