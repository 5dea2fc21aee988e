//! Weights in the `state-spaces/mamba` naming (`MambaLMHeadModel`), from and to
//! safetensors, and Hugging Face `MambaForCausalLM` checkpoint folders (`config.json`,
//! `model.safetensors`), whose names are the same but for the embedding
//! (`backbone.embeddings.weight`).
//!
//! ```text
//! backbone.embedding.weight                  [vocab, d]
//! backbone.layers.{i}.norm.weight            [d]
//! backbone.layers.{i}.mixer.in_proj.weight   [2·d_inner, d]        (PyTorch: [out, in])
//! backbone.layers.{i}.mixer.conv1d.weight    [d_inner, 1, d_conv]
//! backbone.layers.{i}.mixer.conv1d.bias      [d_inner]
//! backbone.layers.{i}.mixer.x_proj.weight    [R + 2n, d_inner]
//! backbone.layers.{i}.mixer.dt_proj.weight   [d_inner, R]
//! backbone.layers.{i}.mixer.dt_proj.bias     [d_inner]
//! backbone.layers.{i}.mixer.A_log            [d_inner, n]
//! backbone.layers.{i}.mixer.D                [d_inner]
//! backbone.layers.{i}.mixer.out_proj.weight  [d, d_inner]
//! backbone.norm_f.weight                     [d]
//! lm_head.weight                             [vocab, d]  (absent or equal to the embedding when tied)
//! ```

use std::path::Path;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};
use ponder_core::{PonderError, Result, SafeTensors, read_config_json, to_host, write_safetensors};

use crate::config::MambaConfig;
use crate::model::MambaLm;

const EMBEDDING: &str = "backbone.embedding.weight";
/// The embedding's name in Hugging Face's `MambaForCausalLM`.
const HF_EMBEDDING: &str = "backbone.embeddings.weight";
const NORM_F: &str = "backbone.norm_f.weight";
const LM_HEAD: &str = "lm_head.weight";

fn layer_key(i: usize, rest: &str) -> String {
    format!("backbone.layers.{i}.{rest}")
}

impl MambaConfig {
    /// Reads the shapes of a state-spaces checkpoint into a configuration (the numbers
    /// that are not stored, like the initialisation ranges, keep their defaults).
    pub fn from_state_spaces(file: &SafeTensors) -> Result<Self> {
        Self::from_shapes(file, EMBEDDING)
    }

    /// The configuration the tensor shapes imply, the embedding being `embedding`.
    fn from_shapes(file: &SafeTensors, embedding: &str) -> Result<Self> {
        let shape = |name: &str| -> Result<Vec<usize>> {
            file.shape(name).map(<[usize]>::to_vec).ok_or_else(|| {
                file.error(format!(
                    "tensor `{name}` is missing (is this a state-spaces Mamba checkpoint?)"
                ))
            })
        };
        let dims = |name: &str, rank: usize| -> Result<Vec<usize>> {
            let s = shape(name)?;
            if s.len() != rank {
                return Err(file.error(format!(
                    "tensor `{name}` has shape {s:?}, expected rank {rank}"
                )));
            }
            Ok(s)
        };
        let emb = dims(embedding, 2)?;
        let (vocab_size, d_model) = (emb[0], emb[1]);
        if vocab_size == 0 || d_model == 0 {
            return Err(file.error(format!(
                "`{embedding}` has shape {emb:?}: an empty embedding"
            )));
        }
        let n_layers = (0..)
            .take_while(|&i| file.contains(&layer_key(i, "mixer.in_proj.weight")))
            .count();
        if n_layers == 0 {
            return Err(file.error(
                "no `backbone.layers.0.mixer.in_proj.weight`: no Mamba layers in the file".into(),
            ));
        }
        let d_inner = dims(&layer_key(0, "mixer.in_proj.weight"), 2)?[0] / 2;
        let a = dims(&layer_key(0, "mixer.A_log"), 2)?;
        let conv = dims(&layer_key(0, "mixer.conv1d.weight"), 3)?;
        let dt = dims(&layer_key(0, "mixer.dt_proj.weight"), 2)?;
        if d_inner == 0 || d_inner % d_model != 0 {
            return Err(file.error(format!(
                "in_proj has {} outputs; expected 2·expand·d_model with d_model {d_model}",
                2 * d_inner
            )));
        }
        let config = MambaConfig::new(vocab_size, d_model, n_layers)
            .with_d_state(a[1])
            .with_d_conv(conv[2])
            .with_expand(d_inner / d_model)
            .with_dt_rank(Some(dt[1]))
            .with_conv_bias(file.contains(&layer_key(0, "mixer.conv1d.bias")))
            .with_proj_bias(file.contains(&layer_key(0, "mixer.in_proj.bias")))
            .with_tie_embeddings(!untied_head(file, embedding)?);
        config.validate()?;
        Ok(config)
    }
}

/// Whether the file has an `lm_head.weight` that differs from the embedding.
fn untied_head(file: &SafeTensors, embedding: &str) -> Result<bool> {
    if !file.contains(LM_HEAD) {
        return Ok(false);
    }
    let shape = file.shape(embedding).unwrap_or(&[]).to_vec();
    let head = file.read(LM_HEAD, &shape)?;
    let emb = file.read(embedding, &shape)?;
    Ok(head != emb)
}

/// Loads a state-spaces Mamba language model from a safetensors file: the
/// configuration is read from the tensor shapes, every tensor must be used, and a
/// shape that does not fit is an error naming the tensor.
pub fn load_state_spaces(
    path: impl AsRef<Path>,
    device: &Device,
) -> Result<(MambaLm, MambaConfig)> {
    let file = SafeTensors::open(path)?;
    let config = MambaConfig::from_state_spaces(&file)?;
    let lm = load_tensors(&file, &config, EMBEDDING, device)?;
    Ok((lm, config))
}

/// Loads a Hugging Face `MambaForCausalLM` checkpoint folder (`config.json`,
/// `model.safetensors`): the sizes `config.json` gives (`hidden_size`, `state_size`,
/// `num_hidden_layers`, `vocab_size`, `expand`, `conv_kernel`, `time_step_rank`,
/// `use_bias`, `use_conv_bias`, `tie_word_embeddings`) must be those of the tensors, its
/// `layer_norm_epsilon` is used, and any other `hidden_act` than SiLU is refused. Errors
/// name the key or the tensor at fault.
pub fn load_hf_mamba(folder: impl AsRef<Path>, device: &Device) -> Result<(MambaLm, MambaConfig)> {
    let folder = folder.as_ref();
    let config_path = folder.join("config.json");
    let json = read_config_json(&config_path)?;
    let file = SafeTensors::open(folder.join("model.safetensors"))?;
    let config = hf_config(&config_path, &json, &file)?;
    let lm = load_tensors(&file, &config, HF_EMBEDDING, device)?;
    Ok((lm, config))
}

/// The configuration of a Hugging Face Mamba checkpoint: from the tensor shapes, checked
/// against `config.json`.
fn hf_config(path: &Path, json: &serde_json::Value, file: &SafeTensors) -> Result<MambaConfig> {
    let err = |key: &str, message: String| PonderError::Checkpoint {
        path: path.to_path_buf(),
        message: format!("`{key}`: {message}"),
    };
    let get = |key: &str| json.get(key).filter(|v| !v.is_null());
    match get("model_type").and_then(|v| v.as_str()) {
        Some("mamba") => {}
        other => {
            return Err(err(
                "model_type",
                format!("{other:?} is not \"mamba\" (a Hugging Face MambaForCausalLM config)"),
            ));
        }
    }
    if let Some(act) = get("hidden_act")
        && act.as_str() != Some("silu")
    {
        return Err(err("hidden_act", format!("{act}: only silu is supported")));
    }
    let config = MambaConfig::from_shapes(file, HF_EMBEDDING)?;
    let number = |key: &str| -> Result<Option<u64>> {
        match get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| err(key, format!("{v} is not a whole number"))),
        }
    };
    let dt_rank = match get("time_step_rank") {
        Some(v) if v.as_str() == Some("auto") => None,
        _ => number("time_step_rank")?,
    };
    for (key, claimed, actual) in [
        ("hidden_size", number("hidden_size")?, config.d_model),
        ("state_size", number("state_size")?, config.d_state),
        (
            "num_hidden_layers",
            number("num_hidden_layers")?,
            config.n_layers,
        ),
        ("vocab_size", number("vocab_size")?, config.vocab_size),
        ("expand", number("expand")?, config.expand),
        ("conv_kernel", number("conv_kernel")?, config.d_conv),
        (
            "time_step_rank",
            dt_rank.or(Some(config.d_model.div_ceil(16) as u64)),
            config.dt_rank(),
        ),
    ] {
        if let Some(claimed) = claimed
            && claimed != actual as u64
        {
            return Err(err(
                key,
                format!("config.json says {claimed}, the tensors in model.safetensors {actual}"),
            ));
        }
    }
    for (key, actual) in [
        ("use_bias", config.proj_bias),
        ("use_conv_bias", config.conv_bias),
        ("tie_word_embeddings", config.tie_embeddings),
    ] {
        if let Some(v) = get(key) {
            let claimed = v
                .as_bool()
                .ok_or_else(|| err(key, format!("{v} is not true or false")))?;
            if claimed != actual {
                return Err(err(
                    key,
                    format!(
                        "config.json says {claimed}, the tensors in model.safetensors {actual}"
                    ),
                ));
            }
        }
    }
    let eps = match get("layer_norm_epsilon") {
        None => config.norm_eps,
        Some(v) => v
            .as_f64()
            .filter(|e| e.is_finite() && *e > 0.0)
            .ok_or_else(|| {
                err(
                    "layer_norm_epsilon",
                    format!("{v} is not a positive number"),
                )
            })?,
    };
    Ok(config.with_norm_eps(eps))
}

/// Reads every tensor of the model `config` describes (the embedding named `embedding`)
/// and checks that none is left over.
fn load_tensors(
    file: &SafeTensors,
    config: &MambaConfig,
    embedding: &str,
    device: &Device,
) -> Result<MambaLm> {
    let mut lm = config.init_lm(device);
    let (v, d, di) = (config.vocab_size, config.d_model, config.d_inner());
    let (n, r, k) = (config.d_state, config.dt_rank(), config.d_conv);
    lm.mamba.embedding.weight = file.param(embedding, [v, d], device)?;
    lm.mamba.norm_f.gamma = file.param(NORM_F, [d], device)?;
    for (i, block) in lm.mamba.layers.iter_mut().enumerate() {
        let key = |rest: &str| layer_key(i, rest);
        block.norm.gamma = file.param(&key("norm.weight"), [d], device)?;
        let m = &mut block.mixer;
        m.in_proj = file.linear(&key("mixer.in_proj"), d, 2 * di, config.proj_bias, device)?;
        m.conv_weight = Param::from_tensor(
            file.tensor(&key("mixer.conv1d.weight"), [di, 1, k], device)?
                .reshape([di, k]),
        );
        m.conv_bias = if config.conv_bias {
            Some(file.param(&key("mixer.conv1d.bias"), [di], device)?)
        } else {
            None
        };
        m.x_proj = file.linear(&key("mixer.x_proj"), di, r + 2 * n, false, device)?;
        m.dt_proj = file.linear(&key("mixer.dt_proj"), r, di, true, device)?;
        m.a_log = file.param(&key("mixer.A_log"), [di, n], device)?;
        m.d_skip = file.param(&key("mixer.D"), [di], device)?;
        m.out_proj = file.linear(&key("mixer.out_proj"), di, d, config.proj_bias, device)?;
    }
    if file.contains(LM_HEAD) {
        if config.tie_embeddings {
            file.read(LM_HEAD, &[v, d])?; // equal to the embedding: nothing to load
        } else {
            lm.lm_head = Some(file.linear("lm_head", d, v, false, device)?);
        }
    }
    file.ensure_all_used()?;
    Ok(lm)
}

/// The model's tensors in the state-spaces naming, as safetensors bytes (F32).
pub fn state_spaces_bytes(lm: &MambaLm) -> Vec<u8> {
    fn host<const D: usize>(t: Tensor<D>) -> (Vec<usize>, Vec<f32>) {
        (t.dims().to_vec(), to_host(t))
    }
    fn torch_linear(out: &mut Vec<(String, Vec<usize>, Vec<f32>)>, prefix: &str, l: &Linear) {
        let (s, v) = host(l.weight.val().transpose());
        out.push((format!("{prefix}.weight"), s, v));
        if let Some(b) = &l.bias {
            let (s, v) = host(b.val());
            out.push((format!("{prefix}.bias"), s, v));
        }
    }
    let mut out: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let m = &lm.mamba;
    let (s, v) = host(m.embedding.weight.val());
    out.push((EMBEDDING.into(), s, v));
    let (s, v) = host(m.norm_f.gamma.val());
    out.push((NORM_F.into(), s, v));
    for (i, block) in m.layers.iter().enumerate() {
        let key = |rest: &str| layer_key(i, rest);
        let x = &block.mixer;
        let (s, v) = host(block.norm.gamma.val());
        out.push((key("norm.weight"), s, v));
        torch_linear(&mut out, &key("mixer.in_proj"), &x.in_proj);
        let (_, v) = host(x.conv_weight.val());
        out.push((key("mixer.conv1d.weight"), vec![x.d_inner, 1, x.d_conv], v));
        if let Some(b) = &x.conv_bias {
            let (s, v) = host(b.val());
            out.push((key("mixer.conv1d.bias"), s, v));
        }
        torch_linear(&mut out, &key("mixer.x_proj"), &x.x_proj);
        torch_linear(&mut out, &key("mixer.dt_proj"), &x.dt_proj);
        let (s, v) = host(x.a_log.val());
        out.push((key("mixer.A_log"), s, v));
        let (s, v) = host(x.d_skip.val());
        out.push((key("mixer.D"), s, v));
        torch_linear(&mut out, &key("mixer.out_proj"), &x.out_proj);
    }
    if let Some(head) = &lm.lm_head {
        torch_linear(&mut out, "lm_head", head);
    }
    write_safetensors(&out)
}
