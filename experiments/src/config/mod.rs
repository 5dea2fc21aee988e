//! Experiment files (TOML): what to train, on which data, and which policies to compare.
//!
//! Every section rejects unknown keys, and every value is checked before anything runs,
//! so a typo or an out-of-range threshold is reported with its key and file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ponder_data::GlueTask;
use ponder_exits::{
    EntropyThreshold, Expectation, FixedLayer, LearnedGate, MaxProbThreshold, NeverExit,
    OffRampPooler, Oracle, Patience, PatienceRegression, Policy, PonderSample, QExit,
};
use ponder_mamba::{MambaConfig, MambaEncoderConfig, Pooling};
use ponder_models::{BackboneConfig, Method, TrainConfig};
use ponder_transformer::{EmbeddingKind, EncoderConfig, HfConfig};
use serde::{Deserialize, Serialize};

use crate::run::ModelKind;

mod data;
pub use data::{DataConfig, DataFormat, Dataset, InputKind};

/// A whole experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Name of the experiment (used for the run folder).
    pub name: String,
    /// The data set.
    pub data: DataConfig,
    /// The backbone.
    pub model: ModelConfig,
    /// Training hyper-parameters shared by every method.
    #[serde(default)]
    pub train: TrainConfig,
    /// What `ponder compare` trains and evaluates.
    #[serde(default)]
    pub compare: CompareConfig,
}

/// The backbone: an encoder and its exits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Number of layers.
    pub n_layers: usize,
    /// Hidden size.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Feed-forward size.
    pub d_ff: usize,
    /// Embedding size (ALBERT's factorised embedding); default: `d_model`.
    #[serde(default)]
    pub d_embed: Option<usize>,
    /// One layer shared by all depths (ALBERT).
    #[serde(default)]
    pub share_layers: bool,
    /// Pre-norm layers.
    #[serde(default)]
    pub norm_first: bool,
    /// Backbone dropout.
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Dropout on the classifier inputs.
    #[serde(default = "default_dropout")]
    pub head_dropout: f64,
    /// Images: side of a square patch.
    #[serde(default = "default_patch")]
    pub patch_size: usize,
    /// A pretrained Hugging Face encoder to start from (BERT, RoBERTa or ALBERT): a
    /// folder holding `config.json` and `model.safetensors`, e.g.
    /// `data/all-minilm-l6-v2`. Text only, transformer backbone; the encoder's sizes are
    /// the checkpoint's (`n_layers`, `d_model`, `n_heads`, `d_ff` must equal them) and
    /// its vocabulary must be the tokenizer's.
    #[serde(default)]
    pub pretrained: Option<PathBuf>,
    /// The backbone: `transformer` (default) or `mamba` (text only; `n_heads`, `d_ff`,
    /// `d_embed`, `share_layers`, `norm_first` and `dropout` are the transformer's).
    #[serde(default)]
    pub backbone: BackboneKind,
    /// Mamba: SSM state size n per channel.
    #[serde(default = "default_d_state")]
    pub d_state: usize,
    /// Mamba: width of the causal convolution.
    #[serde(default = "default_d_conv")]
    pub d_conv: usize,
    /// Mamba: expansion factor (d_inner = expand · d_model).
    #[serde(default = "default_expand")]
    pub expand: usize,
    /// What every exit reads: `mean`, the mean of the real tokens' states (both
    /// backbones; for a sentence-transformers checkpoint such as all-MiniLM-L6-v2 the
    /// pooling it was trained with), or `last` (the default): the last real token for
    /// Mamba, the `[CLS]` token (BERT's pooler input) for the transformer.
    #[serde(default = "default_pooling")]
    pub pooling: Pooling,
    /// One classifier shared by every exit (`true`) or one per layer (`false`).
    /// Default: shared for PALBERT and PonderNet (their papers' form), per layer for
    /// the other methods. `false` trains PALBERT's or PonderNet's loss with per-layer
    /// heads (an ablation); `true` is refused for DeeBERT and JEI-DNN, whose later
    /// stages train the early exits' heads apart from the final one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_head: Option<bool>,
    /// DeeBERT's off-ramp poolers (only DeeBERT's models read it; the other methods
    /// have no pooler in their heads and ignore it):
    ///
    /// * `separate` (the default of a new experiment): DeeBERT's reference form. Each
    ///   off-ramp (every exit but the last) has its own pooler on the layer's pre-pooler
    ///   features (the normalised `[CLS]` state, or the token mean with `pooling =
    ///   "mean"`), set to a copy of the main pooler trained in stage 1 when stage 2
    ///   starts; the final exit is the main pooler and its classifier, as in a
    ///   `final_only` model. On the Mamba backbone, which has no pooler, every exit's
    ///   classifier reads the pooled state directly.
    /// * `stacked`: every exit, the final one too, stacks its own freshly initialised
    ///   pooler on the main pooler's output (ponder's DeeBERT before `separate`).
    ///
    /// A run folder records the form in its `config.toml`; one saved before the key
    /// existed has none and was trained `stacked`, which is what it loads as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offramp_pooler: Option<OffRampPooler>,
}

/// The backbone of a multi-exit model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackboneKind {
    /// A transformer encoder (BERT, ALBERT, ViT).
    #[default]
    Transformer,
    /// A Mamba selective-SSM stack with pooling (text only).
    Mamba,
}

impl BackboneKind {
    /// The name used in configs, model folders and tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Transformer => "transformer",
            Self::Mamba => "mamba",
        }
    }
}

/// Reads a TOML experiment file of kind `what` ("LM experiment", ...), applies
/// `key=value` overrides to it and returns it for the caller to validate.
pub(crate) fn load_toml<T>(path: &Path, overrides: &[String], what: &str) -> Result<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    let experiment: T =
        toml::from_str(&text).with_context(|| format!("in {what} {}", path.display()))?;
    if overrides.is_empty() {
        return Ok(experiment);
    }
    let mut value = toml::Value::try_from(&experiment)?;
    apply_overrides(&mut value, overrides)?;
    value
        .try_into()
        .context("after applying the --set overrides")
}

pub(crate) fn default_d_state() -> usize {
    16
}
pub(crate) fn default_d_conv() -> usize {
    4
}
pub(crate) fn default_expand() -> usize {
    2
}
fn default_pooling() -> Pooling {
    Pooling::Last
}

fn default_dropout() -> f64 {
    0.1
}
fn default_patch() -> usize {
    7
}

/// What `ponder compare` trains and sweeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompareConfig {
    /// Training methods, one model each (per seed): `pabee`, `dee_bert`, `final_only`,
    /// `palbert`, `ponder_net`, `jei_dnn`.
    pub methods: Vec<Method>,
    /// Train every method once per seed (overriding `train.seed`) and report mean ± std
    /// over seeds. Empty: one model per method, with `train.seed`.
    pub seeds: Vec<u64>,
    /// Max-probability thresholds to sweep, each in `[0, 1]`.
    pub max_prob: Vec<f32>,
    /// Entropy thresholds to sweep, each `≥ 0`.
    pub entropy: Vec<f32>,
    /// Patience values to sweep (0: full model).
    pub patience: Vec<usize>,
    /// Also evaluate a fixed exit at every layer.
    pub fixed_layers: bool,
    /// Also evaluate the oracle (analysis only: it reads the labels).
    pub oracle: bool,
    /// Models with a halting head: PALBERT's Q-exit quantiles to sweep, each in `[0, 1]`.
    pub q_exit: Vec<f64>,
    /// Models with a halting head: also evaluate PonderNet's sampling (seed 0).
    pub sample: bool,
    /// Models with a halting head: also evaluate the expectation over the exit
    /// distribution (full depth, mixture of every layer's prediction).
    pub expectation: bool,
    /// Models with JEI-DNN's gates: thresholds on the conditional activation `a_l` to
    /// sweep, each in `(0, 1]` (JEI-DNN's rule: 0.5).
    pub gate: Vec<f64>,
    /// JEI-DNN: train one model per λ_cost of this list (overriding
    /// `train.jei.cost_weight`; the points of JEI-DNN's accuracy-versus-cost curve),
    /// labelled `jei_dnn[λ=C]`, in `models/jei_dnn-costC[-seedS]/`. Empty: one model
    /// with `train.jei.cost_weight`.
    pub jei_cost_weights: Vec<f64>,
    /// JEI-DNN: also report, per gate, its weights, its objective's loss and gradient
    /// norm on the training split and the best-exit histogram its targets come from, and
    /// evaluate a copy of each model with every gate refitted to convergence there
    /// (labelled `+refit`): with the inference modules frozen each gate is a convex
    /// logistic regression, so the refit shows the best gates the features allow.
    /// Costs one pass over the training split per model. Default: false.
    pub jei_refit: bool,
    /// Models with a halting head: evaluate the first Q-exit quantile and sampling this
    /// many times (sampling with seeds 0, 1, …) and report how much each example's exit
    /// layer varies (0: skip).
    pub repeats: usize,
    /// Regression tasks (STS-B): PABEE's tolerances `τ` to sweep with every
    /// `compare.patience` (two exits agree when their outputs differ by less than τ;
    /// scores run from 0 to 5). Classification tasks ignore it.
    pub tolerance: Vec<f32>,
    /// Batch size of evaluation.
    pub batch_size: usize,
    /// Train every method on each of these backbones (`transformer`, `mamba`) with the
    /// same `[model]` sizes, in one table. Empty: `model.backbone` only.
    pub backbones: Vec<BackboneKind>,
}

impl Default for CompareConfig {
    fn default() -> Self {
        Self {
            methods: vec![Method::Pabee, Method::DeeBert],
            max_prob: vec![0.5, 0.7, 0.8, 0.9, 0.95, 0.99],
            entropy: vec![0.05, 0.1, 0.2, 0.4, 0.6],
            patience: vec![1, 2, 3],
            seeds: Vec::new(),
            fixed_layers: true,
            oracle: true,
            q_exit: vec![0.3, 0.5, 0.7, 0.9],
            sample: true,
            expectation: true,
            gate: vec![0.5, 0.3, 0.7, 0.9],
            jei_cost_weights: Vec::new(),
            jei_refit: false,
            repeats: 10,
            tolerance: vec![0.1, 0.25, 0.5],
            batch_size: 256,
            backbones: Vec::new(),
        }
    }
}

impl Experiment {
    /// Reads and checks an experiment file (a new experiment: see [`Self::parse`]).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading experiment file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in experiment file {}", path.display()))
    }

    /// Parses and checks a new experiment from TOML text; without `model.offramp_pooler`
    /// it gets DeeBERT's reference form, `separate`.
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_with(text, OffRampPooler::Separate)
    }

    /// Reads and checks the `config.toml` of a run folder: as [`Self::load`], except
    /// that a file without `model.offramp_pooler` was saved before the key existed, when
    /// DeeBERT was trained in the `stacked` form, so that is what it gets.
    pub fn load_saved(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading saved experiment {}", path.display()))?;
        Self::parse_with(&text, OffRampPooler::Stacked)
            .with_context(|| format!("in saved experiment {}", path.display()))
    }

    fn parse_with(text: &str, offramp_pooler: OffRampPooler) -> Result<Self> {
        let mut experiment: Self = toml::from_str(text)?;
        experiment
            .model
            .offramp_pooler
            .get_or_insert(offramp_pooler);
        experiment.validate()?;
        Ok(experiment)
    }

    /// DeeBERT's off-ramp poolers (`model.offramp_pooler`; `separate` when unset).
    pub fn offramp_pooler(&self) -> OffRampPooler {
        self.model.offramp_pooler.unwrap_or(OffRampPooler::Separate)
    }

    /// Applies `key=value` overrides (TOML values, dotted keys such as
    /// `train.epochs=2`), then checks the result.
    pub fn with_overrides(self, overrides: &[String]) -> Result<Self> {
        if overrides.is_empty() {
            return Ok(self);
        }
        let mut value = toml::Value::try_from(&self)?;
        apply_overrides(&mut value, overrides)?;
        let text = toml::to_string(&value)?;
        Self::parse(&text).context("after applying the --set overrides")
    }

    /// Checks every value, naming the key at fault.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!(
                "invalid value for `name`: {:?} must be non-empty letters, digits, '-', '_' or '.'",
                self.name
            );
        }
        self.train.validate()?;
        self.data.validate()?;
        match &self.model.pretrained {
            // the checkpoint's shape against [model] (the vocabulary is checked once the
            // tokenizer is loaded)
            Some(dir) => {
                self.pretrained_config(dir, None, 1)?;
            }
            None => self.encoder_config(10, 1)?.validate()?,
        }
        if self.data.dataset == Some(Dataset::Glue) {
            let task = self.glue_task()?.unwrap_or_else(|| unreachable!("checked"));
            if self.data.mismatched && task != GlueTask::Mnli {
                bail!(
                    "invalid value for `data.mismatched`: only MNLI has a mismatched dev set, not {}",
                    task.name()
                );
            }
            if task.is_regression()
                && self.compare.tolerance.is_empty()
                && !self.compare.patience.is_empty()
            {
                bail!(
                    "invalid value for `compare.tolerance`: {} is a regression task; its patience rule needs at least one tolerance",
                    task.name()
                );
            }
            if task.is_regression() {
                let methods = self.compare.methods.iter().chain([&self.train.method]);
                if let Some(m) = methods.into_iter().find(|m| !m.has_regression_variant()) {
                    bail!(
                        "invalid value for `compare.methods` / `train.method`: {} is a regression task and {m:?} has no regression variant (use pabee, dee_bert or final_only)",
                        task.name()
                    );
                }
            }
        }
        if self.backbones().contains(&BackboneKind::Mamba) {
            if !self.data.is_text() {
                bail!(
                    "invalid value for `model.backbone` / `compare.backbones`: the Mamba backbone reads token ids; use it with a text data set"
                );
            }
            self.mamba_config(10)
                .mamba
                .validate()
                .map_err(|e| anyhow::anyhow!("{e}").context("in section [model]"))?;
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(b) = self.compare.backbones.iter().find(|&&b| !seen.insert(b)) {
            bail!(
                "invalid value for `compare.backbones`: {} appears twice",
                b.name()
            );
        }
        if self.train.method.has_halting() || self.compare.methods.iter().any(|m| m.has_halting()) {
            self.train
                .ponder
                .validate_for("train.ponder", self.model.n_layers)?;
        }
        if self.model.pretrained.is_some()
            && (!self.data.is_text()
                || self
                    .backbones()
                    .iter()
                    .any(|b| *b != BackboneKind::Transformer))
        {
            bail!(
                "invalid value for `model.pretrained`: a pretrained encoder needs a text data set and the transformer backbone"
            );
        }
        if !(0.0..1.0).contains(&self.model.head_dropout) {
            bail!(
                "invalid value for `model.head_dropout`: {} is not in [0, 1)",
                self.model.head_dropout
            );
        }
        if self.compare.methods.is_empty() {
            bail!("invalid value for `compare.methods`: name at least one method");
        }
        if self.model.n_layers < 2
            && [Method::DeeBert, Method::JeiDnn]
                .iter()
                .any(|m| self.compare.methods.contains(m) || self.train.method == *m)
        {
            bail!(
                "invalid value for `model.n_layers`: DeeBERT and JEI-DNN (in `compare.methods` or `train.method`) need at least 2 layers"
            );
        }
        for (i, &c) in self.compare.jei_cost_weights.iter().enumerate() {
            if !(c >= 0.0 && c.is_finite()) {
                bail!("invalid value for `compare.jei_cost_weights`: {c} is not ≥ 0");
            }
            if self.compare.jei_cost_weights[..i].contains(&c) {
                bail!("invalid value for `compare.jei_cost_weights`: {c} appears twice");
            }
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(s) = self.compare.seeds.iter().find(|&&s| !seen.insert(s)) {
            bail!("invalid value for `compare.seeds`: seed {s} appears twice");
        }
        if self.compare.batch_size == 0 {
            bail!("invalid value for `compare.batch_size`: must be at least 1");
        }
        self.policies()?;
        Ok(())
    }

    /// The backbones `compare` trains: `compare.backbones`, or `model.backbone`.
    pub fn backbones(&self) -> Vec<BackboneKind> {
        if self.compare.backbones.is_empty() {
            vec![self.model.backbone]
        } else {
            self.compare.backbones.clone()
        }
    }

    /// The λ_cost values JEI-DNN is trained with (`compare.jei_cost_weights`; `None`:
    /// the single model of `train.jei.cost_weight`); `[None]` for every other method.
    pub fn cost_variants(&self, method: Method) -> Vec<Option<f64>> {
        if self.sweeps_cost(method) {
            self.compare
                .jei_cost_weights
                .iter()
                .map(|&c| Some(c))
                .collect()
        } else {
            vec![None]
        }
    }

    /// Whether `method`'s models are a λ_cost sweep (JEI-DNN with
    /// `compare.jei_cost_weights`).
    fn sweeps_cost(&self, method: Method) -> bool {
        method == Method::JeiDnn && !self.compare.jei_cost_weights.is_empty()
    }

    /// The same experiment with `train.jei.cost_weight` set to `cost` (if given).
    pub fn with_cost_weight(&self, cost: Option<f64>) -> Self {
        let mut out = self.clone();
        if let Some(c) = cost {
            out.train.jei.cost_weight = c;
        }
        out
    }

    /// Which model of a run `method` trains under this experiment: in a λ_cost sweep,
    /// JEI-DNN's models are told apart by `train.jei.cost_weight`.
    pub fn model_kind(&self, method: Method) -> ModelKind {
        ModelKind {
            backbone: self.model.backbone,
            method,
            cost_weight: self
                .sweeps_cost(method)
                .then_some(self.train.jei.cost_weight),
            gates_refit: false,
        }
    }

    /// The same experiment with `model.backbone` set to `backbone`.
    pub fn with_backbone(&self, backbone: BackboneKind) -> Self {
        let mut out = self.clone();
        out.model.backbone = backbone;
        out
    }

    /// The Mamba stack of this experiment (same `n_layers` and `d_model` as the
    /// transformer) for a vocabulary of `vocab_size` tokens.
    pub fn mamba_config(&self, vocab_size: usize) -> MambaEncoderConfig {
        let m = &self.model;
        MambaEncoderConfig::new(
            MambaConfig::new(vocab_size, m.d_model, m.n_layers)
                .with_d_state(m.d_state)
                .with_d_conv(m.d_conv)
                .with_expand(m.expand),
        )
        .with_pooling(m.pooling)
    }

    /// The backbone `model.backbone` of this experiment.
    pub fn backbone_config(
        &self,
        vocab_size: usize,
        max_position: usize,
    ) -> Result<BackboneConfig> {
        Ok(match self.model.backbone {
            BackboneKind::Transformer => {
                BackboneConfig::Transformer(self.encoder_config(vocab_size, max_position)?)
            }
            BackboneKind::Mamba => BackboneConfig::Mamba(self.mamba_config(vocab_size)),
        })
    }

    /// The pretrained checkpoint's encoder (`model.pretrained`), checked against the
    /// `[model]` sizes, the tokenizer's vocabulary and `data.max_tokens`; dropout as
    /// `model.dropout`.
    pub fn pretrained_config(
        &self,
        dir: &Path,
        vocab_size: Option<usize>,
        max_position: usize,
    ) -> Result<EncoderConfig> {
        let hf = HfConfig::read(dir.join("config.json"))
            .map_err(|e| anyhow::anyhow!("{e}").context("in `model.pretrained`"))?;
        let config = hf
            .encoder_config()
            .map_err(|e| anyhow::anyhow!("{e}").context("in `model.pretrained`"))?
            .with_dropout(self.model.dropout)
            .with_mean_pool(self.model.pooling == Pooling::Mean);
        let m = &self.model;
        for (key, ours, theirs) in [
            ("n_layers", m.n_layers, config.n_layers),
            ("d_model", m.d_model, config.d_model),
            ("n_heads", m.n_heads, config.n_heads),
            ("d_ff", m.d_ff, config.d_ff),
            (
                "d_embed",
                m.d_embed.unwrap_or(m.d_model),
                config.embed_size(),
            ),
            (
                "share_layers",
                m.share_layers as usize,
                config.share_layers as usize,
            ),
            (
                "norm_first",
                m.norm_first as usize,
                config.norm_first as usize,
            ),
        ] {
            if ours != theirs {
                bail!(
                    "invalid value for `model.{key}`: {ours}, but the pretrained encoder in {} has {theirs}",
                    dir.display()
                );
            }
        }
        let EmbeddingKind::Text {
            vocab_size: theirs,
            max_position: positions,
            ..
        } = config.embedding
        else {
            unreachable!("pretrained encoders read text")
        };
        if let Some(vocab_size) = vocab_size
            && vocab_size != theirs
        {
            bail!(
                "the tokenizer has {vocab_size} tokens but the pretrained encoder in {} has {theirs}: use its own tokenizer (`data.tokenizer`)",
                dir.display()
            );
        }
        if max_position > positions {
            bail!(
                "invalid value for `data.max_tokens`: {max_position} exceeds the pretrained encoder's {positions} positions"
            );
        }
        Ok(config)
    }

    /// The encoder of this experiment for `max_position` tokens (text) or images.
    pub fn encoder_config(&self, vocab_size: usize, max_position: usize) -> Result<EncoderConfig> {
        let m = &self.model;
        if let Some(dir) = &m.pretrained {
            return self.pretrained_config(dir, Some(vocab_size), max_position);
        }
        let embedding = match self.data.input() {
            // an IDX file's size is known once it is read: until then any multiple of the
            // patch passes
            InputKind::Images { size, channels } => EmbeddingKind::Patch {
                image_size: size.unwrap_or(m.patch_size),
                patch_size: m.patch_size,
                channels,
            },
            InputKind::Text => EmbeddingKind::Text {
                vocab_size,
                max_position,
                type_vocab_size: 2,
            },
        };
        let config = EncoderConfig::new(embedding, m.n_layers, m.d_model, m.n_heads, m.d_ff)
            .with_d_embed(m.d_embed)
            .with_share_layers(m.share_layers)
            .with_norm_first(m.norm_first)
            .with_dropout(m.dropout)
            .with_mean_pool(m.pooling == Pooling::Mean);
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}").context("in section [model]"))?;
        Ok(config)
    }

    /// The GLUE task of a `dataset = "glue"` experiment (`None` for other data sets);
    /// see [`DataConfig::glue_task`].
    pub fn glue_task(&self) -> Result<Option<GlueTask>> {
        self.data.glue_task()
    }

    /// Whether the task is a regression (GLUE's STS-B): one output per exit, scored by
    /// correlation.
    pub fn is_regression(&self) -> bool {
        self.glue_task()
            .ok()
            .flatten()
            .is_some_and(GlueTask::is_regression)
    }

    /// Every policy `compare` evaluates, in table order; the first is full depth. A
    /// regression task gets full depth, PABEE's regression patience (every
    /// `compare.patience` × `compare.tolerance`) and the fixed exits.
    pub fn policies(&self) -> Result<Vec<Policy>> {
        let c = &self.compare;
        let regression = self.is_regression();
        let mut out = vec![Policy::Full(NeverExit)];
        // thresholds on class probabilities: classification only
        let (max_prob, entropy) = match regression {
            true => (&[][..], &[][..]),
            false => (&c.max_prob[..], &c.entropy[..]),
        };
        for &t in max_prob {
            out.push(Policy::MaxProb(
                MaxProbThreshold::new(t).context("in `compare.max_prob`")?,
            ));
        }
        for &t in entropy {
            out.push(Policy::Entropy(
                EntropyThreshold::new(t).context("in `compare.entropy`")?,
            ));
        }
        for &t in &c.patience {
            if !regression {
                out.push(Policy::Patience(Patience::new(t)));
                continue;
            }
            for &tol in &c.tolerance {
                out.push(Policy::PatienceRegression(
                    PatienceRegression::new(t, tol).context("in `compare.tolerance`")?,
                ));
            }
        }
        if c.fixed_layers {
            for l in 1..self.model.n_layers {
                out.push(Policy::Fixed(FixedLayer::new(l).context("in `compare`")?));
            }
        }
        if regression {
            // the rules below read labels, class probabilities, halting or gates
            return Ok(out);
        }
        if c.oracle {
            out.push(Policy::Oracle(Oracle));
        }
        for &q in &c.q_exit {
            out.push(Policy::QExit(QExit::new(q).context("in `compare.q_exit`")?));
        }
        if c.sample {
            out.push(Policy::Sample(PonderSample::new(0)));
        }
        if c.expectation {
            out.push(Policy::Expectation(Expectation::new(0.0)?));
        }
        for &a in &c.gate {
            out.push(Policy::Gate(
                LearnedGate::new(a).context("in `compare.gate`")?,
            ));
        }
        Ok(out)
    }

    /// Which methods `compare` trains (DeeBERT's stage 1 doubles as the final-head-only
    /// baseline, so `final_only` is only needed without DeeBERT).
    pub fn methods(&self) -> Vec<Method> {
        self.compare.methods.clone()
    }

    /// The seeds `compare` trains each method with.
    pub fn seeds(&self) -> Vec<u64> {
        if self.compare.seeds.is_empty() {
            vec![self.train.seed]
        } else {
            self.compare.seeds.clone()
        }
    }

    /// The training configuration of one method at one seed.
    pub fn train_config(&self, method: Method, seed: u64) -> TrainConfig {
        TrainConfig {
            method,
            seed,
            ..self.train.clone()
        }
    }
}

/// Applies `key=value` overrides (TOML values, dotted keys such as `train.epochs=2`;
/// a value that is not valid TOML is taken as a string) to a parsed TOML document.
pub fn apply_overrides(value: &mut toml::Value, overrides: &[String]) -> Result<()> {
    for item in overrides {
        let (key, raw) = item
            .split_once('=')
            .with_context(|| format!("override `{item}` is not of the form key=value"))?;
        let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .map(|mut t| {
                t.remove("v")
                    .unwrap_or(toml::Value::String(raw.to_string()))
            })
            .unwrap_or_else(|_| toml::Value::String(raw.to_string()));
        let mut slot = &mut *value;
        let parts: Vec<&str> = key.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let table = slot
                .as_table_mut()
                .with_context(|| format!("override `{key}`: `{part}` is not inside a table"))?;
            if i + 1 == parts.len() {
                table.insert(part.to_string(), parsed.clone());
                break;
            }
            slot = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed experiment file of `ponder compare`/`train` parses and passes
    /// its checks (the pretrained ones' sizes against the checkpoint when it has been
    /// fetched).
    #[test]
    fn committed_experiment_files_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let workspace = root.parent().unwrap();
        let mut checked = Vec::new();
        for entry in std::fs::read_dir(root.join("configs")).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            // language-model, parity and token-exit files have their own commands
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if text.contains("[token_exit]")
                || name.starts_with("parity")
                || name.starts_with("lm-")
                || (name.starts_with("shakespeare") && !text.contains("[compare]"))
            {
                continue;
            }
            let text = text.replace(
                "pretrained = \"data/",
                &format!("pretrained = \"{}/data/", workspace.display()),
            );
            // without the checkpoint, everything but its sizes is checked
            let text = if workspace.join("data/all-minilm-l6-v2").is_dir() {
                text
            } else {
                text.lines()
                    .filter(|l| !l.starts_with("pretrained = "))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Experiment::parse(&text).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            checked.push(name);
        }
        for name in [
            "glue.toml",
            "glue-stsb.toml",
            "spamassassin-minilm.toml",
            "fashion-mnist-jei.toml",
        ] {
            assert!(
                checked.iter().any(|c| c == name),
                "{name} not checked: {checked:?}"
            );
        }
    }

    const MINIMAL: &str = r#"
name = "t"
[data]
dataset = "fashion-mnist"
path = "data/fashion-mnist"
[model]
n_layers = 4
d_model = 32
n_heads = 4
d_ff = 64
"#;

    #[test]
    fn a_cost_sweep_names_one_jei_dnn_model_per_cost_weight() {
        let e = Experiment::parse(MINIMAL).unwrap();
        // without a sweep: one JEI-DNN model, named by its method only
        assert_eq!(e.cost_variants(Method::JeiDnn), vec![None]);
        assert_eq!(e.model_kind(Method::JeiDnn).name(Some(2)), "jei_dnn-seed2");
        let e = Experiment::parse(&format!(
            "{MINIMAL}[compare]\njei_cost_weights = [0.05, 0.5]\n"
        ))
        .unwrap();
        assert_eq!(e.cost_variants(Method::JeiDnn), vec![Some(0.05), Some(0.5)]);
        assert_eq!(e.cost_variants(Method::Pabee), vec![None]);
        let jei = e.with_cost_weight(Some(0.5));
        assert_eq!(jei.train.jei.cost_weight, 0.5);
        let kind = jei.model_kind(Method::JeiDnn);
        assert_eq!(kind.name(Some(1)), "jei_dnn-cost0.5-seed1");
        assert_eq!(kind.label(), "jei_dnn[λ=0.5]");
        assert_eq!(jei.model_kind(Method::Pabee).name(None), "pabee");
        for bad in ["[-1.0]", "[0.1, 0.1]", "[nan]"] {
            let err = Experiment::parse(&format!("{MINIMAL}[compare]\njei_cost_weights = {bad}\n"))
                .unwrap_err();
            assert!(
                format!("{err:#}").contains("compare.jei_cost_weights"),
                "{err:#}"
            );
        }
    }

    #[test]
    fn minimal_file_parses_with_defaults() {
        let e = Experiment::parse(MINIMAL).unwrap();
        assert_eq!(e.train, TrainConfig::default());
        assert_eq!(e.policies().unwrap()[0], Policy::Full(NeverExit));
    }

    #[test]
    fn mamba_backbone_needs_text_and_builds_the_same_size() {
        let err = Experiment::parse(&format!("{MINIMAL}backbone = \"mamba\"\n")).unwrap_err();
        assert!(format!("{err:#}").contains("model.backbone"), "{err:#}");
        let text = MINIMAL
            .replace("data/fashion-mnist", "data/spamassassin")
            .replace(
                "\"fashion-mnist\"",
                "\"spamassassin\"\ntokenizer = \"vocab.txt\"",
            );
        let both =
            format!("{text}d_state = 8\n[compare]\nbackbones = [\"transformer\", \"mamba\"]\n");
        let e = Experiment::parse(&both).unwrap();
        assert_eq!(
            e.backbones(),
            vec![BackboneKind::Transformer, BackboneKind::Mamba]
        );
        let mamba = e.with_backbone(BackboneKind::Mamba);
        match mamba.backbone_config(100, 64).unwrap() {
            BackboneConfig::Mamba(c) => {
                assert_eq!(
                    (c.mamba.n_layers, c.mamba.d_model, c.mamba.d_state),
                    (4, 32, 8)
                );
                assert_eq!(c.pooling, Pooling::Last);
            }
            BackboneConfig::Transformer(_) => panic!("expected the Mamba backbone"),
        }
        let twice = both.replace("\"transformer\", \"mamba\"", "\"mamba\", \"mamba\"");
        let err = Experiment::parse(&twice).unwrap_err();
        assert!(format!("{err:#}").contains("compare.backbones"), "{err:#}");
        let err =
            Experiment::parse(&format!("{text}backbone = \"mamba\"\nd_state = 0\n")).unwrap_err();
        assert!(format!("{err:#}").contains("model.d_state"), "{err:#}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Experiment::parse(&format!("{MINIMAL}\n[train]\nepochz = 3\n")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("epochz"), "{msg}");
    }

    #[test]
    fn out_of_range_threshold_is_named() {
        let err = Experiment::parse(&format!("{MINIMAL}\n[compare]\nmax_prob = [0.5, 1.5]\n"))
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("max_prob") && msg.contains("1.5"), "{msg}");
        let err =
            Experiment::parse(&format!("{MINIMAL}\n[compare]\nentropy = [-1.0]\n")).unwrap_err();
        assert!(format!("{err:#}").contains("entropy"));
    }

    #[test]
    fn bad_model_shape_is_named() {
        let err = Experiment::parse(&MINIMAL.replace("n_heads = 4", "n_heads = 5")).unwrap_err();
        assert!(format!("{err:#}").contains("n_heads"));
    }

    #[test]
    fn glue_settings_are_checked() {
        let glue = |data: &str, compare: &str| {
            let text = MINIMAL
                .replace(
                    "dataset = \"fashion-mnist\"",
                    &format!("dataset = \"glue\"\ntokenizer = \"vocab.txt\"\n{data}"),
                )
                .replace("path = \"data/fashion-mnist\"", "path = \"glue_data/X\"");
            Experiment::parse(&format!("{text}\n[compare]\n{compare}\n"))
        };
        let message = |r: Result<Experiment>| format!("{:#}", r.unwrap_err());
        let e = glue("task = \"SST-2\"", "").unwrap();
        assert_eq!(e.glue_task().unwrap(), Some(GlueTask::Sst2));
        assert!(!e.is_regression());
        assert!(message(glue("", "")).contains("missing `data.task`"));
        let m = message(glue("task = \"sst3\"", ""));
        assert!(m.contains("data.task") && m.contains("sst3"), "{m}");
        let m = message(glue("task = \"qnli\"\nmismatched = true", ""));
        assert!(m.contains("data.mismatched"), "{m}");
        assert!(glue("task = \"mnli\"\nmismatched = true", "").is_ok());
        // STS-B: regression policies only, and methods with a regression variant
        let e = glue(
            "task = \"sts_b\"",
            "methods = [\"pabee\"]\npatience = [2]\ntolerance = [0.3]",
        )
        .unwrap();
        assert!(e.is_regression());
        let names: Vec<String> = e
            .policies()
            .unwrap()
            .iter()
            .map(ponder_core::ExitPolicy::name)
            .collect();
        assert_eq!(
            names,
            [
                "full",
                "patience=2,tol=0.3",
                "fixed=1",
                "fixed=2",
                "fixed=3"
            ]
        );
        let m = message(glue("task = \"stsb\"", "methods = [\"jei_dnn\"]"));
        assert!(m.contains("regression variant"), "{m}");
        let m = message(glue("task = \"stsb\"", "tolerance = [-1.0]"));
        assert!(m.contains("compare.tolerance"), "{m}");
        let m = message(glue("task = \"stsb\"", "tolerance = []"));
        assert!(m.contains("compare.tolerance"), "{m}");
        // a task on another data set
        let m = message(Experiment::parse(&MINIMAL.replace(
            "dataset = \"fashion-mnist\"",
            "dataset = \"fashion-mnist\"\ntask = \"rte\"",
        )));
        assert!(m.contains("data.task"), "{m}");
    }

    #[test]
    fn deebert_needs_two_layers() {
        let err = Experiment::parse(&MINIMAL.replace("n_layers = 4", "n_layers = 1")).unwrap_err();
        assert!(format!("{err:#}").contains("n_layers"));
    }

    #[test]
    fn overrides_apply_and_are_checked() {
        let e = Experiment::parse(MINIMAL)
            .unwrap()
            .with_overrides(&["train.epochs=2".into(), "compare.patience=[1]".into()])
            .unwrap();
        assert_eq!(e.train.epochs, 2);
        assert_eq!(e.compare.patience, vec![1]);
        let err = Experiment::parse(MINIMAL)
            .unwrap()
            .with_overrides(&["train.learning_rate=0".into()])
            .unwrap_err();
        assert!(format!("{err:#}").contains("learning_rate"));
        assert!(
            Experiment::parse(MINIMAL)
                .unwrap()
                .with_overrides(&["train.nope=1".into()])
                .is_err()
        );
    }

    #[test]
    fn offramp_pooler_is_separate_for_new_experiments_and_stacked_for_old_runs() {
        use crate::run::RunFolder;
        // a new experiment without the key: DeeBERT's reference form
        let e = Experiment::parse(MINIMAL).unwrap();
        assert_eq!(e.model.offramp_pooler, Some(OffRampPooler::Separate));
        for (value, form) in [
            ("separate", OffRampPooler::Separate),
            ("stacked", OffRampPooler::Stacked),
        ] {
            let text = format!("{MINIMAL}offramp_pooler = \"{value}\"\n");
            assert_eq!(Experiment::parse(&text).unwrap().offramp_pooler(), form);
            let e = Experiment::parse(MINIMAL)
                .unwrap()
                .with_overrides(&[format!("model.offramp_pooler={value}")])
                .unwrap();
            assert_eq!(e.offramp_pooler(), form);
        }
        let err = Experiment::parse(&format!("{MINIMAL}offramp_pooler = \"cls\"\n")).unwrap_err();
        assert!(format!("{err:#}").contains("offramp_pooler"), "{err:#}");

        let dir = tempfile::tempdir().unwrap();
        // a run folder saved before the key existed was trained in the stacked form
        let old = dir.path().join("old");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("config.toml"), MINIMAL).unwrap();
        let (_, e) = RunFolder::open(&old).unwrap();
        assert_eq!(e.offramp_pooler(), OffRampPooler::Stacked);
        // a new run records its form, so that it opens as it was trained
        for value in ["separate", "stacked"] {
            let text = format!("{MINIMAL}offramp_pooler = \"{value}\"\n");
            let e = Experiment::parse(&text).unwrap();
            let root = dir.path().join(value);
            RunFolder::create_at(root.clone(), &e).unwrap();
            let saved = std::fs::read_to_string(root.join("config.toml")).unwrap();
            assert!(
                saved.contains(&format!("offramp_pooler = \"{value}\"")),
                "{saved}"
            );
            let (_, reopened) = RunFolder::open(&root).unwrap();
            assert_eq!(reopened, e);
        }
        // even an experiment built in code without the key
        let mut e = Experiment::parse(MINIMAL).unwrap();
        e.model.offramp_pooler = None;
        let root = dir.path().join("unset");
        RunFolder::create_at(root.clone(), &e).unwrap();
        let (_, reopened) = RunFolder::open(&root).unwrap();
        assert_eq!(reopened.offramp_pooler(), OffRampPooler::Separate);
    }

    #[test]
    fn only_deebert_models_get_offramp_poolers() {
        let heads = |text: &str, method: Method| {
            let e = Experiment::parse(text).unwrap();
            crate::pipeline::model_config(&e, method, 3, 10)
                .unwrap()
                .offramp_pooler
        };
        assert_eq!(
            heads(MINIMAL, Method::DeeBert),
            Some(OffRampPooler::Separate)
        );
        let stacked = format!("{MINIMAL}offramp_pooler = \"stacked\"\n");
        assert_eq!(
            heads(&stacked, Method::DeeBert),
            Some(OffRampPooler::Stacked)
        );
        for method in [
            Method::Pabee,
            Method::FinalOnly,
            Method::Palbert,
            Method::PonderNet,
            Method::JeiDnn,
        ] {
            assert_eq!(heads(&stacked, method), None, "{method:?}");
        }
    }
}
