//! The comparison's Markdown table (`results.md`, also readable as plain text): one
//! row per (model, policy) or, with several seeds, per (method, policy) as mean ± std;
//! calibration and conformal sets; each model's per-exit accuracy, posterior, gates,
//! halting optimum and exit spread.

use std::fmt::Write as _;

use ponder_data::{GlueMetric, GlueScore};
use ponder_models::GateReport;

use super::summary::{matched_compute, summary};
use crate::pipeline::{CalibrationSummary, CompareResults};

/// The comparison as a Markdown table (also readable as plain text), one block per
/// model, followed by the summary.
pub fn table(results: &CompareResults) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: {} test examples, {} layers, device {}\n",
        results.experiment, results.n_test, results.n_layers, results.device
    );
    if !results.seed_summary.is_empty() {
        seed_table(&mut s, results);
    } else {
        policy_table(&mut s, results);
    }
    calibration_table(&mut s, results);
    let _ = writeln!(s);
    for model in &results.models {
        let layers: Vec<String> = model
            .test_layer_accuracy
            .iter()
            .map(|a| format!("{:.2}", a * 100.0))
            .collect();
        let name = if results.seed_summary.is_empty() {
            model.method.clone()
        } else {
            format!("{} (seed {})", model.method, model.seed)
        };
        let params = if model.n_params > 0 {
            format!("{} parameters ({}); ", model.n_params, model.backbone)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "- {name}: {params}test {} of each exit (all layers run): [{}]",
            metric_name(results),
            layers.join(", ")
        );
        if let (Some(acc), Some(depth)) = (
            model.test_exit_distribution_accuracy,
            model.test_expected_depth,
        ) {
            let _ = writeln!(
                s,
                "- {name}: under its exit distribution: accuracy {:.2}%, expected exit layer {depth:.2}",
                acc * 100.0
            );
        }
        if let Some(p) = &model.posterior {
            let c = &p.calibration;
            let lac = |a: f64| {
                c.conformal("lac", "split", a).map_or("–".to_string(), |x| {
                    format!("{:.1}% / {:.2}", x.coverage * 100.0, x.mean_set_size)
                })
            };
            let _ = writeln!(
                s,
                "- {name}: JEI-DNN posterior Σ P_l·p_l (every exit computed): accuracy {:.2}%, ECE {:.2}%, NLL {:.3}, Brier {:.4}, LAC split coverage / set size {} (α = 0.1), {} (α = 0.05)",
                p.accuracy * 100.0,
                c.ece * 100.0,
                c.nll,
                c.brier,
                lac(0.1),
                lac(0.05)
            );
        }
        if let Some(g) = &model.gates {
            gate_lines(&mut s, &name, g);
        }
        if let Some(o) = &model.halting_optimum {
            let _ = writeln!(
                s,
                "- {name}: exit distribution (λ_N = 1) against the optimum of its loss per example: expected exit layer learned {:.2}, optimum {:.2}, prior {:.2}; mean TV distance learned–optimum {:.3}, learned–prior {:.3}, optimum–prior {:.3}; optimum within 0.05 of the prior for {:.1}% of examples",
                o.learned_depth,
                o.optimal_depth,
                o.prior_depth,
                o.learned_to_optimal,
                o.learned_to_prior,
                o.optimal_to_prior,
                o.optimal_near_prior * 100.0
            );
        }
        for spread in &model.exit_spread {
            let _ = writeln!(
                s,
                "- {name}: {} over {} evaluations: per-example std of the exit layer {:.3} (max {:.2}), {:.1}% of examples change exit layer; accuracy {}",
                spread.policy,
                spread.repeats,
                spread.mean_exit_layer_std,
                spread.max_exit_layer_std,
                spread.varying_fraction * 100.0,
                {
                    let (lo, hi) = spread
                        .accuracies
                        .iter()
                        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
                    format!("{:.2}–{:.2}%", lo * 100.0, hi * 100.0)
                }
            );
        }
    }
    for line in summary(results) {
        let _ = writeln!(s, "- {line}");
    }
    s
}

/// A model's JEI-DNN gates: the best-exit histogram of their targets, then each gate's
/// parameters and objective.
fn gate_lines(s: &mut String, name: &str, g: &GateReport) {
    let total = g.rows.max(1) as f64;
    let histogram: Vec<String> = g
        .best_exit_histogram
        .iter()
        .map(|&c| format!("{:.1}", c as f64 * 100.0 / total))
        .collect();
    let _ = writeln!(
        s,
        "- {name}: gates on {} training rows; best exit (gate targets) per layer, %: [{}]",
        g.rows,
        histogram.join(", ")
    );
    for (l, gate) in g.gates.iter().enumerate() {
        let weights: Vec<String> = gate.weights.iter().map(|w| format!("{w:.3}")).collect();
        let iterations = gate
            .iterations
            .map_or(String::new(), |i| format!(", {i} Newton steps"));
        let _ = writeln!(
            s,
            "  - gate {}: w (p_max, H, margin, H₂) = [{}], b = {:.3}; targets 1: {:.1}%, w⁺ = {:.2}; loss {:.4}, ‖∇‖ = {:.1e}{iterations}",
            l + 1,
            weights.join(", "),
            gate.bias,
            gate.positive_share * 100.0,
            gate.positive_weight,
            gate.loss,
            gate.gradient_norm
        );
    }
}

/// Rows of several seeds: mean ± std per (method, policy), then the matched-compute
/// comparison.
fn seed_table(s: &mut String, results: &CompareResults) {
    let n_seeds = results
        .seed_summary
        .iter()
        .map(|r| r.n_seeds)
        .max()
        .unwrap_or(0);
    let _ = writeln!(s, "mean ± std over {n_seeds} seeds\n");
    let task = task_column(results, true);
    let _ = writeln!(
        s,
        "| model | policy | {} |{} mean exit layer | FLOP speed-up | wall speed-up |",
        metric_name(results),
        task.as_ref().map_or(String::new(), |t| format!(" {t} |"))
    );
    let _ = writeln!(
        s,
        "|---|---|---:|{}---:|---:|---:|",
        if task.is_some() { "---:|" } else { "" }
    );
    for r in &results.seed_summary {
        let task_cell = match (&task, r.task_metric) {
            (None, _) => String::new(),
            (Some(_), Some((m, sd))) => format!(" {:.2} ± {:.2} |", m * 100.0, sd * 100.0),
            (Some(_), None) => " – |".to_string(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} ± {:.2} |{task_cell} {:.2} ± {:.2} | {:.2}× | {:.2}× |",
            r.method,
            r.policy,
            r.accuracy_mean * 100.0,
            r.accuracy_std * 100.0,
            r.mean_exit_layer_mean,
            r.mean_exit_layer_std,
            r.flop_speedup_mean,
            r.wall_speedup_mean
        );
    }
    let matched = matched_compute(results);
    if !matched.is_empty() {
        let _ = writeln!(
            s,
            "\nat matched compute (each model's policy whose mean exit layer is closest to the reference)\n"
        );
        let _ = writeln!(
            s,
            "| model | policy | {} | mean exit layer |",
            metric_name(results)
        );
        let _ = writeln!(s, "|---|---|---:|---:|");
        for r in matched {
            let _ = writeln!(
                s,
                "| {} | {} | {:.2} ± {:.2} | {:.2} ± {:.2} |",
                r.method,
                r.policy,
                r.accuracy_mean * 100.0,
                r.accuracy_std * 100.0,
                r.mean_exit_layer_mean,
                r.mean_exit_layer_std
            );
        }
    }
}

/// `mean ± std` of a pair, scaled.
fn pm(v: (f64, f64), scale: f64, digits: usize) -> String {
    format!("{:.digits$} ± {:.digits$}", v.0 * scale, v.1 * scale)
}

/// Calibration and LAC conformal sets per (model, policy); with several seeds, mean ±
/// std over seeds. APS sets are in `results.json`.
fn calibration_table(s: &mut String, results: &CompareResults) {
    let header = |s: &mut String| {
        let _ = writeln!(
            s,
            "\ncalibration on the test set (ECE: 15 equal-mass bins over the whole set; conformal: LAC score 1 − p_y, calibrated on the validation split; coverage % / mean set size)\n"
        );
        let _ = writeln!(
            s,
            "| model | policy | ECE % | ECE % after per-exit T | NLL | Brier | split α=0.1 | per-exit α=0.1 | split α=0.05 | per-exit α=0.05 |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    };
    // one summary per row: the seeds' mean ± std, or the single model's values
    let rows: Vec<(String, String, CalibrationSummary, bool)> = if results.seed_summary.is_empty() {
        results
            .models
            .iter()
            .flat_map(|m| m.policies.iter())
            .filter_map(|r| {
                let c = CalibrationSummary::of(&[r.calibration.as_ref()])?;
                Some((r.method.clone(), r.policy.clone(), c, false))
            })
            .collect()
    } else {
        results
            .seed_summary
            .iter()
            .filter_map(|r| {
                let c = r.calibration.clone()?;
                Some((r.method.clone(), r.policy.clone(), c, r.n_seeds > 1))
            })
            .collect()
    };
    if rows.is_empty() {
        return;
    }
    header(s);
    for (method, policy, c, spread) in rows {
        let value = |v: (f64, f64), scale: f64, digits: usize| {
            if spread {
                pm(v, scale, digits)
            } else {
                format!("{:.digits$}", v.0 * scale)
            }
        };
        let cell = |variant: &str, alpha: f64| {
            c.conformal("lac", variant, alpha)
                .map_or("–".to_string(), |x| {
                    format!(
                        "{:.1} / {}",
                        x.coverage.0 * 100.0,
                        value(x.mean_set_size, 1.0, 2)
                    )
                })
        };
        let _ = writeln!(
            s,
            "| {method} | {policy} | {} | {} | {} | {} | {} | {} | {} | {} |",
            value(c.ece, 100.0, 2),
            c.ece_scaled.map_or("–".into(), |e| value(e, 100.0, 2)),
            value(c.nll, 1.0, 3),
            value(c.brier, 1.0, 4),
            cell("split", 0.1),
            cell("per_exit", 0.1),
            cell("split", 0.05),
            cell("per_exit", 0.05)
        );
    }
}

/// The header of the "accuracy" columns: accuracy, or for a regression task the
/// Pearson correlation (both ×100).
fn metric_name(results: &CompareResults) -> &'static str {
    if results.regression {
        "Pearson ×100"
    } else {
        "accuracy %"
    }
}

/// The header of the GLUE task's column, if any: its official metrics (×100), or with
/// `primary` its single number ([`GlueScore::primary`], the seed table's column).
fn task_column(results: &CompareResults, primary: bool) -> Option<String> {
    let task = results.task.as_ref()?;
    let metric = results
        .models
        .iter()
        .flat_map(|m| &m.policies)
        .find_map(|r| r.task_score.as_ref())?;
    let name = match (metric.metric, primary) {
        (GlueMetric::Accuracy, _) => "accuracy",
        (GlueMetric::F1Accuracy, false) => "F1 / accuracy",
        (GlueMetric::F1Accuracy, true) => "(F1 + accuracy)/2",
        (GlueMetric::Matthews, false) => "MCC / accuracy",
        (GlueMetric::Matthews, true) => "MCC",
        (GlueMetric::PearsonSpearman, false) => "Pearson / Spearman",
        (GlueMetric::PearsonSpearman, true) => "(Pearson + Spearman)/2",
    };
    Some(format!("{task} {name}"))
}

/// One row per (model, policy).
fn policy_table(s: &mut String, results: &CompareResults) {
    let task = task_column(results, false);
    let _ = writeln!(
        s,
        "| model | policy | {} |{} mean exit layer | layer speed-up | FLOP speed-up | wall speed-up |",
        metric_name(results),
        task.as_ref().map_or(String::new(), |t| format!(" {t} |"))
    );
    let _ = writeln!(
        s,
        "|---|---|---:|{}---:|---:|---:|---:|",
        if task.is_some() { "---:|" } else { "" }
    );
    for model in &results.models {
        for r in &model.policies {
            let task_cell = match (&task, &r.task_score) {
                (None, _) => String::new(),
                (Some(_), Some(score)) => format!(" {} |", task_cell(score)),
                (Some(_), None) => " – |".to_string(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {:.2} |{task_cell} {:.2} | {:.2}× | {:.2}× | {:.2}× |",
                r.method,
                r.policy,
                r.accuracy * 100.0,
                r.mean_exit_layer,
                r.layer_speedup,
                r.flop_speedup,
                r.wall_speedup
            );
        }
    }
}

/// A GLUE score as its table cell: the task's numbers ×100, `/`-separated.
fn task_cell(score: &GlueScore) -> String {
    let f = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{:.2}", x * 100.0));
    match score.metric {
        GlueMetric::Accuracy => f(score.accuracy),
        GlueMetric::F1Accuracy => format!("{} / {}", f(score.f1), f(score.accuracy)),
        GlueMetric::Matthews => format!("{} / {}", f(score.matthews), f(score.accuracy)),
        GlueMetric::PearsonSpearman => format!("{} / {}", f(score.pearson), f(score.spearman)),
    }
}
