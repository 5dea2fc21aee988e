//! `ponder compare` on a token-exit experiment (DYNAMAX, arXiv:2504.20922; CALM,
//! arXiv:2207.07061): for each language model (Mamba, transformer) trained by `ponder lm`
//! on the corpus of the experiment's `[data]` (the same forms as `ponder lm`'s,
//! characters or a `tokenizer.json`; each model's run must have recorded the same
//! vocabulary), or pretrained (a Hugging Face GPT-2, Llama-family or Mamba checkpoint
//! folder, whose `tokenizer.json` the corpus must use), train DYNAMAX's exit classifiers on the frozen model, sweep the threshold
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
//!
//! The files: `schema.rs` (the experiment file), `sequences.rs` (the held-out sequences
//! and batched decoding), `evaluate.rs` (the sweep on one language model: references,
//! classifiers, every rule's curve, the skip-rule ablation), `results.rs` (what
//! `results.json` and `curves/` hold), `report.rs` (table and plot); this file runs the
//! whole comparison.

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use ponder_core::SkipRule;
use ponder_data::LmCorpus;
use ponder_models::spread_windows;

use crate::lm::{self, TrainedLm};
use crate::run::RunFolder;

mod evaluate;
mod report;
mod results;
mod schema;
mod sequences;
#[cfg(test)]
mod tests;

use evaluate::evaluate;
pub use report::{plot, table};
pub use results::{AblationRow, BackboneResult, Curve, SweepPoint, TokenExitResults};
pub use schema::{BackboneEntry, ClassifierEntry, TokenExitExperiment, TokenExitSweep};
use sequences::sequences;

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
    // language models trained already must have been trained on this vocabulary, and
    // pretrained ones must read the corpus's tokens
    for entry in &experiment.backbones {
        match (&entry.run, &entry.pretrained) {
            (_, Some(folder)) => lm::check_pretrained_vocab(folder, &corpus.vocab),
            (Some(run), None) => lm::check_vocab(run, &corpus.vocab, false),
            (None, None) => unreachable!("validate() requires `run` or `pretrained`"),
        }
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
    // Everything that can be checked from the language models' configs, before any work
    // (a pretrained model is checked when it is loaded, before its own work starts).
    for entry in &experiment.backbones {
        if let (Some(run), Some(lm_path)) = (&entry.run, &entry.lm) {
            let saved = run.join("config.toml");
            let lm_config = if saved.is_file() { &saved } else { lm_path };
            let lm = lm::LmExperiment::load(lm_config, &[])
                .with_context(|| format!("the language model of backbone `{}`", entry.name))?;
            precheck(experiment, entry, &lm)?;
        }
    }
    let mut backbones = Vec::new();
    for entry in &experiment.backbones {
        let trained = match (&entry.lm, &entry.run, &entry.pretrained) {
            (_, _, Some(folder)) => {
                eprintln!("loading the pretrained model {}", folder.display());
                lm::load_pretrained(folder, device)
            }
            (Some(lm_path), Some(run), None) => lm::ensure_trained(lm_path, run, device)
                .and_then(|_| lm::load_trained(run, &corpus.vocab, device))
                .map(|(_, trained)| trained),
            _ => unreachable!("validate() requires `lm` and `run`, or `pretrained`"),
        }
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
