//! The `[compare]` section, and what `ponder compare` trains (backbones, methods, seeds,
//! JEI-DNN's λ_cost sweep) and which policies it evaluates.

use anyhow::{Context, Result};
use ponder_exits::{
    EntropyThreshold, Expectation, FixedLayer, LearnedGate, MaxProbThreshold, NeverExit, Oracle,
    Patience, PatienceRegression, Policy, PonderSample, QExit,
};
use ponder_models::{Method, TrainConfig};
use serde::{Deserialize, Serialize};

use super::{BackboneKind, Experiment};
use crate::run::ModelKind;

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

    /// The training configuration of one method at one seed. `train.heads_first_epochs`
    /// is PABEE's alone: the other methods' configurations have none (DeeBERT and
    /// JEI-DNN train their exits on a frozen backbone already).
    pub fn train_config(&self, method: Method, seed: u64) -> TrainConfig {
        TrainConfig {
            method,
            seed,
            heads_first_epochs: if method == Method::Pabee {
                self.train.heads_first_epochs
            } else {
                0
            },
            ..self.train.clone()
        }
    }
}
