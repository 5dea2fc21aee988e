//! Hugging Face encoder import: reference parity against `scripts/encoder_reference.py`
//! (NumPy, float64) for small BERT, RoBERTa and ALBERT checkpoints and, when
//! `data/all-minilm-l6-v2` is present, for all-MiniLM-L6-v2 (token ids from the
//! tokenizer, all six layers' hidden states and the pooler's output, of sentences and of
//! sentence pairs with their segment ids); bad weight files are errors naming the
//! tensor; thousands of random and mutated files never make the loader panic.

use std::path::PathBuf;

use burn::module::Module;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use ponder_core::{SafeTensors, splitmix64 as next, to_host, write_safetensors};
use ponder_transformer::{
    EncoderInput, HfConfig, HfLayout, LoadedEncoder, load_from, load_hf_encoder,
};

fn root() -> PathBuf {
    // the folder cargo runs the test from (a build folder shared between clones may
    // hold a binary compiled in another clone)
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

fn data(name: &str) -> PathBuf {
    root().join("tests/data").join(name)
}

fn ints(file: &SafeTensors, name: &str) -> Vec<i64> {
    // the reference stores ids as I64; read the raw little-endian bytes through a copy
    let bytes = std::fs::read(file.path()).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let entry = &header[name];
    assert_eq!(entry["dtype"], "I64");
    let [a, b] = [0, 1].map(|i| entry["data_offsets"][i].as_u64().unwrap() as usize);
    bytes[8 + header_len + a..8 + header_len + b]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The embedding output and every layer's output `[batch, t, H]`, flattened.
fn states(
    loaded: &LoadedEncoder,
    ids: &[i64],
    shape: [usize; 2],
    pad: Option<Vec<bool>>,
) -> Vec<Vec<f32>> {
    states_with_types(loaded, ids, None, shape, pad).0
}

/// As [`states`], with segment ids; and the pooled output of the last layer
/// `[batch, H]`.
fn states_with_types(
    loaded: &LoadedEncoder,
    ids: &[i64],
    types: Option<&[i64]>,
    shape: [usize; 2],
    pad: Option<Vec<bool>>,
) -> (Vec<Vec<f32>>, Vec<f32>) {
    let device = Device::default();
    let encoder = loaded.encoder.clone().valid();
    let int = |v: &[i64]| Tensor::<2, Int>::from_data(TensorData::new(v.to_vec(), shape), &device);
    let mask_pad = pad.map(|p| Tensor::<2, Bool>::from_data(TensorData::new(p, shape), &device));
    let mut state = encoder.embed_input(EncoderInput::Tokens {
        ids: int(ids),
        type_ids: types.map(int),
        mask_pad,
    });
    let mut out = vec![to_host(state.x.clone())];
    for l in 0..loaded.config.n_layers {
        state = encoder.layer_forward(l, state);
        out.push(to_host(state.x.clone()));
    }
    (out, to_host(encoder.pooled(&state)))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn small_checkpoints_match_the_numpy_reference() {
    for (kind, layout) in [
        ("bert", HfLayout::Bert),
        ("roberta", HfLayout::Roberta),
        ("albert", HfLayout::Albert),
    ] {
        let dir = data(&format!("tiny-{kind}"));
        let loaded = load_hf_encoder(
            dir.join("config.json"),
            dir.join("model.safetensors"),
            &Device::default(),
        )
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(loaded.layout, layout);
        assert!(loaded.pooler_loaded);
        let expected =
            SafeTensors::open(data(&format!("tiny-{kind}.expected.safetensors"))).unwrap();
        let ids = ints(&expected, "ids");
        let mask = ints(&expected, "mask");
        let pad: Vec<bool> = mask.iter().map(|&m| m == 0).collect();
        let h = loaded.config.d_model;
        let (got, pooled) = states_with_types(&loaded, &ids, None, [2, 7], Some(pad));
        // the pooler on [CLS] (token 0 is real in both rows)
        let want = expected.read("pooled", &[2, h]).unwrap();
        let d = max_diff(&pooled, &want);
        assert!(d < 1e-4, "{kind} pooled: {d}");
        // ALBERT's reference embedding output is E wide (before the E → H map)
        let first = if layout == HfLayout::Albert { 1 } else { 0 };
        for (l, state) in got.iter().enumerate().skip(first) {
            let want = expected.read(&format!("state.{l}"), &[2, 7, h]).unwrap();
            // real tokens only (RoBERTa numbers padding positions differently)
            for (t, &m) in mask.iter().enumerate() {
                if m == 1 {
                    let d = max_diff(&state[t * h..(t + 1) * h], &want[t * h..(t + 1) * h]);
                    assert!(d < 1e-4, "{kind} state {l} token {t}: {d}");
                }
            }
        }
    }
}

#[test]
fn all_minilm_l6_v2_matches_the_numpy_reference() {
    let dir = root().join("../../data/all-minilm-l6-v2");
    if !dir.is_dir() {
        eprintln!(
            "note: {} is absent, skipping (scripts/fetch-data.sh minilm)",
            dir.display()
        );
        return;
    }
    let loaded = load_hf_encoder(
        dir.join("config.json"),
        dir.join("model.safetensors"),
        &Device::default(),
    )
    .unwrap();
    assert_eq!(loaded.layout, HfLayout::Bert);
    assert_eq!(loaded.config.n_layers, 6);
    assert!(loaded.pooler_loaded, "all-MiniLM-L6-v2 ships a pooler");
    let expected = SafeTensors::open(data("minilm.expected.safetensors")).unwrap();
    let sentences: Vec<String> =
        serde_json::from_slice(&std::fs::read(data("minilm.sentences.json")).unwrap()).unwrap();
    let tokenizer = ponder_data::TextTokenizer::from_file(&dir).unwrap();
    for (n, sentence) in sentences.iter().enumerate() {
        let ids = ints(&expected, &format!("ids.{n}"));
        let ours: Vec<i64> = tokenizer
            .encode(sentence, 128)
            .unwrap()
            .ids
            .iter()
            .map(|&i| i as i64)
            .collect();
        assert_eq!(ours, ids, "token ids of {sentence:?}");
        let t = ids.len();
        let (got, pooled) = states_with_types(&loaded, &ids, None, [1, t], None);
        for (l, state) in got.iter().enumerate() {
            let want = expected.read(&format!("state.{n}.{l}"), &[t, 384]).unwrap();
            let d = max_diff(state, &want);
            assert!(d < 1e-4, "sentence {n}, state {l}: {d}");
        }
        let want = expected.read(&format!("pooled.{n}"), &[384]).unwrap();
        let d = max_diff(&pooled, &want);
        assert!(d < 1e-4, "sentence {n}, pooled: {d}");
    }
    // sentence pairs (GLUE's pair tasks): ids and segment ids from the tokenizer equal
    // the script's, and the second segment's token-type embedding is the checkpoint's
    let pairs: Vec<[String; 2]> =
        serde_json::from_slice(&std::fs::read(data("minilm.pairs.json")).unwrap()).unwrap();
    assert!(!pairs.is_empty());
    for (n, [a, b]) in pairs.iter().enumerate() {
        let ids = ints(&expected, &format!("pair_ids.{n}"));
        let types = ints(&expected, &format!("pair_types.{n}"));
        assert!(types.contains(&1));
        let encoded = tokenizer.encode_pair(a, b, 128).unwrap();
        let widen = |v: &[u32]| v.iter().map(|&i| i as i64).collect::<Vec<_>>();
        assert_eq!(widen(&encoded.ids), ids, "token ids of {a:?} / {b:?}");
        assert_eq!(
            widen(&encoded.type_ids),
            types,
            "segment ids of {a:?} / {b:?}"
        );
        let t = ids.len();
        let (got, pooled) = states_with_types(&loaded, &ids, Some(&types), [1, t], None);
        for (l, state) in got.iter().enumerate() {
            let want = expected
                .read(&format!("pair_state.{n}.{l}"), &[t, 384])
                .unwrap();
            let d = max_diff(state, &want);
            assert!(d < 1e-4, "pair {n}, state {l}: {d}");
        }
        let want = expected.read(&format!("pair_pooled.{n}"), &[384]).unwrap();
        let d = max_diff(&pooled, &want);
        assert!(d < 1e-4, "pair {n}, pooled: {d}");
        // without the segment ids the embedding output differs: the types are used
        let untyped = states(&loaded, &ids, [1, t], None);
        assert!(max_diff(&untyped[0], &got[0]) > 1e-3);
    }
}

/// A tensor's name, shape and values.
type Named = (String, Vec<usize>, Vec<f32>);

fn tiny_bert() -> (HfConfig, Vec<Named>) {
    let dir = data("tiny-bert");
    let config = HfConfig::read(dir.join("config.json")).unwrap();
    let file = SafeTensors::open(dir.join("model.safetensors")).unwrap();
    (config, file.read_all().unwrap())
}

fn load_bytes(config: &HfConfig, bytes: Vec<u8>) -> Result<LoadedEncoder, String> {
    let file = SafeTensors::from_bytes(PathBuf::from("mem.safetensors"), bytes)
        .map_err(|e| e.to_string())?;
    load_from(config, &file, &Device::default()).map_err(|e| e.to_string())
}

#[test]
fn bad_weight_files_name_the_tensor() {
    let (config, tensors) = tiny_bert();
    let name = "bert.encoder.layer.1.attention.self.key.weight";
    // missing
    let missing: Vec<_> = tensors.iter().filter(|t| t.0 != name).cloned().collect();
    let err = load_bytes(&config, write_safetensors(&missing)).unwrap_err();
    assert!(err.contains(name) && err.contains("missing"), "{err}");
    // wrong shape: expected and actual shapes named
    let wrong: Vec<_> = tensors
        .iter()
        .map(|t| {
            if t.0 == name {
                (t.0.clone(), vec![16, 8], t.2[..128].to_vec())
            } else {
                t.clone()
            }
        })
        .collect();
    let err = load_bytes(&config, write_safetensors(&wrong)).unwrap_err();
    assert!(
        err.contains(name) && err.contains("[16, 8]") && err.contains("[16, 16]"),
        "{err}"
    );
    // an extra tensor the encoder does not use
    let mut extra = tensors.clone();
    extra.push((
        "bert.encoder.layer.9.output.dense.weight".into(),
        vec![2],
        vec![0.0, 1.0],
    ));
    let err = load_bytes(&config, write_safetensors(&extra)).unwrap_err();
    assert!(
        err.contains("bert.encoder.layer.9.output.dense.weight"),
        "{err}"
    );
    // truncated
    let bytes = write_safetensors(&tensors);
    let err = load_bytes(&config, bytes[..bytes.len() - 10].to_vec()).unwrap_err();
    assert!(
        err.contains("byte range") || err.contains("claims"),
        "{err}"
    );
    // wrong dtype: the key weight's 1024 bytes relabelled as 128 I64 values
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let offsets = header[name]["data_offsets"].clone();
    header[name] = serde_json::json!({"dtype": "I64", "shape": [16, 8], "data_offsets": offsets});
    let text = serde_json::to_vec(&header).unwrap();
    let mut relabelled = (text.len() as u64).to_le_bytes().to_vec();
    relabelled.extend(&text);
    relabelled.extend(&bytes[8 + header_len..]);
    let err = load_bytes(&config, relabelled).unwrap_err();
    assert!(err.contains(name) && err.contains("I64"), "{err}");
    // an old-style LayerNorm.gamma/beta checkpoint loads
    let renamed: Vec<_> = tensors
        .iter()
        .map(|t| {
            (
                t.0.replace("LayerNorm.weight", "LayerNorm.gamma")
                    .replace("LayerNorm.bias", "LayerNorm.beta"),
                t.1.clone(),
                t.2.clone(),
            )
        })
        .collect();
    assert!(load_bytes(&config, write_safetensors(&renamed)).is_ok());
    // not an encoder at all
    let err = load_bytes(&config, write_safetensors(&[("x", vec![1], vec![1.0])])).unwrap_err();
    assert!(err.contains("embeddings.word_embeddings.weight"), "{err}");
}

#[test]
fn bad_configs_are_errors() {
    let (config, _) = tiny_bert();
    for (field, change) in [
        ("model_type", serde_json::json!("gpt2")),
        ("hidden_act", serde_json::json!("relu")),
        ("num_attention_heads", serde_json::json!(5)),
        ("hidden_size", serde_json::json!(0)),
    ] {
        let mut value = serde_json::json!({
            "model_type": config.model_type, "vocab_size": config.vocab_size,
            "hidden_size": config.hidden_size, "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads,
            "intermediate_size": config.intermediate_size,
            "max_position_embeddings": config.max_position_embeddings,
        });
        value[field] = change;
        let hf: HfConfig = serde_json::from_value(value).unwrap();
        assert!(hf.encoder_config().is_err(), "{field}");
    }
    let parse = |json: serde_json::Value| serde_json::from_value::<HfConfig>(json).unwrap();
    let base = serde_json::json!({
        "model_type": "roberta", "vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 3,
        "num_attention_heads": 4, "intermediate_size": 24, "max_position_embeddings": 2,
    });
    let e = parse(base.clone())
        .encoder_config()
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_position_embeddings"), "{e}");
    let mut albert = base.clone();
    albert["model_type"] = "albert".into();
    albert["max_position_embeddings"] = 10.into();
    albert["num_hidden_groups"] = 2.into();
    let e = parse(albert.clone())
        .encoder_config()
        .unwrap_err()
        .to_string();
    assert!(e.contains("num_hidden_groups"), "{e}");
    albert["num_hidden_groups"] = 1.into();
    albert["layer_norm_eps"] = (-1.0).into();
    let e = parse(albert.clone())
        .encoder_config()
        .unwrap_err()
        .to_string();
    assert!(e.contains("layer_norm_eps"), "{e}");
    albert["layer_norm_eps"] = 1e-12.into();
    // ALBERT's embedding size defaults to 128, as in Hugging Face
    assert_eq!(parse(albert).encoder_config().unwrap().embed_size(), 128);
    // a config.json claiming more than the file holds is refused before allocating
    let (mut config, tensors) = tiny_bert();
    config.vocab_size = 1 << 40;
    let err = load_bytes(&config, write_safetensors(&tensors)).unwrap_err();
    assert!(
        err.contains("word_embeddings") && err.contains("config.json"),
        "{err}"
    );
    let (mut config, tensors) = tiny_bert();
    config.num_hidden_layers = 1000;
    let err = load_bytes(&config, write_safetensors(&tensors)).unwrap_err();
    assert!(err.contains("encoder.layer.999"), "{err}");
    let dir = tempfile_dir();
    std::fs::write(dir.join("config.json"), "{not json").unwrap();
    let err = HfConfig::read(dir.join("config.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ponder-loader-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn random_and_mutated_files_never_panic() {
    let (config, tensors) = tiny_bert();
    let good = write_safetensors(&tensors);
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut rng = 7u64;
    let (mut ok, mut errors) = (0, 0);
    for round in 0..3000 {
        let bytes = match round % 4 {
            // random bytes, sometimes with a plausible length prefix
            0 => {
                let len = (next(&mut rng) % 300) as usize;
                let mut b: Vec<u8> = (0..len).map(|_| next(&mut rng) as u8).collect();
                if len >= 8 && next(&mut rng).is_multiple_of(2) {
                    let claimed = next(&mut rng) % (len as u64);
                    b[..8].copy_from_slice(&claimed.to_le_bytes());
                }
                b
            }
            // a few bytes of the header flipped
            1 => {
                let mut b = good.clone();
                for _ in 0..1 + next(&mut rng) % 4 {
                    let i = (next(&mut rng) as usize) % (8 + header_len);
                    b[i] ^= 1 << (next(&mut rng) % 8);
                }
                b
            }
            // truncated or extended
            2 => {
                let mut b = good.clone();
                let cut = (next(&mut rng) as usize) % b.len();
                if next(&mut rng).is_multiple_of(2) {
                    b.truncate(cut);
                } else {
                    b.extend((0..cut % 64).map(|_| next(&mut rng) as u8));
                }
                b
            }
            // header bytes overwritten with JSON-ish punctuation, or data bytes randomised
            _ => {
                let mut b = good.clone();
                for _ in 0..1 + next(&mut rng) % 8 {
                    let i = (next(&mut rng) as usize) % b.len();
                    b[i] = b"{}[]\":,0123456789-eE."[(next(&mut rng) % 21) as usize];
                }
                b
            }
        };
        match std::panic::catch_unwind(|| load_bytes(&config, bytes)) {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(_)) => errors += 1,
            Err(_) => panic!("the loader panicked on round {round}"),
        }
    }
    // both outcomes happen (data-byte changes still load)
    assert!(ok > 0 && errors > 1000, "ok {ok}, errors {errors}");
}
