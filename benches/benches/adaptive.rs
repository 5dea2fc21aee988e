//! Adaptive inference against full-depth inference of the same model, at batch 32
//! (`PONDER_BENCH_BATCHES=32,256` for others), on the CPU (`PONDER_BENCH_DEVICE=wgpu`
//! or `cuda` for a GPU, in a bench built with that feature; `scripts/gpu-check.sh`).
//!
//! Each case reports its FLOP speed-up (from the runner's per-row FLOP counts) next to
//! the wall-clock speed-up measured here; the target is wall-clock ≥ 0.8 × FLOP
//! speed-up, i.e. exited rows really leave the batch. The device is synced before the
//! clock stops (reading the logits back does that).
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ponder_benches::{Schedule, bench_batches, bench_device, default_vit, images};
use ponder_core::ExitPolicy;
use ponder_exits::{FixedLayer, NeverExit};
use ponder_models::MultiExitClassifier;
use ponder_transformer::EncoderInput;

fn run<P: ExitPolicy>(model: &MultiExitClassifier, input: &EncoderInput, policy: &P) -> Vec<u64> {
    let out = model.adaptive(input.clone(), policy, None);
    // reading the logits back syncs the device
    let _ = out.logits.try_into_vec_as::<f32>().expect("logits");
    out.flops
}

fn median_time<P: ExitPolicy>(
    model: &MultiExitClassifier,
    input: &EncoderInput,
    policy: &P,
) -> Duration {
    let mut times: Vec<Duration> = (0..31)
        .map(|_| {
            let start = Instant::now();
            run(model, input, policy);
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn bench_adaptive(c: &mut Criterion) {
    let (device, device_name) = bench_device();
    let model = default_vit(&device);
    for batch in bench_batches(&[32]) {
        bench_batch(c, &model, &images(batch, &device), &device_name, batch);
    }
}

fn bench_batch(
    c: &mut Criterion,
    model: &MultiExitClassifier,
    input: &EncoderInput,
    device_name: &str,
    batch: usize,
) {
    let schedules: Vec<(&str, Schedule)> = vec![
        ("mixed-1..6", Schedule(vec![1, 2, 3, 4, 5, 6])),
        ("early-heavy", Schedule(vec![1, 1, 2, 2, 3, 6])),
        ("half-at-2", Schedule(vec![2, 6])),
    ];
    let full_flops: u64 = run(model, input, &NeverExit).iter().sum();

    let mut group = c.benchmark_group(format!("adaptive/{device_name}/batch{batch}"));
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(4));
    group.bench_function("full-depth", |b| b.iter(|| run(model, input, &NeverExit)));
    for (name, schedule) in &schedules {
        group.bench_function(*name, |b| b.iter(|| run(model, input, schedule)));
    }
    let fixed2 = FixedLayer::new(2).expect("layer 2");
    group.bench_function("fixed-2", |b| b.iter(|| run(model, input, &fixed2)));
    group.finish();

    // The summary the criterion ids cannot show: wall-clock against FLOP speed-up.
    let full_time = median_time(model, input, &NeverExit);
    println!(
        "\nwall-clock vs FLOP speed-up ({device_name}, batch {batch}, median of 31; full depth {:.1} rows/s):",
        batch as f64 / full_time.as_secs_f64()
    );
    let report = |name: &str, flops: u64, time: Duration| {
        let flop_speedup = full_flops as f64 / flops as f64;
        let wall_speedup = full_time.as_secs_f64() / time.as_secs_f64();
        println!(
            "  {name:<12} FLOP speed-up {flop_speedup:.2}×  wall-clock {wall_speedup:.2}×  ratio {:.2}",
            wall_speedup / flop_speedup
        );
    };
    for (name, schedule) in &schedules {
        let flops: u64 = run(model, input, schedule).iter().sum();
        report(name, flops, median_time(model, input, schedule));
    }
    let flops: u64 = run(model, input, &fixed2).iter().sum();
    report("fixed-2", flops, median_time(model, input, &fixed2));
}

criterion_group!(benches, bench_adaptive);
criterion_main!(benches);
