//! FLOP counting conventions: one multiply-add is two FLOPs; softmax, norms and
//! activations are counted at a few FLOPs per element, so matmuls dominate.

/// FLOPs of a dense layer `[rows, d_in] × [d_in, d_out]` (+ bias) for `rows` rows.
pub fn linear_flops(rows: u64, d_in: u64, d_out: u64) -> u64 {
    rows * (2 * d_in * d_out + d_out)
}

/// FLOPs of one transformer encoder layer for one sequence of `seq_len` tokens.
///
/// Q, K, V and output projections (4 `d_model × d_model`), attention scores and
/// context (`2 · seq_len² · d_model` multiply-adds), the feed-forward block
/// (`d_model → d_ff → d_model`), and about 5 FLOPs per element for softmax, two layer
/// norms and the activation.
pub fn transformer_layer_flops(seq_len: u64, d_model: u64, d_ff: u64, n_heads: u64) -> u64 {
    let t = seq_len;
    let projections = 4 * linear_flops(t, d_model, d_model);
    let attention = 2 * 2 * t * t * d_model;
    let ffn = linear_flops(t, d_model, d_ff) + linear_flops(t, d_ff, d_model);
    let elementwise = 5 * (n_heads * t * t + 2 * t * d_model + t * d_ff);
    projections + attention + ffn + elementwise
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_counts_multiply_adds_twice() {
        assert_eq!(linear_flops(1, 3, 2), 2 * 3 * 2 + 2);
        assert_eq!(linear_flops(4, 3, 2), 4 * (2 * 3 * 2 + 2));
    }

    #[test]
    fn layer_flops_grow_quadratically_in_length_for_attention() {
        let short = transformer_layer_flops(8, 64, 256, 4);
        let long = transformer_layer_flops(16, 64, 256, 4);
        assert!(long > 2 * short);
    }
}
