//! Tables and plots of comparison results.

use std::fmt::Write as _;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use ponder_calibration::ReliabilityBin;

use ponder_data::{GlueMetric, GlueScore};
use ponder_models::GateReport;

use crate::calibrate::CalibrationResult;
use crate::pipeline::{CalibrationSummary, CompareResults, PolicyResult, SeedSummary};

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

/// The matched-compute comparison, per backbone: the reference is PALBERT's first
/// Q-exit row (else the first halting model's); for every other method of the same
/// backbone, its sampling row if it has one (PonderNet's own policy) and the
/// (non-oracle, non-full) policy whose mean exit layer is closest to the reference's.
/// Layers of different backbones cost different FLOPs, so they are never matched.
pub fn matched_compute(results: &CompareResults) -> Vec<&SeedSummary> {
    let mut backbones: Vec<&str> = Vec::new();
    for r in &results.seed_summary {
        let b = backbone_of(&r.method);
        if !backbones.contains(&b) {
            backbones.push(b);
        }
    }
    let mut out = Vec::new();
    for backbone in backbones {
        let rows: Vec<&SeedSummary> = results
            .seed_summary
            .iter()
            .filter(|r| backbone_of(&r.method) == backbone)
            .collect();
        out.extend(matched_within(&rows));
    }
    out
}

fn matched_within<'a>(rows: &[&'a SeedSummary]) -> Vec<&'a SeedSummary> {
    let reference = rows
        .iter()
        .find(|r| base_method(&r.method) == "palbert" && r.family == "q_exit")
        .or_else(|| rows.iter().find(|r| r.family == "q_exit"))
        .or_else(|| rows.iter().find(|r| r.family == "gate"));
    let Some(&reference) = reference else {
        return Vec::new();
    };
    let mut out = vec![reference];
    let closest_to_reference = |candidates: &mut dyn Iterator<Item = &'a SeedSummary>| {
        candidates.min_by(|a, b| {
            (a.mean_exit_layer_mean - reference.mean_exit_layer_mean)
                .abs()
                .total_cmp(&(b.mean_exit_layer_mean - reference.mean_exit_layer_mean).abs())
        })
    };
    // the reference model's other policy families (thresholds on the same exits)
    let mut families: Vec<&str> = Vec::new();
    for r in rows.iter().filter(|r| r.method == reference.method) {
        if !["full", "oracle", reference.family.as_str()].contains(&r.family.as_str())
            && !families.contains(&r.family.as_str())
        {
            families.push(&r.family);
        }
    }
    for family in families {
        let mut candidates = rows
            .iter()
            .copied()
            .filter(|r| r.method == reference.method && r.family == family);
        if let Some(c) = closest_to_reference(&mut candidates) {
            out.push(c);
        }
    }
    let mut methods: Vec<&str> = Vec::new();
    for r in rows {
        if r.method != reference.method && !methods.contains(&r.method.as_str()) {
            methods.push(&r.method);
        }
    }
    for method in methods {
        // PonderNet's own policy is sampling: show it, then the closest row if another
        if let Some(&sample) = rows
            .iter()
            .find(|r| r.method == method && r.family == "sample")
        {
            out.push(sample);
        }
        let mut candidates = rows
            .iter()
            .copied()
            .filter(|r| r.method == method && r.family != "oracle" && r.family != "full");
        let closest = closest_to_reference(&mut candidates);
        if let Some(c) = closest
            && !out.iter().any(|r| std::ptr::eq(*r, c))
        {
            out.push(c);
        }
    }
    out
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

/// A reliability diagram (accuracy against mean confidence per bin, with the
/// diagonal of perfect calibration), as SVG.
pub fn reliability_plot(title: &str, bins: &[ReliabilityBin]) -> Result<String> {
    let points: Vec<(f64, f64)> = bins
        .iter()
        .filter(|b| b.count > 0)
        .map(|b| (b.mean_confidence, b.accuracy))
        .collect();
    let lo = points
        .iter()
        .map(|p| p.0.min(p.1))
        .fold(1.0, f64::min)
        .min(0.5)
        - 0.02;
    line_chart(
        ChartSpec {
            caption: title.to_string(),
            x_desc: "confidence (mean p_max in the bin)",
            y_desc: "accuracy in the bin",
            x: lo..1.02,
            y: lo..1.02,
            size: (600, 560),
            legend: SeriesLabelPosition::UpperLeft,
        },
        &[
            (
                "perfect calibration".to_string(),
                vec![(lo, lo), (1.0, 1.0)],
            ),
            ("model (15 equal-width bins)".to_string(), points),
        ],
    )
}

/// Every policy's reliability diagram: `(path in the run folder, SVG)`, under
/// `reliability/MODEL/POLICY.svg` with MODEL the model's folder under `models/`.
pub fn reliability_plots(results: &CompareResults) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for model in &results.models {
        let dir = &model.name;
        for r in &model.policies {
            let Some(c) = &r.calibration else { continue };
            let file: String = r
                .policy
                .replace('>', "_gt_")
                .replace('<', "_lt_")
                .replace('=', "_")
                .chars()
                .map(|ch| {
                    if ch.is_ascii_alphanumeric() || "._-".contains(ch) {
                        ch
                    } else {
                        '_'
                    }
                })
                .collect();
            let title = format!("{dir} {}: ECE {:.2}%", r.policy, c.ece_uniform * 100.0);
            out.push((
                format!("reliability/{dir}/{file}.svg"),
                reliability_plot(&title, &c.reliability)?,
            ));
        }
    }
    Ok(out)
}

/// ECE against FLOP speed-up, one curve per (model, policy family), as SVG (with
/// several seeds: the means over seeds).
pub fn ece_plot(results: &CompareResults) -> Result<String> {
    let lines = family_curves(results, |r| r.calibration.as_ref().map(|c| c.ece * 100.0));
    let points = || lines.iter().flat_map(|(_, p)| p.iter());
    let max_x = points().map(|p| p.0).fold(1.0, f64::max);
    let max_y = points().map(|p| p.1).fold(0.0, f64::max);
    line_chart(
        ChartSpec {
            caption: format!("{}: calibration vs compute", results.experiment),
            x_desc: "FLOP speed-up (×)",
            y_desc: "ECE (%, 15 equal-mass bins)",
            x: 0.9..max_x * 1.05,
            y: 0.0..(max_y * 1.1).max(1.0),
            size: (900, 600),
            legend: SeriesLabelPosition::UpperLeft,
        },
        &lines,
    )
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

/// Headline findings: the best speed-up within one point of full-depth accuracy, and
/// the final-exit accuracy of each model against a final-only baseline if present.
pub fn summary(results: &CompareResults) -> Vec<String> {
    let mut lines = Vec::new();
    let several = !results.seed_summary.is_empty();
    for model in &results.models {
        let name = if several {
            format!("{} (seed {})", model.method, model.seed)
        } else {
            model.method.clone()
        };
        let Some(full) = model.policies.iter().find(|r| r.family == "full") else {
            continue;
        };
        let best = model
            .policies
            .iter()
            .filter(|r| r.family != "oracle" && r.family != "full")
            .filter(|r| r.accuracy >= full.accuracy - 0.01)
            .max_by(|a, b| a.flop_speedup.total_cmp(&b.flop_speedup));
        let unit = if results.regression { "" } else { "%" };
        match best {
            Some(r) => lines.push(format!(
                "{name}: best FLOP speed-up within 1 point of full depth ({:.2}{unit}): {} at {:.2}{unit} ({:.2}× FLOPs, {:.2}× wall-clock)",
                full.accuracy * 100.0,
                r.policy,
                r.accuracy * 100.0,
                r.flop_speedup,
                r.wall_speedup
            )),
            None => lines.push(format!("{name}: no policy stays within 1 point of full depth")),
        }
    }
    // each PABEE model against the final-head-only model of the same backbone and seed
    for model in results
        .models
        .iter()
        .filter(|m| base_method(&m.method) == "pabee")
    {
        let Some(base) = results.models.iter().find(|m| {
            matches!(base_method(&m.method), "dee_bert" | "final_only")
                && m.seed == model.seed
                && m.backbone == model.backbone
        }) else {
            continue;
        };
        let base_final = base.test_layer_accuracy.last().copied().unwrap_or(0.0);
        let last = model.test_layer_accuracy.last().copied().unwrap_or(0.0);
        let seed = if several {
            format!(" (seed {})", model.seed)
        } else {
            String::new()
        };
        let (what, unit) = if results.regression {
            ("Pearson ×100", "")
        } else {
            ("accuracy", "%")
        };
        lines.push(format!(
            "last-exit {what} of {}{seed} {:.2}{unit} vs the final-head-only backbone ({}, stage 1) {:.2}{unit}: difference {:+.2} points",
            model.method,
            last * 100.0,
            base.method,
            base_final * 100.0,
            (last - base_final) * 100.0
        ));
    }
    lines
}

/// The method of a model label (`mamba/pabee` → `pabee`).
fn base_method(label: &str) -> &str {
    label.rsplit('/').next().unwrap_or(label)
}

/// The backbone prefix of a model label (`mamba/pabee` → `mamba`, `pabee` → ``).
fn backbone_of(label: &str) -> &str {
    label.rsplit_once('/').map_or("", |(b, _)| b)
}

/// The plots' colour cycle.
pub(crate) const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// A plotting error as an `anyhow` error.
pub(crate) fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the plot: {e:?}")
}

/// The curves to plot: each model's rows, or with several seeds each method's means.
fn plotted(results: &CompareResults) -> Vec<(String, Vec<PolicyResult>)> {
    if results.seed_summary.is_empty() {
        return results
            .models
            .iter()
            .map(|m| (m.method.clone(), m.policies.clone()))
            .collect();
    }
    let mut out: Vec<(String, Vec<PolicyResult>)> = Vec::new();
    for r in &results.seed_summary {
        let row = PolicyResult {
            method: r.method.clone(),
            family: r.family.clone(),
            policy: r.policy.clone(),
            accuracy: r.accuracy_mean,
            task_score: None,
            mean_exit_layer: r.mean_exit_layer_mean,
            layer_speedup: results.n_layers as f64 / r.mean_exit_layer_mean.max(1e-9),
            flop_speedup: r.flop_speedup_mean,
            wall_speedup: r.wall_speedup_mean,
            wall_seconds: 0.0,
            exit_histogram: Vec::new(),
            // the seed means of the scalar metrics (what the plots read)
            calibration: r.calibration.as_ref().map(|c| CalibrationResult {
                ece: c.ece.0,
                ece_uniform: f64::NAN,
                mce: f64::NAN,
                ece_scaled: c.ece_scaled.map(|e| e.0),
                nll: c.nll.0,
                brier: c.brier.0,
                conformal: Vec::new(),
                reliability: Vec::new(),
            }),
        };
        match out.iter_mut().find(|(m, _)| *m == r.method) {
            Some((_, rows)) => rows.push(row),
            None => out.push((r.method.clone(), vec![row])),
        }
    }
    out
}

/// The model label without its λ_cost (`jei_dnn[λ=0.5]` → `jei_dnn`,
/// `jei_dnn[λ=0.5]+refit` → `jei_dnn+refit`), if it has one.
fn without_cost(label: &str) -> Option<String> {
    let (base, rest) = label.split_once("[λ=")?;
    let suffix = rest.split_once(']').map_or("", |(_, s)| s);
    Some(format!("{base}{suffix}"))
}

/// One curve per (model, policy family) of `y` against the FLOP speed-up, each with the
/// model's full-depth point (with several seeds: the means over seeds); rows without a
/// value are left out, and so are curves of fewer than 2 points.
///
/// A λ_cost sweep of JEI-DNN (`jei_dnn[λ=C]` models) is drawn as one curve through each
/// model's first gate row (JEI-DNN's trade-off curve); of its models, only the first one's
/// threshold families are drawn (the others' inference modules are trained the same way,
/// and their rows are in the tables).
fn family_curves(
    results: &CompareResults,
    y: impl Fn(&PolicyResult) -> Option<f64>,
) -> Vec<(String, Vec<(f64, f64)>)> {
    let models = plotted(results);
    let mut lines = Vec::new();
    let mut sweeps: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (method, policies) in &models {
        if let Some(base) = without_cost(method) {
            let point = policies
                .iter()
                .find(|r| r.family == "gate")
                .and_then(|r| y(r).map(|v| (r.flop_speedup, v)));
            let first = !sweeps.iter().any(|(b, _)| *b == base);
            // refitted gates share their model's inference modules: their threshold
            // rows repeat the trained model's
            let refit = base.ends_with("+refit");
            if first {
                sweeps.push((base.clone(), Vec::new()));
            }
            if let Some((_, points)) = sweeps.iter_mut().find(|(b, _)| *b == base) {
                points.extend(point);
            }
            if !first || refit {
                continue;
            }
        }
        let full = policies.iter().find(|r| r.family == "full");
        for family in ["max_prob", "entropy", "patience", "fixed", "q_exit", "gate"] {
            if family == "gate" && without_cost(method).is_some() {
                continue;
            }
            let mut points: Vec<(f64, f64)> = policies
                .iter()
                .filter(|r| r.family == family)
                .chain(full)
                .filter_map(|r| y(r).map(|v| (r.flop_speedup, v)))
                .collect();
            if points.len() < 2 {
                continue;
            }
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            lines.push((format!("{method} / {family}"), points));
        }
        // PABEE's regression rule: one curve per tolerance, over the patience values
        let mut tolerances: Vec<&str> = Vec::new();
        for r in policies
            .iter()
            .filter(|r| r.family == "patience_regression")
        {
            if let Some((_, tol)) = r.policy.split_once(",tol=")
                && !tolerances.contains(&tol)
            {
                tolerances.push(tol);
            }
        }
        for tol in tolerances {
            let suffix = format!(",tol={tol}");
            let mut points: Vec<(f64, f64)> = policies
                .iter()
                .filter(|r| r.family == "patience_regression" && r.policy.ends_with(&suffix))
                .chain(full)
                .filter_map(|r| y(r).map(|v| (r.flop_speedup, v)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            lines.push((format!("{method} / patience, τ = {tol}"), points));
        }
    }
    for (base, mut points) in sweeps {
        if points.len() >= 2 {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            lines.push((format!("{base} / gate over λ_cost"), points));
        }
    }
    lines
}

/// Accuracy against FLOP speed-up, one curve per (model, policy family), as SVG (with
/// several seeds: the means over seeds).
pub fn accuracy_plot(results: &CompareResults) -> Result<String> {
    let lines = family_curves(results, |r| Some(r.accuracy * 100.0));
    let points = || lines.iter().flat_map(|(_, p)| p.iter());
    let max_x = points().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let (min_y, max_y) = match points().next() {
        // no curve (a sweep of full depth only): the whole range
        None => (0.0, 100.0),
        Some(_) => (
            points().map(|p| p.1).fold(100.0, f64::min),
            points().map(|p| p.1).fold(0.0, f64::max),
        ),
    };
    let pad = ((max_y - min_y) * 0.05).max(0.5);
    line_chart(
        ChartSpec {
            caption: format!(
                "{}: {} vs compute",
                results.experiment,
                if results.regression {
                    "Pearson correlation"
                } else {
                    "accuracy"
                }
            ),
            x_desc: "FLOP speed-up (×)",
            y_desc: if results.regression {
                "test Pearson correlation (×100)"
            } else {
                "test accuracy (%)"
            },
            x: 0.9..max_x,
            y: (min_y - pad)..(max_y + pad),
            size: (900, 600),
            legend: SeriesLabelPosition::LowerLeft,
        },
        &lines,
    )
}

/// Axes, size and legend placement of a [`line_chart`].
pub(crate) struct ChartSpec<'a> {
    /// Title.
    pub caption: String,
    /// x-axis label.
    pub x_desc: &'a str,
    /// y-axis label.
    pub y_desc: &'a str,
    /// x range.
    pub x: std::ops::Range<f64>,
    /// y range.
    pub y: std::ops::Range<f64>,
    /// Width and height in pixels.
    pub size: (u32, u32),
    /// Where the legend goes.
    pub legend: SeriesLabelPosition,
}

/// Labelled lines with a marker at every point, one colour each (in order), as SVG.
pub(crate) fn line_chart(
    spec: ChartSpec<'_>,
    lines: &[(String, Vec<(f64, f64)>)],
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, spec.size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(spec.caption, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(spec.x, spec.y)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(spec.x_desc)
            .y_desc(spec.y_desc)
            .draw()
            .map_err(plot_err)?;
        for (i, (label, points)) in lines.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            // past the colour cycle, other markers tell lines of one colour apart
            match i / COLORS.len() {
                0 => chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map(|_| ()),
                1 => chart
                    .draw_series(
                        points
                            .iter()
                            .map(|&p| TriangleMarker::new(p, 5, color.filled())),
                    )
                    .map(|_| ()),
                _ => chart
                    .draw_series(
                        points
                            .iter()
                            .map(|&p| Cross::new(p, 4, color.stroke_width(2))),
                    )
                    .map(|_| ()),
            }
            .map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(spec.legend)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Exit-layer histograms of a few policies of the first model, as SVG.
pub fn histogram_plot(results: &CompareResults) -> Result<String> {
    let mut svg = String::new();
    let Some(model) = results.models.first() else {
        return Ok(svg);
    };
    // one policy per family: the one with the best FLOP speed-up within 1 point
    let full_acc = model
        .policies
        .iter()
        .find(|r| r.family == "full")
        .map_or(0.0, |r| r.accuracy);
    let mut chosen: Vec<&PolicyResult> = Vec::new();
    for family in [
        "max_prob",
        "entropy",
        "patience",
        "patience_regression",
        "q_exit",
        "sample",
        "oracle",
    ] {
        if let Some(r) = model
            .policies
            .iter()
            .filter(|r| r.family == family && (family == "oracle" || r.accuracy >= full_acc - 0.01))
            .max_by(|a, b| a.flop_speedup.total_cmp(&b.flop_speedup))
        {
            chosen.push(r);
        }
    }
    let n_layers = results.n_layers;
    let max_share = chosen
        .iter()
        .flat_map(|r| {
            let total: u64 = r.exit_histogram.iter().sum();
            r.exit_histogram
                .iter()
                .map(move |&c| c as f64 / total.max(1) as f64)
        })
        .fold(0.0, f64::max);
    {
        let root = SVGBackend::with_string(&mut svg, (900, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{} ({}): where test samples exit",
                    results.experiment, model.method
                ),
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(
                0.5f64..(n_layers as f64 + 0.5),
                0f64..(max_share * 105.0).max(1.0),
            )
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("exit layer")
            .y_desc("share of samples (%)")
            .draw()
            .map_err(plot_err)?;
        let width = 0.8 / chosen.len().max(1) as f64;
        for (k, r) in chosen.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            let total: u64 = r.exit_histogram.iter().sum();
            chart
                .draw_series(r.exit_histogram.iter().enumerate().map(|(l, &c)| {
                    let x0 = (l + 1) as f64 - 0.4 + k as f64 * width;
                    let share = c as f64 / total.max(1) as f64 * 100.0;
                    Rectangle::new([(x0, 0.0), (x0 + width, share)], color.filled())
                }))
                .map_err(plot_err)?
                .label(r.policy.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::ModelResult;

    fn row(method: &str, family: &str, policy: &str, flops: f64, accuracy: f64) -> PolicyResult {
        PolicyResult {
            method: method.into(),
            family: family.into(),
            policy: policy.into(),
            accuracy,
            task_score: None,
            mean_exit_layer: 1.0,
            layer_speedup: 1.0,
            flop_speedup: flops,
            wall_speedup: 1.0,
            wall_seconds: 0.0,
            exit_histogram: Vec::new(),
            calibration: None,
        }
    }

    fn model(method: &str, policies: Vec<PolicyResult>) -> ModelResult {
        ModelResult {
            method: method.into(),
            backbone: "transformer".into(),
            name: String::new(),
            n_params: 0,
            seed: 1,
            test_layer_accuracy: vec![0.5, 0.8],
            test_exit_distribution_accuracy: None,
            test_expected_depth: None,
            exit_spread: Vec::new(),
            best_valid_metric: None,
            train_seconds: 0.0,
            policies,
            posterior: None,
            halting_optimum: None,
            gates: None,
        }
    }

    #[test]
    fn a_cost_sweep_is_one_curve_through_each_models_first_gate_row() {
        let sweep = |cost: &str, flops: f64, accuracy: f64| {
            let m = format!("jei_dnn[λ={cost}]");
            model(
                &m,
                vec![
                    row(&m, "full", "full", 1.0, 0.8),
                    row(&m, "max_prob", "max_prob>0.9", 1.5, 0.79),
                    row(&m, "gate", "gate=0.5", flops, accuracy),
                    row(&m, "gate", "gate=0.3", flops + 0.1, accuracy - 0.01),
                ],
            )
        };
        let results = CompareResults {
            experiment: "t".into(),
            device: "cpu".into(),
            n_test: 10,
            n_layers: 2,
            models: vec![
                sweep("0.05", 1.2, 0.79),
                sweep("0.5", 1.9, 0.7),
                model(
                    "pabee",
                    vec![
                        row("pabee", "full", "full", 1.0, 0.81),
                        row("pabee", "patience", "patience=1", 1.6, 0.8),
                    ],
                ),
            ],
            seed_summary: Vec::new(),
            task: None,
            regression: false,
        };
        let lines = family_curves(&results, |r| Some(r.accuracy));
        let names: Vec<&str> = lines.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "jei_dnn[λ=0.05] / max_prob",
                "pabee / patience",
                "jei_dnn / gate over λ_cost"
            ]
        );
        assert_eq!(lines[2].1, vec![(1.2, 0.79), (1.9, 0.7)]);
        assert!(accuracy_plot(&results).unwrap().contains("<svg"));
    }

    fn summary_row(method: &str, family: &str, policy: &str, layers: f64) -> SeedSummary {
        SeedSummary {
            method: method.into(),
            policy: policy.into(),
            family: family.into(),
            n_seeds: 3,
            accuracy_mean: 0.8,
            accuracy_std: 0.0,
            task_metric: None,
            mean_exit_layer_mean: layers,
            mean_exit_layer_std: 0.0,
            flop_speedup_mean: 6.0 / layers,
            wall_speedup_mean: 6.0 / layers,
            calibration: None,
        }
    }

    #[test]
    fn matched_compute_takes_the_gate_rule_as_reference_and_lists_its_models_other_families() {
        let results = CompareResults {
            experiment: "t".into(),
            device: "cpu".into(),
            n_test: 10,
            n_layers: 6,
            models: Vec::new(),
            task: None,
            regression: false,
            seed_summary: vec![
                summary_row("jei_dnn", "full", "full", 6.0),
                summary_row("jei_dnn", "max_prob", "max_prob>0.6", 1.54),
                summary_row("jei_dnn", "max_prob", "max_prob>0.7", 1.95),
                summary_row("jei_dnn", "patience", "patience=1", 2.2),
                summary_row("jei_dnn", "gate", "gate=0.5", 1.58),
                summary_row("jei_dnn", "gate", "gate=0.9", 2.3),
                summary_row("pabee", "max_prob", "max_prob>0.5", 1.16),
                summary_row("pabee", "max_prob", "max_prob>0.6", 1.40),
                summary_row("pabee", "oracle", "oracle", 1.5),
            ],
        };
        let matched: Vec<(&str, &str)> = matched_compute(&results)
            .iter()
            .map(|r| (r.method.as_str(), r.policy.as_str()))
            .collect();
        assert_eq!(
            matched,
            [
                ("jei_dnn", "gate=0.5"),
                ("jei_dnn", "max_prob>0.6"),
                ("jei_dnn", "patience=1"),
                ("pabee", "max_prob>0.6"),
            ]
        );
    }
}
