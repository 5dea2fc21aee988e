//! The two execution modes agree, the state does not grow, the layer-wise trunk equals
//! the full forward, and bad weight files are clear errors.

use burn::module::{Module, Param};
use burn::tensor::{Bool, Device, Distribution, Int, Tensor, TensorData};
use ponder_core::{LayerwiseBackbone, to_host, write_safetensors};
use ponder_mamba::{
    MambaConfig, MambaEncoderConfig, MambaInput, MambaLm, Pooling, Sampling, generate,
    load_state_spaces, state_spaces_bytes,
};

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn config() -> MambaConfig {
    MambaConfig::new(37, 24, 3).with_d_state(8)
}

/// A model whose Δ, B and C are large enough for the scan to matter (Mamba's own
/// initialisation makes Δ tiny), so a wrong recurrence could not pass by accident.
fn model(device: &Device) -> MambaLm {
    device.seed(7);
    let mut lm = config().init_lm(device);
    for block in lm.mamba.layers.iter_mut() {
        let m = &mut block.mixer;
        m.x_proj.weight = m.x_proj.weight.clone().map(|w| w.mul_scalar(4.0));
        m.dt_proj.bias = m.dt_proj.bias.clone().map(|b| b.map(|b| b.add_scalar(1.5)));
    }
    lm.mamba.embedding.weight = lm
        .mamba
        .embedding
        .weight
        .clone()
        .map(|w| w.mul_scalar(50.0));
    lm
}

fn random_ids(batch: usize, len: usize, seed: u64, device: &Device) -> Tensor<2, Int> {
    device.seed(seed);
    Tensor::<2>::random([batch, len], Distribution::Uniform(0.0, 36.99), device).int()
}

#[test]
fn stepping_reproduces_the_full_sequence() {
    let device = Device::flex();
    let lm = model(&device);
    let ids = random_ids(3, 23, 1, &device);
    let full = lm.forward(ids.clone());
    // The scan is not trivial here: the logits move when A changes.
    let mut other = model(&device);
    other.mamba.layers[1].mixer.a_log =
        Param::from_tensor(other.mamba.layers[1].mixer.a_log.val().add_scalar(0.5));
    assert!(max_diff(&to_host(full.clone()), &to_host(other.forward(ids.clone()))) > 1e-2);

    let mut state = lm.mamba.initial_state(3, &device);
    let stepped: Vec<Tensor<3>> = (0..23)
        .map(|t| {
            let token = ids.clone().narrow(1, t, 1).reshape([3]);
            lm.step(token, &mut state).unsqueeze_dim::<3>(1)
        })
        .collect();
    let diff = max_diff(&to_host(full.clone()), &to_host(Tensor::cat(stepped, 1)));
    assert!(diff <= 1e-4, "step vs full: {diff:e}");

    // The state after stepping equals the state the full scan returns.
    let (_, prefilled) = lm.forward_prefill(ids.clone(), None);
    for (a, b) in state.layers.iter().zip(&prefilled.layers) {
        assert!(max_diff(&to_host(a.conv.clone()), &to_host(b.conv.clone())) <= 1e-4);
        assert!(max_diff(&to_host(a.ssm.clone()), &to_host(b.ssm.clone())) <= 1e-4);
    }
}

#[test]
fn prefill_then_steps_and_chunked_prefill_equal_the_full_forward() {
    let device = Device::flex();
    let lm = model(&device);
    let ids = random_ids(2, 19, 2, &device);
    let full = to_host(lm.forward(ids.clone()));
    // Prompts shorter than, equal to and longer than d_conv = 4.
    for prompt in [1, 3, 4, 11] {
        let (logits, mut state) = lm.forward_prefill(ids.clone().narrow(1, 0, prompt), None);
        let mut parts = vec![logits];
        for t in prompt..19 {
            let token = ids.clone().narrow(1, t, 1).reshape([2]);
            parts.push(lm.step(token, &mut state).unsqueeze_dim::<3>(1));
        }
        let diff = max_diff(&full, &to_host(Tensor::cat(parts, 1)));
        assert!(diff <= 1e-4, "prefill {prompt} + steps: {diff:e}");
    }
    // Prefill in chunks (2 + 7 + 10 tokens), each continuing from the last state.
    let (a, s) = lm.forward_prefill(ids.clone().narrow(1, 0, 2), None);
    let (b, s) = lm.forward_prefill(ids.clone().narrow(1, 2, 7), Some(s));
    let (c, _) = lm.forward_prefill(ids.clone().narrow(1, 9, 10), Some(s));
    let diff = max_diff(&full, &to_host(Tensor::cat(vec![a, b, c], 1)));
    assert!(diff <= 1e-4, "chunked prefill: {diff:e}");
}

#[test]
fn the_state_does_not_grow_with_generated_length() {
    let device = Device::flex();
    let lm = model(&device);
    let sampling = Sampling {
        temperature: 1.0,
        seed: 3,
    };
    let short = generate(&lm, &[1, 2, 3], 128, sampling).unwrap();
    let long = generate(&lm, &[1, 2, 3], 1024, sampling).unwrap();
    assert_eq!(short.tokens.len(), 128);
    assert_eq!(long.tokens.len(), 1024);
    assert_eq!(short.state.shapes(), long.state.shapes());
    // Per layer: conv [1, d_inner, d_conv] and ssm [1, d_inner, d_state].
    assert_eq!(short.state.shapes()[0], [vec![1, 48, 4], vec![1, 48, 8]]);
    assert!(long.state_numel.iter().all(|&n| n == short.state_numel[0]));
    assert_eq!(short.state.bytes(), 4 * 3 * 48 * (4 + 8));
    // The same seed gives the same text; the first 128 tokens agree.
    assert_eq!(short.tokens[..], long.tokens[..128]);
    // Bad prompts are errors, not panics.
    assert!(generate(&lm, &[], 4, sampling).is_err());
    assert!(generate(&lm, &[99], 4, sampling).is_err());
}

fn padded_batch(device: &Device) -> (MambaInput, Vec<Vec<i64>>) {
    let rows: Vec<Vec<i64>> = vec![
        vec![3, 9, 1, 4, 4, 20, 7],
        vec![5, 2, 30],
        vec![11, 0, 8, 6, 1],
    ];
    let t = 7;
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for r in &rows {
        for i in 0..t {
            ids.push(*r.get(i).unwrap_or(&0));
            mask.push(i >= r.len());
        }
    }
    let input = MambaInput {
        ids: Tensor::from_data(TensorData::new(ids, [3, t]), device),
        mask_pad: Some(Tensor::<2, Bool>::from_data(
            TensorData::new(mask, [3, t]),
            device,
        )),
    };
    (input, rows)
}

#[test]
fn layer_wise_trunk_equals_the_full_forward_and_ignores_right_padding() {
    let device = Device::flex();
    let lm = model(&device);
    for pooling in [Pooling::Last, Pooling::Mean] {
        let encoder = ponder_mamba::MambaEncoder {
            mamba: lm.mamba.clone(),
            mean_pool: pooling == Pooling::Mean,
        };
        let (input, rows) = padded_batch(&device);
        let mut hidden = encoder.embed(input.clone());
        for l in 0..encoder.n_layers() {
            hidden = encoder.forward_layer(l, hidden);
        }
        // All layers, layer by layer, equal the LM trunk's full forward.
        let full = lm.mamba.forward(input.ids.clone());
        let normed = lm.mamba.norm_f.forward(hidden.x.clone());
        assert!(max_diff(&to_host(full), &to_host(normed)) <= 1e-5);
        // Each padded row's features equal that row run alone without padding.
        let batched = to_host(encoder.features(&hidden));
        let d = 24;
        for (i, row) in rows.iter().enumerate() {
            let alone = MambaInput {
                ids: Tensor::from_data(TensorData::new(row.clone(), [1, row.len()]), &device),
                mask_pad: None,
            };
            let mut h = encoder.embed(alone);
            for l in 0..encoder.n_layers() {
                h = encoder.forward_layer(l, h);
            }
            let diff = max_diff(&batched[i * d..(i + 1) * d], &to_host(encoder.features(&h)));
            assert!(diff <= 1e-5, "{pooling:?} row {i}: {diff:e}");
        }
        // Dropping rows keeps the others unchanged.
        let kept = encoder.select_rows(hidden, ponder_core::index_tensor(&[2, 0], &device));
        let kept = to_host(encoder.features(&kept));
        assert!(max_diff(&kept[..d], &batched[2 * d..3 * d]) <= 1e-6);
    }
    // The config builds the same structure.
    let enc = MambaEncoderConfig::new(config())
        .with_pooling(Pooling::Mean)
        .init(&device);
    assert!(enc.mean_pool && enc.n_layers() == 3);
    assert!(enc.num_params() > 0);
}

#[test]
fn bad_weight_files_name_the_problem() {
    let device = Device::flex();
    let lm = model(&device);
    let dir = std::env::temp_dir().join(format!("ponder-mamba-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good =
        ponder_core::SafeTensors::from_bytes(dir.join("x"), state_spaces_bytes(&lm)).unwrap();
    let tensors = good.read_all().unwrap();
    let write = |name: &str, tensors: &[(String, Vec<usize>, Vec<f32>)]| {
        let path = dir.join(name);
        std::fs::write(&path, write_safetensors(tensors)).unwrap();
        load_state_spaces(&path, &device)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    // A missing tensor.
    let missing: Vec<_> = tensors
        .iter()
        .filter(|t| t.0 != "backbone.layers.1.mixer.D")
        .cloned()
        .collect();
    let err = write("missing.safetensors", &missing);
    assert!(
        err.contains("backbone.layers.1.mixer.D") && err.contains("missing"),
        "{err}"
    );
    // A tensor of the wrong shape.
    let mut wrong = tensors.clone();
    let i = wrong
        .iter()
        .position(|t| t.0 == "backbone.layers.2.mixer.A_log")
        .unwrap();
    wrong[i].1 = vec![8, 48];
    let err = write("wrong.safetensors", &wrong);
    assert!(err.contains("A_log") && err.contains("[8, 48]"), "{err}");
    // A tensor the model does not know.
    let mut extra = tensors.clone();
    extra.push(("backbone.layers.0.mixer.extra".into(), vec![1], vec![0.0]));
    let err = write("extra.safetensors", &extra);
    assert!(
        err.contains("does not use") && err.contains("mixer.extra"),
        "{err}"
    );
    // Not a Mamba file at all.
    let err = write(
        "other.safetensors",
        &[("encoder.weight".into(), vec![1], vec![0.0])],
    );
    assert!(err.contains("backbone.embedding.weight"), "{err}");
    // An untied head loads as a separate head.
    let mut untied = tensors.clone();
    untied.push(("lm_head.weight".into(), vec![37, 24], vec![0.5; 37 * 24]));
    let path = dir.join("untied.safetensors");
    std::fs::write(&path, write_safetensors(&untied)).unwrap();
    let (loaded, config) = load_state_spaces(&path, &device).unwrap();
    assert!(!config.tie_embeddings && loaded.lm_head.is_some());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn intermediate_predictions_end_at_the_full_logits() {
    let device = Device::flex();
    let lm = model(&device);
    let ids = random_ids(2, 9, 4, &device);
    let mut x = lm.mamba.embed(ids.clone());
    let mut per_layer = Vec::new();
    for block in &lm.mamba.layers {
        x = block.forward(x, None).0;
        per_layer.push(to_host(lm.logits(lm.mamba.norm_f.forward(x.clone()))));
    }
    assert_eq!(per_layer.last().unwrap(), &to_host(lm.forward(ids)));
    // earlier layers predict something else
    assert!(max_diff(&per_layer[0], per_layer.last().unwrap()) > 1e-3);
}
