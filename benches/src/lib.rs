//! Shared helpers of the criterion benches in `benches/`: models of the default
//! experiment's shape and deterministic exit schedules.

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use ponder_core::{ExitPolicy, ExitSignals, retain};
use ponder_models::{MultiExitClassifier, MultiExitConfig};
use ponder_transformer::{EmbeddingKind, EncoderConfig, EncoderInput};

/// The device a bench runs on: `PONDER_BENCH_DEVICE` = `cpu` (burn's flex backend, the
/// default), `wgpu` or `cuda` (each needs the bench built with that cargo feature), and
/// its name for the report.
///
/// # Panics
/// On another value, or a GPU backend this build does not have.
pub fn bench_device() -> (Device, String) {
    let name = std::env::var("PONDER_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let (device, _) = ponder_core::device_named(&name)
        .unwrap_or_else(|e| panic!("PONDER_BENCH_DEVICE={name}: {e}"));
    let label = if name == "cpu" {
        "cpu-flex".to_string()
    } else {
        name
    };
    (device, label)
}

/// The batch sizes a bench runs: `PONDER_BENCH_BATCHES` (comma-separated, e.g.
/// `32,256`), or `default`.
///
/// # Panics
/// On a value that is not a list of positive integers.
pub fn bench_batches(default: &[usize]) -> Vec<usize> {
    match std::env::var("PONDER_BENCH_BATCHES") {
        Err(_) => default.to_vec(),
        Ok(list) => list
            .split(',')
            .map(|b| match b.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => panic!(
                    "PONDER_BENCH_BATCHES={list}: expected positive integers separated by commas"
                ),
            })
            .collect(),
    }
}

/// The ViT encoder of the default Fashion-MNIST experiment (6 layers, H = 64), with
/// random weights, without autodiff or dropout.
pub fn default_vit(device: &Device) -> MultiExitClassifier {
    device.seed(1);
    let encoder = EncoderConfig::new(
        EmbeddingKind::Patch {
            image_size: 28,
            patch_size: 7,
            channels: 1,
        },
        6,
        64,
        4,
        128,
    )
    .with_norm_first(true)
    .with_dropout(0.0);
    MultiExitConfig::new(encoder.into(), 10)
        .with_head_dropout(0.0)
        .init(device)
        .valid()
}

/// A batch of random images.
pub fn images(batch_size: usize, device: &Device) -> EncoderInput {
    EncoderInput::Images(Tensor::<4>::random(
        [batch_size, 1, 28, 28],
        Distribution::Normal(0.0, 1.0),
        device,
    ))
}

/// Row `i` exits at layer `plan[i % plan.len()]`: a fixed, mixed exit distribution, so
/// the bench measures the runtime (compaction, gathers, host transfers) and not how
/// confident random weights happen to be.
#[derive(Debug, Clone)]
pub struct Schedule(pub Vec<usize>);

impl ExitPolicy for Schedule {
    type Carry = Vec<usize>;

    fn name(&self) -> String {
        format!("schedule{:?}", self.0)
    }

    fn start(&self, batch_size: usize) -> Vec<usize> {
        (0..batch_size).map(|i| self.0[i % self.0.len()]).collect()
    }

    fn decide(&self, signals: &ExitSignals<'_>, carry: &mut Vec<usize>) -> Vec<bool> {
        carry.iter().map(|&l| l <= signals.layer_idx + 1).collect()
    }

    fn retain_rows(&self, carry: Vec<usize>, rows: &[usize]) -> Vec<usize> {
        retain(&carry, rows)
    }
}
