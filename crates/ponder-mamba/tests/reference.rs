//! Reference parity: the weights and the expected values come from
//! `scripts/mamba_reference.py`, an independent NumPy implementation of the Mamba
//! equations (float64), which writes the weights in the `state-spaces/mamba` naming.
//! Loading that file also tests the weight import; the same weights in the Hugging Face
//! `MambaForCausalLM` layout (`tiny-mamba-hf/`, written by
//! `scripts/decoder_reference.py`) must give the same values, and bad Hugging Face
//! configs are errors naming the key, never panics.

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use ponder_core::to_host;
use ponder_mamba::{MambaConfig, MambaLm, MambaState, load_hf_mamba, load_state_spaces};
use serde_json::Value;

const TOL: f64 = 1e-4;

fn data(name: &str) -> PathBuf {
    // the folder cargo runs the test from, not the one it was compiled in: a build
    // folder shared between clones may hold a binary built in another clone
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("tests/data")
        .join(name)
}

fn reference() -> Value {
    let text = std::fs::read_to_string(data("mamba_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap()],
        other => panic!("unexpected {other}"),
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= TOL,
        "{what}: max abs difference {worst:e} > {TOL:e}"
    );
}

fn ids(r: &Value, device: &Device) -> Tensor<2, Int> {
    let rows: Vec<Vec<i64>> = r["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect()
        })
        .collect();
    let (b, t) = (rows.len(), rows[0].len());
    Tensor::from_data(TensorData::new(rows.concat(), [b, t]), device)
}

#[test]
fn matches_the_numpy_reference() {
    let device = Device::flex();
    let (lm, config) = load_state_spaces(data("mamba_reference.safetensors"), &device).unwrap();
    check_reference(&lm, &config, &device);
}

#[test]
fn the_hugging_face_layout_matches_the_numpy_reference() {
    let device = Device::flex();
    let (lm, config) = load_hf_mamba(data("tiny-mamba-hf"), &device).unwrap();
    check_reference(&lm, &config, &device);
}

fn check_reference(lm: &MambaLm, config: &MambaConfig, device: &Device) {
    let device = device.clone();
    let r = reference();
    let c = &r["config"];
    assert_eq!(config.vocab_size as u64, c["vocab_size"].as_u64().unwrap());
    assert_eq!(config.n_layers as u64, c["n_layer"].as_u64().unwrap());
    assert_eq!(config.d_inner() as u64, c["d_inner"].as_u64().unwrap());
    assert_eq!(config.dt_rank() as u64, c["dt_rank"].as_u64().unwrap());
    assert!(config.tie_embeddings && lm.lm_head.is_none());
    let ids = ids(&r, &device);
    let [b, t] = ids.dims();

    // Logits of the full-sequence scan.
    assert_close(
        "logits",
        &to_host(lm.forward(ids.clone())),
        &flat(&r["logits"]),
    );

    // The residual stream after each block, layer 0's mixer output and the final states.
    let mut x = lm.mamba.embed(ids.clone());
    let mixer0 = lm.mamba.layers[0]
        .mixer
        .forward(lm.mamba.layers[0].norm.forward(x.clone()), None)
        .0;
    assert_close(
        "mixer_out_layer0",
        &to_host(mixer0),
        &flat(&r["mixer_out_layer0"]),
    );
    for (i, block) in lm.mamba.layers.iter().enumerate() {
        let (next, state) = block.forward(x, None);
        x = next;
        assert_close(
            &format!("hidden[{i}]"),
            &to_host(x.clone()),
            &flat(&r["hidden"][i]),
        );
        assert_close(
            &format!("conv state[{i}]"),
            &to_host(state.conv),
            &flat(&r["final_conv_state"][i]),
        );
        assert_close(
            &format!("ssm state[{i}]"),
            &to_host(state.ssm),
            &flat(&r["final_ssm_state"][i]),
        );
    }

    // Prefill prompts shorter than, equal to and longer than d_conv = 4 (zero-padded,
    // exact and sliced conv states), check the states, then step the remaining tokens.
    for prompt in [2usize, 4, 5] {
        let key = prompt.to_string();
        let (_, mut state): (_, MambaState) =
            lm.forward_prefill(ids.clone().narrow(1, 0, prompt), None);
        let want = &r["prefill_states"][&key];
        for (i, layer) in state.layers.iter().enumerate() {
            assert_close(
                &format!("prefill {prompt}: conv state[{i}]"),
                &to_host(layer.conv.clone()),
                &flat(&want["conv"][i]),
            );
            assert_close(
                &format!("prefill {prompt}: ssm state[{i}]"),
                &to_host(layer.ssm.clone()),
                &flat(&want["ssm"][i]),
            );
        }
        let mut stepped = Vec::new();
        for pos in prompt..t {
            let token = ids.clone().narrow(1, pos, 1).reshape([b]);
            stepped.push(lm.step(token, &mut state).unsqueeze_dim::<3>(1));
        }
        let stepped = Tensor::cat(stepped, 1);
        assert_close(
            &format!("prefill {prompt} then step"),
            &to_host(stepped),
            &flat(&r["prefill_then_step"][&key]),
        );
    }
}

#[test]
fn export_then_import_gives_the_same_model() {
    let device = Device::flex();
    let (lm, _) = load_state_spaces(data("mamba_reference.safetensors"), &device).unwrap();
    let dir = std::env::temp_dir().join(format!("ponder-mamba-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    std::fs::write(&path, ponder_mamba::state_spaces_bytes(&lm)).unwrap();
    let (again, _) = load_state_spaces(&path, &device).unwrap();
    let ids = ids(&reference(), &device);
    assert_eq!(
        to_host(lm.forward(ids.clone())),
        to_host(again.forward(ids))
    );
    // The exported file holds exactly the reference's tensors (tied head: no lm_head).
    let original = ponder_core::SafeTensors::open(data("mamba_reference.safetensors")).unwrap();
    let exported = ponder_core::SafeTensors::open(&path).unwrap();
    assert_eq!(original.names(), exported.names());
    std::fs::remove_dir_all(&dir).ok();
}

/// Loads `tiny-mamba-hf` with its config.json replaced by `config` (or its weights by
/// `weights`).
fn load_hf_with(
    config: &[u8],
    weights: Option<&[u8]>,
    dir: &std::path::Path,
) -> Result<(), String> {
    std::fs::write(dir.join("config.json"), config).unwrap();
    let original = std::fs::read(data("tiny-mamba-hf/model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), weights.unwrap_or(&original)).unwrap();
    load_hf_mamba(dir, &Device::flex())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn bad_hugging_face_configs_name_the_key() {
    let dir = std::env::temp_dir().join(format!("ponder-mamba-hf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good: Value =
        serde_json::from_slice(&std::fs::read(data("tiny-mamba-hf/config.json")).unwrap()).unwrap();
    load_hf_with(&serde_json::to_vec(&good).unwrap(), None, &dir).unwrap();
    for (key, value, expect) in [
        ("state_size", Value::from(8), "state_size"),
        ("num_hidden_layers", Value::from(3), "num_hidden_layers"),
        ("conv_kernel", Value::from(2), "conv_kernel"),
        ("time_step_rank", Value::from(5), "time_step_rank"),
        ("use_conv_bias", Value::from(false), "use_conv_bias"),
        ("hidden_act", Value::from("gelu"), "hidden_act"),
        ("model_type", Value::from("llama"), "model_type"),
        (
            "layer_norm_epsilon",
            Value::from(-1.0),
            "layer_norm_epsilon",
        ),
    ] {
        let mut config = good.clone();
        config[key] = value;
        let err = load_hf_with(&serde_json::to_vec(&config).unwrap(), None, &dir).unwrap_err();
        assert!(err.contains(expect), "{key}: {err}");
    }
    // "auto" is ⌈d/16⌉
    let mut config = good.clone();
    config["time_step_rank"] = "auto".into();
    load_hf_with(&serde_json::to_vec(&config).unwrap(), None, &dir).unwrap();
    // the state-spaces file (embedding named differently) is not a Hugging Face one
    let state_spaces = std::fs::read(data("mamba_reference.safetensors")).unwrap();
    let err = load_hf_with(
        &serde_json::to_vec(&good).unwrap(),
        Some(&state_spaces),
        &dir,
    )
    .unwrap_err();
    assert!(err.contains("backbone.embeddings.weight"), "{err}");
    // mutated config.json files never panic
    let text = serde_json::to_vec(&good).unwrap();
    let mut state = 5u64;
    let mut next = || ponder_core::splitmix64(&mut state) as usize;
    let (mut ok, mut errors) = (0, 0);
    for round in 0..400 {
        let mut bytes = text.clone();
        for _ in 0..1 + next() % 3 {
            let i = next() % bytes.len();
            bytes[i] = b"{}[]\":,0123456789-eE.tfn"[next() % 24];
        }
        match std::panic::catch_unwind(|| load_hf_with(&bytes, None, &dir)) {
            Ok(Ok(())) => ok += 1,
            Ok(Err(_)) => errors += 1,
            Err(_) => panic!("the loader panicked on round {round}"),
        }
    }
    assert!(ok > 0 && errors > 100, "ok {ok}, errors {errors}");
    std::fs::remove_dir_all(&dir).ok();
}
