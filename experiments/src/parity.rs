//! `ponder parity`: PonderNet on the parity task (Banino, Balaguer, Blundell 2021,
//! arXiv:2107.05407: ±1 in a random number of an input's elements, 0 elsewhere; the
//! target is the parity of the number of +1's).
//!
//! A run trains the GRU step model on freshly generated batches, then evaluates it
//! through the batched runner with PonderNet's sampling, PALBERT's Q-exit, the
//! expectation and full depth, reporting accuracy and steps per difficulty (the number
//! of non-zero elements). Run folder:
//!
//! ```text
//! runs/NAME-TIMESTAMP/
//!   config.toml               the resolved parity experiment
//!   model.bpk                 the trained model (written at the end of training)
//!   metrics.json              the training curve (loss, KL, validation accuracy, steps)
//!   results.json, results.md  every (test set, policy): accuracy, mean steps, per difficulty
//!   steps_vs_difficulty.svg   mean steps against the number of non-zero elements
//! ```

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::Device;
use plotters::prelude::SeriesLabelPosition;
use ponder_core::ExitPolicy;
use ponder_data::stats;
use ponder_exits::{Expectation, NeverExit, Policy, PonderSample, QExit};
use ponder_models::{
    ParityEval, ParityLog, ParityModelConfig, ParityObserver, ParityTrainConfig, evaluate_parity,
    fit_parity,
};
use serde::{Deserialize, Serialize};

use crate::progress::CurveProgress;
use crate::report::{ChartSpec, line_chart};
use crate::run::RunFolder;

/// A parity experiment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParityExperiment {
    /// Name (used for the run folder).
    pub name: String,
    /// The task.
    pub task: ParityTask,
    /// The step model.
    #[serde(default)]
    pub model: ParityModelSection,
    /// Training.
    #[serde(default)]
    pub train: ParityTrainConfig,
    /// Evaluation.
    #[serde(default)]
    pub eval: ParityEvalSection,
}

/// Interpolation or extrapolation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParityMode {
    /// Train and test on 1..=n non-zero elements.
    Interpolation,
    /// Train on 1..=n/2 non-zero elements, test on n/2+1..=n (and, for reference, on
    /// 1..=n/2).
    Extrapolation,
}

/// The task section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParityTask {
    /// Elements per input (the paper: 64 for interpolation, 96 for extrapolation).
    pub n_elems: usize,
    /// `interpolation` or `extrapolation`.
    pub mode: ParityMode,
    /// Validation examples (drawn like the training data). Default: 2000.
    #[serde(default = "default_valid")]
    pub n_valid: usize,
    /// Examples per test set. Default: 10000.
    #[serde(default = "default_test")]
    pub n_test: usize,
    /// Seed of the validation and test sets (training batches come from
    /// `train.seed`). Default: 1234.
    #[serde(default = "default_data_seed")]
    pub data_seed: u64,
}

fn default_valid() -> usize {
    2000
}
fn default_test() -> usize {
    10_000
}
fn default_data_seed() -> u64 {
    1234
}

/// The model section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParityModelSection {
    /// GRU state size. Default: 64.
    pub n_hidden: usize,
    /// Maximum number of steps N. Default: 20.
    pub max_steps: usize,
}

impl Default for ParityModelSection {
    fn default() -> Self {
        Self {
            n_hidden: 64,
            max_steps: 20,
        }
    }
}

/// The evaluation section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParityEvalSection {
    /// Q-exit quantiles. Default: [0.5].
    pub q_exit: Vec<f64>,
    /// Seed of PonderNet's sampling. Default: 0.
    pub sample_seed: u64,
    /// Evaluation batch size. Default: 1000.
    pub batch_size: usize,
}

impl Default for ParityEvalSection {
    fn default() -> Self {
        Self {
            q_exit: vec![0.5],
            sample_seed: 0,
            batch_size: 1000,
        }
    }
}

impl ParityExperiment {
    /// Reads and checks a parity experiment file, then applies `key=value` overrides.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading parity experiment {}", path.display()))?;
        let experiment: Self = toml::from_str(&text)
            .with_context(|| format!("in parity experiment {}", path.display()))?;
        experiment
            .validate()
            .with_context(|| format!("in parity experiment {}", path.display()))?;
        if overrides.is_empty() {
            return Ok(experiment);
        }
        // overrides apply to the resolved experiment, defaults filled in, so
        // `--set train.ponder.beta=…` changes β and keeps the rest of the loss
        let mut value = toml::Value::try_from(&experiment)?;
        crate::config::apply_overrides(&mut value, overrides)?;
        let experiment: Self = value
            .try_into()
            .context("after applying the --set overrides")?;
        experiment
            .validate()
            .context("after applying the --set overrides")?;
        Ok(experiment)
    }

    /// Checks every value, naming the key at fault.
    pub fn validate(&self) -> Result<()> {
        let t = &self.task;
        if t.n_elems < 2 {
            bail!(
                "invalid value for `task.n_elems`: {} (need at least 2)",
                t.n_elems
            );
        }
        if t.n_valid == 0 || t.n_test == 0 {
            bail!("invalid value for `task.n_valid` / `task.n_test`: must be at least 1");
        }
        if self.model.n_hidden == 0 || self.model.max_steps == 0 {
            bail!("invalid value for `model.n_hidden` / `model.max_steps`: must be at least 1");
        }
        if self.eval.batch_size == 0 {
            bail!("invalid value for `eval.batch_size`: must be at least 1");
        }
        self.train.validate_for(self.model.max_steps)?;
        self.policies()?;
        Ok(())
    }

    /// The range of non-zero elements training draws from.
    pub fn train_range(&self) -> std::ops::RangeInclusive<usize> {
        match self.task.mode {
            ParityMode::Interpolation => 1..=self.task.n_elems,
            ParityMode::Extrapolation => 1..=self.task.n_elems / 2,
        }
    }

    /// The test sets: `(name, range of non-zero elements)`.
    pub fn test_sets(&self) -> Vec<(&'static str, std::ops::RangeInclusive<usize>)> {
        let n = self.task.n_elems;
        match self.task.mode {
            ParityMode::Interpolation => vec![("interpolation", 1..=n)],
            ParityMode::Extrapolation => vec![
                ("extrapolation", n / 2 + 1..=n),
                ("training range", 1..=n / 2),
            ],
        }
    }

    /// The evaluated policies: sampling, each Q-exit, the expectation, full depth.
    pub fn policies(&self) -> Result<Vec<Policy>> {
        let mut out = vec![Policy::Sample(PonderSample::new(self.eval.sample_seed))];
        for &q in &self.eval.q_exit {
            out.push(Policy::QExit(QExit::new(q).context("in `eval.q_exit`")?));
        }
        out.push(Policy::Expectation(Expectation::new(0.0)?));
        out.push(Policy::Full(NeverExit));
        Ok(out)
    }
}

/// One evaluated (test set, policy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParityResult {
    /// Test set name.
    pub test_set: String,
    /// Range of non-zero elements of the test set.
    pub nonzero: (usize, usize),
    /// The evaluation (without the per-example steps).
    pub eval: ParityEval,
}

/// Everything a parity run reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParityResults {
    /// Experiment name.
    pub experiment: String,
    /// Elements per input.
    pub n_elems: usize,
    /// Maximum steps.
    pub max_steps: usize,
    /// Range of non-zero elements seen in training.
    pub train_nonzero: (usize, usize),
    /// Seconds of training (0 when loaded).
    pub train_seconds: f64,
    /// The last validation record.
    pub final_valid: Option<ParityLog>,
    /// Every (test set, policy).
    pub results: Vec<ParityResult>,
}

impl ParityObserver for CurveProgress<ParityLog> {
    fn on_step(&mut self, step: usize, loss: f64) {
        let ema = self.step(step, loss);
        self.bar.set_message(format!("loss {ema:.4}"));
    }

    fn on_eval(&mut self, log: &ParityLog) {
        let line = format!(
            "step {:>6}: loss {:.4}, KL {:.3}, valid accuracy {:.2}%, expected steps {:.2}",
            log.step,
            log.train_loss,
            log.train_kl,
            log.valid_accuracy * 100.0,
            log.valid_expected_steps
        );
        self.point(&line, log.clone());
    }
}

fn set_range(r: &std::ops::RangeInclusive<usize>) -> (usize, usize) {
    (*r.start(), *r.end())
}

/// Trains (or, in a run folder that already has `model.bpk`, loads) the parity model
/// and evaluates it.
pub fn run(
    experiment: &ParityExperiment,
    run: &RunFolder,
    device: &Device,
) -> Result<ParityResults> {
    let t = &experiment.task;
    let model_config = ParityModelConfig::new(t.n_elems)
        .with_n_hidden(experiment.model.n_hidden)
        .with_max_steps(experiment.model.max_steps);
    let model_path = run.root().join("model.bpk");
    let valid =
        ponder_data::parity_set(t.n_valid, t.n_elems, experiment.train_range(), t.data_seed)?;
    let (model, seconds, logs) = if model_path.is_file() {
        eprintln!("already trained: loading {}", model_path.display());
        let model = model_config
            .init(device)
            .try_load_file(&model_path)
            .with_context(|| format!("loading {}", model_path.display()))?;
        let logs: Vec<ParityLog> = std::fs::read(run.root().join("metrics.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        (model, 0.0, logs)
    } else {
        let ad = device.clone().autodiff();
        ad.seed(experiment.train.seed);
        let model = model_config.init(&ad);
        let mut progress =
            CurveProgress::new("parity", experiment.train.steps, run.clone(), Vec::new());
        let start = std::time::Instant::now();
        let outcome = fit_parity(
            model,
            experiment.train_range(),
            &valid,
            &experiment.train,
            &ad,
            &mut progress,
        );
        progress.bar.finish_and_clear();
        let (model, logs) = outcome.context("training the parity model")?;
        if let Some(e) = progress.write_error {
            return Err(e.context("writing the metrics log"));
        }
        let seconds = start.elapsed().as_secs_f64();
        let tmp = run.root().join("model.tmp.bpk");
        model
            .clone()
            .save_file(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &model_path)
            .with_context(|| format!("renaming into {}", model_path.display()))?;
        (model, seconds, logs)
    };

    let mut results = Vec::new();
    for (k, (name, range)) in experiment.test_sets().into_iter().enumerate() {
        let set = ponder_data::parity_set(
            t.n_test,
            t.n_elems,
            range.clone(),
            t.data_seed.wrapping_add(1 + k as u64),
        )?;
        for policy in experiment.policies()? {
            let mut eval =
                evaluate_parity(&model, &set, &policy, experiment.eval.batch_size, device);
            eval.steps.clear();
            eprintln!(
                "{name:>15} {:>16}: accuracy {:.2}%, mean steps {:.2}",
                policy.name(),
                eval.accuracy * 100.0,
                eval.mean_steps
            );
            results.push(ParityResult {
                test_set: name.to_string(),
                nonzero: set_range(&range),
                eval,
            });
        }
    }
    Ok(ParityResults {
        experiment: experiment.name.clone(),
        n_elems: t.n_elems,
        max_steps: experiment.model.max_steps,
        train_nonzero: set_range(&experiment.train_range()),
        train_seconds: seconds,
        final_valid: logs.last().cloned(),
        results,
    })
}

/// The results as a Markdown table, with steps per difficulty.
pub fn table(results: &ParityResults) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: parity of {} elements, at most {} steps, trained on {}..={} non-zero elements\n",
        results.experiment,
        results.n_elems,
        results.max_steps,
        results.train_nonzero.0,
        results.train_nonzero.1
    );
    let _ = writeln!(
        s,
        "| test set | non-zero | policy | accuracy % | mean steps |"
    );
    let _ = writeln!(s, "|---|---|---|---:|---:|");
    for r in &results.results {
        let _ = writeln!(
            s,
            "| {} | {}..={} | {} | {:.2} | {:.2} |",
            r.test_set,
            r.nonzero.0,
            r.nonzero.1,
            r.eval.policy,
            r.eval.accuracy * 100.0,
            r.eval.mean_steps
        );
    }
    for r in results
        .results
        .iter()
        .filter(|r| r.eval.policy != "full" && !r.eval.policy.starts_with("expectation"))
    {
        let (k, steps): (Vec<f64>, Vec<f64>) = r
            .eval
            .by_difficulty
            .iter()
            .map(|d| (d.n_nonzero as f64, d.mean_steps))
            .unzip();
        let _ = writeln!(
            s,
            "\n{} ({}): Spearman correlation of mean steps with the number of non-zero elements: {:.2}",
            r.test_set,
            r.eval.policy,
            spearman(&k, &steps)
        );
    }
    for r in results
        .results
        .iter()
        .filter(|r| r.eval.policy.starts_with("sample"))
    {
        let per: Vec<String> = r
            .eval
            .by_difficulty
            .iter()
            .map(|d| {
                format!(
                    "{}: {:.1} ({:.0}%)",
                    d.n_nonzero,
                    d.mean_steps,
                    d.accuracy * 100.0
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "\n{} ({}): mean steps (accuracy) per number of non-zero elements: {}",
            r.test_set,
            r.eval.policy,
            per.join(", ")
        );
    }
    s
}

/// Spearman's rank correlation ([`stats::spearman`]) of the first `min(x.len(), y.len())`
/// pairs; 0 when either side is constant or has < 2 points.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    // undefined: no monotone relation to report, so 0
    stats::spearman(&x[..n], &y[..n]).unwrap_or(0.0)
}

/// Mean steps against the number of non-zero elements, one line per (test set, policy)
/// that exits early, as SVG.
pub fn steps_plot(results: &ParityResults) -> Result<String> {
    let lines: Vec<(String, Vec<(f64, f64)>)> = results
        .results
        .iter()
        .filter(|r| r.eval.policy != "full" && !r.eval.policy.starts_with("expectation"))
        .map(|r| {
            let points = r
                .eval
                .by_difficulty
                .iter()
                .map(|d| (d.n_nonzero as f64, d.mean_steps))
                .collect();
            (format!("{} / {}", r.test_set, r.eval.policy), points)
        })
        .collect();
    line_chart(
        ChartSpec {
            caption: format!("{}: pondering steps vs difficulty", results.experiment),
            x_desc: "non-zero elements (difficulty)",
            y_desc: "mean steps run",
            x: 0.5f64..(results.n_elems as f64 + 0.5),
            y: 0f64..(results.max_steps as f64 + 0.5),
            size: (900, 550),
            legend: SeriesLabelPosition::LowerRight,
        },
        &lines,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "p"
[task]
n_elems = 8
mode = "extrapolation"
"#;

    fn parse(text: &str) -> Result<ParityExperiment> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text)?;
        ParityExperiment::load(&path, &[])
    }

    #[test]
    fn presets_split_the_difficulties() {
        let e = parse(MINIMAL).unwrap();
        assert_eq!(e.train_range(), 1..=4);
        let sets = e.test_sets();
        assert_eq!(sets[0].1, 5..=8);
        assert_eq!(e.policies().unwrap().len(), 4);
    }

    #[test]
    fn spearman_of_monotone_and_reversed_sequences() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert!((spearman(&x, &[1.0, 5.0, 6.0, 9.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&x, &[9.0, 6.0, 5.0, 1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(spearman(&x, &[2.0; 4]), 0.0);
        // ties share their mean rank
        assert_eq!(stats::ranks(&[3.0, 1.0, 3.0]), vec![2.5, 1.0, 2.5]);
    }

    #[test]
    fn overrides_change_one_key_of_the_default_loss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let e = ParityExperiment::load(&path, &["train.ponder.beta=0.05".into()]).unwrap();
        let labml = ParityTrainConfig::default().ponder;
        assert_eq!(e.train.ponder.beta, 0.05);
        assert_eq!(e.train.ponder.last_layer, labml.last_layer);
        assert_eq!(e.train.ponder.lambda_p, labml.lambda_p);
        let err = ParityExperiment::load(&path, &["train.stepz=3".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("stepz"), "{err:#}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse(&format!("{MINIMAL}\n[train]\nsteps = 0\n")).unwrap_err();
        assert!(format!("{e:#}").contains("train.steps"), "{e:#}");
        let e = parse(&format!("{MINIMAL}\n[eval]\nq_exit = [1.5]\n")).unwrap_err();
        assert!(format!("{e:#}").contains("q_exit"), "{e:#}");
        let e = parse(&MINIMAL.replace("extrapolation", "sideways")).unwrap_err();
        assert!(format!("{e:#}").contains("sideways"), "{e:#}");
        let ponder = "[train.ponder]\nbeta = 0.01\nprior_leftover_on_last = false\nkl = \"prior_to_exits\"\nlast_layer = \"force_halt\"\n";
        let e = parse(&format!("{MINIMAL}\n{ponder}lambda_p = 0\n")).unwrap_err();
        assert!(format!("{e:#}").contains("lambda_p"), "{e:#}");
        // a partial table is an error naming the missing key, not a mix of defaults
        let e = parse(&format!("{MINIMAL}\n[train.ponder]\nbeta = 0.05\n")).unwrap_err();
        assert!(format!("{e:#}").contains("lambda_p"), "{e:#}");
    }
}
