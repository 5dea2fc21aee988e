//! The decoder's three execution modes agree (full causal forward, prefill + KV-cached
//! steps, and the block-level pieces an early-exit generator composes), intermediate
//! predictions equal truncated models, and FLOP counts and validation are as documented.

mod support;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use ponder_core::to_host;
use ponder_transformer::{DecoderBlock, DecoderConfig, DecoderLm, KvCache, LayerKv};
use support::max_diff;

const VOCAB: usize = 23;
const MAX_LEN: usize = 12;

fn config() -> DecoderConfig {
    DecoderConfig::new(VOCAB, 16, 4, 3, 32, MAX_LEN)
}

/// Scales a linear's weight and gives it a random bias, so that attention is far from
/// uniform and the biases take part (GPT-2's initialisation makes both negligible, and
/// a wrong mask or cache could then pass by accident).
fn perturb(linear: &mut Linear, factor: f64, device: &Device) {
    linear.weight = linear.weight.clone().map(|w| w.mul_scalar(factor));
    let [d_out] = linear.bias.as_ref().map(|b| b.dims()).unwrap_or([0]);
    if d_out > 0 {
        linear.bias = Some(Param::from_tensor(Tensor::random(
            [d_out],
            Distribution::Normal(0.0, 0.1),
            device,
        )));
    }
}

fn model(tied: bool, device: &Device) -> DecoderLm {
    device.seed(11);
    let mut lm = config().with_tie_embeddings(tied).init_lm(device);
    for block in lm.layers.iter_mut() {
        for linear in [
            &mut block.wq,
            &mut block.wk,
            &mut block.wv,
            &mut block.wo,
            &mut block.ff_in,
            &mut block.ff_out,
        ] {
            perturb(linear, 15.0, device);
        }
    }
    if let Some(head) = lm.lm_head.as_mut() {
        perturb(head, 15.0, device);
    }
    lm.token_embedding.weight = lm
        .token_embedding
        .weight
        .clone()
        .map(|w| w.mul_scalar(25.0));
    let positions = lm.position_embedding.as_mut().expect("learned positions");
    positions.weight = positions.weight.clone().map(|w| w.mul_scalar(25.0));
    lm
}

fn random_ids(batch: usize, len: usize, seed: u64, device: &Device) -> Tensor<2, Int> {
    device.seed(seed);
    Tensor::<2>::random(
        [batch, len],
        Distribution::Uniform(0.0, VOCAB as f64 - 0.01),
        device,
    )
    .int()
}

fn column(ids: &Tensor<2, Int>, t: usize) -> Tensor<1, Int> {
    let [batch, _] = ids.dims();
    ids.clone().narrow(1, t, 1).reshape([batch])
}

fn rows(indices: &[i64], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(indices.to_vec(), [indices.len()]), device)
}

#[test]
fn prefill_then_steps_equal_the_full_forward() {
    let device = Device::flex();
    let len = 9;
    for tied in [true, false] {
        let lm = model(tied, &device);
        for batch in [1, 3] {
            let ids = random_ids(batch, len, 3 + batch as u64, &device);
            let full = lm.forward(ids.clone());
            for prompt in [1, 4] {
                let (prefill, mut cache) = lm.forward_prefill(ids.clone().narrow(1, 0, prompt));
                assert_eq!(cache.len(), prompt);
                assert_eq!(cache.batch_size(), Some(batch));
                let diff = max_diff(prefill, full.clone().narrow(1, 0, prompt));
                assert!(diff <= 1e-4, "prefill vs full: {diff:e}");
                for t in prompt..len {
                    let logits = lm.step(column(&ids, t), &mut cache);
                    let expected = full.clone().narrow(1, t, 1).reshape([batch, VOCAB]);
                    let diff = max_diff(logits, expected);
                    assert!(
                        diff <= 1e-4,
                        "tied {tied}, batch {batch}, prompt {prompt}, position {t}: {diff:e}"
                    );
                }
                assert_eq!(cache.len(), len);
            }
        }
    }
}

#[test]
fn stepping_from_an_empty_cache_equals_the_full_forward() {
    let device = Device::flex();
    let lm = model(true, &device);
    let ids = random_ids(2, MAX_LEN, 5, &device);
    let full = lm.forward(ids.clone());
    let mut cache = lm.initial_cache();
    assert!(cache.is_empty() && cache.batch_size().is_none());
    for t in 0..MAX_LEN {
        let logits = lm.step(column(&ids, t), &mut cache);
        let diff = max_diff(logits, full.clone().narrow(1, t, 1).reshape([2, VOCAB]));
        assert!(diff <= 1e-4, "position {t}: {diff:e}");
    }
    // Every layer holds every position: [batch, heads, len, d_head] twice.
    assert_eq!(cache.numel(), 3 * 2 * (2 * 4 * MAX_LEN * 4));
    assert_eq!(cache.bytes(), 4 * cache.numel());
}

#[test]
fn attention_is_causal_and_not_trivial() {
    let device = Device::flex();
    let lm = model(true, &device);
    let ids = random_ids(1, 8, 9, &device);
    let j = 5;
    let mut changed = to_host(ids.clone().float())
        .into_iter()
        .map(|x| x as i64)
        .collect::<Vec<_>>();
    changed[j] = (changed[j] + 1) % VOCAB as i64;
    let changed = Tensor::<2, Int>::from_data(TensorData::new(changed, [1, 8]), &device);
    let a = lm.forward(ids);
    let b = lm.forward(changed);
    let before = max_diff(a.clone().narrow(1, 0, j), b.clone().narrow(1, 0, j));
    assert!(
        before <= 1e-5,
        "a later token changed earlier logits: {before:e}"
    );
    // Positions after j see the change through attention.
    let after = max_diff(a.narrow(1, j + 1, 2), b.narrow(1, j + 1, 2));
    assert!(after > 1e-2, "attention barely reads the past: {after:e}");
}

#[test]
fn hidden_states_give_the_predictions_of_truncated_models() {
    let device = Device::flex();
    let lm = model(true, &device);
    let ids = random_ids(2, 7, 4, &device);
    let hidden = lm.hidden_states(ids.clone());
    assert_eq!(hidden.len(), lm.n_layers());
    let last = lm.logits(lm.norm(hidden[lm.n_layers() - 1].clone()));
    let diff = max_diff(last, lm.forward(ids.clone()));
    assert!(diff <= 1e-5, "last hidden state vs forward: {diff:e}");
    for (i, h) in hidden.iter().enumerate() {
        let mut truncated = lm.clone();
        truncated.layers.truncate(i + 1);
        assert_eq!(truncated.n_layers(), i + 1);
        let diff = max_diff(
            lm.logits(lm.norm(h.clone())),
            truncated.forward(ids.clone()),
        );
        assert!(diff <= 1e-5, "after block {i}: {diff:e}");
    }
    // The intermediate predictions differ: every block does something.
    for i in 1..hidden.len() {
        let d = max_diff(
            lm.logits(lm.norm(hidden[i - 1].clone())),
            lm.logits(lm.norm(hidden[i].clone())),
        );
        assert!(d > 1e-2, "blocks {} and {i} predict the same: {d:e}", i - 1);
    }
}

/// The cache after a prompt of `prompt` tokens and the input of layer `layer` at
/// the next position (the residual stream of the full forward there).
fn block_input(
    lm: &DecoderLm,
    ids: &Tensor<2, Int>,
    prompt: usize,
    layer: usize,
) -> (KvCache, Tensor<2>) {
    let [batch, _] = ids.dims();
    let (_, cache) = lm.forward_prefill(ids.clone().narrow(1, 0, prompt));
    let x = if layer == 0 {
        lm.embed(ids.clone(), 0)
    } else {
        lm.hidden_states(ids.clone())[layer - 1].clone()
    };
    let x = x.narrow(1, prompt, 1).reshape([batch, lm.d_model()]);
    (cache, x)
}

#[test]
fn block_pieces_compose_to_step() {
    let device = Device::flex();
    let lm = model(true, &device);
    let ids = random_ids(3, 6, 8, &device);
    let prompt = 4;
    for layer in 0..lm.n_layers() {
        let block: &DecoderBlock = &lm.layers[layer];
        let (cache, x) = block_input(&lm, &ids, prompt, layer);

        let mut stepped = cache.layers[layer].clone();
        let out = block.step(x.clone(), &mut stepped);
        assert_eq!(stepped.len(), prompt + 1);
        // The block's step equals the full forward at that position.
        let full = lm.hidden_states(ids.clone())[layer]
            .clone()
            .narrow(1, prompt, 1)
            .reshape([3, lm.d_model()]);
        let diff = max_diff(out.clone(), full);
        assert!(diff <= 1e-4, "layer {layer}: step vs forward {diff:e}");

        // qkv, append, attend.
        let mut composed = cache.layers[layer].clone();
        let (q, k, v) = block.qkv(x.clone(), prompt);
        assert_eq!(q.dims(), [3, 4, 1, 4]);
        composed.append(k, v);
        let (k_all, v_all) = (composed.k.clone().unwrap(), composed.v.clone().unwrap());
        let out2 = block.attend(x.clone(), q, k_all, v_all);
        assert!(max_diff(out.clone(), out2) <= 1e-6);

        // kv recomputes exactly what step appended.
        let (k, v) = block.kv(x, prompt);
        let (k_last, v_last) = stepped.last().unwrap();
        assert!(max_diff(k, k_last) <= 1e-6);
        assert!(max_diff(v, v_last) <= 1e-6);
        let (k_prev, _) = cache.layers[layer].last().unwrap();
        let (k_new, _) = stepped.last().unwrap();
        assert!(max_diff(k_prev, k_new) > 1e-3);
    }
}

#[test]
fn kv_of_each_position_equals_the_prefilled_cache() {
    let device = Device::flex();
    let lm = model(true, &device);
    let ids = random_ids(2, 5, 2, &device);
    let (_, cache) = lm.forward_prefill(ids.clone());
    let hidden = lm.hidden_states(ids.clone());
    for layer in 0..lm.n_layers() {
        let input = if layer == 0 {
            lm.embed(ids.clone(), 0)
        } else {
            hidden[layer - 1].clone()
        };
        for t in 0..5 {
            let x = input.clone().narrow(1, t, 1).reshape([2, lm.d_model()]);
            let (k, v) = lm.layers[layer].kv(x, t);
            let cached = &cache.layers[layer];
            let diff_k = max_diff(k, cached.k.clone().unwrap().narrow(2, t, 1));
            let diff_v = max_diff(v, cached.v.clone().unwrap().narrow(2, t, 1));
            assert!(diff_k <= 1e-5 && diff_v <= 1e-5, "layer {layer}, t {t}");
        }
    }
}

#[test]
fn selected_rows_step_like_the_whole_batch() {
    let device = Device::flex();
    let lm = model(true, &device);
    let ids = random_ids(3, 6, 6, &device);
    let keep = rows(&[2, 0], &device);
    let (_, cache) = lm.forward_prefill(ids.clone().narrow(1, 0, 5));

    // The whole model.
    let mut whole = cache.clone();
    let all = lm.step(column(&ids, 5), &mut whole);
    let mut part = cache.select_rows(keep.clone());
    assert_eq!(part.batch_size(), Some(2));
    assert_eq!(part.numel() * 3, cache.numel() * 2);
    let some = lm.step(column(&ids, 5).select(0, keep.clone()), &mut part);
    assert!(max_diff(some, all.select(0, keep.clone())) <= 1e-5);

    // One block.
    let (cache, x) = block_input(&lm, &ids, 5, 1);
    let mut whole = cache.layers[1].clone();
    let all = lm.layers[1].step(x.clone(), &mut whole);
    let mut part = cache.layers[1].select_rows(keep.clone());
    assert_eq!(part.batch_size(), Some(2));
    let some = lm.layers[1].step(x.select(0, keep.clone()), &mut part);
    assert!(max_diff(some, all.select(0, keep.clone())) <= 1e-5);
    assert!(max_diff(part.k.unwrap(), whole.k.unwrap().select(0, keep)) <= 1e-6);
}

#[test]
fn empty_layer_cache() {
    let kv = LayerKv::initial();
    assert!(kv.is_empty());
    assert_eq!(kv.len(), 0);
    assert_eq!(kv.batch_size(), None);
    assert!(kv.last().is_none());
    assert_eq!(kv.numel(), 0);
    let device = Device::flex();
    let selected = kv.select_rows(rows(&[0], &device));
    assert!(selected.k.is_none() && selected.v.is_none());
}

#[test]
#[should_panic(expected = "learned positions")]
fn stepping_past_max_len_panics() {
    let device = Device::flex();
    let lm = model(true, &device);
    let ids = random_ids(1, MAX_LEN, 1, &device);
    let (_, mut cache) = lm.forward_prefill(ids.clone());
    lm.step(column(&ids, 0), &mut cache);
}

#[test]
fn flops_match_hand_counts() {
    let device = Device::flex();
    // vocab 11, d 8, 2 heads, 2 layers, FFN 16, 16 positions.
    let lm = DecoderConfig::new(11, 8, 2, 2, 16, 16).init_lm(&device);
    let block = &lm.layers[0];
    // 3 cached positions, so attention over 4:
    //   projections 4·(2·8·8 + 8) = 544
    //   scores and context 2·2·4·8 = 128
    //   MLP (2·8·16 + 16) + (2·16·8 + 8) = 272 + 264 = 536
    //   elementwise 5·(2 heads·4 + 2·8 + 16) = 200
    assert_eq!(block.step_flops(3), 544 + 128 + 536 + 200);
    // With no cache, one position costs what the encoder convention charges for t = 1.
    assert_eq!(
        block.step_flops(0),
        ponder_core::transformer_layer_flops(1, 8, 16, 2)
    );
    assert_eq!(
        block.forward_flops(5),
        ponder_core::transformer_layer_flops(5, 8, 16, 2)
    );
    // Layer norm 5·8, then two 8×8 linears with bias.
    assert_eq!(block.kv_flops(), 40 + 2 * 136);
    // Tied head: norm_f 5·8, then 2·8·11 (no bias).
    assert_eq!(lm.head_flops(), 40 + 176);
    assert_eq!(lm.embed_flops(), 8);
}

#[test]
fn parameters_and_sizes() {
    let device = Device::flex();
    let c = DecoderConfig::new(11, 8, 2, 2, 16, 16);
    let tied = c.init_lm(&device);
    // Embeddings 11·8 + 16·8; per block 2 norms (2·8 each), 4·(8·8 + 8), 8·16 + 16,
    // 16·8 + 8; norm_f 2·8.
    let block = 2 * 16 + 4 * 72 + 144 + 136;
    assert_eq!(tied.n_params(), 88 + 128 + 2 * block + 16);
    let untied = c.clone().with_tie_embeddings(false).init_lm(&device);
    assert_eq!(untied.n_params(), tied.n_params() + 88);
    assert_eq!(
        (
            tied.n_layers(),
            tied.d_model(),
            tied.vocab_size(),
            tied.max_len()
        ),
        (2, 8, 11, 16)
    );
    assert_eq!(c.d_head(), 4);
    assert_eq!((tied.layers[0].n_heads, tied.layers[0].d_head), (2, 4));
}

#[test]
fn initialisation_follows_gpt2() {
    let device = Device::flex();
    device.seed(3);
    let lm = DecoderConfig::new(50, 64, 4, 8, 256, 32).init_lm(&device);
    let std = |t: Tensor<2>| {
        let v = to_host(t);
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32).sqrt()
    };
    let block = &lm.layers[0];
    let residual = 0.02 / (16.0f32).sqrt();
    for (name, t, expected) in [
        ("token_embedding", lm.token_embedding.weight.val(), 0.02),
        (
            "position_embedding",
            lm.position_embedding.as_ref().unwrap().weight.val(),
            0.02,
        ),
        ("wq", block.wq.weight.val(), 0.02),
        ("ff_in", block.ff_in.weight.val(), 0.02),
        ("wo", block.wo.weight.val(), residual),
        ("ff_out", block.ff_out.weight.val(), residual),
    ] {
        let s = std(t);
        assert!(
            (s / expected - 1.0).abs() < 0.1,
            "{name}: std {s}, expected {expected}"
        );
    }
    let bias = to_host(block.ff_out.bias.as_ref().unwrap().val());
    assert!(bias.iter().all(|&b| b == 0.0));
    assert_eq!(lm.norm_f.kind(), ponder_transformer::DecoderNorm::LayerNorm);
    assert!(to_host(lm.norm_f.gamma.val()).iter().all(|&g| g == 1.0));
    assert!(lm.lm_head.is_none());
}

#[test]
fn validate_names_the_field() {
    let err = DecoderConfig::new(11, 10, 4, 2, 16, 16)
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("n_heads") && err.contains("d_model"), "{err}");
    for (field, c) in [
        ("vocab_size", DecoderConfig::new(0, 8, 2, 2, 16, 16)),
        ("d_model", DecoderConfig::new(11, 0, 2, 2, 16, 16)),
        ("n_heads", DecoderConfig::new(11, 8, 0, 2, 16, 16)),
        ("n_layers", DecoderConfig::new(11, 8, 2, 0, 16, 16)),
        ("d_ff", DecoderConfig::new(11, 8, 2, 2, 0, 16)),
        ("max_len", DecoderConfig::new(11, 8, 2, 2, 16, 0)),
        (
            "norm_eps",
            DecoderConfig::new(11, 8, 2, 2, 16, 16).with_norm_eps(0.0),
        ),
    ] {
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains(field), "{field}: {err}");
    }
    DecoderConfig::tiny().validate().unwrap();
}

#[test]
#[should_panic(expected = "n_heads")]
fn init_panics_on_an_invalid_config() {
    DecoderConfig::new(11, 10, 4, 2, 16, 16).init_lm(&Device::flex());
}

/// A 2-layer decoder (vocabulary 18, d = 16, 2 heads, FFN 32, 16 positions) trained for
/// 4 steps by `ponder lm` before the decoder gained RMSNorm, rotary positions and the
/// gated MLP: its record must still load into the GPT-2 form, with its trained weights.
#[test]
fn a_decoder_saved_before_the_llama_options_still_loads() {
    let device = Device::flex();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/decoder-saved-before-llama.bpk");
    use burn::module::Module;
    let fresh = DecoderConfig::new(18, 16, 2, 2, 32, 16).init_lm(&device);
    let loaded = DecoderConfig::new(18, 16, 2, 2, 32, 16)
        .init_lm(&device)
        .try_load_file(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // trained norms and positions, not the initial ones
    let gamma = to_host(loaded.layers[0].ln1.gamma.val());
    assert!(gamma.iter().any(|&g| g != 1.0), "{gamma:?}");
    assert!(loaded.layers[0].ln1.beta.is_some() && loaded.position_embedding.is_some());
    let ids =
        Tensor::<2, Int>::from_data(TensorData::new(vec![5i64, 1, 9, 17, 0, 3], [1, 6]), &device);
    assert!(max_diff(fresh.forward(ids.clone()), loaded.forward(ids)) > 1e-3);
}
