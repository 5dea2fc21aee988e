//! Parameter groups with their own learning rates (`head_learning_rate`,
//! `group_learning_rates`), PABEE's exit weights and heads-first stage, and the warning
//! for exits that have not learned.

use burn::module::{ModuleVisitor, Param};
use ponder_models::{ExitWeights, GroupRates, majority_rate, unlearned_exits, unlearned_warning};

use super::*;
use crate::resume::check_resume;

/// Every float parameter of a module, in visiting order.
#[derive(Default)]
struct Params(Vec<Vec<f32>>);

impl ModuleVisitor for Params {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(host(param.val()));
    }
}

fn params<M: Module>(module: &M) -> Vec<Vec<f32>> {
    let mut p = Params::default();
    module.visit(&mut p);
    p.0
}

/// The largest absolute difference between two parameter lists.
fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| support::max_abs_diff(x, y))
        .fold(0.0, f32::max)
}

/// The model before and after `steps` optimiser steps of `config` (stopped before any
/// evaluation). Parameters are initialised lazily, on first use: reading them first
/// fixes the initial values the run starts from.
pub(crate) fn after_steps(
    config: &TrainConfig,
    steps: usize,
) -> (MultiExitClassifier, MultiExitClassifier) {
    let (train, valid) = sources();
    let d = device();
    let mut stop = StopAt {
        step: Some(steps),
        ..StopAt::default()
    };
    let start = model(config.seed, &d);
    params(&start);
    let out = fit(
        start.clone(),
        &train,
        &valid,
        config,
        FitOptions::new(&d).with_observer(&mut stop),
    )
    .unwrap();
    assert!(out.interrupted);
    (start, out.model)
}

/// Whether two modules' parameters are equal bit for bit.
fn same<M: Module>(a: &M, b: &M) -> bool {
    params(a) == params(b)
}

#[test]
fn each_group_steps_at_its_own_rate() {
    let _guard = serial();
    let low = config(Method::Pabee);
    let high = TrainConfig {
        learning_rate: 10.0 * low.learning_rate,
        ..low.clone()
    };
    let grouped = TrainConfig {
        head_learning_rate: Some(high.learning_rate),
        ..low.clone()
    };
    let ((initial, a), (_, b), (_, g)) = (
        after_steps(&low, 1),
        after_steps(&high, 1),
        after_steps(&grouped, 1),
    );
    // AdamW's first step moves every weight by about its rate, so the two plain runs
    // differ; the grouped run's backbone is the low-rate run's step bit for bit, its
    // heads the high-rate run's (the rates `(r/w)·10` and `10r/w` may differ in the last
    // bit, hence the tolerance)
    assert!(max_diff(&params(&a.heads), &params(&b.heads)) > 1e-3);
    assert!(same(&g.backbone, &a.backbone));
    assert!(max_diff(&params(&g.heads), &params(&b.heads)) < 1e-6);
    // and the step is AdamW's: the largest move of each group is its first rate (linear
    // warm-up: peak / warm-up steps), as nearly every gradient is far above ε
    let warmup = ((3.0 * STEPS_PER_EPOCH as f64 * low.warmup_fraction).round() as usize).max(1);
    let first = low.learning_rate / warmup as f64;
    let moved = |now: &MultiExitClassifier, heads: bool| {
        let (x, y) = if heads {
            (params(&now.heads), params(&initial.heads))
        } else {
            (params(&now.backbone), params(&initial.backbone))
        };
        max_diff(&x, &y) as f64
    };
    for (what, got, want) in [
        ("backbone", moved(&g, false), first),
        ("heads", moved(&g, true), 10.0 * first),
    ] {
        // weight decay adds rate·λ·|w| ≤ 1% of the rate for |w| < 1
        assert!(
            (got - want).abs() <= 0.011 * want,
            "{what}: largest move {got}, rate {want}"
        );
    }
}

#[test]
fn a_group_rate_overrides_the_head_rate() {
    let _guard = serial();
    let base = config(Method::Pabee);
    let by_head = TrainConfig {
        head_learning_rate: Some(3.0 * base.learning_rate),
        ..base.clone()
    };
    let by_group = TrainConfig {
        head_learning_rate: Some(7.0 * base.learning_rate),
        group_learning_rates: GroupRates {
            heads: Some(3.0 * base.learning_rate),
            ..GroupRates::default()
        },
        ..base.clone()
    };
    let ((_, h), (_, g)) = (after_steps(&by_head, 2), after_steps(&by_group, 2));
    assert!(same(&h.backbone, &g.backbone));
    assert!(same(&h.heads, &g.heads));
}

/// PABEE with one heads-first epoch, the heads at 2e-2.
pub(crate) fn heads_first() -> TrainConfig {
    TrainConfig {
        heads_first_epochs: 1,
        head_learning_rate: Some(2e-2),
        ..config(Method::Pabee)
    }
}

#[test]
fn the_heads_first_stage_leaves_the_backbone_as_it_was() {
    let _guard = serial();
    let config = heads_first();
    let (initial, after) = after_steps(&config, STEPS_PER_EPOCH);
    assert!(same(&after.backbone, &initial.backbone));
    assert!(max_diff(&params(&after.heads), &params(&initial.heads)) > 1e-3);
    // the joint stage that follows moves the backbone (the outcome is its best epoch)
    let (train, valid) = sources();
    let d = device();
    let start = model(config.seed, &d);
    let initial = params(&start.backbone);
    let joint = TrainConfig {
        epochs: 1,
        ..config
    };
    let done = train_plain(start, &train, &valid, &joint, &d);
    assert_eq!(done.state.history.len(), 2);
    assert!(max_diff(&params(&done.model.backbone), &initial) > 1e-4);
}

#[test]
fn resume_keeps_both_schedules_and_the_heads_first_stage() {
    let _guard = serial();
    let config = TrainConfig {
        epochs: 2,
        exit_weights: ExitWeights::Uniform,
        checkpoint_every: 2,
        ..heads_first()
    };
    // stopped within the heads-first stage, and within the joint stage
    check_resume(&config, 3);
    let started = check_resume(&config, STEPS_PER_EPOCH + 3);
    assert_eq!((started.stage, started.batch), (1, 3));
}

#[test]
fn exit_weights_are_depth_or_uniform() {
    let d = Device::flex();
    let losses = || {
        [1.0f32, 2.0, 6.0]
            .map(|v| Tensor::<1>::from_data(TensorData::new(vec![v], [1]), &d))
            .to_vec()
    };
    let depth = ExitWeights::Depth.combine(losses()).into_scalar::<f32>();
    let uniform = ExitWeights::Uniform.combine(losses()).into_scalar::<f32>();
    assert!((depth - (1.0 + 4.0 + 18.0) / 6.0).abs() < 1e-6, "{depth}");
    assert!((uniform - 3.0).abs() < 1e-6, "{uniform}");
}

#[test]
fn bad_group_settings_are_config_errors() {
    let unknown = serde_json::from_str::<TrainConfig>(
        r#"{"head_learning_rate": 0.01, "group_learning_rates": {"classifier": 0.01}}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(unknown.contains("classifier"), "{unknown}");
    let cases = [
        (
            TrainConfig {
                head_learning_rate: Some(0.0),
                ..TrainConfig::default()
            },
            "train.head_learning_rate",
        ),
        (
            TrainConfig {
                group_learning_rates: GroupRates {
                    gates: Some(2.0),
                    ..GroupRates::default()
                },
                ..TrainConfig::default()
            },
            "train.group_learning_rates.gates",
        ),
        (
            TrainConfig {
                method: Method::DeeBert,
                heads_first_epochs: 1,
                ..TrainConfig::default()
            },
            "train.heads_first_epochs",
        ),
    ];
    for (config, key) in cases {
        match config.validate() {
            Err(PonderError::InvalidConfig { key: k, .. }) => assert_eq!(k, key),
            other => panic!("{key}: {other:?}"),
        }
    }
}

#[test]
fn exits_at_the_majority_rate_are_named() {
    assert_eq!(majority_rate([0, 1, 1, 1]), Some(0.75));
    assert_eq!(majority_rate(std::iter::empty()), None);
    let accuracy = [0.637, 0.644, 0.80, 0.83];
    assert_eq!(unlearned_exits(&accuracy, 0.637), vec![1, 2]);
    assert_eq!(
        unlearned_warning(&accuracy, 0.637).unwrap(),
        "exits 1, 2 have not learned: 63.7%, 64.4% (majority class 63.7%)"
    );
    assert_eq!(
        unlearned_warning(&accuracy[1..], 0.637).unwrap(),
        "exit 1 has not learned: 64.4% (majority class 63.7%)"
    );
    assert_eq!(unlearned_warning(&accuracy[2..], 0.637), None);
}

#[test]
fn training_logs_carry_the_majority_rate() {
    let _guard = serial();
    let config = TrainConfig {
        epochs: 1,
        ..config(Method::Pabee)
    };
    let (train, valid) = sources();
    let d = device();
    let out = train_plain(model(config.seed, &d), &train, &valid, &config, &d);
    let log = &out.state.history[0];
    // the synthetic validation set has 3 classes in turn
    let majority = log.valid_majority_rate.unwrap();
    assert!((0.33..0.35).contains(&majority), "{majority}");
}
