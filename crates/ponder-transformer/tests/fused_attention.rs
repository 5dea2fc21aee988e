//! Inference runs attention through burn's fused attention op; training (an autodiff
//! device) through the explicit product and softmax (the encoder: burn's own
//! `TransformerEncoderLayer`). The two paths compute the same function: the same
//! weights on an autodiff device and on a plain one give the same outputs, with padding
//! (encoder), grouped-query attention and rotary positions (decoder), and KV-cached
//! steps.

mod support;

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use ponder_transformer::{DecoderConfig, EmbeddingKind, EncoderConfig, EncoderInput};
use support::max_diff;

/// Sharper attention than the initialisation gives, so that a wrong mask or scale shows.
fn sharpen(linear: &mut Linear) {
    linear.weight = linear.weight.clone().map(|w| w.mul_scalar(4.0));
}

fn ids(batch: usize, len: usize, vocab: usize, device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = (0..batch * len)
        .map(|i| ((i * 7 + 3) % vocab) as i64)
        .collect();
    Tensor::from_data(TensorData::new(data, [batch, len]), device)
}

fn encoder_paths_agree(norm_first: bool) {
    let device = Device::flex();
    let ad = device.clone().autodiff();
    ad.seed(3);
    let config = EncoderConfig::new(
        EmbeddingKind::Text {
            vocab_size: 50,
            max_position: 16,
            type_vocab_size: 0,
        },
        3,
        32,
        4,
        64,
    )
    .with_norm_first(norm_first)
    .with_dropout(0.0);
    let mut encoder = config.init(&ad);
    for layer in &mut encoder.layers {
        sharpen(&mut layer.mha.query);
        sharpen(&mut layer.mha.key);
    }
    let (batch, len) = (3, 10);
    // Row 0 has no padding, row 1 four padding positions, row 2 seven.
    let pad: Vec<bool> = (0..batch * len)
        .map(|i| {
            let (row, t) = (i / len, i % len);
            t >= [len, 6, 3][row]
        })
        .collect();
    let input = |device: &Device| EncoderInput::Tokens {
        ids: ids(batch, len, 50, device),
        type_ids: None,
        mask_pad: Some(Tensor::<2, Bool>::from_data(
            TensorData::new(pad.clone(), [batch, len]),
            device,
        )),
    };
    let explicit = encoder.forward_cut(input(&ad), 3).x.inner();
    let plain = encoder.valid();
    let fused = plain.forward_cut(input(&device), 3).x;
    let diff = max_diff(explicit, fused);
    assert!(
        diff < 1e-5,
        "norm_first = {norm_first}: fused and explicit attention differ by {diff}"
    );
}

#[test]
fn encoder_fused_attention_equals_burns_layer_pre_norm() {
    encoder_paths_agree(true);
}

#[test]
fn encoder_fused_attention_equals_burns_layer_post_norm() {
    encoder_paths_agree(false);
}

#[test]
fn decoder_fused_attention_equals_the_explicit_path() {
    let device = Device::flex();
    let ad = device.clone().autodiff();
    ad.seed(5);
    for config in [
        DecoderConfig::new(31, 32, 4, 2, 48, 16),
        DecoderConfig::new(31, 32, 4, 2, 48, 16)
            .with_n_kv_heads(Some(2))
            .with_rope_theta(Some(500.0)),
    ] {
        let mut lm = config.init_lm(&ad);
        for block in &mut lm.layers {
            sharpen(&mut block.wq);
            sharpen(&mut block.wk);
        }
        let prompt = |device: &Device| ids(2, 9, 31, device);
        let explicit = lm.forward(prompt(&ad)).inner();
        let plain = lm.valid();
        let fused = plain.forward(prompt(&device));
        let diff = max_diff(explicit, fused);
        assert!(diff < 1e-4, "{config:?}: full forward differs by {diff}");

        // Prefill, then three cached steps on each path.
        let (_, mut cache_ad) = lm.forward_prefill(prompt(&ad));
        let (_, mut cache) = plain.forward_prefill(prompt(&device));
        for token in [4i64, 17, 30] {
            let next = |device: &Device| {
                Tensor::<1, Int>::from_data(TensorData::new(vec![token, token], [2]), device)
            };
            let explicit = lm.step(next(&ad), &mut cache_ad).inner();
            let fused = plain.step(next(&device), &mut cache);
            let diff = max_diff(explicit, fused);
            assert!(diff < 1e-4, "{config:?}: cached step differs by {diff}");
        }
    }
}
