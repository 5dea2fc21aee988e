//! Weights in the `state-spaces/mamba` naming (`MambaLMHeadModel`), from and to
//! safetensors.
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
use ponder_core::{PonderError, Result, SafeTensors, to_host, write_safetensors};

use crate::config::MambaConfig;
use crate::model::MambaLm;

const EMBEDDING: &str = "backbone.embedding.weight";
const NORM_F: &str = "backbone.norm_f.weight";
const LM_HEAD: &str = "lm_head.weight";

fn layer_key(i: usize, rest: &str) -> String {
    format!("backbone.layers.{i}.{rest}")
}

fn bad(file: &SafeTensors, message: String) -> PonderError {
    PonderError::Checkpoint {
        path: file.path().to_path_buf(),
        message,
    }
}

impl MambaConfig {
    /// Reads the shapes of a state-spaces checkpoint into a configuration (the numbers
    /// that are not stored, like the initialisation ranges, keep their defaults).
    pub fn from_state_spaces(file: &SafeTensors) -> Result<Self> {
        let shape = |name: &str| -> Result<Vec<usize>> {
            file.shape(name).map(<[usize]>::to_vec).ok_or_else(|| {
                bad(
                    file,
                    format!(
                        "tensor `{name}` is missing (is this a state-spaces Mamba checkpoint?)"
                    ),
                )
            })
        };
        let dims = |name: &str, rank: usize| -> Result<Vec<usize>> {
            let s = shape(name)?;
            if s.len() != rank {
                return Err(bad(
                    file,
                    format!("tensor `{name}` has shape {s:?}, expected rank {rank}"),
                ));
            }
            Ok(s)
        };
        let emb = dims(EMBEDDING, 2)?;
        let (vocab_size, d_model) = (emb[0], emb[1]);
        if vocab_size == 0 || d_model == 0 {
            return Err(bad(
                file,
                format!("`{EMBEDDING}` has shape {emb:?}: an empty embedding"),
            ));
        }
        let n_layers = (0..)
            .take_while(|&i| file.contains(&layer_key(i, "mixer.in_proj.weight")))
            .count();
        if n_layers == 0 {
            return Err(bad(
                file,
                "no `backbone.layers.0.mixer.in_proj.weight`: no Mamba layers in the file".into(),
            ));
        }
        let d_inner = dims(&layer_key(0, "mixer.in_proj.weight"), 2)?[0] / 2;
        let a = dims(&layer_key(0, "mixer.A_log"), 2)?;
        let conv = dims(&layer_key(0, "mixer.conv1d.weight"), 3)?;
        let dt = dims(&layer_key(0, "mixer.dt_proj.weight"), 2)?;
        if d_inner == 0 || d_inner % d_model != 0 {
            return Err(bad(
                file,
                format!(
                    "in_proj has {} outputs; expected 2·expand·d_model with d_model {d_model}",
                    2 * d_inner
                ),
            ));
        }
        let config = MambaConfig::new(vocab_size, d_model, n_layers)
            .with_d_state(a[1])
            .with_d_conv(conv[2])
            .with_expand(d_inner / d_model)
            .with_dt_rank(Some(dt[1]))
            .with_conv_bias(file.contains(&layer_key(0, "mixer.conv1d.bias")))
            .with_proj_bias(file.contains(&layer_key(0, "mixer.in_proj.bias")))
            .with_tie_embeddings(!untied_head(file)?);
        config.validate()?;
        Ok(config)
    }
}

/// Whether the file has an `lm_head.weight` that differs from the embedding.
fn untied_head(file: &SafeTensors) -> Result<bool> {
    if !file.contains(LM_HEAD) {
        return Ok(false);
    }
    let shape = file.shape(EMBEDDING).unwrap_or(&[]).to_vec();
    let head = file.read(LM_HEAD, &shape)?;
    let emb = file.read(EMBEDDING, &shape)?;
    Ok(head != emb)
}

fn param<const D: usize>(
    file: &SafeTensors,
    name: &str,
    shape: [usize; D],
    device: &Device,
) -> Result<Param<Tensor<D>>> {
    Ok(Param::from_tensor(file.tensor(name, shape, device)?))
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
    let mut lm = config.init_lm(device);
    let (v, d, di) = (config.vocab_size, config.d_model, config.d_inner());
    let (n, r, k) = (config.d_state, config.dt_rank(), config.d_conv);
    lm.mamba.embedding.weight = param(&file, EMBEDDING, [v, d], device)?;
    lm.mamba.norm_f.gamma = param(&file, NORM_F, [d], device)?;
    for (i, block) in lm.mamba.layers.iter_mut().enumerate() {
        let key = |rest: &str| layer_key(i, rest);
        block.norm.gamma = param(&file, &key("norm.weight"), [d], device)?;
        let m = &mut block.mixer;
        m.in_proj = file.linear(&key("mixer.in_proj"), d, 2 * di, config.proj_bias, device)?;
        m.conv_weight = Param::from_tensor(
            file.tensor(&key("mixer.conv1d.weight"), [di, 1, k], device)?
                .reshape([di, k]),
        );
        m.conv_bias = if config.conv_bias {
            Some(param(&file, &key("mixer.conv1d.bias"), [di], device)?)
        } else {
            None
        };
        m.x_proj = file.linear(&key("mixer.x_proj"), di, r + 2 * n, false, device)?;
        m.dt_proj = file.linear(&key("mixer.dt_proj"), r, di, true, device)?;
        m.a_log = param(&file, &key("mixer.A_log"), [di, n], device)?;
        m.d_skip = param(&file, &key("mixer.D"), [di], device)?;
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
    Ok((lm, config))
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
