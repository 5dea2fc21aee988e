//! The calibration and uncertainty metrics of `ponder-calibration` on 10^6 synthetic
//! predictions of 10 classes (host-side, plain slices): ECE with 15 uniform and 15 quantile
//! bins, the Brier score, NLL, a temperature fit, LAC split-conformal calibration plus
//! evaluation, and APS calibration. Each should take well under a second.
//!
//! The data (Gaussian logits of std 3, labels drawn from `softmax(z / 1.5)`, so the raw
//! softmax is over-confident) is built once, outside the timed loops.
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ponder_calibration::{
    Binning, ConformalScore, Predictions, SplitConformal, apply_temperature, brier_score,
    calibration_error, fit_temperature, negative_log_likelihood, softmax_rows,
};

const N: usize = 1_000_000;
const N_CLASSES: usize = 10;

/// SplitMix64: a small seeded generator, so the bench needs no extra dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

struct Data {
    logits: Vec<f32>,
    probs: Vec<f32>,
    labels: Vec<usize>,
    confidences: Vec<f32>,
    correct: Vec<bool>,
}

fn data() -> Data {
    let mut rng = SplitMix64(7);
    let logits: Vec<f32> = (0..N * N_CLASSES)
        .map(|_| (3.0 * rng.normal()) as f32)
        .collect();
    let labels: Vec<usize> = apply_temperature(&logits, N_CLASSES, 1.5)
        .chunks_exact(N_CLASSES)
        .map(|row| {
            let u = rng.uniform();
            let mut cumulative = 0.0;
            row.iter()
                .position(|&p| {
                    cumulative += f64::from(p);
                    u < cumulative
                })
                .unwrap_or(N_CLASSES - 1)
        })
        .collect();
    let probs = softmax_rows(&logits, N_CLASSES);
    let (confidences, correct) = Predictions::new(&probs, N_CLASSES, &labels)
        .expect("valid synthetic predictions")
        .top_label();
    Data {
        logits,
        probs,
        labels,
        confidences,
        correct,
    }
}

fn bench_calibration(c: &mut Criterion) {
    let d = data();
    let preds = Predictions::new(&d.probs, N_CLASSES, &d.labels).expect("valid predictions");

    let mut group = c.benchmark_group("calibration/1e6x10");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    for (name, binning) in [
        ("ece-uniform-15", Binning::Uniform(15)),
        ("ece-quantile-15", Binning::Quantile(15)),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| calibration_error(black_box(&d.confidences), black_box(&d.correct), binning))
        });
    }
    group.bench_function("brier", |b| b.iter(|| brier_score(black_box(&preds))));
    group.bench_function("nll", |b| {
        b.iter(|| negative_log_likelihood(black_box(&preds)))
    });
    group.finish();

    let mut group = c.benchmark_group("calibration/1e6x10");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("temperature-fit", |b| {
        b.iter(|| fit_temperature(black_box(&d.logits), N_CLASSES, black_box(&d.labels)))
    });
    // Calibrate on all 10^6 rows, then evaluate on the same 10^6 (the cost, not a protocol).
    group.bench_function("lac-calibrate+evaluate", |b| {
        b.iter(|| {
            let sc = SplitConformal::calibrate(ConformalScore::Lac, black_box(&preds), 0.1)
                .expect("calibrates");
            sc.evaluate(black_box(&preds)).expect("evaluates")
        })
    });
    group.bench_function("aps-calibrate", |b| {
        b.iter(|| SplitConformal::calibrate(ConformalScore::Aps, black_box(&preds), 0.1))
    });
    group.finish();
}

criterion_group!(benches, bench_calibration);
criterion_main!(benches);
