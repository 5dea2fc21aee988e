//! A `ponder lm` run: [`run`] trains (or resumes) the Mamba or transformer LM with
//! [`fit_lm`], saves it, evaluates bits per token and per character on the whole
//! validation (and test) text, writes a generated sample and measures the generation
//! state, printing the progress as it goes.

use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::Device;
use ponder_core::TokenLm;
use ponder_data::{LmCorpus, LmVocab};
use ponder_mamba::{MambaLm, Sampling, state_spaces_bytes};
use ponder_models::{
    CheckpointFiles, LmLog, LmObserver, LmScore, LmTrainState, WindowLm, evaluate_lm, fit_lm,
    sample_lm,
};
use ponder_transformer::DecoderLm;

use super::TrainedLm;
use super::results::{LmResults, LmTestResult, MemoryPoint};
use super::vocab::record_vocab;
use super::{LmExperiment, LmInputs};
use crate::progress::CurveProgress;
use crate::run::RunFolder;

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
    let model = TrainedLm::initial(experiment, vocab_size, &ad)?;
    let (measured, logs) = match model {
        TrainedLm::Mamba(model) => train_and_measure(
            model,
            experiment,
            inputs,
            run,
            &checkpoints,
            &ad,
            device,
            |lm: &MambaLm| Some(state_spaces_bytes(lm)),
        )?,
        TrainedLm::Transformer(model) => train_and_measure(
            model,
            experiment,
            inputs,
            run,
            &checkpoints,
            &ad,
            device,
            |_: &DecoderLm| None,
        )?,
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
