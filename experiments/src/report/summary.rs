//! The findings under the tables: each model's best speed-up within one point of full
//! depth, PABEE's last exit against the final-head-only baseline, and the
//! matched-compute comparison of the seed table.

use crate::pipeline::{CompareResults, SeedSummary};

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
        if let Some(warning) = model.unlearned_warning() {
            lines.push(format!("warning: {name} on the test set: {warning}"));
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

/// The method of a model label (`mamba/pabee` → `pabee`).
fn base_method(label: &str) -> &str {
    label.rsplit('/').next().unwrap_or(label)
}

/// The backbone prefix of a model label (`mamba/pabee` → `mamba`, `pabee` → ``).
fn backbone_of(label: &str) -> &str {
    label.rsplit_once('/').map_or("", |(b, _)| b)
}

#[cfg(test)]
mod tests {
    use super::*;

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
