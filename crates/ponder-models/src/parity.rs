//! PonderNet on the parity task: a GRU cell applied up to `N` times to the same input,
//! with a shared output head and a linear halting head (PonderNet, Banino, Balaguer,
//! Blundell 2021, arXiv:2107.05407; the model of labml's scaled-down reproduction:
//! `h_0 = 0`, `h_{n+1} = GRU(x, h_n)`, output and `λ_n = σ(·)` read from `h_n`).

use std::time::Instant;

use burn::config::Config;
use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::nn::gru::{Gru, GruConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use ponder_core::{
    AdaptiveOutput, ExitPolicy, LayerwiseBackbone, PonderError, argmax, linear_flops, run_adaptive,
    to_host,
};
use ponder_data::ParitySet;
use ponder_exits::{
    ClassifierHeads, ClassifierHeadsConfig, HaltingHead, HaltingHeadConfig, HaltingHeads,
};
use serde::{Deserialize, Serialize};

use crate::eval::HaltingTally;
use crate::train::PonderConfig;

/// Configuration of a [`ParityModel`].
#[derive(Config, Debug)]
pub struct ParityModelConfig {
    /// Elements per input.
    pub n_elems: usize,
    /// GRU state size. Default: 64 (labml).
    #[config(default = 64)]
    pub n_hidden: usize,
    /// Maximum number of steps N. Default: 20 (labml).
    #[config(default = 20)]
    pub max_steps: usize,
}

impl ParityModelConfig {
    /// Builds the model.
    pub fn init(&self, device: &Device) -> ParityModel {
        assert!(
            self.n_elems > 0 && self.n_hidden > 0 && self.max_steps > 0,
            "ParityModelConfig: n_elems, n_hidden and max_steps must be positive"
        );
        ParityModel {
            gru: GruConfig::new(self.n_elems, self.n_hidden, true).init(device),
            heads: ClassifierHeadsConfig::new(self.max_steps, self.n_hidden, 2)
                .with_shared(true)
                .with_dropout(0.0)
                .init(device),
            halting: HaltingHeadConfig::new(self.n_hidden).init(device),
            n_elems: self.n_elems,
            n_hidden: self.n_hidden,
            max_steps: self.max_steps,
        }
    }
}

/// PonderNet's parity model: `h_{n+1} = GRU(x, h_n)` from `h_0 = 0`, and at every step a
/// prediction and a halting probability read from `h_n`.
///
/// The prediction is a 2-class softmax (odd/even), which is the same model as labml's
/// single logit with binary cross-entropy (the softmax of two logits is the sigmoid of
/// their difference).
#[derive(Module, Debug)]
pub struct ParityModel {
    /// The step function.
    pub gru: Gru,
    /// One output head shared by every step.
    pub heads: ClassifierHeads,
    /// `λ_n = σ(Linear(h_n))`.
    pub halting: HaltingHead,
    /// Elements per input.
    pub n_elems: usize,
    /// GRU state size.
    pub n_hidden: usize,
    /// Maximum number of steps.
    pub max_steps: usize,
}

/// The recurrent state of the parity model: the input (fed at every step) and `h_n`.
#[derive(Debug, Clone)]
pub struct ParityState {
    /// `[batch_size, n_elems]`
    pub x: Tensor<2>,
    /// `[batch_size, n_hidden]`
    pub h: Tensor<2>,
}

impl LayerwiseBackbone for ParityModel {
    type Input = Tensor<2>;
    type Hidden = ParityState;

    fn n_layers(&self) -> usize {
        self.max_steps
    }

    fn embed(&self, x: Tensor<2>) -> ParityState {
        let [batch_size, n_elems] = x.dims();
        assert_eq!(
            n_elems, self.n_elems,
            "parity model for {} elements given {n_elems}",
            self.n_elems
        );
        let h = Tensor::zeros([batch_size, self.n_hidden], &x.device());
        ParityState { x, h }
    }

    fn forward_layer(&self, _layer_idx: usize, state: ParityState) -> ParityState {
        let [batch_size, n_elems] = state.x.dims();
        let h = self
            .gru
            .forward(
                state.x.clone().reshape([batch_size, 1, n_elems]),
                Some(state.h),
            )
            .reshape([batch_size, self.n_hidden]);
        ParityState { x: state.x, h }
    }

    fn features(&self, state: &ParityState) -> Tensor<2> {
        state.h.clone()
    }

    fn select_rows(&self, state: ParityState, rows: Tensor<1, Int>) -> ParityState {
        ParityState {
            x: state.x.select(0, rows.clone()),
            h: state.h.select(0, rows),
        }
    }

    fn batch_size(&self, state: &ParityState) -> usize {
        state.x.dims()[0]
    }

    fn embed_flops(&self, _state: &ParityState) -> u64 {
        0
    }

    fn layer_flops(&self, _layer_idx: usize, _state: &ParityState) -> u64 {
        let (d, h) = (self.n_elems as u64, self.n_hidden as u64);
        // three gates, each an input and a hidden transform, plus the gate arithmetic
        3 * (linear_flops(1, d, h) + linear_flops(1, h, h)) + 15 * h
    }

    fn features_flops(&self, _state: &ParityState) -> u64 {
        0
    }

    fn device(&self) -> Device {
        self.halting.output.weight.val().device()
    }
}

impl ParityModel {
    /// The output and halting heads together.
    pub fn exit_heads(&self) -> HaltingHeads<'_> {
        HaltingHeads {
            classifiers: &self.heads,
            halting: &self.halting,
        }
    }

    /// Every step's logits and λ for every row (training).
    pub fn forward_all(&self, x: Tensor<2>) -> (Vec<Tensor<2>>, Vec<Tensor<1>>) {
        let out = ponder_core::forward_all_layers(self, &self.exit_heads(), x);
        let lambdas = out
            .halting
            .into_iter()
            .map(|h| h.unwrap_or_else(|| unreachable!("the halting head always answers")))
            .collect();
        (out.logits, lambdas)
    }

    /// Adaptive inference under `policy` through the batched runner.
    pub fn adaptive<P: ExitPolicy>(&self, x: Tensor<2>, policy: &P) -> AdaptiveOutput {
        run_adaptive(self, &self.exit_heads(), policy, x, None)
    }
}

/// Training of the parity model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParityTrainConfig {
    /// Optimisation steps, each on a freshly generated batch. Default: 20000.
    pub steps: usize,
    /// Batch size. Default: 128 (labml).
    pub batch_size: usize,
    /// Adam's learning rate (constant). Default: 3e-4.
    pub learning_rate: f64,
    /// Clip each parameter's gradient to this L2 norm (0: none). Default: 1.0.
    pub grad_clip: f32,
    /// Seed of initialisation and data. Default: 42.
    pub seed: u64,
    /// Evaluate on the validation set every this many steps. Default: 1000.
    pub eval_every: usize,
    /// The PonderNet loss. Default: labml's parity settings: β = 0.01, λ_p = 0.2, λ_N
    /// forced to 1, the raw truncated prior, the reference code's KL direction.
    pub ponder: PonderConfig,
}

impl Default for ParityTrainConfig {
    fn default() -> Self {
        Self {
            steps: 20_000,
            batch_size: 128,
            learning_rate: 3e-4,
            grad_clip: 1.0,
            seed: 42,
            eval_every: 1000,
            ponder: PonderConfig {
                beta: 0.01,
                lambda_p: 0.2,
                prior_leftover_on_last: false,
                kl: ponder_exits::ponder::KlDirection::PriorToExits,
                last_layer: ponder_exits::ponder::LastLayer::ForceHalt,
            },
        }
    }
}

impl ParityTrainConfig {
    /// Checks every value, naming the key at fault.
    pub fn validate(&self) -> ponder_core::Result<()> {
        self.validate_for(1)
    }

    /// [`validate`](Self::validate) for a model of `max_steps` steps (the prior must be
    /// positive where the chosen KL takes its log).
    pub fn validate_for(&self, max_steps: usize) -> ponder_core::Result<()> {
        let err = |k: &str, m: String| Err(PonderError::config(format!("train.{k}"), m));
        if self.steps == 0 {
            return err("steps", "must be at least 1".into());
        }
        if self.batch_size == 0 {
            return err("batch_size", "must be at least 1".into());
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return err(
                "learning_rate",
                format!("{} is not in (0, 1]", self.learning_rate),
            );
        }
        if !(self.grad_clip >= 0.0 && self.grad_clip.is_finite()) {
            return err("grad_clip", format!("{} is not ≥ 0", self.grad_clip));
        }
        if self.eval_every == 0 {
            return err("eval_every", "must be at least 1".into());
        }
        self.ponder.validate_for("train.ponder", max_steps)
    }
}

/// A parity batch as tensors: inputs `[n, n_elems]` and targets `[n]`.
pub fn parity_tensors(
    set: &ParitySet,
    rows: &[usize],
    device: &Device,
) -> (Tensor<2>, Tensor<1, Int>) {
    let mut x = Vec::with_capacity(rows.len() * set.n_elems);
    for &r in rows {
        x.extend_from_slice(set.input(r));
    }
    let y: Vec<i64> = rows.iter().map(|&r| set.targets[r] as i64).collect();
    (
        Tensor::from_data(TensorData::new(x, [rows.len(), set.n_elems]), device),
        Tensor::from_data(TensorData::new(y, [rows.len()]), device),
    )
}

/// One record of the training curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParityLog {
    /// Steps done.
    pub step: usize,
    /// Mean training loss since the previous record.
    pub train_loss: f64,
    /// Mean KL term since the previous record.
    pub train_kl: f64,
    /// Validation accuracy under the exit distribution (λ_N = 1).
    pub valid_accuracy: f64,
    /// Validation mean expected number of steps.
    pub valid_expected_steps: f64,
    /// Seconds since training started.
    pub seconds: f64,
}

/// Hooks for progress display.
pub trait ParityObserver {
    /// A step finished with this loss.
    fn on_step(&mut self, _step: usize, _loss: f64) {}
    /// A validation record was made.
    fn on_eval(&mut self, _log: &ParityLog) {}
}

impl ParityObserver for () {}

/// Trains `model` (on an autodiff `device`) with Adam on freshly generated batches whose
/// number of non-zero elements is drawn from `train_nonzero`, evaluating on `valid`
/// every `eval_every` steps. Returns the model (without autodiff) and the curve.
///
/// # Errors
/// A bad configuration, or a loss that becomes NaN or infinite (naming the step).
pub fn fit_parity(
    mut model: ParityModel,
    train_nonzero: std::ops::RangeInclusive<usize>,
    valid: &ParitySet,
    config: &ParityTrainConfig,
    device: &Device,
    observer: &mut dyn ParityObserver,
) -> ponder_core::Result<(ParityModel, Vec<ParityLog>)> {
    config.validate_for(model.max_steps)?;
    let mut adam = AdamConfig::new();
    if config.grad_clip > 0.0 {
        adam = adam.with_grad_clipping(Some(GradientClippingConfig::Norm(config.grad_clip)));
    }
    let mut optim = adam.init();
    let start = Instant::now();
    let valid_device = device.clone().inner();
    let all_rows: Vec<usize> = (0..config.batch_size).collect();
    let mut logs = Vec::new();
    let (mut loss_sum, mut kl_sum, mut since) = (0.0, 0.0, 0usize);
    for step in 0..config.steps {
        let batch = ponder_data::parity_set(
            config.batch_size,
            model.n_elems,
            train_nonzero.clone(),
            config
                .seed
                .wrapping_mul(0x2545_F491_4F6C_DD1D)
                .wrapping_add(step as u64),
        )
        .map_err(|e| PonderError::config("task", e.to_string()))?;
        let (x, y) = parity_tensors(&batch, &all_rows, device);
        let (logits, lambdas) = model.forward_all(x);
        let parts = config.ponder.loss(logits, &lambdas, y);
        let value = parts.total.clone().into_scalar::<f32>() as f64;
        if !value.is_finite() {
            return Err(PonderError::NonFinite {
                what: "parity training loss".into(),
                step,
                value,
            });
        }
        kl_sum += parts.kl.into_scalar::<f32>() as f64;
        let grads = GradientsParams::from_grads(parts.total.backward(), &model);
        model = optim.step(config.learning_rate, model, grads);
        loss_sum += value;
        since += 1;
        observer.on_step(step + 1, value);
        if (step + 1) % config.eval_every == 0 || step + 1 == config.steps {
            let eval_model = model.valid();
            let (accuracy, steps) = distribution_accuracy(&eval_model, valid, 1024, &valid_device);
            let log = ParityLog {
                step: step + 1,
                train_loss: loss_sum / since as f64,
                train_kl: kl_sum / since as f64,
                valid_accuracy: accuracy,
                valid_expected_steps: steps,
                seconds: start.elapsed().as_secs_f64(),
            };
            observer.on_eval(&log);
            logs.push(log);
            (loss_sum, kl_sum, since) = (0.0, 0.0, 0);
        }
    }
    Ok((model.valid(), logs))
}

/// Accuracy under the exit distribution (λ_N = 1) and mean expected steps, all steps
/// run.
pub fn distribution_accuracy(
    model: &ParityModel,
    set: &ParitySet,
    batch_size: usize,
    device: &Device,
) -> (f64, f64) {
    let rows: Vec<usize> = (0..set.len()).collect();
    let mut tally = HaltingTally::default();
    for chunk in rows.chunks(batch_size.max(1)) {
        let (x, _) = parity_tensors(set, chunk, device);
        let (logits, lambdas) = model.forward_all(x);
        let logits: Vec<Vec<f32>> = logits.into_iter().map(to_host).collect();
        let targets: Vec<usize> = chunk.iter().map(|&r| set.targets[r]).collect();
        tally.add(&logits, &lambdas, &targets);
    }
    (tally.distribution_accuracy(), tally.expected_depth())
}

/// Results of adaptive inference on a parity set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParityEval {
    /// The policy.
    pub policy: String,
    /// Accuracy.
    pub accuracy: f64,
    /// Mean number of steps run.
    pub mean_steps: f64,
    /// Per number of non-zero elements `k` present: `(k, examples, accuracy, mean steps)`.
    pub by_difficulty: Vec<DifficultyRow>,
    /// Steps run on each example.
    pub steps: Vec<usize>,
}

/// One difficulty level of a [`ParityEval`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DifficultyRow {
    /// Number of non-zero elements.
    pub n_nonzero: usize,
    /// Examples at this level.
    pub count: usize,
    /// Accuracy at this level.
    pub accuracy: f64,
    /// Mean number of steps at this level.
    pub mean_steps: f64,
}

/// Adaptive inference of `policy` on `set` through the batched runner.
pub fn evaluate_parity<P: ExitPolicy>(
    model: &ParityModel,
    set: &ParitySet,
    policy: &P,
    batch_size: usize,
    device: &Device,
) -> ParityEval {
    let rows: Vec<usize> = (0..set.len()).collect();
    let mut right = vec![false; set.len()];
    let mut steps = vec![0usize; set.len()];
    for chunk in rows.chunks(batch_size.max(1)) {
        let (x, _) = parity_tensors(set, chunk, device);
        let out = model.adaptive(x, policy);
        let logits = to_host(out.logits);
        for (i, &r) in chunk.iter().enumerate() {
            right[r] = argmax(&logits[2 * i..2 * i + 2]) == set.targets[r];
            steps[r] = out.exit_layer[i];
        }
    }
    let max_k = set.n_nonzero.iter().copied().max().unwrap_or(0);
    let mut by_difficulty = Vec::new();
    for k in 1..=max_k {
        let idx: Vec<usize> = (0..set.len()).filter(|&i| set.n_nonzero[i] == k).collect();
        if idx.is_empty() {
            continue;
        }
        by_difficulty.push(DifficultyRow {
            n_nonzero: k,
            count: idx.len(),
            accuracy: idx.iter().filter(|&&i| right[i]).count() as f64 / idx.len() as f64,
            mean_steps: idx.iter().map(|&i| steps[i] as f64).sum::<f64>() / idx.len() as f64,
        });
    }
    let n = set.len().max(1) as f64;
    ParityEval {
        policy: policy.name(),
        accuracy: right.iter().filter(|&&r| r).count() as f64 / n,
        mean_steps: steps.iter().sum::<usize>() as f64 / n,
        by_difficulty,
        steps,
    }
}
