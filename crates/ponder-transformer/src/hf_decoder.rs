//! Pretrained Hugging Face decoder language models (GPT-2 and the Llama family) from a
//! checkpoint folder (`config.json`, `model.safetensors`) into a [`DecoderLm`].
//!
//! GPT-2 (`GPT2LMHeadModel`, `model_type = "gpt2"`; names with or without the
//! `transformer.` prefix). GPT-2's `Conv1D` stores its weight `[in, out]`, which is
//! burn's layout, so nothing is transposed; the fused `c_attn` is split into the query,
//! key and value projections by columns.
//!
//! | Hugging Face | ponder |
//! |---|---|
//! | `wte.weight` `[vocab, d]` | `token_embedding` (and the tied head) |
//! | `wpe.weight` `[n_positions, d]` | `position_embedding` |
//! | `h.{i}.ln_1.{weight,bias}` | `layers[i].ln1` |
//! | `h.{i}.attn.c_attn.{weight [d, 3d], bias [3d]}` | `layers[i].{wq,wk,wv}` (columns `0..d`, `d..2d`, `2d..3d`) |
//! | `h.{i}.attn.c_proj.*` `[d, d]` | `layers[i].wo` |
//! | `h.{i}.ln_2.*` | `layers[i].ln2` |
//! | `h.{i}.mlp.c_fc.*` `[d, d_ff]` | `layers[i].ff_in` |
//! | `h.{i}.mlp.c_proj.*` `[d_ff, d]` | `layers[i].ff_out` |
//! | `ln_f.*` | `norm_f` |
//! | `lm_head.weight` (optional: tied) | — |
//!
//! The causal-mask buffers `h.{i}.attn.bias` and `h.{i}.attn.masked_bias` of older files
//! are skipped. `activation_function` `gelu_new` / `gelu_pytorch_tanh` is GELU's tanh
//! approximation, `gelu` the exact one; `n_inner = null` means `4·d`. Refused by name:
//! `scale_attn_weights = false`, `scale_attn_by_inverse_layer_idx`, cross-attention.
//!
//! The Llama family (`LlamaForCausalLM`; `model_type` `llama`, `mistral` without a
//! sliding window, `qwen2` without one). PyTorch `Linear` weights are `[out, in]` and are
//! transposed.
//!
//! | Hugging Face | ponder |
//! |---|---|
//! | `model.embed_tokens.weight` | `token_embedding` |
//! | `model.layers.{i}.input_layernorm.weight` | `layers[i].ln1` (RMSNorm) |
//! | `model.layers.{i}.self_attn.{q,k,v,o}_proj.weight` (and biases) | `layers[i].{wq,wk,wv,wo}` |
//! | `model.layers.{i}.post_attention_layernorm.weight` | `layers[i].ln2` |
//! | `model.layers.{i}.mlp.gate_proj.weight` | `layers[i].ff_gate` |
//! | `model.layers.{i}.mlp.up_proj.weight` | `layers[i].ff_in` |
//! | `model.layers.{i}.mlp.down_proj.weight` | `layers[i].ff_out` |
//! | `model.norm.weight` | `norm_f` |
//! | `lm_head.weight` (absent when `tie_word_embeddings`) | `lm_head` |
//!
//! Rotary positions with the config's `rope_theta` (default 10,000), grouped-query
//! attention with `num_key_value_heads`, `rms_norm_eps`, SiLU (`hidden_act = "silu"`
//! only), biases from `attention_bias` / `mlp_bias` (Qwen2: on q, k and v only).
//! Refused by name: `rope_scaling` (Llama 3.1's long-context rotary), a `head_dim` other
//! than `hidden_size / num_attention_heads`, sliding-window attention, and sharded
//! checkpoints (`model.safetensors.index.json`).
//!
//! For both, the sizes of `config.json` are checked against the file's tensors before
//! anything is allocated, a tied head present in the file must equal the embedding,
//! and any tensor left unused, missing or misshaped is an error naming it.

use std::path::Path;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::Device;
use ponder_core::{PonderError, Result, SafeTensors, read_config_json};
use serde_json::Value;

use crate::decoder::{DecoderActivation, DecoderConfig, DecoderLm, DecoderNorm, NormLayer};

/// The checkpoint families [`load_hf_decoder`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderFamily {
    /// GPT-2.
    Gpt2,
    /// Llama, and Mistral / Qwen2 without a sliding window.
    Llama,
}

/// A decoder's `config.json`: its family and the [`DecoderConfig`] of its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct HfDecoderConfig {
    /// `model_type` as written.
    pub model_type: String,
    /// The naming of the tensors.
    pub family: DecoderFamily,
    /// The decoder of this shape.
    pub config: DecoderConfig,
}

/// What [`load_hf_decoder`] returns.
#[derive(Debug)]
pub struct LoadedDecoder {
    /// The model with the checkpoint's weights.
    pub lm: DecoderLm,
    /// `config.json` as read.
    pub hf: HfDecoderConfig,
}

/// The `config.json` reader: typed look-ups that name the key at fault.
struct Keys<'a> {
    path: &'a Path,
    json: &'a Value,
}

impl Keys<'_> {
    fn err(&self, key: &str, message: String) -> PonderError {
        PonderError::Checkpoint {
            path: self.path.to_path_buf(),
            message: format!("`{key}`: {message}"),
        }
    }

    fn present(&self, key: &str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.usize_or(key, None)
    }

    fn usize_or(&self, key: &str, default: Option<usize>) -> Result<usize> {
        match self.present(key) {
            None => default.ok_or_else(|| self.err(key, "missing".into())),
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| self.err(key, format!("{v} is not a positive integer"))),
        }
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.present(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| self.err(key, format!("{v} is not a positive number"))),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.present(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, format!("{v} is not true or false"))),
        }
    }

    fn str_or<'s>(&'s self, key: &str, default: &'s str) -> Result<&'s str> {
        match self.present(key) {
            None => Ok(default),
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.err(key, format!("{v} is not a string"))),
        }
    }

    /// An error when `key` is present and not `allowed` (null counts as absent).
    fn refuse_unless(&self, key: &str, allowed: &Value, what: &str) -> Result<()> {
        match self.present(key) {
            Some(v) if v != allowed => Err(self.err(key, format!("{v}: {what} is not supported"))),
            _ => Ok(()),
        }
    }
}

impl HfDecoderConfig {
    /// Reads a decoder's `config.json`.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_json(path, &read_config_json(path)?)
    }

    /// [`HfDecoderConfig::read`] from parsed JSON (`path` for the messages).
    pub fn from_json(path: &Path, json: &Value) -> Result<Self> {
        let keys = Keys { path, json };
        if !json.is_object() {
            return Err(keys.err("config.json", "not a JSON object".into()));
        }
        let model_type = keys.str_or("model_type", "")?.to_string();
        let family = match model_type.as_str() {
            "gpt2" => DecoderFamily::Gpt2,
            "llama" | "mistral" | "qwen2" => DecoderFamily::Llama,
            other => {
                return Err(keys.err(
                    "model_type",
                    format!(
                        "`{other}` is not a decoder ponder loads (gpt2, llama, mistral, qwen2; Mamba checkpoints are read by ponder-mamba)"
                    ),
                ));
            }
        };
        let config = match family {
            DecoderFamily::Gpt2 => gpt2_config(&keys)?,
            DecoderFamily::Llama => llama_config(&keys, &model_type)?,
        };
        config
            .validate()
            .map_err(|e| keys.err("config.json", e.to_string()))?;
        Ok(Self {
            model_type,
            family,
            config,
        })
    }
}

fn gpt2_config(keys: &Keys<'_>) -> Result<DecoderConfig> {
    let d = keys.usize("n_embd")?;
    let activation = match keys.str_or("activation_function", "gelu_new")? {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => DecoderActivation::GeluTanh,
        "gelu" => DecoderActivation::Gelu,
        other => {
            return Err(keys.err(
                "activation_function",
                format!("`{other}`: only gelu_new, gelu_pytorch_tanh and gelu are supported"),
            ));
        }
    };
    keys.refuse_unless(
        "scale_attn_weights",
        &Value::Bool(true),
        "attention without the 1/√d_head scale",
    )?;
    keys.refuse_unless(
        "scale_attn_by_inverse_layer_idx",
        &Value::Bool(false),
        "scaling attention by the inverse layer index",
    )?;
    keys.refuse_unless(
        "add_cross_attention",
        &Value::Bool(false),
        "cross-attention",
    )?;
    Ok(DecoderConfig::new(
        keys.usize("vocab_size")?,
        d,
        keys.usize("n_head")?,
        keys.usize("n_layer")?,
        keys.usize_or("n_inner", Some(4 * d))?,
        keys.usize("n_positions")?,
    )
    .with_norm_eps(keys.f64_or("layer_norm_epsilon", 1e-5)?)
    .with_activation(activation)
    .with_tie_embeddings(keys.bool_or("tie_word_embeddings", true)?))
}

fn llama_config(keys: &Keys<'_>, model_type: &str) -> Result<DecoderConfig> {
    let d = keys.usize("hidden_size")?;
    let heads = keys.usize("num_attention_heads")?;
    let act = keys.str_or("hidden_act", "silu")?;
    if act != "silu" {
        return Err(keys.err(
            "hidden_act",
            format!("`{act}`: only silu (SwiGLU) is supported"),
        ));
    }
    keys.refuse_unless(
        "rope_scaling",
        &Value::Null,
        "rotary scaling (long-context rotary variants)",
    )?;
    if let Some(head_dim) = keys.present("head_dim")
        && head_dim.as_u64() != Some((d / heads.max(1)) as u64)
    {
        return Err(keys.err(
            "head_dim",
            format!("{head_dim}: only hidden_size / num_attention_heads is supported"),
        ));
    }
    let max_len = keys.usize("max_position_embeddings")?;
    match model_type {
        "qwen2" => keys.refuse_unless(
            "use_sliding_window",
            &Value::Bool(false),
            "sliding-window attention",
        )?,
        "mistral" => {
            if let Some(w) = keys.present("sliding_window")
                && w.as_u64().is_none_or(|w| (w as usize) < max_len)
            {
                return Err(keys.err(
                    "sliding_window",
                    format!("{w}: sliding-window attention is not supported"),
                ));
            }
        }
        _ => {}
    }
    // Qwen2 has biases on q, k and v only, and no `attention_bias` key.
    let (qkv_bias, out_bias) = if model_type == "qwen2" {
        (true, false)
    } else {
        let b = keys.bool_or("attention_bias", false)?;
        (b, b)
    };
    Ok(DecoderConfig::new(
        keys.usize("vocab_size")?,
        d,
        heads,
        keys.usize("num_hidden_layers")?,
        keys.usize("intermediate_size")?,
        max_len,
    )
    .with_norm(DecoderNorm::RmsNorm)
    .with_norm_eps(keys.f64_or("rms_norm_eps", 1e-6)?)
    .with_activation(DecoderActivation::Silu)
    .with_gated_mlp(true)
    .with_n_kv_heads(Some(keys.usize_or("num_key_value_heads", Some(heads))?))
    .with_rope_theta(Some(keys.f64_or("rope_theta", 10_000.0)?))
    .with_qkv_bias(qkv_bias)
    .with_out_bias(out_bias)
    .with_mlp_bias(keys.bool_or("mlp_bias", false)?)
    .with_tie_embeddings(keys.bool_or("tie_word_embeddings", false)?))
}

/// Loads a checkpoint folder (`config.json`, `model.safetensors`): module docs for the
/// names and what is refused. Never panics on file contents.
pub fn load_hf_decoder(folder: impl AsRef<Path>, device: &Device) -> Result<LoadedDecoder> {
    let folder = folder.as_ref();
    let weights = folder.join("model.safetensors");
    if !weights.is_file() && folder.join("model.safetensors.index.json").is_file() {
        return Err(PonderError::Checkpoint {
            path: folder.to_path_buf(),
            message: "sharded checkpoints (model.safetensors.index.json) are not supported: merge the shards into one model.safetensors".into(),
        });
    }
    let hf = HfDecoderConfig::read(folder.join("config.json"))?;
    let file = SafeTensors::open(&weights)?;
    load_decoder_from(hf, &file, device)
}

/// [`load_hf_decoder`] from a parsed config and an opened file.
pub fn load_decoder_from(
    hf: HfDecoderConfig,
    file: &SafeTensors,
    device: &Device,
) -> Result<LoadedDecoder> {
    let lm = match hf.family {
        DecoderFamily::Gpt2 => load_gpt2(&hf.config, file, device)?,
        DecoderFamily::Llama => load_llama(&hf.config, file, device)?,
    };
    file.ensure_all_used()?;
    Ok(LoadedDecoder { lm, hf })
}

/// The head: tied (a head in the file must equal the embedding) or `lm_head.weight`.
fn head(
    config: &DecoderConfig,
    file: &SafeTensors,
    embedding: &str,
    device: &Device,
) -> Result<Option<Linear>> {
    const LM_HEAD: &str = "lm_head.weight";
    let (v, d) = (config.vocab_size, config.d_model);
    if config.tie_embeddings {
        if file.contains(LM_HEAD)
            && file.read(LM_HEAD, &[v, d])? != file.read(embedding, &[v, d])?
        {
            return Err(file.error(format!(
                    "config.json says tie_word_embeddings, but `{LM_HEAD}` differs from `{embedding}`: a tied-embedding mismatch"
                ),
            ));
        }
        Ok(None)
    } else {
        Ok(Some(file.linear("lm_head", d, v, false, device)?))
    }
}

fn layer_norm(
    file: &SafeTensors,
    prefix: &str,
    d: usize,
    into: &mut NormLayer,
    device: &Device,
) -> Result<()> {
    into.gamma = file.param(&format!("{prefix}.weight"), [d], device)?;
    into.beta = Some(file.param(&format!("{prefix}.bias"), [d], device)?);
    Ok(())
}

fn rms_norm(
    file: &SafeTensors,
    name: &str,
    d: usize,
    into: &mut NormLayer,
    device: &Device,
) -> Result<()> {
    into.gamma = file.param(name, [d], device)?;
    Ok(())
}

/// A GPT-2 `Conv1D` (`{prefix}.weight` `[d_in, d_out]`, `{prefix}.bias`) as a burn
/// `Linear` (the same layout), columns `cols` of it.
fn conv1d(
    file: &SafeTensors,
    prefix: &str,
    [d_in, d_out]: [usize; 2],
    cols: std::ops::Range<usize>,
    device: &Device,
) -> Result<Linear> {
    let w = file.tensor(&format!("{prefix}.weight"), [d_in, d_out], device)?;
    let b = file.tensor(&format!("{prefix}.bias"), [d_out], device)?;
    Ok(Linear {
        weight: Param::from_tensor(w.narrow(1, cols.start, cols.len())),
        bias: Some(Param::from_tensor(b.narrow(0, cols.start, cols.len()))),
    })
}

fn load_gpt2(config: &DecoderConfig, file: &SafeTensors, device: &Device) -> Result<DecoderLm> {
    let prefix = ["transformer.", ""]
        .into_iter()
        .find(|p| file.contains(&format!("{p}wte.weight")))
        .ok_or_else(|| {
            file.error("tensor `transformer.wte.weight` (or `wte.weight`) is missing: not a GPT-2 checkpoint".into(),
            )
        })?;
    let key = |rest: &str| format!("{prefix}{rest}");
    let (v, d, ff, n) = (
        config.vocab_size,
        config.d_model,
        config.d_ff,
        config.n_layers,
    );
    file.check_shapes(&[
        (key("wte.weight"), vec![v, d]),
        (key("wpe.weight"), vec![config.max_len, d]),
        (key(&format!("h.{}.mlp.c_fc.weight", n - 1)), vec![d, ff]),
    ])?;
    if file.contains(&key(&format!("h.{n}.ln_1.weight"))) {
        return Err(file.error(format!(
            "the file has more layers than config.json's n_layer = {n}"
        )));
    }
    let mut lm = config.init_lm(device);
    lm.token_embedding.weight = file.param(&key("wte.weight"), [v, d], device)?;
    let positions = lm
        .position_embedding
        .as_mut()
        .expect("GPT-2 has learned positions");
    positions.weight = file.param(&key("wpe.weight"), [config.max_len, d], device)?;
    for (i, block) in lm.layers.iter_mut().enumerate() {
        let p = |rest: &str| key(&format!("h.{i}.{rest}"));
        layer_norm(file, &p("ln_1"), d, &mut block.ln1, device)?;
        let qkv = [d, 3 * d];
        block.wq = conv1d(file, &p("attn.c_attn"), qkv, 0..d, device)?;
        block.wk = conv1d(file, &p("attn.c_attn"), qkv, d..2 * d, device)?;
        block.wv = conv1d(file, &p("attn.c_attn"), qkv, 2 * d..3 * d, device)?;
        block.wo = conv1d(file, &p("attn.c_proj"), [d, d], 0..d, device)?;
        layer_norm(file, &p("ln_2"), d, &mut block.ln2, device)?;
        block.ff_in = conv1d(file, &p("mlp.c_fc"), [d, ff], 0..ff, device)?;
        block.ff_out = conv1d(file, &p("mlp.c_proj"), [ff, d], 0..d, device)?;
        file.skip(&p("attn.bias"));
        file.skip(&p("attn.masked_bias"));
    }
    layer_norm(file, &key("ln_f"), d, &mut lm.norm_f, device)?;
    lm.lm_head = head(config, file, &key("wte.weight"), device)?;
    Ok(lm)
}

fn load_llama(config: &DecoderConfig, file: &SafeTensors, device: &Device) -> Result<DecoderLm> {
    const EMBED: &str = "model.embed_tokens.weight";
    let (v, d, ff, n) = (
        config.vocab_size,
        config.d_model,
        config.d_ff,
        config.n_layers,
    );
    let d_kv = config.kv_heads() * config.d_head();
    file.check_shapes(&[
        (EMBED.to_string(), vec![v, d]),
        (
            "model.layers.0.self_attn.k_proj.weight".into(),
            vec![d_kv, d],
        ),
        (
            format!("model.layers.{}.mlp.down_proj.weight", n - 1),
            vec![d, ff],
        ),
    ])?;
    if file.contains(&format!("model.layers.{n}.input_layernorm.weight")) {
        return Err(file.error(format!(
            "the file has more layers than config.json's num_hidden_layers = {n}"
        )));
    }
    let mut lm = config.init_lm(device);
    lm.token_embedding.weight = file.param(EMBED, [v, d], device)?;
    let (qkv, out, mlp) = (config.qkv_bias, config.out_bias, config.mlp_bias);
    for (i, block) in lm.layers.iter_mut().enumerate() {
        let p = |rest: &str| format!("model.layers.{i}.{rest}");
        rms_norm(
            file,
            &p("input_layernorm.weight"),
            d,
            &mut block.ln1,
            device,
        )?;
        block.wq = file.linear(&p("self_attn.q_proj"), d, d, qkv, device)?;
        block.wk = file.linear(&p("self_attn.k_proj"), d, d_kv, qkv, device)?;
        block.wv = file.linear(&p("self_attn.v_proj"), d, d_kv, qkv, device)?;
        block.wo = file.linear(&p("self_attn.o_proj"), d, d, out, device)?;
        rms_norm(
            file,
            &p("post_attention_layernorm.weight"),
            d,
            &mut block.ln2,
            device,
        )?;
        block.ff_gate = Some(file.linear(&p("mlp.gate_proj"), d, ff, mlp, device)?);
        block.ff_in = file.linear(&p("mlp.up_proj"), d, ff, mlp, device)?;
        block.ff_out = file.linear(&p("mlp.down_proj"), ff, d, mlp, device)?;
        file.skip(&p("self_attn.rotary_emb.inv_freq"));
    }
    rms_norm(file, "model.norm.weight", d, &mut lm.norm_f, device)?;
    lm.lm_head = head(config, file, EMBED, device)?;
    Ok(lm)
}
