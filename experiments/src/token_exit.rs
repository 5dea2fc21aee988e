//! `ponder compare` on a token-exit experiment (DYNAMAX, arXiv:2504.20922; CALM,
//! arXiv:2207.07061): for each language model (Mamba, transformer) trained by `ponder lm`
//! on the corpus of the experiment's `[data]` (the same forms as `ponder lm`'s,
//! characters or a `tokenizer.json`; each model's run must have recorded the same
//! vocabulary), train DYNAMAX's exit classifiers on the frozen model, sweep the threshold
//! of every exit rule (classifiers, softmax max, top-2 margin, hidden-state saturation),
//! measure compute saved against consistency with full-depth greedy decoding on held-out
//! text, and calibrate each rule's threshold with Learn-then-Test (arXiv:2110.01052) for
//! a target consistency. Run folder:
//!
//! ```text
//! runs/NAME-TIMESTAMP/
//!   config.toml                          the resolved experiment
//!   classifiers/BACKBONE/NAME/           classifier.bpk, report.json (reused on --resume)
//!   curves/BACKBONE/RULE-lastB.json      each rule's sweep as it finishes (on --resume,
//!                                        points of the same threshold and setup are
//!                                        read back instead of decoded again)
//!   results.json, results.md             everything below
//!   compute_vs_consistency_BACKBONE.svg  layers saved against consistency, one line per rule
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::SeriesLabelPosition;
use ponder_calibration::{LttCandidate, LttOutcome, PValue, learn_then_test};
use ponder_core::{SkipRule, TokenLm};
use ponder_data::LmCorpus;
use ponder_exits::token::{
    ClassifierKind, ExitClassifierSpec, SummaryInput, TokenExitConfig, TokenRule,
};
use ponder_models::{
    ClassifierReport, ClassifierTrainConfig, Decoded, DynamaxConstants, ExitClassifier,
    TokenExitMetrics, decode, fit_exit_classifier, load_exit_classifier, save_exit_classifier,
    spread_windows, token_exit_metrics,
};
use serde::{Deserialize, Serialize};

use crate::lm::{self, TrainedLm};
use crate::report::{ChartSpec, line_chart};
use crate::run::RunFolder;

/// A token-exit experiment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenExitExperiment {
    /// Name (used for the run folder).
    pub name: String,
    /// The corpus (its vocabulary must be the one the language models were trained on;
    /// the sequences come from its validation text).
    pub data: lm::LmData,
    /// The language models.
    pub backbones: Vec<BackboneEntry>,
    /// How the exit classifiers train.
    #[serde(default)]
    pub classifier_train: ClassifierTrainConfig,
    /// What is swept and measured.
    pub token_exit: TokenExitSweep,
}

/// One language model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneEntry {
    /// Name in tables (`mamba`, `transformer`).
    pub name: String,
    /// The `ponder lm` experiment that trains it when `run` holds no model.
    pub lm: PathBuf,
    /// The `ponder lm` run folder of the trained model.
    pub run: PathBuf,
    /// What skipped layers' caches get (transformer: copy or recompute; Mamba:
    /// unadvanced or recompute).
    pub skip_rule: SkipRule,
}

/// A classifier to train (its exits are `token_exit.exits`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierEntry {
    /// `linear` or `mamba`.
    pub kind: ClassifierKind,
    /// Labels: the final token in the top-k of the exit's prediction.
    pub top_k: usize,
    /// Mamba classifier input: `hidden` or `confidence`.
    #[serde(default = "default_summary")]
    pub summary: SummaryInput,
}

fn default_summary() -> SummaryInput {
    SummaryInput::Hidden
}

/// The sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenExitSweep {
    /// Exit positions (1-based layers).
    pub exits: Vec<usize>,
    /// DYNAMAX's "always run the last layer" settings to measure (`[false]`: exited
    /// tokens emit their exit layer's prediction; `[true]`: DYNAMAX's rule).
    pub always_run_last: Vec<bool>,
    /// Classifiers to train and sweep.
    pub classifiers: Vec<ClassifierEntry>,
    /// Thresholds of P(exit).
    pub classifier_thresholds: Vec<f64>,
    /// Thresholds of the softmax maximum.
    pub softmax_thresholds: Vec<f64>,
    /// Thresholds of the top-2 margin.
    pub margin_thresholds: Vec<f64>,
    /// Thresholds of the hidden-state saturation (cosine).
    pub saturation_thresholds: Vec<f64>,
    /// Tokens (characters, with a character vocabulary) of each prompt.
    pub prompt_len: usize,
    /// Tokens generated after each prompt (the first from the prompt's full-depth
    /// pass, the rest through the exiting decoder).
    pub gen_len: usize,
    /// Held-out sequences used to calibrate thresholds (Learn-then-Test).
    pub calibration_sequences: usize,
    /// Held-out sequences the results are measured on.
    pub test_sequences: usize,
    /// Rows decoded together.
    pub batch_size: usize,
    /// Target token consistency (Learn-then-Test's δ = 1 − target).
    pub target_consistency: f64,
    /// Learn-then-Test's error level ε.
    pub ltt_epsilon: f64,
    /// The softmax threshold at which every skip rule is compared.
    pub ablation_threshold: f64,
}

impl TokenExitExperiment {
    /// Whether a TOML file is a token-exit experiment (it has a `[token_exit]` table).
    pub fn is_token_exit(path: &Path) -> bool {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
            .is_some_and(|t| t.contains_key("token_exit"))
    }

    /// Reads and checks an experiment file, then applies `key=value` overrides.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let experiment: Self = crate::config::load_toml(path, overrides, "token-exit experiment")?;
        experiment
            .validate()
            .with_context(|| format!("in token-exit experiment {}", path.display()))?;
        Ok(experiment)
    }

    /// Checks what can be checked without the models.
    pub fn validate(&self) -> Result<()> {
        self.data.validate()?;
        self.classifier_train.validate()?;
        let s = &self.token_exit;
        if self.backbones.is_empty() {
            bail!("invalid value for `backbones`: name at least one language model");
        }
        for (key, value) in [
            ("prompt_len", s.prompt_len),
            ("calibration_sequences", s.calibration_sequences),
            ("test_sequences", s.test_sequences),
            ("batch_size", s.batch_size),
        ] {
            if value == 0 {
                bail!("invalid value for `token_exit.{key}`: must be at least 1");
            }
        }
        if s.gen_len < 2 {
            bail!("invalid value for `token_exit.gen_len`: must be at least 2");
        }
        if s.exits.is_empty() || s.exits[0] == 0 || s.exits.windows(2).any(|w| w[0] >= w[1]) {
            bail!(
                "invalid value for `token_exit.exits`: {:?} must be increasing layers from 1",
                s.exits
            );
        }
        if let Some(c) = s.classifiers.iter().find(|c| c.top_k == 0) {
            bail!(
                "invalid value for `token_exit.classifiers`: top_k = {} must be at least 1",
                c.top_k
            );
        }
        if !s.ablation_threshold.is_finite() {
            bail!("invalid value for `token_exit.ablation_threshold`: must be a finite number");
        }
        if s.always_run_last.is_empty() {
            bail!("invalid value for `token_exit.always_run_last`: give [false], [true] or both");
        }
        if !(s.target_consistency > 0.0 && s.target_consistency < 1.0) {
            bail!("invalid value for `token_exit.target_consistency`: must be in (0, 1)");
        }
        if !(s.ltt_epsilon > 0.0 && s.ltt_epsilon < 1.0) {
            bail!("invalid value for `token_exit.ltt_epsilon`: must be in (0, 1)");
        }
        for (key, values) in [
            ("classifier_thresholds", &s.classifier_thresholds),
            ("softmax_thresholds", &s.softmax_thresholds),
            ("margin_thresholds", &s.margin_thresholds),
            ("saturation_thresholds", &s.saturation_thresholds),
        ] {
            if let Some(bad) = values.iter().find(|t| !t.is_finite()) {
                bail!("invalid value for `token_exit.{key}`: {bad} is not a finite number");
            }
        }
        Ok(())
    }

    /// The specs of the classifiers.
    pub fn specs(&self) -> Vec<ExitClassifierSpec> {
        self.token_exit
            .classifiers
            .iter()
            .map(|c| match c.kind {
                ClassifierKind::Linear => {
                    ExitClassifierSpec::linear(self.token_exit.exits.clone(), c.top_k)
                }
                ClassifierKind::Mamba => {
                    ExitClassifierSpec::mamba(self.token_exit.exits.clone(), c.top_k, c.summary)
                }
            })
            .collect()
    }
}

/// One swept point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// The rule and threshold.
    pub rule: TokenRule,
    /// Measured on the test sequences.
    pub test: TokenExitMetrics,
    /// Mean teacher-forced consistency on the calibration sequences.
    pub calibration_consistency: f64,
    /// Per-sequence inconsistency on the calibration sequences (Learn-then-Test's
    /// losses).
    pub calibration_losses: Vec<f64>,
}

/// A threshold sweep of one exit rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// `linear[k=15]`, `softmax`, ...
    pub family: String,
    /// DYNAMAX's always-run-last setting.
    pub always_run_last: bool,
    /// Points, from the most conservative threshold to the least.
    pub points: Vec<SweepPoint>,
    /// Learn-then-Test on the calibration sequences.
    pub ltt: LttOutcome,
    /// The chosen threshold's test metrics (None when nothing could be certified).
    pub ltt_test: Option<TokenExitMetrics>,
    /// The largest share of layers saved among points whose test consistency reaches
    /// the target (None if none does).
    pub layers_saved_at_target: Option<f64>,
    /// What the points were measured under (backbone, exits, lengths, sequences,
    /// classifier training): a resumed run reuses a point of the same rule only under
    /// the same setup.
    #[serde(default)]
    pub setup: Option<serde_json::Value>,
}

/// A skip rule compared at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AblationRow {
    /// The rule.
    pub skip_rule: SkipRule,
    /// DYNAMAX's always-run-last setting.
    pub always_run_last: bool,
    /// Test metrics.
    pub test: TokenExitMetrics,
}

/// Everything measured on one language model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackboneResult {
    /// Name.
    pub name: String,
    /// Layers.
    pub n_layers: usize,
    /// Parameters of the language model.
    pub n_params: usize,
    /// The skip rule of the sweeps.
    pub skip_rule: SkipRule,
    /// Bits per token (per character, with a character vocabulary) of the test
    /// continuations at full depth (teacher forcing).
    pub full_bpc: f64,
    /// Wall-clock seconds of full-depth free decoding of the test sequences (one run,
    /// after a warm-up, timed as every swept point).
    pub full_seconds: f64,
    /// The trained classifiers.
    pub classifiers: Vec<ClassifierReport>,
    /// One sweep per rule and always-run-last setting.
    pub curves: Vec<Curve>,
    /// Skip rules compared.
    pub ablation: Vec<AblationRow>,
}

/// The results of a token-exit comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenExitResults {
    /// Experiment name.
    pub experiment: String,
    /// `characters`, or `tokenizer PATH`: what a token is (the `bpc` columns are bits
    /// per token, which are bits per character only for characters).
    #[serde(default = "characters")]
    pub vocabulary: String,
    /// Target consistency and ε.
    pub target_consistency: f64,
    /// ε.
    pub ltt_epsilon: f64,
    /// Per backbone.
    pub backbones: Vec<BackboneResult>,
}

fn characters() -> String {
    "characters".into()
}

/// Prompts, their full-depth continuations and the true text of a set of held-out
/// sequences.
struct Sequences {
    prompts: Vec<Vec<usize>>,
    truth: Vec<Vec<usize>>,
}

fn sequences(corpus: &LmCorpus, sweep: &TokenExitSweep) -> Result<(Sequences, Sequences)> {
    let len = sweep.prompt_len + sweep.gen_len;
    let total = sweep.calibration_sequences + sweep.test_sequences;
    let windows = spread_windows(&corpus.valid.ids, len, total)?;
    // Interleave so both sets cover every held-out work.
    let (mut calibration, mut test) = (
        Sequences {
            prompts: vec![],
            truth: vec![],
        },
        Sequences {
            prompts: vec![],
            truth: vec![],
        },
    );
    for (i, w) in windows.iter().enumerate() {
        let into_test = if test.prompts.len() >= sweep.test_sequences {
            false
        } else if calibration.prompts.len() >= sweep.calibration_sequences {
            true
        } else {
            i % 2 == 1
        };
        let target = if into_test {
            &mut test
        } else {
            &mut calibration
        };
        let ids = |part: &[u32]| part.iter().map(|&id| id as usize).collect::<Vec<_>>();
        target.prompts.push(ids(&w[..sweep.prompt_len]));
        target.truth.push(ids(&w[sweep.prompt_len..]));
    }
    Ok((calibration, test))
}

/// Decodes `prompts` in batches and joins the rows.
#[allow(clippy::too_many_arguments)]
fn decode_all<L: TokenLm>(
    lm: &L,
    config: &TokenExitConfig,
    classifier: Option<(&ExitClassifier, &ExitClassifierSpec)>,
    prompts: &[Vec<usize>],
    n_tokens: usize,
    forced: Option<&[Vec<usize>]>,
    targets: Option<&[Vec<usize>]>,
    batch_size: usize,
) -> Result<Decoded> {
    let mut out: Option<Decoded> = None;
    for start in (0..prompts.len()).step_by(batch_size) {
        let end = (start + batch_size).min(prompts.len());
        let d = decode(
            lm,
            config,
            classifier,
            &prompts[start..end],
            n_tokens,
            forced.map(|f| &f[start..end]),
            targets.map(|t| &t[start..end]),
        )?;
        out = Some(match out {
            None => d,
            Some(mut acc) => {
                acc.tokens.extend(d.tokens);
                acc.exit_layers.extend(d.exit_layers);
                acc.layers_run.extend(d.layers_run);
                acc.flops.extend(d.flops);
                acc.full_flops.extend(d.full_flops);
                if let (Some(a), Some(b)) = (acc.target_log_probs.as_mut(), d.target_log_probs) {
                    a.extend(b);
                }
                acc.seconds += d.seconds;
                acc
            }
        });
    }
    Ok(out.expect("at least one prompt"))
}

/// The exit rules swept, each with its family name and thresholds (most conservative
/// first).
fn families(experiment: &TokenExitExperiment) -> Vec<(String, Option<usize>, Vec<TokenRule>)> {
    let s = &experiment.token_exit;
    let sorted = |values: &[f64], make: fn(f64) -> TokenRule| {
        let mut v = values.to_vec();
        v.sort_by(|a, b| b.total_cmp(a));
        v.dedup();
        v.into_iter().map(make).collect::<Vec<_>>()
    };
    let mut out: Vec<(String, Option<usize>, Vec<TokenRule>)> = experiment
        .specs()
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            (
                spec.name(),
                Some(i),
                sorted(&s.classifier_thresholds, TokenRule::Classifier),
            )
        })
        .collect();
    out.push((
        "softmax".into(),
        None,
        sorted(&s.softmax_thresholds, TokenRule::Softmax),
    ));
    out.push((
        "margin".into(),
        None,
        sorted(&s.margin_thresholds, TokenRule::Margin),
    ));
    out.push((
        "saturation".into(),
        None,
        sorted(&s.saturation_thresholds, TokenRule::Saturation),
    ));
    out.retain(|(_, _, rules)| !rules.is_empty());
    out
}

fn bar(total: usize, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// Reads the experiment's corpus (`[data]`) and checks that its validation text holds the
/// sequences and the classifiers' held-out windows, and that the language models already
/// trained recorded its vocabulary: before a run folder is made.
pub fn load_corpus(experiment: &TokenExitExperiment) -> Result<LmCorpus> {
    let corpus = experiment.data.load()?;
    sequences(&corpus, &experiment.token_exit).context(
        "invalid value for `token_exit.calibration_sequences` / `token_exit.test_sequences`",
    )?;
    spread_windows(
        &corpus.valid.ids,
        experiment.classifier_train.seq_len,
        experiment.classifier_train.valid_windows,
    )
    .context("invalid value for `classifier_train.valid_windows`")?;
    // language models trained already must have been trained on this vocabulary
    for entry in &experiment.backbones {
        lm::check_vocab(&entry.run, &corpus.vocab, false)
            .with_context(|| format!("the language model of backbone `{}`", entry.name))?;
    }
    Ok(corpus)
}

/// Runs the whole comparison on `corpus` ([`load_corpus`]).
pub fn run(
    experiment: &TokenExitExperiment,
    corpus: &LmCorpus,
    run: &RunFolder,
    device: &Device,
) -> Result<TokenExitResults> {
    let (calibration, test) = sequences(corpus, &experiment.token_exit)?;
    // Everything that can be checked from the language models' configs, before any work.
    for entry in &experiment.backbones {
        let saved = entry.run.join("config.toml");
        let lm_config = if saved.is_file() { &saved } else { &entry.lm };
        let lm = lm::LmExperiment::load(lm_config, &[])
            .with_context(|| format!("the language model of backbone `{}`", entry.name))?;
        precheck(experiment, entry, &lm)?;
    }
    let mut backbones = Vec::new();
    for entry in &experiment.backbones {
        lm::ensure_trained(&entry.lm, &entry.run, device)
            .with_context(|| format!("the language model of backbone `{}`", entry.name))?;
        let (_, trained) = lm::load_trained(&entry.run, &corpus.vocab, device)
            .with_context(|| format!("the language model of backbone `{}`", entry.name))?;
        let result = match &trained {
            TrainedLm::Mamba(m) => evaluate(
                m,
                entry,
                experiment,
                corpus,
                &calibration,
                &test,
                run,
                device,
            )?,
            TrainedLm::Transformer(t) => evaluate(
                t,
                entry,
                experiment,
                corpus,
                &calibration,
                &test,
                run,
                device,
            )?,
        };
        backbones.push(result);
    }
    Ok(TokenExitResults {
        experiment: experiment.name.clone(),
        vocabulary: corpus.vocab.describe(),
        target_consistency: experiment.token_exit.target_consistency,
        ltt_epsilon: experiment.token_exit.ltt_epsilon,
        backbones,
    })
}

/// Checks a backbone's skip rule, exit positions, classifiers and lengths against its
/// language model's config.
fn precheck(
    experiment: &TokenExitExperiment,
    entry: &BackboneEntry,
    lm: &lm::LmExperiment,
) -> Result<()> {
    let s = &experiment.token_exit;
    let n_layers = lm.model.n_layers;
    let (supported, max_len) = match lm.model.backbone {
        lm::LmBackbone::Mamba => ([SkipRule::Recompute, SkipRule::Unadvanced], None),
        lm::LmBackbone::Transformer => (
            [SkipRule::Copy, SkipRule::Recompute],
            Some(lm.decoder_config(1).max_len),
        ),
    };
    if !supported.contains(&entry.skip_rule) {
        bail!(
            "invalid value for `token_exit.skip_rule` of backbone `{}`: \"{}\" does not apply to a {} (transformer: copy or recompute; Mamba: unadvanced or recompute)",
            entry.name,
            entry.skip_rule.name(),
            lm.model.backbone.name()
        );
    }
    ponder_exits::token::validate_exits(&s.exits, n_layers, "token_exit.exits")
        .with_context(|| format!("backbone `{}` has {n_layers} layers", entry.name))?;
    if let Some(max) = max_len {
        if s.prompt_len + s.gen_len - 1 > max {
            bail!(
                "invalid value for `token_exit.gen_len`: a prompt of {} and {} generated tokens exceed backbone `{}`'s {max} positions",
                s.prompt_len,
                s.gen_len,
                entry.name
            );
        }
        if experiment.classifier_train.seq_len > max {
            bail!(
                "invalid value for `classifier_train.seq_len`: {} exceeds backbone `{}`'s {max} positions",
                experiment.classifier_train.seq_len,
                entry.name
            );
        }
    }
    Ok(())
}

/// The sweep on one language model.
#[allow(clippy::too_many_arguments)]
fn evaluate<L: TokenLm + burn::module::Module>(
    lm: &L,
    entry: &BackboneEntry,
    experiment: &TokenExitExperiment,
    corpus: &LmCorpus,
    calibration: &Sequences,
    test: &Sequences,
    run: &RunFolder,
    device: &Device,
) -> Result<BackboneResult> {
    let s = &experiment.token_exit;
    let n_layers = lm.n_layers();
    lm.check_rule(entry.skip_rule)
        .with_context(|| format!("backbone `{}`", entry.name))?;
    ponder_exits::token::validate_exits(&s.exits, n_layers, "token_exit.exits")?;
    let n = s.gen_len;
    if let Some(max) = lm.max_len() {
        if s.prompt_len + n - 1 > max {
            bail!(
                "invalid value for `token_exit.gen_len`: a prompt of {} and {n} generated tokens exceed backbone `{}`'s {max} positions",
                s.prompt_len,
                entry.name
            );
        }
        if experiment.classifier_train.seq_len > max {
            bail!(
                "invalid value for `classifier_train.seq_len`: {} exceeds backbone `{}`'s {max} positions",
                experiment.classifier_train.seq_len,
                entry.name
            );
        }
    }
    for spec in experiment.specs() {
        spec.validate(n_layers, lm.vocab_size(), "token_exit.classifiers")?;
    }
    let never = TokenExitConfig {
        rule: TokenRule::Never,
        exits: s.exits.clone(),
        skip_rule: entry.skip_rule,
        always_run_last: false,
    };
    let batch = s.batch_size;
    eprintln!(
        "{}: full-depth greedy decoding of the held-out prompts ...",
        entry.name
    );
    // A warm-up pass, then the full-depth reference (timed once, as every swept point).
    decode_all(
        lm,
        &never,
        None,
        &test.prompts[..batch.min(test.prompts.len())],
        n,
        None,
        None,
        batch,
    )?;
    let full_test = decode_all(lm, &never, None, &test.prompts, n, None, None, batch)?;
    let full_calibration =
        decode_all(lm, &never, None, &calibration.prompts, n, None, None, batch)?;
    let targets: Vec<Vec<usize>> = test.truth.iter().map(|t| t[1..].to_vec()).collect();
    let full_text = decode_all(
        lm,
        &never,
        None,
        &test.prompts,
        n,
        Some(&test.truth),
        Some(&targets),
        batch,
    )?;
    let full_bpc = token_exit_metrics(
        n_layers,
        DynamaxConstants::of(lm, entry.skip_rule),
        &full_test,
        &full_test,
        &full_test,
        Some(&full_text),
    )
    .bpc;

    // Classifiers.
    let mut classifiers = Vec::new();
    let mut reports = Vec::new();
    for spec in experiment.specs() {
        let dir = run
            .root()
            .join("classifiers")
            .join(&entry.name)
            .join(spec.name());
        let (c, report) = match load_exit_classifier(&dir, &spec, lm.feature_size(), device)? {
            Some(found) => found,
            None => {
                eprintln!(
                    "{}: training the exit classifier {} ...",
                    entry.name,
                    spec.name()
                );
                let ad = device.clone().autodiff();
                let steps = bar(experiment.classifier_train.steps, &spec.name());
                let trained = fit_exit_classifier(
                    lm,
                    &spec,
                    corpus,
                    &experiment.classifier_train,
                    &ad,
                    &mut |step, loss| {
                        steps.set_position(step as u64);
                        steps.set_message(format!("loss {loss:.3}"));
                    },
                );
                steps.finish_and_clear();
                let (c, report) = trained
                    .with_context(|| format!("training {} on {}", spec.name(), entry.name))?;
                save_exit_classifier(&dir, &c, &report)?;
                (c, report)
            }
        };
        eprintln!(
            "  {}: {} parameters, held-out exit decisions {}",
            report.name,
            report.n_params,
            report
                .valid
                .iter()
                .map(|m| format!(
                    "L{} acc {:.1}% (positives {:.0}%)",
                    m.layer,
                    100.0 * m.accuracy,
                    100.0 * m.positive_rate
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        classifiers.push((c, spec));
        reports.push(report);
    }

    let dynamax_of = |rule: SkipRule| DynamaxConstants::of(lm, rule);
    // The full model's continuations, fed back in teacher-forced decoding.
    let forced_by = |full: &Decoded| -> Vec<Vec<usize>> {
        full.tokens.iter().map(|t| t[..n - 1].to_vec()).collect()
    };
    let (test_forced, cal_forced) = (forced_by(&full_test), forced_by(&full_calibration));
    // A configuration on the test sequences: teacher-forced on the full continuation,
    // free-running, and teacher-forced on the true text (bits per character).
    let measure_test = |config: &TokenExitConfig,
                        classifier: Option<(&ExitClassifier, &ExitClassifierSpec)>|
     -> Result<TokenExitMetrics> {
        let decode_test = |forced: Option<&[Vec<usize>]>, targets: Option<&[Vec<usize>]>| {
            decode_all(
                lm,
                config,
                classifier,
                &test.prompts,
                n,
                forced,
                targets,
                batch,
            )
        };
        let forced = decode_test(Some(&test_forced), None)?;
        let free = decode_test(None, None)?;
        let text = decode_test(Some(&test.truth), Some(&targets))?;
        Ok(token_exit_metrics(
            n_layers,
            dynamax_of(config.skip_rule),
            &full_test,
            &forced,
            &free,
            Some(&text),
        ))
    };
    let families = families(experiment);
    let total: usize = families.iter().map(|f| f.2.len()).sum::<usize>() * s.always_run_last.len();
    let progress = bar(total, &entry.name);
    let mut curves = Vec::new();
    for &always in &s.always_run_last {
        for (family, classifier_index, rules) in &families {
            let classifier = classifier_index.map(|i| (&classifiers[i].0, &classifiers[i].1));
            let curve_path = format!("curves/{}/{}-last{}.json", entry.name, family, always);
            let setup = serde_json::json!({
                "backbone": entry,
                "exits": s.exits,
                "prompt_len": s.prompt_len,
                "gen_len": s.gen_len,
                "calibration_sequences": s.calibration_sequences,
                "test_sequences": s.test_sequences,
                "batch_size": s.batch_size,
                "classifier_train": experiment.classifier_train,
                "classifier": classifier.map(|(_, spec)| spec),
            });
            // Points measured before (an interrupted or extended run) under this setup.
            let previous: Vec<SweepPoint> = std::fs::read(run.root().join(&curve_path))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Curve>(&bytes).ok())
                .filter(|c| c.setup.as_ref().is_none_or(|v| *v == setup))
                .map(|c| c.points)
                .unwrap_or_default();
            let mut points = Vec::new();
            for &rule in rules {
                if let Some(p) = previous.iter().find(|p| p.rule == rule) {
                    points.push(p.clone());
                    progress.inc(1);
                    continue;
                }
                progress.set_message(format!("{family} {:.3}", rule.threshold()));
                let config = TokenExitConfig {
                    rule,
                    exits: s.exits.clone(),
                    skip_rule: entry.skip_rule,
                    always_run_last: always,
                };
                let metrics = measure_test(&config, classifier)?;
                let cal = decode_all(
                    lm,
                    &config,
                    classifier,
                    &calibration.prompts,
                    n,
                    Some(&cal_forced),
                    None,
                    batch,
                )?;
                let cal_metrics = token_exit_metrics(
                    n_layers,
                    dynamax_of(entry.skip_rule),
                    &full_calibration,
                    &cal,
                    &cal,
                    None,
                );
                points.push(SweepPoint {
                    rule,
                    test: metrics,
                    calibration_consistency: cal_metrics.consistency,
                    calibration_losses: cal_metrics.row_inconsistency,
                });
                progress.inc(1);
            }
            let candidates: Vec<LttCandidate> = points
                .iter()
                .map(|p| LttCandidate {
                    threshold: p.rule.threshold(),
                    losses: &p.calibration_losses,
                })
                .collect();
            let ltt = learn_then_test(
                &candidates,
                1.0 - s.target_consistency,
                s.ltt_epsilon,
                PValue::HoeffdingBentkus,
            )
            .with_context(|| format!("Learn-then-Test for {family}"))?;
            let ltt_test = ltt.chosen.map(|i| points[i].test.clone());
            let layers_saved_at_target = points
                .iter()
                .filter(|p| p.test.consistency >= s.target_consistency)
                .map(|p| p.test.layers_saved)
                .fold(None, |best: Option<f64>, v| {
                    Some(best.map_or(v, |b| b.max(v)))
                });
            let curve = Curve {
                family: family.clone(),
                always_run_last: always,
                points,
                ltt,
                ltt_test,
                layers_saved_at_target,
                setup: Some(setup),
            };
            run.write(&curve_path, &serde_json::to_vec_pretty(&curve)?)?;
            curves.push(curve);
        }
    }
    progress.finish_and_clear();

    // Skip rules compared at one softmax threshold.
    let mut ablation = Vec::new();
    for rule in SkipRule::ALL.into_iter().filter(|&r| lm.supports(r)) {
        for &always in &s.always_run_last {
            let config = TokenExitConfig {
                rule: TokenRule::Softmax(s.ablation_threshold),
                exits: s.exits.clone(),
                skip_rule: rule,
                always_run_last: always,
            };
            ablation.push(AblationRow {
                skip_rule: rule,
                always_run_last: always,
                test: measure_test(&config, None)?,
            });
        }
    }
    Ok(BackboneResult {
        name: entry.name.clone(),
        n_layers,
        n_params: lm.num_params(),
        skip_rule: entry.skip_rule,
        full_bpc,
        full_seconds: full_test.seconds,
        classifiers: reports,
        curves,
        ablation,
    })
}

fn pct(v: f64) -> String {
    format!("{:.1}", 100.0 * v)
}

/// The results as Markdown.
pub fn table(results: &TokenExitResults) -> String {
    let per = if results.vocabulary == "characters" {
        "char"
    } else {
        "token"
    };
    let mut s = format!(
        "## {}: token-level early exit\n\nConsistency: teacher-forced token agreement with full-depth greedy decoding on held-out text; target {:.0}% (Learn-then-Test δ = {:.2}, ε = {:.2}, Hoeffding–Bentkus).\n\n",
        results.experiment,
        100.0 * results.target_consistency,
        1.0 - results.target_consistency,
        results.ltt_epsilon
    );
    for b in &results.backbones {
        s.push_str(&format!(
            "### {} ({} layers, {} parameters, skipped layers: {})\n\nFull depth: {:.3} bits/{per} on the test continuations; free decoding {:.2} s.\n\n",
            b.name,
            b.n_layers,
            b.n_params,
            b.skip_rule.name(),
            b.full_bpc,
            b.full_seconds
        ));
        s.push_str("Exit classifiers (held-out exit decisions at P > 0.5):\n\n| classifier | parameters | per exit: accuracy / F1 / positive rate |\n|---|---:|---|\n");
        for c in &b.classifiers {
            s.push_str(&format!(
                "| {} | {} | {} |\n",
                c.name,
                c.n_params,
                c.valid
                    .iter()
                    .map(|m| format!(
                        "L{}: {} / {} / {}",
                        m.layer,
                        pct(m.accuracy),
                        pct(m.f1),
                        pct(m.positive_rate)
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        s.push_str(&format!(
            "\n| rule | last layer | layers saved at ≥ {:.0}% | LTT threshold | its test consistency | its layers saved | its FLOPs saved | its DYNAMAX speed-up | its wall-clock speed-up |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
            100.0 * results.target_consistency
        ));
        for c in &b.curves {
            let (thr, cons, saved, flops, dyn_s, wall) = match (&c.ltt_test, c.ltt.threshold) {
                (Some(m), Some(t)) => (
                    format!("{t:.3}"),
                    pct(m.consistency),
                    pct(m.layers_saved),
                    pct(m.flops_saved),
                    format!("{:.2}", m.dynamax_speedup),
                    format!("{:.2}", b.full_seconds / m.seconds.max(1e-9)),
                ),
                _ => (
                    "none certified".into(),
                    "–".into(),
                    "–".into(),
                    "–".into(),
                    "–".into(),
                    "–".into(),
                ),
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                c.family,
                if c.always_run_last {
                    "always run"
                } else {
                    "skipped"
                },
                c.layers_saved_at_target.map_or("none".into(), pct),
                thr,
                cons,
                saved,
                flops,
                dyn_s,
                wall
            ));
        }
        s.push_str(&format!("\nEvery swept point (test sequences):\n\n| rule | last layer | threshold | layers saved | FLOPs saved | DYNAMAX speed-up | wall-clock speed-up | consistency | calibration consistency | free agreement | exact match | bits/{per} |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"));
        for c in &b.curves {
            for p in &c.points {
                let m = &p.test;
                s.push_str(&format!(
                    "| {} | {} | {:.3} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {:.3} |\n",
                    c.family,
                    if c.always_run_last { "run" } else { "skip" },
                    p.rule.threshold(),
                    pct(m.layers_saved),
                    pct(m.flops_saved),
                    m.dynamax_speedup,
                    b.full_seconds / m.seconds.max(1e-9),
                    pct(m.consistency),
                    pct(p.calibration_consistency),
                    pct(m.free_agreement),
                    pct(m.exact_match),
                    m.bpc
                ));
            }
        }
        s.push_str(&format!("\nSkip rules at the softmax ablation threshold:\n\n| skip rule | last layer | layers saved | FLOPs saved | DYNAMAX speed-up | consistency | free agreement | bits/{per} |\n|---|---|---:|---:|---:|---:|---:|---:|\n"));
        for a in &b.ablation {
            let m = &a.test;
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.2} | {} | {} | {:.3} |\n",
                a.skip_rule.name(),
                if a.always_run_last { "run" } else { "skip" },
                pct(m.layers_saved),
                pct(m.flops_saved),
                m.dynamax_speedup,
                pct(m.consistency),
                pct(m.free_agreement),
                m.bpc
            ));
        }
        s.push('\n');
    }
    s
}

/// Layers saved against consistency, one line per rule and setting, for one backbone.
pub fn plot(backbone: &BackboneResult) -> Result<String> {
    let lines: Vec<(String, Vec<(f64, f64)>)> = backbone
        .curves
        .iter()
        .map(|c| {
            (
                format!(
                    "{}{}",
                    c.family,
                    if c.always_run_last {
                        " (last layer run)"
                    } else {
                        ""
                    }
                ),
                c.points
                    .iter()
                    .map(|p| (100.0 * p.test.layers_saved, 100.0 * p.test.consistency))
                    .collect(),
            )
        })
        .collect();
    let lo = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .fold(100.0f64, f64::min)
        .min(90.0)
        - 2.0;
    let hi_x = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(10.0f64, f64::max)
        + 2.0;
    line_chart(
        ChartSpec {
            caption: format!("{}: compute saved against consistency", backbone.name),
            x_desc: "layers saved (%)",
            y_desc: "token consistency with full depth (%)",
            x: 0f64..hi_x,
            y: lo.max(0.0)..100.5,
            size: (900, 600),
            legend: SeriesLabelPosition::LowerLeft,
        },
        &lines,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preset_parses_and_bad_values_are_named() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/shakespeare-token-exit.toml");
        assert!(TokenExitExperiment::is_token_exit(&path));
        assert!(!TokenExitExperiment::is_token_exit(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/shakespeare-mamba.toml")
        ));
        let e = TokenExitExperiment::load(&path, &[]).unwrap();
        assert_eq!(e.backbones.len(), 2);
        assert_eq!(e.specs().len(), e.token_exit.classifiers.len());
        // every family, thresholds from the most conservative
        let families = families(&e);
        assert_eq!(families.len(), e.token_exit.classifiers.len() + 3);
        for (_, _, rules) in &families {
            assert!(
                rules
                    .windows(2)
                    .all(|w| w[0].threshold() > w[1].threshold())
            );
        }
        for (set, key) in [
            ("token_exit.exits=[2, 1]", "token_exit.exits"),
            ("token_exit.exits=[]", "token_exit.exits"),
            (
                "token_exit.target_consistency=1.0",
                "token_exit.target_consistency",
            ),
            ("token_exit.ltt_epsilon=0.0", "token_exit.ltt_epsilon"),
            ("token_exit.gen_len=1", "token_exit.gen_len"),
            ("token_exit.batch_size=0", "token_exit.batch_size"),
            (
                "token_exit.always_run_last=[]",
                "token_exit.always_run_last",
            ),
            ("classifier_train.steps=0", "classifier_train.steps"),
            ("token_exit.colour=1", "colour"),
        ] {
            let err = TokenExitExperiment::load(&path, &[set.into()]).unwrap_err();
            assert!(format!("{err:#}").contains(key), "{set}: {err:#}");
        }
    }

    #[test]
    fn sequences_interleave_calibration_and_test() {
        let corpus = LmCorpus::from_texts(&"a".repeat(100), &"ab".repeat(500));
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/shakespeare-token-exit.toml");
        let mut sweep = TokenExitExperiment::load(&path, &[]).unwrap().token_exit;
        (sweep.prompt_len, sweep.gen_len) = (4, 6);
        (sweep.calibration_sequences, sweep.test_sequences) = (7, 3);
        let (cal, test) = sequences(&corpus, &sweep).unwrap();
        assert_eq!((cal.prompts.len(), test.prompts.len()), (7, 3));
        assert!(
            cal.prompts
                .iter()
                .chain(&test.prompts)
                .all(|p| p.len() == 4)
        );
        assert!(cal.truth.iter().chain(&test.truth).all(|t| t.len() == 6));
        sweep.calibration_sequences = 200;
        assert!(sequences(&corpus, &sweep).is_err(), "windows would overlap");
    }
}
