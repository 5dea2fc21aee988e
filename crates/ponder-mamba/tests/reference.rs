//! Reference parity: the weights and the expected values come from
//! `scripts/mamba_reference.py`, an independent NumPy implementation of the Mamba
//! equations (float64), which writes the weights in the `state-spaces/mamba` naming.
//! Loading that file also tests the weight import.

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use ponder_core::to_host;
use ponder_mamba::{MambaState, load_state_spaces};
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
    let r = reference();
    let (lm, config) = load_state_spaces(data("mamba_reference.safetensors"), &device).unwrap();
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
