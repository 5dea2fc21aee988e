//! Helpers shared by the integration tests of ponder-models (each test file includes
//! this module with `mod support;`; a file uses only some of them).

#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard};

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use ponder_core::{ExitPolicy, ExitSignals, retain};
use ponder_transformer::EncoderInput;

/// burn's CPU backend keeps one random generator for the whole process
/// (`Device::seed` replaces it): tests that initialise or train a model take this lock
/// first, otherwise two tests running in parallel threads would draw from each other's
/// stream.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The random generator of the synthetic data sets: Knuth's MMIX linear congruential
/// generator started at `seed`, each call giving the high 31 bits of its next state.
pub fn lcg(seed: u64) -> impl FnMut() -> u32 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as u32
    }
}

/// A tensor's values on the host.
pub fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap()
}

/// The largest absolute difference of two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Token ids of rows with different lengths, right-padded with id 0, and the mask.
pub fn text_input(lengths: &[usize], device: &Device) -> EncoderInput {
    let seq_len = *lengths.iter().max().unwrap();
    let mut ids = Vec::new();
    let mut pad = Vec::new();
    for (r, &len) in lengths.iter().enumerate() {
        for t in 0..seq_len {
            ids.push(if t < len {
                (1 + (r * 7 + t * 13) % 99) as i64
            } else {
                0
            });
            pad.push(t >= len);
        }
    }
    let b = lengths.len();
    EncoderInput::Tokens {
        ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [b, seq_len]), device),
        type_ids: None,
        mask_pad: Some(Tensor::<2, Bool>::from_data(
            TensorData::new(pad, [b, seq_len]),
            device,
        )),
    }
}

/// A test policy: row `i` of the batch (original order) exits at `plan[i]`.
pub struct Planned(pub Vec<usize>);

impl ExitPolicy for Planned {
    type Carry = Vec<usize>;
    fn name(&self) -> String {
        "planned".into()
    }
    fn start(&self, batch_size: usize) -> Vec<usize> {
        assert_eq!(batch_size, self.0.len());
        self.0.clone()
    }
    fn decide(&self, signals: &ExitSignals<'_>, carry: &mut Vec<usize>) -> Vec<bool> {
        carry.iter().map(|&l| l == signals.layer_idx + 1).collect()
    }
    fn retain_rows(&self, carry: Vec<usize>, rows: &[usize]) -> Vec<usize> {
        retain(&carry, rows)
    }
}
