//! Helpers shared by the test files of this crate.

use burn::tensor::Tensor;
use ponder_core::to_host;

/// The largest absolute difference between two tensors of the same shape.
pub fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    to_host(a)
        .iter()
        .zip(&to_host(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
