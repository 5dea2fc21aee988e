//! The comparison's plots, as SVG: accuracy and ECE against FLOP speed-up (one curve
//! per model and policy family), the exit-layer histogram, and every policy's
//! reliability diagram.

use anyhow::Result;
use plotters::prelude::*;
use ponder_calibration::ReliabilityBin;

use super::chart::{COLORS, ChartSpec, line_chart, plot_err};
use crate::calibrate::CalibrationResult;
use crate::pipeline::{CompareResults, PolicyResult};

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
            test_majority_rate: None,
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
}
