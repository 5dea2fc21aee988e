//! Hugging Face decoder import: reference parity against `scripts/decoder_reference.py`
//! (NumPy, float64) for small GPT-2 and Llama (grouped-query attention, rotary positions)
//! checkpoints: every layer's hidden states and the logits of a right-padded batch, and
//! prefill then KV-cache steps against the full forward; bad and unsupported checkpoints
//! are errors naming the key or tensor; thousands of mutated files never panic.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use ponder_core::{SafeTensors, splitmix64 as next, to_host, write_safetensors};
use ponder_transformer::{
    DecoderFamily, DecoderLm, HfDecoderConfig, LoadedDecoder, load_decoder_from, load_hf_decoder,
};
use serde_json::Value;

fn data(name: &str) -> PathBuf {
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    root.join("tests/data").join(name)
}

fn ids(values: &[f32], shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
    let v: Vec<i64> = values.iter().map(|&x| x as i64).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Compares `got` `[2, 7, w]` with the reference at the real positions of each row.
fn check_real_positions(got: &[f32], want: &[f32], lengths: &[usize], w: usize, what: &str) {
    for (row, &len) in lengths.iter().enumerate() {
        let span = row * 7 * w..(row * 7 + len) * w;
        let d = max_diff(&got[span.clone()], &want[span]);
        assert!(d < 1e-4, "{what}, row {row}: {d}");
    }
}

fn check_parity(name: &str, family: DecoderFamily) -> DecoderLm {
    let device = Device::default();
    let loaded = load_hf_decoder(data(name), &device).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(loaded.hf.family, family);
    let lm = loaded.lm;
    let expected = SafeTensors::open(data(&format!("{name}.expected.safetensors"))).unwrap();
    let (d, v) = (lm.d_model(), lm.vocab_size());
    let padded = ids(
        &expected.read("padded_ids", &[2, 7]).unwrap(),
        [2, 7],
        &device,
    );
    let lengths: Vec<usize> = expected
        .read("lengths", &[2])
        .unwrap()
        .iter()
        .map(|&l| l as usize)
        .collect();
    // every layer's residual stream
    for (l, h) in lm.hidden_states(padded.clone()).into_iter().enumerate() {
        let want = expected.read(&format!("hidden.{l}"), &[2, 7, d]).unwrap();
        check_real_positions(
            &to_host(h),
            &want,
            &lengths,
            d,
            &format!("{name} layer {l}"),
        );
    }
    let want = expected.read("logits", &[2, 7, v]).unwrap();
    check_real_positions(
        &to_host(lm.forward(padded)),
        &want,
        &lengths,
        v,
        &format!("{name} logits"),
    );
    // prefill 3 tokens, then one KV-cache step per token
    let decode_ids = expected.read("decode_ids", &[2, 8]).unwrap();
    let want = expected.read("decode", &[2, 8, v]).unwrap();
    let all = ids(&decode_ids, [2, 8], &device);
    let (prefill, mut cache) = lm.forward_prefill(all.clone().narrow(1, 0, 3));
    let at = |t: usize| -> Vec<f32> {
        (0..2)
            .flat_map(|r| want[(r * 8 + t) * v..(r * 8 + t + 1) * v].to_vec())
            .collect()
    };
    let last = to_host(prefill.narrow(1, 2, 1));
    assert!(max_diff(&last, &at(2)) < 1e-4, "{name} prefill");
    for t in 3..8 {
        let step = lm.step(all.clone().narrow(1, t, 1).reshape([2]), &mut cache);
        let dd = max_diff(&to_host(step), &at(t));
        assert!(dd < 1e-4, "{name} step at position {t}: {dd}");
    }
    assert_eq!(cache.len(), 8);
    lm
}

#[test]
fn gpt2_matches_the_numpy_reference() {
    let lm = check_parity("tiny-gpt2", DecoderFamily::Gpt2);
    assert!(lm.lm_head.is_none(), "GPT-2's head is tied");
    assert!(lm.position_embedding.is_some());
}

#[test]
fn llama_with_grouped_query_attention_and_rotary_positions_matches_the_numpy_reference() {
    let lm = check_parity("tiny-llama", DecoderFamily::Llama);
    let block = &lm.layers[0];
    assert_eq!((block.n_heads, block.n_kv_heads), (4, 2));
    assert!(block.ff_gate.is_some() && block.rope_theta == Some(500.0));
    assert!(lm.position_embedding.is_none());
    // the cache holds the key/value heads only
    let device = Device::default();
    let (_, cache) = lm.forward_prefill(ids(&[1.0, 2.0, 3.0], [1, 3], &device));
    assert_eq!(cache.layers[0].k.as_ref().unwrap().dims(), [1, 2, 3, 4]);
}

/// A checkpoint's config.json and tensors, to be altered.
struct Checkpoint {
    config: Value,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

fn checkpoint(name: &str) -> Checkpoint {
    let dir = data(name);
    let config = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let file = SafeTensors::open(dir.join("model.safetensors")).unwrap();
    Checkpoint {
        config,
        tensors: file.read_all().unwrap(),
    }
}

fn load(config: &Value, bytes: Vec<u8>) -> Result<LoadedDecoder, String> {
    let hf =
        HfDecoderConfig::from_json(Path::new("config.json"), config).map_err(|e| e.to_string())?;
    let file = SafeTensors::from_bytes(PathBuf::from("mem.safetensors"), bytes)
        .map_err(|e| e.to_string())?;
    load_decoder_from(hf, &file, &Device::default()).map_err(|e| e.to_string())
}

#[test]
fn unsupported_configs_are_refused_by_name() {
    let llama = checkpoint("tiny-llama");
    let gpt2 = checkpoint("tiny-gpt2");
    let cases: Vec<(&Checkpoint, &str, Value, &str)> = vec![
        (&llama, "model_type", "gemma".into(), "gemma"),
        (
            &llama,
            "rope_scaling",
            serde_json::json!({"rope_type": "llama3", "factor": 8.0}),
            "rope_scaling",
        ),
        (&llama, "hidden_act", "gelu".into(), "hidden_act"),
        (&llama, "head_dim", 8.into(), "head_dim"),
        (&llama, "num_key_value_heads", 3.into(), "n_kv_heads"),
        (&llama, "hidden_size", (-4).into(), "hidden_size"),
        (
            &gpt2,
            "activation_function",
            "relu".into(),
            "activation_function",
        ),
        (
            &gpt2,
            "scale_attn_by_inverse_layer_idx",
            true.into(),
            "scale_attn_by_inverse_layer_idx",
        ),
        (&gpt2, "add_cross_attention", true.into(), "cross-attention"),
        (&gpt2, "n_head", 3.into(), "n_heads"),
    ];
    for (base, key, value, expect) in cases {
        let mut config = base.config.clone();
        config[key] = value;
        let err = load(&config, write_safetensors(&base.tensors)).unwrap_err();
        assert!(err.contains(expect), "{key}: {err}");
    }
    // a missing key
    let mut config = llama.config.clone();
    config.as_object_mut().unwrap().remove("num_hidden_layers");
    let err = load(&config, write_safetensors(&llama.tensors)).unwrap_err();
    assert!(
        err.contains("num_hidden_layers") && err.contains("missing"),
        "{err}"
    );
    // sliding windows (Mistral, Qwen2)
    let mut config = llama.config.clone();
    config["model_type"] = "mistral".into();
    config["sliding_window"] = 8.into();
    let err = load(&config, write_safetensors(&llama.tensors)).unwrap_err();
    assert!(err.contains("sliding_window"), "{err}");
    config["sliding_window"] = Value::Null;
    load(&config, write_safetensors(&llama.tensors)).expect("Mistral without a window loads");
    let mut config = llama.config.clone();
    config["model_type"] = "qwen2".into();
    config["use_sliding_window"] = true.into();
    let err = load(&config, write_safetensors(&llama.tensors)).unwrap_err();
    assert!(err.contains("use_sliding_window"), "{err}");
    // Qwen2 has biases on q, k and v, which this file lacks
    config["use_sliding_window"] = false.into();
    let err = load(&config, write_safetensors(&llama.tensors)).unwrap_err();
    assert!(
        err.contains("q_proj.bias") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn bad_weight_files_name_the_tensor() {
    for (name, victim) in [
        ("tiny-llama", "model.layers.1.self_attn.k_proj.weight"),
        ("tiny-gpt2", "transformer.h.1.attn.c_attn.weight"),
    ] {
        let base = checkpoint(name);
        // missing
        let missing: Vec<_> = base
            .tensors
            .iter()
            .filter(|t| t.0 != victim)
            .cloned()
            .collect();
        let err = load(&base.config, write_safetensors(&missing)).unwrap_err();
        assert!(err.contains(victim) && err.contains("missing"), "{err}");
        // misshaped: both shapes named
        let mut wrong = base.tensors.clone();
        let t = wrong.iter_mut().find(|t| t.0 == victim).unwrap();
        let (rows, cols) = (t.1[0], t.1[1]);
        t.1 = vec![cols, rows];
        let err = load(&base.config, write_safetensors(&wrong)).unwrap_err();
        assert!(
            err.contains(victim) && err.contains(&format!("{rows}")),
            "{err}"
        );
        // a tensor the model does not use
        let mut extra = base.tensors.clone();
        extra.push(("model.extra.weight".into(), vec![2], vec![0.0, 1.0]));
        let err = load(&base.config, write_safetensors(&extra)).unwrap_err();
        assert!(err.contains("model.extra.weight"), "{err}");
    }
    // config.json's sizes are checked against the tensors before allocating
    let base = checkpoint("tiny-llama");
    let mut config = base.config.clone();
    config["vocab_size"] = 100_000_000.into();
    let err = load(&config, write_safetensors(&base.tensors)).unwrap_err();
    assert!(
        err.contains("model.embed_tokens.weight") && err.contains("config.json"),
        "{err}"
    );
    let mut config = base.config.clone();
    config["num_hidden_layers"] = 2.into();
    let err = load(&config, write_safetensors(&base.tensors)).unwrap_err();
    assert!(err.contains("more layers"), "{err}");
    // a tied head must equal the embedding
    let base = checkpoint("tiny-gpt2");
    let mut tensors = base.tensors.clone();
    let wte = tensors
        .iter()
        .find(|t| t.0 == "transformer.wte.weight")
        .unwrap()
        .clone();
    let mut head = ("lm_head.weight".to_string(), wte.1.clone(), wte.2.clone());
    load(
        &base.config,
        write_safetensors(&[tensors.clone(), vec![head.clone()]].concat()),
    )
    .expect("a head equal to the embedding is tied");
    head.2[0] += 1.0;
    tensors.push(head);
    let err = load(&base.config, write_safetensors(&tensors)).unwrap_err();
    assert!(err.contains("tied-embedding mismatch"), "{err}");
    // a sharded checkpoint
    let dir = std::env::temp_dir().join(format!("ponder-hf-decoder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.safetensors.index.json"), "{}").unwrap();
    let err = load_hf_decoder(&dir, &Device::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("sharded"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mutated_files_and_configs_never_panic() {
    let mut rng = 11u64;
    let (mut ok, mut errors) = (0, 0);
    for name in ["tiny-gpt2", "tiny-llama"] {
        let base = checkpoint(name);
        let good = write_safetensors(&base.tensors);
        let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
        let config_text = serde_json::to_vec(&base.config).unwrap();
        for round in 0..1500 {
            let mut bytes = good.clone();
            let mut text = config_text.clone();
            match round % 3 {
                // header bytes flipped or overwritten with JSON punctuation
                0 => {
                    for _ in 0..1 + next(&mut rng) % 4 {
                        let i = (next(&mut rng) as usize) % (8 + header_len);
                        bytes[i] = b"{}[]\":,0123456789-eE."[(next(&mut rng) % 21) as usize];
                    }
                }
                // truncated
                1 => bytes.truncate((next(&mut rng) as usize) % bytes.len()),
                // config.json bytes overwritten (numbers, keys, structure)
                _ => {
                    for _ in 0..1 + next(&mut rng) % 3 {
                        let i = (next(&mut rng) as usize) % text.len();
                        text[i] = b"{}[]\":,0123456789-eE.tfn"[(next(&mut rng) % 24) as usize];
                    }
                }
            }
            let outcome = std::panic::catch_unwind(|| {
                let config: Value = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
                load(&config, bytes)
            });
            match outcome {
                Ok(Ok(_)) => ok += 1,
                Ok(Err(_)) => errors += 1,
                Err(_) => panic!("the loader panicked on {name}, round {round}"),
            }
        }
    }
    assert!(ok > 0 && errors > 1000, "ok {ok}, errors {errors}");
}
