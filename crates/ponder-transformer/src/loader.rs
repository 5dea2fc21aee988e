//! Pretrained Hugging Face encoders (BERT, RoBERTa, ALBERT) from `config.json` and
//! `model.safetensors` into an [`Encoder`].
//!
//! Tensor names, with the model's prefix (`bert.`, `roberta.`, `albert.`) or none
//! (sentence-transformers checkpoints such as all-MiniLM-L6-v2). PyTorch stores a
//! `Linear` weight as `[out, in]`; burn's is `[in, out]`, so every weight is transposed.
//! `i` runs over the layers; ALBERT has one shared layer.
//!
//! | Hugging Face (BERT / RoBERTa) | ALBERT | ponder |
//! |---|---|---|
//! | `embeddings.word_embeddings.weight` | same | `text.tokens.weight` |
//! | `embeddings.position_embeddings.weight` | same | `text.positions.weight` (RoBERTa: rows from 2 on, see below) |
//! | `embeddings.token_type_embeddings.weight` | same | `text.token_types.weight` |
//! | `embeddings.LayerNorm.{weight,bias}` | same | `text.norm.{gamma,beta}` |
//! | — | `encoder.embedding_hidden_mapping_in.{weight,bias}` | `embed_map` |
//! | `encoder.layer.{i}.attention.self.{query,key,value}.{weight,bias}` | `encoder.albert_layer_groups.0.albert_layers.0.attention.{query,key,value}.*` | `layers[i].mha.{query,key,value}` |
//! | `encoder.layer.{i}.attention.output.dense.*` | `….attention.dense.*` | `layers[i].mha.output` |
//! | `encoder.layer.{i}.attention.output.LayerNorm.*` | `….attention.LayerNorm.*` | `layers[i].norm_1` (post-norm: after attention) |
//! | `encoder.layer.{i}.intermediate.dense.*` | `….ffn.*` | `layers[i].pwff.linear_inner` |
//! | `encoder.layer.{i}.output.dense.*` | `….ffn_output.*` | `layers[i].pwff.linear_outer` |
//! | `encoder.layer.{i}.output.LayerNorm.*` | `….full_layer_layer_norm.*` | `layers[i].norm_2` (after the feed-forward) |
//! | `pooler.dense.*` (optional) | `pooler.*` (optional) | `pooler` |
//!
//! Also accepted: `LayerNorm.gamma`/`beta` (old BERT checkpoints) for `weight`/`bias`,
//! the `embeddings.position_ids` buffer and pretraining heads (`cls.*`, `lm_head.*`,
//! `predictions.*`, `sop_classifier.*`), which are skipped. Any other tensor, a missing one
//! or a wrong shape is an error naming the tensor, its expected and its actual shape.
//! A checkpoint without a pooler keeps a freshly initialised one
//! ([`LoadedEncoder::pooler_loaded`] says so; all-MiniLM-L6-v2 has one, though its
//! sentence-embedding training used mean pooling, not the pooler).
//!
//! RoBERTa numbers positions from `padding_idx + 1 = 2`; ponder's positions start at 0,
//! so its table is the checkpoint's rows `2..` (right-padded input gives every real
//! token the position RoBERTa gives it). Every model runs in post-norm form with the
//! checkpoint's `layer_norm_eps` and `hidden_dropout_prob`; the feed-forward GELU is
//! the exact (erf) one for `"gelu"` (BERT, RoBERTa) and the tanh approximation for
//! `"gelu_new"` / `"gelu_pytorch_tanh"` (ALBERT). Before any allocation, the vocabulary,
//! positions, feed-forward size and layer count of `config.json` are checked against the
//! file's tensors. ALBERT with several layer groups, or several layers per group, is
//! refused. burn's feed-forward block has a dropout after its activation that BERT does
//! not (training only).

use std::path::Path;

use burn::module::Param;
use burn::nn::LayerNorm;
use burn::tensor::{Device, Tensor};
use ponder_core::{PonderError, Result, SafeTensors, read_config_json};
use serde::Deserialize;

use crate::config::{EmbeddingKind, EncoderConfig};
use crate::encoder::Encoder;

/// Which naming a checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfLayout {
    /// BERT (and MiniLM, which is a BERT).
    Bert,
    /// RoBERTa (BERT's names, positions from 2).
    Roberta,
    /// ALBERT (factorised embedding, one shared layer).
    Albert,
}

/// The fields of a Hugging Face `config.json` the encoder needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HfConfig {
    /// `bert`, `roberta`, `xlm-roberta` or `albert`.
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size H.
    pub hidden_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward size.
    pub intermediate_size: usize,
    /// Positions (RoBERTa's include its two offset rows).
    pub max_position_embeddings: usize,
    /// Token types.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Activation of the feed-forward block.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// ALBERT's embedding size E (Hugging Face's default: 128).
    #[serde(default)]
    pub embedding_size: Option<usize>,
    /// Dropout of hidden states (the encoder's dropout unless a run sets its own).
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// The padding token; RoBERTa's positions start at `pad_token_id + 1`.
    #[serde(default)]
    pub pad_token_id: Option<usize>,
    /// ALBERT: groups of layers (only 1 is supported).
    #[serde(default = "default_one")]
    pub num_hidden_groups: usize,
    /// ALBERT: layers per group (only 1 is supported).
    #[serde(default = "default_one")]
    pub inner_group_num: usize,
}

fn default_dropout() -> f64 {
    0.1
}
fn default_one() -> usize {
    1
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

/// Name prefixes of pretraining heads (masked-LM, next-sentence, sentence-order),
/// skipped when present.
const PRETRAINING_HEADS: [&str; 4] = ["cls.", "lm_head.", "predictions.", "sop_classifier."];

impl HfConfig {
    /// Reads `config.json`.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        serde_json::from_value(read_config_json(path)?).map_err(|e| PonderError::Checkpoint {
            path: path.to_path_buf(),
            message: format!("not a Hugging Face encoder config: {e}"),
        })
    }

    /// The checkpoint's naming.
    pub fn layout(&self) -> Result<HfLayout> {
        match self.model_type.as_str() {
            "bert" => Ok(HfLayout::Bert),
            "roberta" | "xlm-roberta" | "camembert" => Ok(HfLayout::Roberta),
            "albert" => Ok(HfLayout::Albert),
            other => Err(PonderError::config(
                "config.json model_type",
                format!("`{other}` is not an encoder ponder loads (bert, roberta, albert)"),
            )),
        }
    }

    /// The row of the position table that position 0 reads: RoBERTa's `padding_idx +
    /// 1` (2 for the released checkpoints), 0 otherwise.
    pub fn position_offset(&self) -> Result<usize> {
        Ok(match self.layout()? {
            HfLayout::Roberta => self.pad_token_id.unwrap_or(1) + 1,
            _ => 0,
        })
    }

    /// The embedding size E.
    pub fn embed_size(&self) -> Result<usize> {
        Ok(match self.layout()? {
            HfLayout::Albert => self.embedding_size.unwrap_or(128),
            _ => self.hidden_size,
        })
    }

    /// The ponder encoder of this shape, with the checkpoint's hidden dropout.
    pub fn encoder_config(&self) -> Result<EncoderConfig> {
        let layout = self.layout()?;
        let gelu_approximate = match self.hidden_act.as_str() {
            "gelu" => false,
            "gelu_new" | "gelu_pytorch_tanh" => true,
            other => {
                return Err(PonderError::config(
                    "config.json hidden_act",
                    format!("`{other}`: only gelu, gelu_new and gelu_pytorch_tanh are supported"),
                ));
            }
        };
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(PonderError::config(
                "config.json layer_norm_eps",
                format!("{} is not a positive number", self.layer_norm_eps),
            ));
        }
        if !(0.0..1.0).contains(&self.hidden_dropout_prob) {
            return Err(PonderError::config(
                "config.json hidden_dropout_prob",
                format!("{} is not in [0, 1)", self.hidden_dropout_prob),
            ));
        }
        if layout == HfLayout::Albert {
            if self.num_hidden_groups != 1 || self.inner_group_num != 1 {
                return Err(PonderError::config(
                    "config.json num_hidden_groups / inner_group_num",
                    format!(
                        "{} / {}: only ALBERT with one group of one shared layer is supported",
                        self.num_hidden_groups, self.inner_group_num
                    ),
                ));
            }
            if self.embed_size()? == self.hidden_size {
                return Err(PonderError::config(
                    "config.json embedding_size",
                    "ALBERT with embedding_size = hidden_size is not supported",
                ));
            }
        }
        let offset = self.position_offset()?;
        let max_position = self
            .max_position_embeddings
            .checked_sub(offset)
            .filter(|&p| p > 0)
            .ok_or_else(|| {
                PonderError::config(
                    "config.json max_position_embeddings",
                    format!(
                        "{} leaves no position after the offset {offset}",
                        self.max_position_embeddings
                    ),
                )
            })?;
        let config = EncoderConfig::new(
            EmbeddingKind::Text {
                vocab_size: self.vocab_size,
                max_position,
                type_vocab_size: self.type_vocab_size,
            },
            self.num_hidden_layers,
            self.hidden_size,
            self.num_attention_heads,
            self.intermediate_size,
        )
        .with_layer_norm_eps(self.layer_norm_eps)
        .with_dropout(self.hidden_dropout_prob)
        .with_gelu_approximate(gelu_approximate)
        .with_share_layers(layout == HfLayout::Albert)
        .with_d_embed(match layout {
            HfLayout::Albert => Some(self.embed_size()?),
            _ => None,
        });
        config.validate()?;
        Ok(config)
    }
}

/// What [`load_hf_encoder`] returns.
#[derive(Debug)]
pub struct LoadedEncoder {
    /// The encoder with the checkpoint's weights.
    pub encoder: Encoder,
    /// Its configuration.
    pub config: EncoderConfig,
    /// The naming the checkpoint used.
    pub layout: HfLayout,
    /// Whether the checkpoint had a pooler (otherwise it is freshly initialised).
    pub pooler_loaded: bool,
}

/// Reads one of `names` (the first present; the error names the first).
fn tensor<const D: usize>(
    file: &SafeTensors,
    names: &[String],
    shape: [usize; D],
    device: &Device,
) -> Result<Tensor<D>> {
    let name = names.iter().find(|n| file.contains(n)).unwrap_or(&names[0]);
    file.tensor(name, shape, device)
}

fn layer_norm(
    file: &SafeTensors,
    prefix: &str,
    d: usize,
    into: &mut LayerNorm,
    device: &Device,
) -> Result<()> {
    let names = |new: &str, old: &str| [format!("{prefix}.{new}"), format!("{prefix}.{old}")];
    into.gamma = Param::from_tensor(tensor(file, &names("weight", "gamma"), [d], device)?);
    into.beta = Some(Param::from_tensor(tensor(
        file,
        &names("bias", "beta"),
        [d],
        device,
    )?));
    Ok(())
}

/// Loads a Hugging Face BERT, RoBERTa or ALBERT encoder from its `config.json` and
/// `model.safetensors` (module docs: the name map). Fails naming the tensor on a
/// missing tensor, a wrong shape or dtype, a tensor the encoder does not use, or a
/// damaged file; never panics on file contents.
pub fn load_hf_encoder(
    config_path: impl AsRef<Path>,
    weights_path: impl AsRef<Path>,
    device: &Device,
) -> Result<LoadedEncoder> {
    let hf = HfConfig::read(config_path)?;
    let file = SafeTensors::open(weights_path)?;
    load_from(&hf, &file, device)
}

/// [`load_hf_encoder`] from an opened file and a parsed config.
pub fn load_from(hf: &HfConfig, file: &SafeTensors, device: &Device) -> Result<LoadedEncoder> {
    load_with_config(hf, hf.encoder_config()?, file, device)
}

/// [`load_from`] into an encoder built from `config`, which must be
/// [`HfConfig::encoder_config`] up to its dropout and pooling (how a fine-tuning run sets
/// its own).
pub fn load_with_config(
    hf: &HfConfig,
    config: EncoderConfig,
    file: &SafeTensors,
    device: &Device,
) -> Result<LoadedEncoder> {
    let layout = hf.layout()?;
    let expected = hf
        .encoder_config()?
        .with_dropout(config.dropout)
        .with_mean_pool(config.mean_pool);
    if format!("{expected:?}") != format!("{config:?}") {
        return Err(PonderError::config(
            "encoder",
            format!("{config:?} is not the checkpoint's shape {expected:?}"),
        ));
    }
    let prefix = [
        match layout {
            HfLayout::Bert => "bert.",
            HfLayout::Roberta => "roberta.",
            HfLayout::Albert => "albert.",
        },
        "",
    ]
    .into_iter()
    .find(|p| file.contains(&format!("{p}embeddings.word_embeddings.weight")))
    .ok_or_else(|| {
        file.error("tensor `embeddings.word_embeddings.weight` is missing (with or without the model's prefix): not a BERT/RoBERTa/ALBERT checkpoint".into(),
        )
    })?;
    let key = |rest: &str| format!("{prefix}{rest}");
    let (h, ff, e) = (config.d_model, config.d_ff, config.embed_size());
    // The sizes config.json claims, against the file's tensors, before anything is
    // allocated (a damaged config.json must not make the encoder huge).
    let last = match layout {
        HfLayout::Albert => "encoder.albert_layer_groups.0.albert_layers.0.ffn.weight".to_string(),
        _ => format!(
            "encoder.layer.{}.intermediate.dense.weight",
            config.n_layers - 1
        ),
    };
    file.check_shapes(&[
        (
            key("embeddings.word_embeddings.weight"),
            vec![hf.vocab_size, e],
        ),
        (
            key("embeddings.position_embeddings.weight"),
            vec![hf.max_position_embeddings, e],
        ),
        (key(&last), vec![ff, h]),
    ])?;
    let mut encoder = config.init(device);
    let EmbeddingKind::Text {
        vocab_size,
        max_position,
        type_vocab_size,
    } = config.embedding
    else {
        unreachable!("a Hugging Face encoder reads text")
    };

    // Embeddings.
    let text = encoder.text.as_mut().expect("a text encoder");
    text.tokens.weight = Param::from_tensor(file.tensor(
        &key("embeddings.word_embeddings.weight"),
        [vocab_size, e],
        device,
    )?);
    let positions = file.tensor(
        &key("embeddings.position_embeddings.weight"),
        [hf.max_position_embeddings, e],
        device,
    )?;
    let positions = match layout {
        HfLayout::Roberta => positions.narrow(0, hf.position_offset()?, max_position),
        _ => positions,
    };
    text.positions.weight = Param::from_tensor(positions);
    if let Some(types) = text.token_types.as_mut() {
        types.weight = Param::from_tensor(file.tensor(
            &key("embeddings.token_type_embeddings.weight"),
            [type_vocab_size, e],
            device,
        )?);
    }
    layer_norm(
        file,
        &key("embeddings.LayerNorm"),
        e,
        &mut text.norm,
        device,
    )?;
    file.skip(&key("embeddings.position_ids"));
    if let Some(map) = encoder.embed_map.as_mut() {
        *map = file.linear(
            &key("encoder.embedding_hidden_mapping_in"),
            e,
            h,
            true,
            device,
        )?;
    }

    // Layers.
    for (i, layer) in encoder.layers.iter_mut().enumerate() {
        let names = match layout {
            HfLayout::Albert => {
                let p = key("encoder.albert_layer_groups.0.albert_layers.0");
                [
                    format!("{p}.attention.query"),
                    format!("{p}.attention.key"),
                    format!("{p}.attention.value"),
                    format!("{p}.attention.dense"),
                    format!("{p}.attention.LayerNorm"),
                    format!("{p}.ffn"),
                    format!("{p}.ffn_output"),
                    format!("{p}.full_layer_layer_norm"),
                ]
            }
            _ => {
                let p = key(&format!("encoder.layer.{i}"));
                [
                    format!("{p}.attention.self.query"),
                    format!("{p}.attention.self.key"),
                    format!("{p}.attention.self.value"),
                    format!("{p}.attention.output.dense"),
                    format!("{p}.attention.output.LayerNorm"),
                    format!("{p}.intermediate.dense"),
                    format!("{p}.output.dense"),
                    format!("{p}.output.LayerNorm"),
                ]
            }
        };
        layer.mha.query = file.linear(&names[0], h, h, true, device)?;
        layer.mha.key = file.linear(&names[1], h, h, true, device)?;
        layer.mha.value = file.linear(&names[2], h, h, true, device)?;
        layer.mha.output = file.linear(&names[3], h, h, true, device)?;
        layer_norm(file, &names[4], h, &mut layer.norm_1, device)?;
        layer.pwff.linear_inner = file.linear(&names[5], h, ff, true, device)?;
        layer.pwff.linear_outer = file.linear(&names[6], ff, h, true, device)?;
        layer_norm(file, &names[7], h, &mut layer.norm_2, device)?;
    }

    // Pooler (optional).
    let pooler_prefix = match layout {
        HfLayout::Albert => key("pooler"),
        _ => key("pooler.dense"),
    };
    let pooler_loaded = file.contains(&format!("{pooler_prefix}.weight"));
    if pooler_loaded {
        encoder.pooler = file.linear(&pooler_prefix, h, h, true, device)?;
    }
    // Pretraining heads are not part of the encoder.
    for name in file.names() {
        if PRETRAINING_HEADS.iter().any(|p| name.starts_with(p)) {
            file.skip(&name);
        }
    }
    file.ensure_all_used()?;
    Ok(LoadedEncoder {
        encoder,
        config,
        layout,
        pooler_loaded,
    })
}
