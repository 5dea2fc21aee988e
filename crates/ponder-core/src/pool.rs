//! Pooling a sequence of hidden states over its real (non-padding) tokens.

use burn::tensor::{Bool, Tensor};

/// 1 at real tokens and 0 at padding (`mask_pad` is `true` at padding), `[batch,
/// seq_len]`; all ones without a mask.
///
/// Built as `1 − mask` rather than with `bool_not`: flex's `bool_not` rejects masks
/// built from host data (burn 0.22.1).
pub fn real_tokens(mask_pad: Option<&Tensor<2, Bool>>, x: &Tensor<3>) -> Tensor<2> {
    let [batch, seq_len, _] = x.dims();
    match mask_pad {
        Some(mask) => mask.clone().float().neg().add_scalar(1.0),
        None => Tensor::ones([batch, seq_len], &x.device()),
    }
}

/// The mean of `x` `[batch, seq_len, d]` over each row's real tokens: `[batch, d]`
/// (a row without any real token gives zeros).
pub fn masked_mean(x: Tensor<3>, mask_pad: Option<&Tensor<2, Bool>>) -> Tensor<2> {
    let [batch, _, d] = x.dims();
    let keep = real_tokens(mask_pad, &x);
    let count = keep.clone().sum_dim(1).clamp_min(1.0); // [batch, 1]
    (x * keep.unsqueeze_dim(2)).sum_dim(1).reshape([batch, d]) / count
}
