//! The configuration of training: the method, its hyper-parameters, and the settings
//! of PonderNet's loss and JEI-DNN's stages.

use burn::tensor::{Int, Tensor};
use ponder_core::{PonderError, Result};
use ponder_exits::ponder::{self, KlDirection, LastLayer};
use ponder_exits::{jei, loss};
use serde::{Deserialize, Serialize};

use super::schedule::SgdSchedule;

/// How the exits are trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// PABEE: all heads and the backbone together, loss `Σ i·L_i / Σ i`.
    Pabee,
    /// DeeBERT: stage 1 trains the backbone and the final head on the final loss;
    /// stage 2 freezes them and trains the internal heads on `Σ_{i<N} L_i`.
    DeeBert,
    /// Only the final head (the baseline a multi-exit model is compared with).
    FinalOnly,
    /// PALBERT: a shared head and the Lambda layer, trained on the PonderNet loss
    /// ([`PonderConfig`]); inference by Q-exit.
    Palbert,
    /// PonderNet: a shared head and a linear λ head, trained on the same loss (PALBERT's
    /// "PonderNet-ALBERT" ablation); inference by sampling.
    PonderNet,
    /// JEI-DNN: the backbone and its final head are trained first (as DeeBERT's stage 1)
    /// and then frozen; per-layer inference modules are warmed up on its features, then
    /// the gates and the inference modules are trained in alternation ([`JeiConfig`]);
    /// inference by [`LearnedGate`](ponder_exits::LearnedGate).
    JeiDnn,
}

impl Method {
    /// Every method, in table order.
    pub const ALL: [Method; 6] = [
        Method::Pabee,
        Method::DeeBert,
        Method::FinalOnly,
        Method::Palbert,
        Method::PonderNet,
        Method::JeiDnn,
    ];

    /// Whether the method learns an exit distribution (its model has a halting head).
    pub fn has_halting(&self) -> bool {
        matches!(self, Method::Palbert | Method::PonderNet)
    }

    /// Whether the method learns JEI-DNN's gates (its model has them).
    pub fn has_gates(&self) -> bool {
        matches!(self, Method::JeiDnn)
    }

    /// Whether the method trains one-output heads on a regression task (PABEE's
    /// regression variant; DeeBERT and final-only train the same exits in stages). The
    /// halting and gating methods read class confidences and have none.
    pub fn has_regression_variant(&self) -> bool {
        matches!(self, Method::Pabee | Method::DeeBert | Method::FinalOnly)
    }
}

/// The stage of [`Method::JeiDnn`] at which its alternation starts (after the backbone's
/// and the warm-up's): models of different `jei.cost_weight` are the same up to there.
pub const JEI_ALTERNATION_STAGE: usize = 2;

/// JEI-DNN's training after the backbone (Regol, Chataoui, Coates, ICLR 2024,
/// arXiv:2310.09163, as its reference code `networkslab/dynn` schedules it): a warm-up of
/// the inference modules on the frozen backbone, then phases alternating between the
/// gates and the inference modules. Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JeiConfig {
    /// Epochs of the inference modules' warm-up on the frozen backbone, loss
    /// `Σ_l (G + 1 − l)·CE_l`; the epoch with the best mean validation accuracy of the
    /// inference modules is kept (the reference instead freezes each module once its
    /// validation accuracy has not improved for 2 epochs, up to a maximum). Default: 2.
    pub warmup_epochs: usize,
    /// Epochs of the alternating training of gates and inference modules; the epoch with
    /// the best validation accuracy under the gates (a_l ≥ 0.5) is kept, JEI-DNN's
    /// selection protocol, which ignores cost (reproduce the protocol, not only the
    /// model, to compare with its numbers). Default: 3.
    pub epochs: usize,
    /// λ_cost of the cost-aware gate targets `argmin_l CE_l + λ_cost·ĉ_l` (the reference's
    /// `--ce_ic_tradeoff`: 0.7 in its argparse, 0.15 in its README). Default: 0.15.
    pub cost_weight: f64,
    /// Batches per phase before switching (the reference's `bilevel_batch_count`); the
    /// first phase is the gates'. Default: 200.
    pub phase_batches: usize,
    /// Detach the ratio of the weighted IM loss `P_l·CE_l·(Σ_j CE_j / Σ_j P_j·CE_j)`
    /// (the intended per-sample weighting, emphasising the modules a row is likely to
    /// exit at) instead of the reference code's non-detached ratio: summed over l it is
    /// `Σ_l CE_l`, so in value and gradient the loss is the plain mean cross-entropy.
    /// Default: false.
    pub detach_ratio: bool,
    /// Cap of the gates' positive-class weights. Default: 5.
    pub positive_weight_cap: f32,
    /// How the positive weights count a gate's positives: `best_exit` (JEI-DNN's: the
    /// rows whose best exit is that gate's) or `cumulative` (the gate's actual
    /// positives, the rows whose best exit is that gate's or earlier). Default:
    /// `best_exit`.
    pub positive_count: jei::PositiveCount,
    /// The alternation's optimiser: `adamw` (the run's AdamW at `frozen_learning_rate`,
    /// with linear warm-up and decay over the stage's steps) or `sgd` (the reference
    /// code's: SGD with momentum, weight decay and a per-epoch cosine annealing, set
    /// by [`JeiConfig::sgd`]). The warm-up always uses AdamW. Default: `adamw`.
    pub optimizer: JeiOptimizer,
    /// The settings of `optimizer = "sgd"`.
    pub sgd: SgdSchedule,
    /// Positive weight 1 for every gate in the first alternation epoch, the validation
    /// set's weights from the second, as the reference code (which computes them only
    /// after an epoch). Default: false (validation weights from the first epoch).
    pub unit_weights_first_epoch: bool,
}

/// The optimiser of JEI-DNN's alternation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JeiOptimizer {
    /// AdamW with the run's settings.
    #[default]
    Adamw,
    /// SGD with momentum ([`SgdSchedule`]).
    Sgd,
}

impl Default for JeiConfig {
    fn default() -> Self {
        Self {
            warmup_epochs: 2,
            epochs: 3,
            cost_weight: 0.15,
            phase_batches: 200,
            detach_ratio: false,
            positive_weight_cap: 5.0,
            positive_count: jei::PositiveCount::BestExit,
            optimizer: JeiOptimizer::Adamw,
            sgd: SgdSchedule::default(),
            unit_weights_first_epoch: false,
        }
    }
}

impl JeiConfig {
    /// Checks every value, naming the key at fault (under `prefix`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let err = |k: &str, m: String| Err(PonderError::config(format!("{prefix}.{k}"), m));
        if self.warmup_epochs == 0 {
            return err("warmup_epochs", "must be at least 1".into());
        }
        if self.epochs == 0 {
            return err("epochs", "must be at least 1".into());
        }
        if !(self.cost_weight >= 0.0 && self.cost_weight.is_finite()) {
            return err("cost_weight", format!("{} is not ≥ 0", self.cost_weight));
        }
        if self.phase_batches == 0 {
            return err("phase_batches", "must be at least 1".into());
        }
        if !(self.positive_weight_cap > 0.0 && self.positive_weight_cap.is_finite()) {
            return err(
                "positive_weight_cap",
                format!("{} is not > 0", self.positive_weight_cap),
            );
        }
        let sgd = &self.sgd;
        if !(sgd.learning_rate > 0.0 && sgd.learning_rate <= 1.0) {
            return err(
                "sgd.learning_rate",
                format!("{} is not in (0, 1]", sgd.learning_rate),
            );
        }
        if !(sgd.min_learning_rate >= 0.0 && sgd.min_learning_rate <= sgd.learning_rate) {
            return err(
                "sgd.min_learning_rate",
                format!(
                    "{} is not in [0, sgd.learning_rate = {}]",
                    sgd.min_learning_rate, sgd.learning_rate
                ),
            );
        }
        if !(0.0..1.0).contains(&sgd.momentum) {
            return err("sgd.momentum", format!("{} is not in [0, 1)", sgd.momentum));
        }
        if !(sgd.weight_decay >= 0.0 && sgd.weight_decay.is_finite()) {
            return err(
                "sgd.weight_decay",
                format!("{} is not ≥ 0", sgd.weight_decay),
            );
        }
        Ok(())
    }
}

/// The PonderNet loss of [`Method::Palbert`] and [`Method::PonderNet`]:
/// `Σ_n mean_b(p_n·ℓ_n) + β·KL` (the task term averaged over the batch per layer, then
/// summed over layers), with `p_n = λ_n·Π_{j<n}(1 − λ_j)` the probability of exiting at
/// layer n and the KL against a geometric prior `p_G(n) = λ_p(1 − λ_p)^{n−1}` (PonderNet,
/// Banino, Balaguer, Blundell 2021, arXiv:2107.05407; PALBERT, Balagansky, Gavrilov 2022,
/// arXiv:2204.03276). The default is PALBERT's
/// (the parity model's is labml's); a `[train.ponder]` table that is present must name
/// every key, so a partial table never mixes in another method's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PonderConfig {
    /// Weight β of the KL term. Default: 0.5 (PALBERT's README).
    pub beta: f32,
    /// Parameter λ_p of the geometric prior (mean ≈ 1/λ_p layers). Default: 0.1.
    pub lambda_p: f64,
    /// Put the prior's mass beyond the last layer on the last layer (PALBERT) instead of
    /// truncating it (labml). Default: true.
    pub prior_leftover_on_last: bool,
    /// Direction of the KL: `prior_to_exits` = KL(p_G ‖ p), what the reference code
    /// computes; `exits_to_prior` = KL(p ‖ p_G), what the paper writes. Default:
    /// `prior_to_exits`.
    pub kl: KlDirection,
    /// The last layer: `force_halt` (λ_N = 1, Σp = 1) or `{ epsilon_floor = ε }`
    /// (PALBERT). Default: `{ epsilon_floor = 0.05 }`.
    pub last_layer: LastLayer,
}

impl Default for PonderConfig {
    fn default() -> Self {
        Self {
            beta: 0.5,
            lambda_p: 0.1,
            prior_leftover_on_last: true,
            kl: KlDirection::PriorToExits,
            last_layer: LastLayer::EpsilonFloor(0.05),
        }
    }
}

impl PonderConfig {
    /// Checks the values for a model of `n_layers` exits (the prior must be positive
    /// wherever the chosen KL takes its log), naming the key at fault (under `prefix`).
    pub fn validate_for(&self, prefix: &str, n_layers: usize) -> Result<()> {
        self.validate(prefix)?;
        let prior = ponder::geometric_prior(self.lambda_p, n_layers, self.prior_leftover_on_last);
        if self.kl == KlDirection::ExitsToPrior
            && let Some(k) = prior.iter().position(|&g| !(g > 0.0 && g.is_finite()))
        {
            return Err(PonderError::config(
                format!("{prefix}.lambda_p"),
                format!(
                    "with λ_p = {} the prior of layer {} of {n_layers} is {} in f32, and KL(p ‖ prior) takes its log: use a smaller λ_p or kl = \"prior_to_exits\"",
                    self.lambda_p,
                    k + 1,
                    prior[k]
                ),
            ));
        }
        Ok(())
    }

    /// Checks every value, naming the key at fault (under `prefix`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return Err(PonderError::config(
                format!("{prefix}.beta"),
                format!("{} is not ≥ 0", self.beta),
            ));
        }
        if !(self.lambda_p > 0.0 && self.lambda_p <= 1.0) {
            return Err(PonderError::config(
                format!("{prefix}.lambda_p"),
                format!("{} is not in (0, 1]", self.lambda_p),
            ));
        }
        if let LastLayer::EpsilonFloor(eps) = self.last_layer
            && !(eps > 0.0 && eps < 1.0)
        {
            return Err(PonderError::config(
                format!("{prefix}.last_layer"),
                format!("epsilon_floor = {eps} is not in (0, 1)"),
            ));
        }
        if self.kl == KlDirection::ExitsToPrior && self.lambda_p >= 1.0 {
            return Err(PonderError::config(
                format!("{prefix}.kl"),
                "KL(p ‖ prior) needs a prior > 0 at every layer: λ_p must be < 1",
            ));
        }
        Ok(())
    }

    /// The loss of one batch from the logits and halting probabilities of every layer.
    ///
    /// # Shapes
    /// - logits: `N` tensors `[batch_size, n_classes]`
    /// - lambdas: `N` tensors `[batch_size]`
    /// - targets: `[batch_size]`
    pub fn loss(
        &self,
        logits: Vec<Tensor<2>>,
        lambdas: &[Tensor<1>],
        targets: Tensor<1, Int>,
    ) -> ponder::PonderLoss {
        let n = logits.len();
        let p = ponder::exit_distribution(lambdas, self.last_layer);
        let losses: Vec<Tensor<1>> = logits
            .into_iter()
            .map(|l| loss::cross_entropy_per_row(l, targets.clone()))
            .collect();
        let prior = ponder::geometric_prior(self.lambda_p, n, self.prior_leftover_on_last);
        ponder::ponder_loss(&p, &losses, &prior, self.beta, self.kl)
    }
}

/// How PABEE's loss (and the heads-first stage) weighs the exits' losses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitWeights {
    /// PABEE's `Σ_i i·L_i / Σ_i i`: exit `i` of `N` weighs `i`, so the first exit of 6
    /// gets 1/21 of the loss.
    #[default]
    Depth,
    /// `Σ_i L_i / N`: every exit weighs the same.
    Uniform,
}

impl ExitWeights {
    /// The weighted loss of the exits' losses (first exit first).
    pub fn combine(self, per_exit: Vec<Tensor<1>>) -> Tensor<1> {
        match self {
            Self::Depth => loss::depth_weighted(per_exit),
            Self::Uniform => {
                let n = per_exit.len() as f32;
                loss::sum(per_exit).div_scalar(n)
            }
        }
    }
}

/// The parameter groups on the exit side of a model, each of which may have its own
/// peak learning rate ([`TrainConfig::group_learning_rates`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamGroup {
    /// The classifiers of every exit and DeeBERT's off-ramp poolers.
    Heads,
    /// The halting head (PonderNet, PALBERT).
    Halting,
    /// JEI-DNN's gates.
    Gates,
}

/// Peak learning rates of single exit-side groups, over
/// [`TrainConfig::head_learning_rate`]. A group not named takes `head_learning_rate`
/// (or, without it, `learning_rate`); an unknown name is an error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupRates {
    /// The exits' classifiers and off-ramp poolers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heads: Option<f64>,
    /// The halting head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halting: Option<f64>,
    /// JEI-DNN's gates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gates: Option<f64>,
}

impl GroupRates {
    /// Whether no group has a rate of its own.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    fn get(&self, group: ParamGroup) -> Option<f64> {
        match group {
            ParamGroup::Heads => self.heads,
            ParamGroup::Halting => self.halting,
            ParamGroup::Gates => self.gates,
        }
    }
}

/// Training hyper-parameters. Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// How the exits are trained. Default: `pabee`.
    pub method: Method,
    /// Epochs (for DeeBERT: of stage 1). Default: 4.
    pub epochs: usize,
    /// Epochs of DeeBERT's stage 2 (internal heads, frozen backbone). Default: `epochs`,
    /// as DeeBERT's reference scripts train both stages equally long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage2_epochs: Option<usize>,
    /// Training batch size. Default: 64.
    pub batch_size: usize,
    /// Evaluation batch size. Default: 256.
    pub eval_batch_size: usize,
    /// Peak learning rate of AdamW. Default: 1e-3.
    pub learning_rate: f64,
    /// Peak learning rate of the stages that train heads on a frozen backbone
    /// (DeeBERT's stage 2, JEI-DNN's warm-up and alternation). Fine-tuning a pretrained
    /// encoder wants a small `learning_rate`, at which freshly initialised heads on its
    /// frozen features barely move in an epoch. Default: `learning_rate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen_learning_rate: Option<f64>,
    /// Peak learning rate of the exit side (every exit's classifier and off-ramp pooler,
    /// the halting head, the gates) in the stages that train the backbone too, next to
    /// the backbone's `learning_rate`; the warm-up and decay of the stage apply to both.
    /// New heads on a pretrained encoder fine-tuned at its small rate barely move, the
    /// early ones least. In frozen-backbone stages it is the heads' rate when
    /// `frozen_learning_rate` is not set. Default: `learning_rate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_learning_rate: Option<f64>,
    /// Peak rates of single exit-side groups (`heads`, `halting`, `gates`), over
    /// `head_learning_rate`. Default: none.
    #[serde(skip_serializing_if = "GroupRates::is_empty")]
    pub group_learning_rates: GroupRates,
    /// How PABEE's loss weighs the exits: `depth` (PABEE's `Σ i·L_i / Σ i`) or
    /// `uniform`. Default: `depth`.
    pub exit_weights: ExitWeights,
    /// PABEE: epochs of a first stage that trains only the exits (heads) on the frozen
    /// backbone, at the heads' rate and with `exit_weights`, before the joint stage:
    /// the heads, the early ones above all, start from a trained state instead of from
    /// noise that the joint stage's gradients would push into the backbone. 0: none.
    /// Default: 0.
    pub heads_first_epochs: usize,
    /// Fraction of each stage's steps spent warming up linearly to the peak rate,
    /// which then decays linearly towards 0. Default: 0.1.
    pub warmup_fraction: f64,
    /// AdamW's decoupled weight decay. Default: 0.01.
    pub weight_decay: f32,
    /// Clip each parameter's gradient to this L2 norm (0: no clipping). Default: 1.0.
    pub grad_clip: f32,
    /// Seed of initialisation, data order and dropout. Default: 42.
    pub seed: u64,
    /// Also write a resumable checkpoint every this many steps (0: only at the end of
    /// each epoch). Default: 0.
    pub checkpoint_every: usize,
    /// The PonderNet loss of PALBERT and PonderNet.
    pub ponder: PonderConfig,
    /// JEI-DNN's stages after the backbone's.
    pub jei: JeiConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            method: Method::Pabee,
            epochs: 4,
            stage2_epochs: None,
            batch_size: 64,
            eval_batch_size: 256,
            learning_rate: 1e-3,
            frozen_learning_rate: None,
            head_learning_rate: None,
            group_learning_rates: GroupRates::default(),
            exit_weights: ExitWeights::Depth,
            heads_first_epochs: 0,
            warmup_fraction: 0.1,
            weight_decay: 0.01,
            grad_clip: 1.0,
            seed: 42,
            checkpoint_every: 0,
            ponder: PonderConfig::default(),
            jei: JeiConfig::default(),
        }
    }
}

impl TrainConfig {
    /// The peak rate of a stage's schedule: `learning_rate`, or in a stage that trains
    /// heads on a frozen backbone, `frozen_learning_rate`, else `head_learning_rate`.
    pub fn stage_peak_rate(&self, frozen_backbone: bool) -> f64 {
        if frozen_backbone {
            self.frozen_learning_rate
                .or(self.head_learning_rate)
                .unwrap_or(self.learning_rate)
        } else {
            self.learning_rate
        }
    }

    /// The peak rate of an exit-side group in a stage: its own rate, else
    /// `head_learning_rate`, else `learning_rate`; in a frozen-backbone stage with
    /// `frozen_learning_rate` set, that rate for every group.
    pub fn group_peak_rate(&self, group: ParamGroup, frozen_backbone: bool) -> f64 {
        match self.frozen_learning_rate {
            Some(rate) if frozen_backbone => rate,
            _ => self
                .group_learning_rates
                .get(group)
                .or(self.head_learning_rate)
                .unwrap_or(self.learning_rate),
        }
    }

    /// Checks every value, naming the key at fault.
    pub fn validate(&self) -> Result<()> {
        let err = |k: &str, m: String| Err(PonderError::config(format!("train.{k}"), m));
        if self.epochs == 0 {
            return err("epochs", "must be at least 1".into());
        }
        if self.method == Method::DeeBert && self.stage2_epochs == Some(0) {
            return err(
                "stage2_epochs",
                "DeeBERT needs at least 1 epoch of stage 2".into(),
            );
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return err("batch_size", "batch sizes must be at least 1".into());
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return err(
                "learning_rate",
                format!("{} is not in (0, 1]", self.learning_rate),
            );
        }
        if let Some(rate) = self.frozen_learning_rate
            && !(rate > 0.0 && rate <= 1.0)
        {
            return err("frozen_learning_rate", format!("{rate} is not in (0, 1]"));
        }
        let groups = [
            ("head_learning_rate", self.head_learning_rate),
            (
                "group_learning_rates.heads",
                self.group_learning_rates.heads,
            ),
            (
                "group_learning_rates.halting",
                self.group_learning_rates.halting,
            ),
            (
                "group_learning_rates.gates",
                self.group_learning_rates.gates,
            ),
        ];
        for (key, rate) in groups {
            if let Some(rate) = rate
                && !(rate > 0.0 && rate <= 1.0)
            {
                return err(key, format!("{rate} is not in (0, 1]"));
            }
        }
        if self.heads_first_epochs > 0 && self.method != Method::Pabee {
            return err(
                "heads_first_epochs",
                format!(
                    "a heads-first stage is for pabee, not {:?} (DeeBERT and JEI-DNN train their exits on a frozen backbone already)",
                    self.method
                ),
            );
        }
        if !(0.0..1.0).contains(&self.warmup_fraction) {
            return err(
                "warmup_fraction",
                format!("{} is not in [0, 1)", self.warmup_fraction),
            );
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return err("weight_decay", format!("{} is not ≥ 0", self.weight_decay));
        }
        if !(self.grad_clip >= 0.0 && self.grad_clip.is_finite()) {
            return err("grad_clip", format!("{} is not ≥ 0", self.grad_clip));
        }
        self.ponder.validate("train.ponder")?;
        self.jei.validate("train.jei")
    }
}
