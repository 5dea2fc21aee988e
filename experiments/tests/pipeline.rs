//! The evaluation pipeline on untrained models (only the plumbing is under test):
//! JEI-DNN's gates refitted and reported, a halting model against the optimum of its
//! loss, every policy's calibration and conformal sets, JEI-DNN's posterior, and the
//! tables and plots of the results.

use std::sync::Arc;

use ponder_data::ImageSet;
use ponder_models::ImageSource;

use burn::tensor::Device;
use ponder_exits::NeverExit;
use ponder_experiments::calibrate::{ModelCalibration, policy_calibration};
use ponder_experiments::config::Experiment;
use ponder_experiments::pipeline::{
    CompareResults, EvalData, evaluate_model, model_config, with_gate_refit,
};
use ponder_experiments::report;
use ponder_models::{Method, evaluate, layer_outputs, make_batches};

/// Random 28×28 images in 3 classes (the models are untrained: only the plumbing is
/// under test).
fn source(n: usize, seed: u64) -> ImageSource {
    let mut state = seed;
    let pixels = (0..n * 28 * 28)
        .map(|_| (ponder_core::splitmix64(&mut state) % 256) as u8)
        .collect();
    let labels = (0..n).map(|i| i % 3).collect();
    let set = ImageSet {
        n_images: n,
        n_channels: 1,
        n_rows: 28,
        n_cols: 28,
        pixels,
    };
    ImageSource::new(Arc::new(set), Arc::new(labels), (0..n).collect(), 3)
}

fn experiment() -> Experiment {
    Experiment::parse(
        r#"
name = "t"
[data]
dataset = "fashion-mnist"
path = "unused"
[model]
n_layers = 3
d_model = 16
n_heads = 2
d_ff = 32
patch_size = 7
[compare]
methods = ["jei_dnn", "pabee"]
max_prob = [0.5, 0.9]
entropy = []
patience = [1]
fixed_layers = false
oracle = false
q_exit = [0.5]
sample = false
expectation = false
gate = [0.5, 0.3]
"#,
    )
    .unwrap()
}

#[test]
fn jei_refit_reports_the_gates_and_evaluates_a_refitted_copy_and_halting_models_their_optimum() {
    let mut experiment = experiment();
    let device = Device::flex();
    let (train, test, valid) = (source(80, 4), source(90, 1), source(60, 2));
    let test = make_batches(&test, 32, &device);
    let calibration = make_batches(&valid, 32, &device);
    let data = EvalData {
        test: &test,
        calibration: &calibration,
        task: None,
    };
    let policies = experiment.policies().unwrap();
    device.seed(3);
    let model = model_config(&experiment, Method::JeiDnn, 3, 0)
        .unwrap()
        .init(&device);
    let kind = experiment.model_kind(Method::JeiDnn);
    // off by default
    let own = evaluate_model(&experiment, kind, 1, &model, data, &policies, None, 0.0).unwrap();
    let none = with_gate_refit(
        own.clone(),
        &experiment,
        kind,
        1,
        &model,
        &train,
        data,
        &policies,
    )
    .unwrap();
    assert_eq!(none.len(), 1);
    assert!(none[0].gates.is_none());
    experiment.compare.jei_refit = true;
    let mut both =
        with_gate_refit(own, &experiment, kind, 1, &model, &train, data, &policies).unwrap();
    assert_eq!(both.len(), 2);
    let refit = both.pop().unwrap();
    let trained = both.pop().unwrap().gates.unwrap();
    assert_eq!(trained.rows, 80);
    assert_eq!(trained.gates.len(), 2);
    assert!(trained.gates.iter().all(|g| g.iterations.is_none()));
    assert_eq!(refit.method, "jei_dnn+refit");
    let report = refit.gates.as_ref().unwrap();
    for (before, after) in trained.gates.iter().zip(&report.gates) {
        assert!(after.iterations.is_some());
        assert!(after.loss <= before.loss + 1e-9);
    }
    assert!(refit.policies.iter().any(|r| r.family == "gate"));
    let table = report::table(&CompareResults::new(&experiment, "cpu", 90, vec![refit]));
    assert!(table.contains("gate 2: w (p_max"), "{table}");
    // a model without gates has nothing to refit
    let pabee = model_config(&experiment, Method::Pabee, 3, 0)
        .unwrap()
        .init(&device);
    let pabee_kind = experiment.model_kind(Method::Pabee);
    let pabee_own = evaluate_model(
        &experiment,
        pabee_kind,
        1,
        &pabee,
        data,
        &policies,
        None,
        0.0,
    )
    .unwrap();
    let alone = with_gate_refit(
        pabee_own.clone(),
        &experiment,
        pabee_kind,
        1,
        &pabee,
        &train,
        data,
        &policies,
    )
    .unwrap();
    assert_eq!(alone.len(), 1);
    assert!(alone[0].gates.is_none());
    // a halting model is compared with the optimum of its loss; others are not
    let palbert = model_config(&experiment, Method::Palbert, 3, 0)
        .unwrap()
        .init(&device);
    let kind = experiment.model_kind(Method::Palbert);
    let result =
        evaluate_model(&experiment, kind, 1, &palbert, data, &policies, None, 0.0).unwrap();
    let optimum = result.halting_optimum.unwrap();
    assert_eq!(optimum.rows, 90);
    assert!((1.0..=3.0).contains(&optimum.learned_depth));
    assert!((1.0..=3.0).contains(&optimum.optimal_depth));
    assert!(pabee_own.halting_optimum.is_none());
}

#[test]
fn every_policy_gets_calibration_and_conformal_sets_and_gated_models_a_posterior() {
    let experiment = experiment();
    let device = Device::flex();
    let (test, valid) = (source(90, 1), source(60, 2));
    let test = make_batches(&test, 32, &device);
    let calibration = make_batches(&valid, 32, &device);
    let data = EvalData {
        test: &test,
        calibration: &calibration,
        task: None,
    };
    let policies = experiment.policies().unwrap();
    let mut models = Vec::new();
    for method in [Method::JeiDnn, Method::Pabee] {
        device.seed(3);
        let model = model_config(&experiment, method, 3, 0)
            .unwrap()
            .init(&device);
        let kind = experiment.model_kind(method);
        let result =
            evaluate_model(&experiment, kind, 1, &model, data, &policies, None, 0.0).unwrap();
        let families: Vec<&str> = result.policies.iter().map(|r| r.family.as_str()).collect();
        // Q-exit needs a halting head; the gate rule only applies to JEI-DNN's gates
        assert!(!families.contains(&"q_exit"));
        assert_eq!(
            families.contains(&"gate"),
            method == Method::JeiDnn,
            "{families:?}"
        );
        assert_eq!(result.posterior.is_some(), method == Method::JeiDnn);
        for r in &result.policies {
            let c = r.calibration.as_ref().expect("every row is calibrated");
            assert!((0.0..=1.0).contains(&c.ece) && c.nll > 0.0 && c.brier > 0.0);
            assert_eq!(c.conformal.len(), 8, "2 α × 2 scores × 2 variants");
            for x in &c.conformal {
                assert!((0.0..=1.0).contains(&x.coverage));
                assert!(x.mean_set_size >= 0.0 && x.mean_set_size <= 3.0);
            }
            // the reliability diagram covers every test row
            let rows: usize = c.reliability.iter().map(|b| b.count).sum();
            assert_eq!(rows, 90);
        }
        // the full-depth row's sets are calibrated on the last exit of the validation
        // split's all-layers pass: the same as running full depth there
        let calibration = ModelCalibration::new(layer_outputs(&model, data.calibration)).unwrap();
        let full_test = evaluate(&model, data.test, &NeverExit);
        let full_valid = evaluate(&model, data.calibration, &NeverExit);
        let expected =
            policy_calibration((&full_test).into(), (&full_valid).into(), &calibration).unwrap();
        assert_eq!(result.policies[0].family, "full");
        assert_eq!(result.policies[0].calibration.as_ref(), Some(&expected));
        models.push(result);
    }
    let results = CompareResults::new(&experiment, "cpu", 90, models);
    let table = report::table(&results);
    assert!(table.contains("calibration on the test set"), "{table}");
    assert!(table.contains("JEI-DNN posterior"), "{table}");
    let plots = report::reliability_plots(&results).unwrap();
    assert_eq!(
        plots.len(),
        results
            .models
            .iter()
            .map(|m| m.policies.len())
            .sum::<usize>()
    );
    assert!(
        plots
            .iter()
            .any(|(p, _)| p == "reliability/jei_dnn/max_prob_gt_0.9.svg")
    );
    assert!(
        plots
            .iter()
            .all(|(p, svg)| !p.contains(['>', '<', '=']) && svg.contains("<svg"))
    );
    assert!(report::ece_plot(&results).unwrap().contains("<svg"));
}
