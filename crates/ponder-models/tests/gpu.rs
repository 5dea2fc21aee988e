//! The runtime's equivalences on a GPU backend: burn's CUDA backend when built with
//! `--features cuda` (`scripts/gpu-check.sh`), otherwise its wgpu backend (`--features
//! wgpu`; CI runs it over a software Vulkan device). The same weights give the same
//! logits on the GPU as on the CPU, and a mixed-exit batch equals each row run alone; the Mamba
//! scan, its recurrent step and a Mamba multi-exit classifier match the CPU too, and so
//! does token-level exit decoding on both language models.
#![cfg(any(feature = "wgpu", feature = "cuda"))]

mod support;

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use ponder_exits::{FixedLayer, NeverExit};
use ponder_models::MultiExitConfig;
use ponder_transformer::{EncoderConfig, EncoderInput};
use support::{Planned, host, max_abs_diff};

/// The device under test: CUDA device 0 in a build with the `cuda` feature, otherwise
/// wgpu's default adapter.
fn gpu() -> Device {
    let name = if cfg!(feature = "cuda") {
        "cuda"
    } else {
        "wgpu"
    };
    ponder_core::device_named(name)
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

#[test]
fn gpu_runner_matches_cpu_and_rows_run_alone() {
    let cpu = Device::flex();
    cpu.seed(3);
    let config = MultiExitConfig::new(EncoderConfig::tiny_vit().with_dropout(0.0).into(), 10)
        .with_head_dropout(0.0);
    let model_cpu = config.init(&cpu).valid();
    let gpu = gpu();
    let model_gpu = model_cpu.clone().to_device(&gpu);

    let images_cpu = Tensor::<4>::random([4, 1, 28, 28], Distribution::Normal(0.0, 1.0), &cpu);
    let images_gpu = images_cpu.clone().to_device(&gpu);

    // same weights, same input: same full-depth logits
    let full_cpu = host(
        model_cpu
            .adaptive(EncoderInput::Images(images_cpu.clone()), &NeverExit, None)
            .logits,
    );
    let full_gpu = host(
        model_gpu
            .adaptive(EncoderInput::Images(images_gpu.clone()), &NeverExit, None)
            .logits,
    );
    let diff = max_abs_diff(&full_cpu, &full_gpu);
    assert!(
        diff < 1e-3,
        "GPU and CPU full-depth logits differ by {diff}"
    );

    // mixed exits on the GPU equal each row alone, cut at its exit layer
    let plan = vec![3, 1, 4, 2];
    let out = model_gpu.adaptive(
        EncoderInput::Images(images_gpu.clone()),
        &Planned(plan.clone()),
        None,
    );
    assert_eq!(out.exit_layer, plan);
    let logits = host(out.logits);
    for (row, &layer) in plan.iter().enumerate() {
        let alone = model_gpu.adaptive(
            EncoderInput::Images(images_gpu.clone().narrow(0, row, 1)),
            &FixedLayer::new(layer).unwrap(),
            None,
        );
        let diff = max_abs_diff(&logits[row * 10..(row + 1) * 10], &host(alone.logits));
        assert!(
            diff < 1e-4,
            "row {row}: batched and alone differ by {diff} on the GPU"
        );
    }
}

#[test]
fn gpu_halting_heads_match_cpu() {
    use ponder_exits::{Expectation, HaltingHeadConfig};
    let cpu = Device::flex();
    cpu.seed(5);
    let encoder = EncoderConfig::tiny_vit()
        .with_dropout(0.0)
        .with_share_layers(true);
    let config = MultiExitConfig::new(encoder.clone().into(), 10)
        .with_shared_head(true)
        .with_head_dropout(0.0)
        .with_halting(Some(
            HaltingHeadConfig::palbert(encoder.d_model).with_dropout(0.0),
        ));
    let model_cpu = config.init(&cpu).valid();
    let gpu = gpu();
    let model_gpu = model_cpu.clone().to_device(&gpu);
    let images_cpu = Tensor::<4>::random([3, 1, 28, 28], Distribution::Normal(0.0, 1.0), &cpu);
    let images_gpu = images_cpu.clone().to_device(&gpu);

    // λ of every layer (the Lambda layer reads the previous layer's features)
    let lambdas = |out: ponder_core::AllLayersOutput| -> Vec<f32> {
        out.halting
            .into_iter()
            .flat_map(|h| h.unwrap().try_into_vec_as::<f32>().unwrap())
            .collect()
    };
    let l_cpu = lambdas(model_cpu.forward_all(EncoderInput::Images(images_cpu.clone())));
    let l_gpu = lambdas(model_gpu.forward_all(EncoderInput::Images(images_gpu.clone())));
    let diff = max_abs_diff(&l_cpu, &l_gpu);
    assert!(diff < 1e-4, "GPU and CPU λ differ by {diff}");

    // the expectation (a policy that makes its own outputs) through the runner
    let policy = Expectation::new(0.0).unwrap();
    let e_cpu = host(
        model_cpu
            .adaptive(EncoderInput::Images(images_cpu), &policy, None)
            .logits,
    );
    let e_gpu = host(
        model_gpu
            .adaptive(EncoderInput::Images(images_gpu), &policy, None)
            .logits,
    );
    let diff = max_abs_diff(&e_cpu, &e_gpu);
    assert!(diff < 1e-3, "GPU and CPU expectations differ by {diff}");
}

#[test]
fn gpu_mamba_scan_step_and_runner_match_cpu() {
    use burn::tensor::{Int, TensorData};
    use ponder_mamba::{MambaConfig, MambaEncoderConfig};
    let cpu = Device::flex();
    cpu.seed(9);
    let mamba = MambaConfig::new(50, 16, 3).with_d_state(4);
    let gpu = gpu();

    // The language model: the full-sequence scan and the recurrent step, on both devices.
    // Mamba's initialisation makes Δ, B and C tiny; scale them (and the embedding) so
    // the scan really moves the logits and a broken scan could not pass.
    let mut lm_cpu = mamba.init_lm(&cpu).valid();
    for block in lm_cpu.mamba.layers.iter_mut() {
        let m = &mut block.mixer;
        m.x_proj.weight = m.x_proj.weight.clone().map(|w| w.mul_scalar(4.0));
        m.dt_proj.bias = m.dt_proj.bias.clone().map(|b| b.map(|b| b.add_scalar(1.5)));
    }
    lm_cpu.mamba.embedding.weight = lm_cpu
        .mamba
        .embedding
        .weight
        .clone()
        .map(|w| w.mul_scalar(50.0));
    let lm_gpu = lm_cpu.clone().to_device(&gpu);
    let ids: Vec<i64> = vec![3, 17, 5, 44, 9, 1, 30, 2, 8, 21, 6, 13];
    let ids_cpu = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, 6]), &cpu);
    let ids_gpu = ids_cpu.clone().to_device(&gpu);
    let full_cpu = lm_cpu
        .forward(ids_cpu.clone())
        .try_into_vec_as::<f32>()
        .unwrap();
    let full_gpu = lm_gpu
        .forward(ids_gpu.clone())
        .try_into_vec_as::<f32>()
        .unwrap();
    let diff = max_abs_diff(&full_cpu, &full_gpu);
    assert!(diff < 1e-3, "GPU and CPU scans differ by {diff}");
    let mut state = lm_gpu.mamba.initial_state(2, &gpu);
    let stepped: Vec<Tensor<3>> = (0..6)
        .map(|t| {
            let token = ids_gpu.clone().narrow(1, t, 1).reshape([2]);
            lm_gpu.step(token, &mut state).unsqueeze_dim::<3>(1)
        })
        .collect();
    let stepped = Tensor::cat(stepped, 1).try_into_vec_as::<f32>().unwrap();
    let diff = max_abs_diff(&full_gpu, &stepped);
    assert!(diff < 1e-4, "GPU step and scan differ by {diff}");

    // The multi-exit classifier through the runner.
    let config =
        MultiExitConfig::new(MambaEncoderConfig::new(mamba).into(), 3).with_head_dropout(0.0);
    let model_cpu = config.init(&cpu).valid();
    let model_gpu = model_cpu.clone().to_device(&gpu);
    let input = |ids: Tensor<2, Int>| EncoderInput::Tokens {
        ids,
        type_ids: None,
        mask_pad: None,
    };
    let plan = vec![2, 3];
    let out_cpu = model_cpu.adaptive(input(ids_cpu), &Planned(plan.clone()), None);
    let out_gpu = model_gpu.adaptive(input(ids_gpu), &Planned(plan.clone()), None);
    assert_eq!(out_gpu.exit_layer, plan);
    let diff = max_abs_diff(&host(out_cpu.logits), &host(out_gpu.logits));
    assert!(diff < 1e-3, "GPU and CPU Mamba exits differ by {diff}");
}

#[test]
fn gpu_jei_gates_match_cpu() {
    // JEI-DNN's gates read top-2, entropies and a softmax of the exit's logits: the same
    // weights give the same gate values and the same exits under the gate rule on the GPU
    let cpu = Device::flex();
    cpu.seed(5);
    let config = MultiExitConfig::new(EncoderConfig::tiny_vit().with_dropout(0.0).into(), 10)
        .with_head_dropout(0.0)
        .with_gates(true);
    let model_cpu = config.init(&cpu).valid();
    let gpu = gpu();
    let model_gpu = model_cpu.clone().to_device(&gpu);
    let images_cpu = Tensor::<4>::random([6, 1, 28, 28], Distribution::Normal(0.0, 1.0), &cpu);
    let images_gpu = images_cpu.clone().to_device(&gpu);
    let all_cpu = model_cpu.forward_all(EncoderInput::Images(images_cpu.clone()));
    let all_gpu = model_gpu.forward_all(EncoderInput::Images(images_gpu.clone()));
    for (l, (a, b)) in all_cpu.halting.iter().zip(&all_gpu.halting).enumerate() {
        match (a, b) {
            (Some(a), Some(b)) => {
                let (a, b) = (
                    a.clone().try_into_vec_as::<f32>().unwrap(),
                    b.clone().try_into_vec_as::<f32>().unwrap(),
                );
                let diff = max_abs_diff(&a, &b);
                assert!(diff < 1e-4, "gate {l}: GPU and CPU differ by {diff}");
            }
            (None, None) => assert_eq!(
                l + 1,
                all_cpu.logits.len(),
                "only the final exit has no gate"
            ),
            _ => panic!("layer {l}: gates on one device only"),
        }
    }
    let features = |d: &Device| {
        let logits =
            Tensor::<2>::random([5, 10], Distribution::Normal(0.0, 3.0), &cpu).to_device(d);
        host(ponder_exits::jei::confidence_features(logits))
    };
    cpu.seed(9);
    let f_cpu = features(&cpu);
    cpu.seed(9);
    let f_gpu = features(&gpu);
    assert!(max_abs_diff(&f_cpu, &f_gpu) < 1e-4);
    let rule = ponder_exits::LearnedGate::new(0.5).unwrap();
    let out_cpu = model_cpu.adaptive(EncoderInput::Images(images_cpu), &rule, None);
    let out_gpu = model_gpu.adaptive(EncoderInput::Images(images_gpu), &rule, None);
    assert_eq!(out_cpu.exit_layer, out_gpu.exit_layer);
}

/// Token-level exits on the GPU: the transformer decoder's and the Mamba LM's decoding
/// with a fixed exit (skipped layers' caches recomputed) and at full depth emit the
/// same tokens as on the CPU, and the decoder's logits match.
#[test]
fn gpu_token_exits_match_cpu() {
    use ponder_core::SkipRule;
    use ponder_exits::token::{TokenExitConfig, TokenRule};
    use ponder_models::decode;
    let cpu = Device::flex();
    cpu.seed(5);
    let gpu = gpu();
    // embeddings scaled up so that logits are far apart (no argmax near-ties)
    let mut decoder_cpu = ponder_transformer::DecoderConfig::new(23, 16, 2, 3, 32, 32)
        .init_lm(&cpu)
        .valid();
    decoder_cpu.token_embedding.weight = decoder_cpu
        .token_embedding
        .weight
        .clone()
        .map(|w| w.mul_scalar(30.0));
    let decoder_gpu = decoder_cpu.clone().to_device(&gpu);
    let mut mamba_cpu = ponder_mamba::MambaConfig::new(23, 16, 3)
        .with_d_state(4)
        .init_lm(&cpu)
        .valid();
    mamba_cpu.mamba.embedding.weight = mamba_cpu
        .mamba
        .embedding
        .weight
        .clone()
        .map(|w| w.mul_scalar(30.0));
    let mamba_gpu = mamba_cpu.clone().to_device(&gpu);
    let prompts: Vec<Vec<usize>> = (0..3)
        .map(|r| (0..5).map(|i| (r * 7 + i * 3 + 1) % 23).collect())
        .collect();
    let ids = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(
            prompts
                .iter()
                .flatten()
                .map(|&t| t as i64)
                .collect::<Vec<_>>(),
            [3, 5],
        ),
        &cpu,
    );
    let logits_cpu = decoder_cpu.forward(ids.clone());
    let logits_gpu = decoder_gpu.forward(ids.to_device(&gpu));
    let diff = max_abs_diff(
        &logits_cpu.try_into_vec_as::<f32>().unwrap(),
        &logits_gpu.try_into_vec_as::<f32>().unwrap(),
    );
    assert!(diff < 1e-4, "decoder logits differ by {diff}");
    for rule in [TokenRule::Never, TokenRule::Fixed(1), TokenRule::Fixed(2)] {
        let config = |skip_rule| TokenExitConfig {
            rule,
            exits: vec![1, 2],
            skip_rule,
            always_run_last: rule == TokenRule::Fixed(1),
        };
        let c = config(SkipRule::Recompute);
        let t_cpu = decode(&decoder_cpu, &c, None, &prompts, 8, None, None).unwrap();
        let t_gpu = decode(&decoder_gpu, &c, None, &prompts, 8, None, None).unwrap();
        assert_eq!(t_cpu.tokens, t_gpu.tokens, "decoder, {rule:?}");
        assert_eq!(t_cpu.flops, t_gpu.flops);
        let m_cpu = decode(&mamba_cpu, &c, None, &prompts, 8, None, None).unwrap();
        let m_gpu = decode(&mamba_gpu, &c, None, &prompts, 8, None, None).unwrap();
        assert_eq!(m_cpu.tokens, m_gpu.tokens, "mamba, {rule:?}");
    }
}
