//! The sweep on one language model: the full-depth references, the exit classifiers
//! (loaded from the run folder or trained on the frozen model), every exit rule's
//! threshold sweep with its Learn-then-Test choice, and the skip rules compared at one
//! softmax threshold.

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use ponder_calibration::{LttCandidate, PValue, learn_then_test};
use ponder_core::{SkipRule, TokenLm};
use ponder_data::LmCorpus;
use ponder_exits::token::{ExitClassifierSpec, TokenExitConfig, TokenRule};
use ponder_models::{
    ClassifierReport, Decoded, DynamaxConstants, ExitClassifier, TokenExitMetrics,
    fit_exit_classifier, load_exit_classifier, save_exit_classifier, token_exit_metrics,
};

use super::sequences::{Sequences, decode_all};
use super::{
    AblationRow, BackboneEntry, BackboneResult, Curve, SweepPoint, TokenExitExperiment,
    TokenExitSweep,
};
use crate::run::RunFolder;

/// The exit rules swept, each with its family name and thresholds (most conservative
/// first).
pub(super) fn families(
    experiment: &TokenExitExperiment,
    vocab: usize,
) -> Vec<(String, Option<usize>, Vec<TokenRule>)> {
    let s = &experiment.token_exit;
    let sorted = |values: &[f64], make: fn(f64) -> TokenRule| {
        let mut v = values.to_vec();
        v.sort_by(|a, b| b.total_cmp(a));
        v.dedup();
        v.into_iter().map(make).collect::<Vec<_>>()
    };
    let mut out: Vec<(String, Option<usize>, Vec<TokenRule>)> = experiment
        .specs(vocab)
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            (
                spec.name(),
                Some(i),
                sorted(&s.classifier_thresholds, TokenRule::Classifier),
            )
        })
        .collect();
    out.push((
        "softmax".into(),
        None,
        sorted(&s.softmax_thresholds, TokenRule::Softmax),
    ));
    out.push((
        "margin".into(),
        None,
        sorted(&s.margin_thresholds, TokenRule::Margin),
    ));
    out.push((
        "saturation".into(),
        None,
        sorted(&s.saturation_thresholds, TokenRule::Saturation),
    ));
    out.retain(|(_, _, rules)| !rules.is_empty());
    out
}

fn bar(total: usize, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// The sweep on one language model.
#[allow(clippy::too_many_arguments)]
pub(super) fn evaluate<L: TokenLm + burn::module::Module>(
    lm: &L,
    entry: &BackboneEntry,
    experiment: &TokenExitExperiment,
    corpus: &LmCorpus,
    calibration: &Sequences,
    test: &Sequences,
    run: &RunFolder,
    device: &Device,
) -> Result<BackboneResult> {
    let s = &experiment.token_exit;
    let n_layers = lm.n_layers();
    check_backbone(lm, entry, experiment)?;
    let n = s.gen_len;
    let batch = s.batch_size;
    let full = full_depth(lm, entry, s, calibration, test)?;
    let (classifiers, reports) = exit_classifiers(lm, entry, experiment, corpus, run, device)?;

    let dynamax_of = |rule: SkipRule| DynamaxConstants::of(lm, rule);
    // The full model's continuations, fed back in teacher-forced decoding.
    let forced_by = |full: &Decoded| -> Vec<Vec<usize>> {
        full.tokens.iter().map(|t| t[..n - 1].to_vec()).collect()
    };
    let (test_forced, cal_forced) = (forced_by(&full.test), forced_by(&full.calibration));
    // A configuration on the test sequences: teacher-forced on the full continuation,
    // free-running, and teacher-forced on the true text (bits per character).
    let measure_test = |config: &TokenExitConfig,
                        classifier: Option<(&ExitClassifier, &ExitClassifierSpec)>|
     -> Result<TokenExitMetrics> {
        let decode_test = |forced: Option<&[Vec<usize>]>, targets: Option<&[Vec<usize>]>| {
            decode_all(
                lm,
                config,
                classifier,
                &test.prompts,
                n,
                forced,
                targets,
                batch,
            )
        };
        let forced = decode_test(Some(&test_forced), None)?;
        let free = decode_test(None, None)?;
        let text = decode_test(Some(&test.truth), Some(&full.targets))?;
        Ok(token_exit_metrics(
            n_layers,
            dynamax_of(config.skip_rule),
            &full.test,
            &forced,
            &free,
            Some(&text),
        ))
    };
    let curves = sweep(
        lm,
        entry,
        experiment,
        &classifiers,
        calibration,
        &full.calibration,
        &cal_forced,
        run,
        &measure_test,
    )?;
    let ablation = ablation(lm, s, &measure_test)?;
    Ok(BackboneResult {
        name: entry.name.clone(),
        n_layers,
        n_params: lm.num_params(),
        skip_rule: entry.skip_rule,
        full_bpc: full.bpc,
        full_seconds: full.test.seconds,
        classifiers: reports,
        curves,
        ablation,
    })
}

/// Checks the skip rule, exit positions, lengths and classifiers against the loaded
/// language model.
fn check_backbone<L: TokenLm>(
    lm: &L,
    entry: &BackboneEntry,
    experiment: &TokenExitExperiment,
) -> Result<()> {
    let s = &experiment.token_exit;
    let n_layers = lm.n_layers();
    lm.check_rule(entry.skip_rule)
        .with_context(|| format!("backbone `{}`", entry.name))?;
    ponder_exits::token::validate_exits(&s.exits, n_layers, "token_exit.exits")?;
    let n = s.gen_len;
    if let Some(max) = lm.max_len() {
        if s.prompt_len + n - 1 > max {
            bail!(
                "invalid value for `token_exit.gen_len`: a prompt of {} and {n} generated tokens exceed backbone `{}`'s {max} positions",
                s.prompt_len,
                entry.name
            );
        }
        if experiment.classifier_train.seq_len > max {
            bail!(
                "invalid value for `classifier_train.seq_len`: {} exceeds backbone `{}`'s {max} positions",
                experiment.classifier_train.seq_len,
                entry.name
            );
        }
    }
    for spec in experiment.specs(lm.vocab_size()) {
        spec.validate(n_layers, lm.vocab_size(), "token_exit.classifiers")?;
    }
    Ok(())
}

/// The full-depth references of the held-out sequences.
struct FullDepth {
    /// Greedy decoding of the test sequences (timed once, as every swept point).
    test: Decoded,
    /// Greedy decoding of the calibration sequences.
    calibration: Decoded,
    /// The test sequences' true next tokens (teacher forcing on the true text).
    targets: Vec<Vec<usize>>,
    /// Bits per token of the test continuations at full depth (teacher forcing).
    bpc: f64,
}

/// Decodes the held-out sequences at full depth, after a warm-up pass.
fn full_depth<L: TokenLm>(
    lm: &L,
    entry: &BackboneEntry,
    s: &TokenExitSweep,
    calibration: &Sequences,
    test: &Sequences,
) -> Result<FullDepth> {
    let n_layers = lm.n_layers();
    let n = s.gen_len;
    let never = TokenExitConfig {
        rule: TokenRule::Never,
        exits: s.exits.clone(),
        skip_rule: entry.skip_rule,
        always_run_last: false,
    };
    let batch = s.batch_size;
    eprintln!(
        "{}: full-depth greedy decoding of the held-out prompts ...",
        entry.name
    );
    // A warm-up pass, then the full-depth reference (timed once, as every swept point).
    decode_all(
        lm,
        &never,
        None,
        &test.prompts[..batch.min(test.prompts.len())],
        n,
        None,
        None,
        batch,
    )?;
    let full_test = decode_all(lm, &never, None, &test.prompts, n, None, None, batch)?;
    let full_calibration =
        decode_all(lm, &never, None, &calibration.prompts, n, None, None, batch)?;
    let targets: Vec<Vec<usize>> = test.truth.iter().map(|t| t[1..].to_vec()).collect();
    let full_text = decode_all(
        lm,
        &never,
        None,
        &test.prompts,
        n,
        Some(&test.truth),
        Some(&targets),
        batch,
    )?;
    let full_bpc = token_exit_metrics(
        n_layers,
        DynamaxConstants::of(lm, entry.skip_rule),
        &full_test,
        &full_test,
        &full_test,
        Some(&full_text),
    )
    .bpc;
    Ok(FullDepth {
        test: full_test,
        calibration: full_calibration,
        targets,
        bpc: full_bpc,
    })
}

/// An exit classifier with the spec it was built from.
type TrainedClassifier = (ExitClassifier, ExitClassifierSpec);

/// Each exit classifier of the experiment with its report: loaded from the run folder,
/// or trained on the frozen language model and saved there.
fn exit_classifiers<L: TokenLm + burn::module::Module>(
    lm: &L,
    entry: &BackboneEntry,
    experiment: &TokenExitExperiment,
    corpus: &LmCorpus,
    run: &RunFolder,
    device: &Device,
) -> Result<(Vec<TrainedClassifier>, Vec<ClassifierReport>)> {
    let mut classifiers = Vec::new();
    let mut reports = Vec::new();
    for spec in experiment.specs(lm.vocab_size()) {
        let dir = run
            .root()
            .join("classifiers")
            .join(&entry.name)
            .join(spec.name());
        let (c, report) = match load_exit_classifier(&dir, &spec, lm.feature_size(), device)? {
            Some(found) => found,
            None => {
                eprintln!(
                    "{}: training the exit classifier {} ...",
                    entry.name,
                    spec.name()
                );
                let ad = device.clone().autodiff();
                let steps = bar(experiment.classifier_train.steps, &spec.name());
                let trained = fit_exit_classifier(
                    lm,
                    &spec,
                    corpus,
                    &experiment.classifier_train,
                    &ad,
                    &mut |step, loss| {
                        steps.set_position(step as u64);
                        steps.set_message(format!("loss {loss:.3}"));
                    },
                );
                steps.finish_and_clear();
                let (c, report) = trained
                    .with_context(|| format!("training {} on {}", spec.name(), entry.name))?;
                save_exit_classifier(&dir, &c, &report)?;
                (c, report)
            }
        };
        eprintln!(
            "  {}: {} parameters, held-out exit decisions {}",
            report.name,
            report.n_params,
            report
                .valid
                .iter()
                .map(|m| format!(
                    "L{} acc {:.1}% (positives {:.0}%)",
                    m.layer,
                    100.0 * m.accuracy,
                    100.0 * m.positive_rate
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        classifiers.push((c, spec));
        reports.push(report);
    }
    Ok((classifiers, reports))
}

/// Sweeps every exit rule's thresholds under every always-run-last setting: each point
/// measured on the test sequences (`measure_test`) and teacher-forced on the
/// calibration sequences (on `cal_forced`, the full model's continuations). Each sweep
/// is written to `curves/` when done; points measured before under the same setup are
/// read back instead.
#[allow(clippy::too_many_arguments)]
fn sweep<L: TokenLm>(
    lm: &L,
    entry: &BackboneEntry,
    experiment: &TokenExitExperiment,
    classifiers: &[(ExitClassifier, ExitClassifierSpec)],
    calibration: &Sequences,
    full_calibration: &Decoded,
    cal_forced: &[Vec<usize>],
    run: &RunFolder,
    measure_test: &impl Fn(
        &TokenExitConfig,
        Option<(&ExitClassifier, &ExitClassifierSpec)>,
    ) -> Result<TokenExitMetrics>,
) -> Result<Vec<Curve>> {
    let s = &experiment.token_exit;
    let n_layers = lm.n_layers();
    let n = s.gen_len;
    let batch = s.batch_size;
    let families = families(experiment, lm.vocab_size());
    let total: usize = families.iter().map(|f| f.2.len()).sum::<usize>() * s.always_run_last.len();
    let progress = bar(total, &entry.name);
    let mut curves = Vec::new();
    for &always in &s.always_run_last {
        for (family, classifier_index, rules) in &families {
            let classifier = classifier_index.map(|i| (&classifiers[i].0, &classifiers[i].1));
            let curve_path = format!("curves/{}/{}-last{}.json", entry.name, family, always);
            let setup = serde_json::json!({
                "backbone": entry,
                "exits": s.exits,
                "prompt_len": s.prompt_len,
                "gen_len": s.gen_len,
                "calibration_sequences": s.calibration_sequences,
                "test_sequences": s.test_sequences,
                "batch_size": s.batch_size,
                "classifier_train": experiment.classifier_train,
                "classifier": classifier.map(|(_, spec)| spec),
            });
            let previous = previous_points(run, &curve_path, &setup);
            let mut points = Vec::new();
            for &rule in rules {
                if let Some(p) = previous.iter().find(|p| p.rule == rule) {
                    points.push(p.clone());
                    progress.inc(1);
                    continue;
                }
                progress.set_message(format!("{family} {:.3}", rule.threshold()));
                let config = TokenExitConfig {
                    rule,
                    exits: s.exits.clone(),
                    skip_rule: entry.skip_rule,
                    always_run_last: always,
                };
                let metrics = measure_test(&config, classifier)?;
                let cal = decode_all(
                    lm,
                    &config,
                    classifier,
                    &calibration.prompts,
                    n,
                    Some(cal_forced),
                    None,
                    batch,
                )?;
                let cal_metrics = token_exit_metrics(
                    n_layers,
                    DynamaxConstants::of(lm, entry.skip_rule),
                    full_calibration,
                    &cal,
                    &cal,
                    None,
                );
                points.push(SweepPoint {
                    rule,
                    test: metrics,
                    calibration_consistency: cal_metrics.consistency,
                    calibration_losses: cal_metrics.row_inconsistency,
                });
                progress.inc(1);
            }
            let curve = ltt_curve(family, always, points, setup, s)?;
            run.write(&curve_path, &serde_json::to_vec_pretty(&curve)?)?;
            curves.push(curve);
        }
    }
    progress.finish_and_clear();
    Ok(curves)
}

/// Points measured before (an interrupted or extended run) under this setup.
fn previous_points(
    run: &RunFolder,
    curve_path: &str,
    setup: &serde_json::Value,
) -> Vec<SweepPoint> {
    std::fs::read(run.root().join(curve_path))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Curve>(&bytes).ok())
        .filter(|c| c.setup.as_ref().is_none_or(|v| *v == *setup))
        .map(|c| c.points)
        .unwrap_or_default()
}

/// A rule's swept points with Learn-then-Test's choice of threshold on the calibration
/// sequences, and the largest share of layers saved at the target consistency.
fn ltt_curve(
    family: &str,
    always: bool,
    points: Vec<SweepPoint>,
    setup: serde_json::Value,
    s: &TokenExitSweep,
) -> Result<Curve> {
    let candidates: Vec<LttCandidate> = points
        .iter()
        .map(|p| LttCandidate {
            threshold: p.rule.threshold(),
            losses: &p.calibration_losses,
        })
        .collect();
    let ltt = learn_then_test(
        &candidates,
        1.0 - s.target_consistency,
        s.ltt_epsilon,
        PValue::HoeffdingBentkus,
    )
    .with_context(|| format!("Learn-then-Test for {family}"))?;
    let ltt_test = ltt.chosen.map(|i| points[i].test.clone());
    let layers_saved_at_target = points
        .iter()
        .filter(|p| p.test.consistency >= s.target_consistency)
        .map(|p| p.test.layers_saved)
        .fold(None, |best: Option<f64>, v| {
            Some(best.map_or(v, |b| b.max(v)))
        });
    Ok(Curve {
        family: family.to_string(),
        always_run_last: always,
        points,
        ltt,
        ltt_test,
        layers_saved_at_target,
        setup: Some(setup),
    })
}

/// Skip rules compared at one softmax threshold (every rule the language model
/// supports, under every always-run-last setting).
fn ablation<L: TokenLm>(
    lm: &L,
    s: &TokenExitSweep,
    measure_test: &impl Fn(
        &TokenExitConfig,
        Option<(&ExitClassifier, &ExitClassifierSpec)>,
    ) -> Result<TokenExitMetrics>,
) -> Result<Vec<AblationRow>> {
    let mut ablation = Vec::new();
    for rule in SkipRule::ALL.into_iter().filter(|&r| lm.supports(r)) {
        for &always in &s.always_run_last {
            let config = TokenExitConfig {
                rule: TokenRule::Softmax(s.ablation_threshold),
                exits: s.exits.clone(),
                skip_rule: rule,
                always_run_last: always,
            };
            ablation.push(AblationRow {
                skip_rule: rule,
                always_run_last: always,
                test: measure_test(&config, None)?,
            });
        }
    }
    Ok(ablation)
}
