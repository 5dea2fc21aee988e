//! Training a language model (Mamba or transformer decoder) on an [`LmCorpus`] of
//! characters or subword tokens, with validation bits per token and per character, a
//! loss curve and resumable checkpoints.

use std::time::Instant;

use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use ponder_core::{PonderError, Result, TokenLm};
use ponder_data::{CorpusSplit, LmCorpus};
use ponder_mamba::{MambaLm, Sampling, pick};
use ponder_transformer::DecoderLm;
use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointFiles;

/// A language model [`fit_lm`] trains: logits of every position of a window.
pub trait WindowLm: Module + Clone {
    /// Logits `[batch, seq_len, vocab]` of ids `[batch, seq_len]`.
    fn window_logits(&self, ids: Tensor<2, Int>) -> Tensor<3>;
    /// Vocabulary size.
    fn vocabulary(&self) -> usize;
}

impl WindowLm for MambaLm {
    fn window_logits(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.forward(ids)
    }
    fn vocabulary(&self) -> usize {
        self.mamba.embedding.weight.dims()[0]
    }
}

impl WindowLm for DecoderLm {
    fn window_logits(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.forward(ids)
    }
    fn vocabulary(&self) -> usize {
        self.vocab_size()
    }
}

/// Hyper-parameters of [`fit_lm`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LmTrainConfig {
    /// Optimisation steps.
    pub steps: usize,
    /// Windows per batch.
    pub batch_size: usize,
    /// Tokens per window (the model predicts each next token; characters with a
    /// character vocabulary).
    pub seq_len: usize,
    /// Peak learning rate (Adam).
    pub learning_rate: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// The rate decays (cosine) to this fraction of the peak at the last step.
    pub final_lr_fraction: f64,
    /// Gradient clipping (per-parameter norm; 0 turns it off).
    pub grad_clip: f64,
    /// Evaluate on validation every this many steps.
    pub eval_every: usize,
    /// Validation windows in the periodic evaluations (0: the whole validation text);
    /// the final evaluation always uses the whole validation text.
    pub eval_windows: usize,
    /// Write a resumable checkpoint every this many steps.
    pub checkpoint_every: usize,
    /// Seed of the initialisation and of the training windows.
    pub seed: u64,
}

impl Default for LmTrainConfig {
    fn default() -> Self {
        Self {
            steps: 2000,
            batch_size: 16,
            seq_len: 128,
            learning_rate: 2e-3,
            warmup_steps: 100,
            final_lr_fraction: 0.1,
            grad_clip: 1.0,
            eval_every: 250,
            eval_windows: 256,
            checkpoint_every: 250,
            seed: 42,
        }
    }
}

impl LmTrainConfig {
    /// Checks every value, naming the first bad one (`train.*`).
    pub fn validate(&self) -> Result<()> {
        for (key, value) in [
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("seq_len", self.seq_len),
            ("eval_every", self.eval_every),
            ("checkpoint_every", self.checkpoint_every),
        ] {
            if value == 0 {
                return Err(PonderError::config(
                    format!("train.{key}"),
                    "must be at least 1",
                ));
            }
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(PonderError::config(
                "train.learning_rate",
                format!("{} is not a positive number", self.learning_rate),
            ));
        }
        if self.warmup_steps >= self.steps {
            return Err(PonderError::config(
                "train.warmup_steps",
                format!(
                    "{} is not below train.steps = {}",
                    self.warmup_steps, self.steps
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.final_lr_fraction) {
            return Err(PonderError::config(
                "train.final_lr_fraction",
                format!("{} is not in [0, 1]", self.final_lr_fraction),
            ));
        }
        if self.grad_clip.is_nan() || self.grad_clip < 0.0 {
            return Err(PonderError::config("train.grad_clip", "must be ≥ 0"));
        }
        Ok(())
    }

    /// The learning rate of step `step` (0-based): linear warm-up over the first
    /// `warmup_steps` steps, then cosine decay reaching `final_lr_fraction` of the peak
    /// at the last step (`steps − 1`).
    pub fn lr_at(&self, step: usize) -> f64 {
        let peak = self.learning_rate;
        if step < self.warmup_steps {
            return peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = (self.steps - self.warmup_steps).saturating_sub(1).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let floor = peak * self.final_lr_fraction;
        floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// One point of the loss curve.
///
/// With a character vocabulary, bits per token are bits per character.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmLog {
    /// Steps done.
    pub step: usize,
    /// Mean training loss (nats per token) since the previous point.
    pub train_loss: f64,
    /// The same in bits per character: bits per token times the training text's tokens
    /// per character (its mean over the whole training text).
    pub train_bpc: f64,
    /// Validation bits per character (on `eval_windows` windows; the characters their
    /// tokens cover, see [`LmScore`]).
    pub valid_bpc: f64,
    /// The training loss in bits per token.
    #[serde(default = "not_recorded")]
    pub train_bpt: f64,
    /// Validation bits per token.
    #[serde(default = "not_recorded")]
    pub valid_bpt: f64,
    /// Learning rate of the last step.
    pub learning_rate: f64,
    /// Seconds of training so far (across resumptions).
    pub seconds: f64,
}

/// Curves written before bits per token were recorded (character runs, where they are
/// the bits per character) read as NaN here; [`fit_lm`] fills them in.
fn not_recorded() -> f64 {
    f64::NAN
}

/// What a checkpoint records besides the weights and the optimizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmTrainState {
    /// Steps done.
    pub step: usize,
    /// The curve so far.
    pub logs: Vec<LmLog>,
    /// Seconds of training so far.
    pub seconds: f64,
    /// Whether training reached `steps`.
    pub finished: bool,
    /// Sum of the training losses since the last curve point (so that a resumed run
    /// reports the same curve as an uninterrupted one).
    #[serde(default)]
    pub pending_loss: f64,
    /// Steps since the last curve point.
    #[serde(default)]
    pub pending_steps: usize,
}

/// Progress callbacks of [`fit_lm`].
pub trait LmObserver {
    /// After every step, with its loss (nats per token).
    fn on_step(&mut self, _step: usize, _loss: f64) {}
    /// After every evaluation.
    fn on_eval(&mut self, _log: &LmLog) {}
    /// Asked after every step: stop now (a checkpoint is written first)?
    fn should_stop(&mut self, _step: usize) -> bool {
        false
    }
}

/// An observer that does nothing.
impl LmObserver for () {}

/// The result of [`fit_lm`].
#[derive(Debug)]
pub struct LmOutcome<M> {
    /// The trained model, without autodiff.
    pub model: M,
    /// The loss curve.
    pub logs: Vec<LmLog>,
    /// Seconds of training (across resumptions).
    pub seconds: f64,
    /// Steps that were done in this call (0 when the checkpoint was already finished).
    pub steps_run: usize,
    /// Whether the observer stopped training before `steps`.
    pub interrupted: bool,
}

fn optimizer(config: &LmTrainConfig) -> ModuleOptimizer {
    let mut adam = AdamConfig::new().with_beta_2(0.99);
    if config.grad_clip > 0.0 {
        adam = adam.with_grad_clipping(Some(GradientClippingConfig::Norm(config.grad_clip as f32)));
    }
    adam.init()
}

fn ids_tensor(ids: &[u32], shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// Mean cross-entropy (nats per predicted token) of windows `[batch, len + 1]`.
fn window_loss<M: WindowLm>(model: &M, ids: Tensor<2, Int>) -> Tensor<1> {
    let [batch, width] = ids.dims();
    let len = width - 1;
    let inputs = ids.clone().narrow(1, 0, len);
    let targets = ids.narrow(1, 1, len).reshape([batch * len]);
    let logits = model.window_logits(inputs);
    let vocab = logits.dims()[2];
    CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits.reshape([batch * len, vocab]), targets)
}

/// How well a language model predicts (part of) a text.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LmScore {
    /// Tokens predicted.
    pub tokens: usize,
    /// Characters those tokens cover ([`CorpusSplit::chars_covered`]: exact for
    /// characters and for the validation and test splits of a tokenizer corpus).
    pub chars: f64,
    /// Bits per predicted token (base-2 cross-entropy).
    pub bits_per_token: f64,
    /// Bits per character: the tokens' bits over the characters they cover.
    pub bits_per_char: f64,
}

/// Bits per token and per character of `model` (without autodiff) on `split`, over its
/// first `max_windows` windows of `seq_len` tokens (0: the whole split; see
/// [`CorpusSplit::windows`]); NaN when the split is too short for one window
/// ([`fit_lm`] refuses such a validation text).
pub fn evaluate_lm<M: WindowLm>(
    model: &M,
    split: &CorpusSplit,
    seq_len: usize,
    max_windows: usize,
    batch_size: usize,
    device: &Device,
) -> LmScore {
    let windows = split.windows(seq_len, max_windows);
    let (mut nats, mut count) = (0.0, 0usize);
    for group in windows.chunks(batch_size.max(1)) {
        let flat: Vec<u32> = group.iter().flat_map(|w| w.iter().copied()).collect();
        let ids = ids_tensor(&flat, [group.len(), seq_len + 1], device);
        let loss = window_loss(model, ids).into_scalar::<f32>() as f64;
        nats += loss * (group.len() * seq_len) as f64;
        count += group.len() * seq_len;
    }
    if count == 0 {
        return LmScore {
            tokens: 0,
            chars: 0.0,
            bits_per_token: f64::NAN,
            bits_per_char: f64::NAN,
        };
    }
    let bits_per_token = nats / count as f64 / std::f64::consts::LN_2;
    // The windows predict tokens 1..=count; for characters the ratio is exactly 1.
    let chars = split.chars_covered(1..count + 1);
    LmScore {
        tokens: count,
        chars,
        bits_per_token,
        bits_per_char: bits_per_token * (count as f64 / chars),
    }
}

/// Trains `model` (on an autodiff device) on `corpus`: random training windows seeded
/// per step, Adam (β₂ 0.99, no weight decay: burn's optimisers cannot exempt `A_log` and
/// `D` as Mamba does), linear warm-up then cosine decay, clipping, validation every
/// `eval_every` steps. With `checkpoints`, resumes from the latest one and writes one
/// every `checkpoint_every` steps and at the end; the resumed run sees the same batches
/// and learning rates as an uninterrupted one.
pub fn fit_lm<M: WindowLm>(
    mut model: M,
    corpus: &LmCorpus,
    config: &LmTrainConfig,
    device: &Device,
    checkpoints: Option<&CheckpointFiles>,
    observer: &mut dyn LmObserver,
) -> Result<LmOutcome<M>> {
    config.validate()?;
    let vocab = model.vocabulary();
    let unit = corpus.vocab.unit();
    if vocab < corpus.vocab.len() {
        return Err(PonderError::config(
            "model.vocab_size",
            format!(
                "{vocab} is smaller than the corpus's {} {unit}",
                corpus.vocab.len()
            ),
        ));
    }
    if corpus.valid.len() <= config.seq_len {
        return Err(PonderError::config(
            "train.seq_len",
            format!(
                "the validation text has {} {unit}, fewer than one window of {} + 1",
                corpus.valid.len(),
                config.seq_len
            ),
        ));
    }
    // Bits per token to bits per character on the training text (1 for characters).
    let train_tokens_per_char = corpus.train.len() as f64 / corpus.train.chars.max(1) as f64;
    let mut optim = optimizer(config);
    let mut state = LmTrainState {
        step: 0,
        logs: Vec::new(),
        seconds: 0.0,
        finished: false,
        pending_loss: 0.0,
        pending_steps: 0,
    };
    if let Some(files) = checkpoints.filter(|f| f.has_last()) {
        let (m, o, s) = files.load_last::<M, LmTrainState>(model, optim)?;
        (model, optim, state) = (m, o, s);
        if corpus.vocab.is_chars() {
            for log in &mut state.logs {
                if log.train_bpt.is_nan() {
                    log.train_bpt = log.train_bpc;
                }
                if log.valid_bpt.is_nan() {
                    log.valid_bpt = log.valid_bpc;
                }
            }
        }
    }
    let eval_device = device.clone().inner();
    let first_step = state.step;
    let start = Instant::now();
    let base_seconds = state.seconds;
    let (mut loss_sum, mut since) = (state.pending_loss, state.pending_steps);
    for step in state.step..config.steps {
        let seed = config
            .seed
            .wrapping_mul(0x2545_F491_4F6C_DD1D)
            .wrapping_add(step as u64);
        let windows = corpus
            .train_windows(config.batch_size, config.seq_len, seed)
            .map_err(|e| PonderError::config("data", e.to_string()))?;
        let ids = ids_tensor(&windows, [config.batch_size, config.seq_len + 1], device);
        let loss = window_loss(&model, ids);
        let value = loss.clone().into_scalar::<f32>() as f64;
        if !value.is_finite() {
            return Err(PonderError::NonFinite {
                what: "language-model training loss".into(),
                step,
                value,
            });
        }
        let lr = config.lr_at(step);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
        loss_sum += value;
        since += 1;
        observer.on_step(step + 1, value);
        let done = step + 1;
        if done % config.eval_every == 0 || done == config.steps {
            let valid = evaluate_lm(
                &model.valid(),
                &corpus.valid,
                config.seq_len,
                config.eval_windows,
                config.batch_size * 4,
                &eval_device,
            );
            let train_loss = loss_sum / since as f64;
            let train_bpt = train_loss / std::f64::consts::LN_2;
            let log = LmLog {
                step: done,
                train_loss,
                train_bpc: train_bpt * train_tokens_per_char,
                valid_bpc: valid.bits_per_char,
                train_bpt,
                valid_bpt: valid.bits_per_token,
                learning_rate: lr,
                seconds: base_seconds + start.elapsed().as_secs_f64(),
            };
            observer.on_eval(&log);
            state.logs.push(log);
            (loss_sum, since) = (0.0, 0);
        }
        let stop = done < config.steps && observer.should_stop(done);
        if let Some(files) = checkpoints
            && (stop || done % config.checkpoint_every == 0 || done == config.steps)
        {
            state.step = done;
            state.seconds = base_seconds + start.elapsed().as_secs_f64();
            state.finished = done == config.steps;
            (state.pending_loss, state.pending_steps) = (loss_sum, since);
            files.save_last(&model, &optim, &state)?;
        }
        if stop {
            return Ok(LmOutcome {
                model: model.valid(),
                logs: state.logs,
                seconds: base_seconds + start.elapsed().as_secs_f64(),
                steps_run: done - first_step,
                interrupted: true,
            });
        }
    }
    Ok(LmOutcome {
        model: model.valid(),
        logs: state.logs,
        seconds: base_seconds + start.elapsed().as_secs_f64(),
        steps_run: config.steps.saturating_sub(first_step),
        interrupted: false,
    })
}

/// What [`sample_lm`] generated.
#[derive(Debug, Clone)]
pub struct Sampled {
    /// The generated tokens (the prompt not included).
    pub tokens: Vec<usize>,
    /// Bytes of the cache (recurrent state or KV cache) after the last token was fed.
    pub cache_bytes: usize,
    /// Shapes of layer 0's cache tensors then.
    pub cache_shapes: Vec<Vec<usize>>,
}

/// Prefills `prompt`, then generates `n_tokens` one at a time at full depth with any
/// [`TokenLm`] (greedy at temperature 0), for one sequence.
pub fn sample_lm<L: TokenLm>(
    lm: &L,
    prompt: &[usize],
    n_tokens: usize,
    sampling: Sampling,
) -> Result<Sampled> {
    ponder_core::check_prompt(prompt, lm.vocab_size())?;
    if let Some(max) = lm.max_len()
        && prompt.len() + n_tokens > max
    {
        return Err(PonderError::config(
            "generate",
            format!(
                "a prompt of {} and {n_tokens} generated tokens exceed the model's {max} positions",
                prompt.len()
            ),
        ));
    }
    let device = lm.device();
    let data: Vec<i64> = prompt.iter().map(|&i| i as i64).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(data, [1, prompt.len()]), &device);
    let (logits, mut cache) = lm.prefill(ids);
    let mut next = ponder_core::to_host(logits);
    let mut rng = sampling.seed;
    let mut tokens = Vec::with_capacity(n_tokens);
    for _ in 0..n_tokens {
        let token = pick(&next, sampling, &mut rng);
        tokens.push(token);
        let input = Tensor::<1, Int>::from_data(TensorData::new(vec![token as i64], [1]), &device);
        next = ponder_core::to_host(lm.step_full(input, &mut cache));
    }
    Ok(Sampled {
        tokens,
        cache_bytes: lm.cache_bytes(&cache),
        cache_shapes: lm.cache_shapes(&cache),
    })
}
