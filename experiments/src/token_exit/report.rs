//! The token-exit comparison's Markdown table (`results.md`) and its
//! compute-against-consistency plot per backbone.

use anyhow::Result;
use plotters::prelude::SeriesLabelPosition;

use super::{BackboneResult, TokenExitResults};
use crate::report::{ChartSpec, line_chart};

fn pct(v: f64) -> String {
    format!("{:.1}", 100.0 * v)
}

/// The results as Markdown.
pub fn table(results: &TokenExitResults) -> String {
    let per = if results.vocabulary == "characters" {
        "char"
    } else {
        "token"
    };
    let mut s = format!(
        "## {}: token-level early exit\n\nConsistency: teacher-forced token agreement with full-depth greedy decoding on held-out text; target {:.0}% (Learn-then-Test δ = {:.2}, ε = {:.2}, Hoeffding–Bentkus).\n\n",
        results.experiment,
        100.0 * results.target_consistency,
        1.0 - results.target_consistency,
        results.ltt_epsilon
    );
    for b in &results.backbones {
        s.push_str(&format!(
            "### {} ({} layers, {} parameters, skipped layers: {})\n\nFull depth: {:.3} bits/{per} on the test continuations; free decoding {:.2} s.\n\n",
            b.name,
            b.n_layers,
            b.n_params,
            b.skip_rule.name(),
            b.full_bpc,
            b.full_seconds
        ));
        s.push_str("Exit classifiers (held-out exit decisions at P > 0.5):\n\n| classifier | parameters | per exit: accuracy / F1 / positive rate |\n|---|---:|---|\n");
        for c in &b.classifiers {
            s.push_str(&format!(
                "| {} | {} | {} |\n",
                c.name,
                c.n_params,
                c.valid
                    .iter()
                    .map(|m| format!(
                        "L{}: {} / {} / {}",
                        m.layer,
                        pct(m.accuracy),
                        pct(m.f1),
                        pct(m.positive_rate)
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        s.push_str(&format!(
            "\n| rule | last layer | layers saved at ≥ {:.0}% | LTT threshold | its test consistency | its layers saved | its FLOPs saved | its DYNAMAX speed-up | its wall-clock speed-up |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
            100.0 * results.target_consistency
        ));
        for c in &b.curves {
            let (thr, cons, saved, flops, dyn_s, wall) = match (&c.ltt_test, c.ltt.threshold) {
                (Some(m), Some(t)) => (
                    format!("{t:.3}"),
                    pct(m.consistency),
                    pct(m.layers_saved),
                    pct(m.flops_saved),
                    format!("{:.2}", m.dynamax_speedup),
                    format!("{:.2}", b.full_seconds / m.seconds.max(1e-9)),
                ),
                _ => (
                    "none certified".into(),
                    "–".into(),
                    "–".into(),
                    "–".into(),
                    "–".into(),
                    "–".into(),
                ),
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                c.family,
                if c.always_run_last {
                    "always run"
                } else {
                    "skipped"
                },
                c.layers_saved_at_target.map_or("none".into(), pct),
                thr,
                cons,
                saved,
                flops,
                dyn_s,
                wall
            ));
        }
        s.push_str(&format!("\nEvery swept point (test sequences):\n\n| rule | last layer | threshold | layers saved | FLOPs saved | DYNAMAX speed-up | wall-clock speed-up | consistency | calibration consistency | free agreement | exact match | bits/{per} |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"));
        for c in &b.curves {
            for p in &c.points {
                let m = &p.test;
                s.push_str(&format!(
                    "| {} | {} | {:.3} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {:.3} |\n",
                    c.family,
                    if c.always_run_last { "run" } else { "skip" },
                    p.rule.threshold(),
                    pct(m.layers_saved),
                    pct(m.flops_saved),
                    m.dynamax_speedup,
                    b.full_seconds / m.seconds.max(1e-9),
                    pct(m.consistency),
                    pct(p.calibration_consistency),
                    pct(m.free_agreement),
                    pct(m.exact_match),
                    m.bpc
                ));
            }
        }
        s.push_str(&format!("\nSkip rules at the softmax ablation threshold:\n\n| skip rule | last layer | layers saved | FLOPs saved | DYNAMAX speed-up | consistency | free agreement | bits/{per} |\n|---|---|---:|---:|---:|---:|---:|---:|\n"));
        for a in &b.ablation {
            let m = &a.test;
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.2} | {} | {} | {:.3} |\n",
                a.skip_rule.name(),
                if a.always_run_last { "run" } else { "skip" },
                pct(m.layers_saved),
                pct(m.flops_saved),
                m.dynamax_speedup,
                pct(m.consistency),
                pct(m.free_agreement),
                m.bpc
            ));
        }
        s.push('\n');
    }
    s
}

/// Layers saved against consistency, one line per rule and setting, for one backbone.
pub fn plot(backbone: &BackboneResult) -> Result<String> {
    let lines: Vec<(String, Vec<(f64, f64)>)> = backbone
        .curves
        .iter()
        .map(|c| {
            (
                format!(
                    "{}{}",
                    c.family,
                    if c.always_run_last {
                        " (last layer run)"
                    } else {
                        ""
                    }
                ),
                c.points
                    .iter()
                    .map(|p| (100.0 * p.test.layers_saved, 100.0 * p.test.consistency))
                    .collect(),
            )
        })
        .collect();
    let lo = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .fold(100.0f64, f64::min)
        .min(90.0)
        - 2.0;
    let hi_x = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(10.0f64, f64::max)
        + 2.0;
    line_chart(
        ChartSpec {
            caption: format!("{}: compute saved against consistency", backbone.name),
            x_desc: "layers saved (%)",
            y_desc: "token consistency with full depth (%)",
            x: 0f64..hi_x,
            y: lo.max(0.0)..100.5,
            size: (900, 600),
            legend: SeriesLabelPosition::LowerLeft,
        },
        &lines,
    )
}
