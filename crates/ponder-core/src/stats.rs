//! Exit statistics: how deep samples went and how much compute that saved.

use serde::{Deserialize, Serialize};

/// Summary of the exit layers (1-based) and FLOPs of a set of samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitStats {
    /// Number of layers of the backbone.
    pub n_layers: usize,
    /// Number of samples.
    pub n_samples: usize,
    /// `histogram[l - 1]` = number of samples that exited at layer `l`.
    pub histogram: Vec<u64>,
    /// Mean exit layer (1-based).
    pub mean_exit_layer: f64,
    /// Layer speed-up `n_layers / mean_exit_layer` (PALBERT's convention).
    pub layer_speedup: f64,
    /// Fraction of layers saved `1 − mean_exit_layer / n_layers` (what PABEE's code
    /// prints as "Speed Up").
    pub saved_fraction: f64,
    /// Mean FLOPs actually spent per sample (heads and halting included).
    pub mean_flops: f64,
    /// FLOP speed-up: FLOPs of full-depth inference with only the final head, divided by
    /// the mean FLOPs spent.
    pub flop_speedup: f64,
}

impl ExitStats {
    /// Statistics of `exit_layers` (1-based) and the FLOPs spent on each sample, against
    /// `full_depth_flops` (FLOPs of one sample through all layers and the final head).
    ///
    /// # Panics
    /// If an exit layer is 0 or above `n_layers`, or the two slices differ in length.
    pub fn new(
        exit_layers: &[usize],
        flops: &[u64],
        n_layers: usize,
        full_depth_flops: u64,
    ) -> Self {
        assert_eq!(
            exit_layers.len(),
            flops.len(),
            "ExitStats: one FLOP count per sample"
        );
        let mut histogram = vec![0u64; n_layers];
        for &l in exit_layers {
            assert!(
                (1..=n_layers).contains(&l),
                "ExitStats: exit layer {l} outside 1..={n_layers}"
            );
            histogram[l - 1] += 1;
        }
        let n = exit_layers.len();
        let mean_exit_layer = if n == 0 {
            0.0
        } else {
            exit_layers.iter().sum::<usize>() as f64 / n as f64
        };
        let mean_flops = if n == 0 {
            0.0
        } else {
            flops.iter().map(|&f| f as f64).sum::<f64>() / n as f64
        };
        Self {
            n_layers,
            n_samples: n,
            histogram,
            mean_exit_layer,
            layer_speedup: if mean_exit_layer > 0.0 {
                n_layers as f64 / mean_exit_layer
            } else {
                0.0
            },
            saved_fraction: if n == 0 {
                0.0
            } else {
                1.0 - mean_exit_layer / n_layers as f64
            },
            mean_flops,
            flop_speedup: if mean_flops > 0.0 {
                full_depth_flops as f64 / mean_flops
            } else {
                0.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_known_exits() {
        let s = ExitStats::new(&[1, 2, 3, 4], &[10, 20, 30, 40], 4, 40);
        assert_eq!(s.histogram, vec![1, 1, 1, 1]);
        assert!((s.mean_exit_layer - 2.5).abs() < 1e-12);
        assert!((s.layer_speedup - 1.6).abs() < 1e-12);
        assert!((s.saved_fraction - 0.375).abs() < 1e-12);
        assert!((s.flop_speedup - 1.6).abs() < 1e-12);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn exit_layer_zero_is_rejected() {
        let _ = ExitStats::new(&[0], &[1], 4, 4);
    }
}
