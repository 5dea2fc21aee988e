//! Progress bars and the per-epoch metrics log of training.

use indicatif::{ProgressBar, ProgressStyle};
use ponder_models::{EpochLog, TrainObserver, TrainState};

use crate::run::RunFolder;

/// A bar over `len` training steps labelled `label`.
fn steps_bar(label: &str, len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len} steps {msg} ({elapsed} < {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// Shows training progress and rewrites the model's `metrics.json` after every epoch.
pub struct TrainProgress {
    bar: ProgressBar,
    run: RunFolder,
    metrics_file: String,
    history: Vec<EpochLog>,
    loss_ema: Option<f64>,
    /// First error met while writing the metrics log (reported after training).
    pub write_error: Option<anyhow::Error>,
}

impl TrainProgress {
    /// Progress of the model whose metrics go to `metrics_file` (relative to the run).
    pub fn new(label: &str, run: RunFolder, metrics_file: String) -> Self {
        let bar = steps_bar(label, 0);
        Self {
            bar,
            run,
            metrics_file,
            history: Vec::new(),
            loss_ema: None,
            write_error: None,
        }
    }

    /// Closes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl TrainObserver for TrainProgress {
    fn on_start(&mut self, total_steps: usize, state: &TrainState) {
        self.bar.set_length(total_steps as u64);
        self.bar.set_position(state.global_step as u64);
        self.history = state.history.clone();
        if state.global_step > 0 {
            self.bar.println(format!(
                "{:>12} resuming at step {}",
                self.bar.prefix(),
                state.global_step
            ));
        }
    }

    fn on_step(&mut self, state: &TrainState, loss: f64) {
        let ema = match self.loss_ema {
            Some(e) => 0.95 * e + 0.05 * loss,
            None => loss,
        };
        self.loss_ema = Some(ema);
        self.bar.set_position(state.global_step as u64);
        self.bar.set_message(format!(
            "stage {} epoch {} loss {ema:.4}",
            state.stage + 1,
            state.epoch + 1
        ));
    }

    fn on_epoch(&mut self, log: &EpochLog) {
        let layers: Vec<String> = log
            .valid_layer_accuracy
            .iter()
            .map(|a| format!("{:.1}", a * 100.0))
            .collect();
        let line = format!(
            "{:>12} stage {} epoch {}: loss {:.4}, valid metric {:.2}%, exits [{}]%, {:.0}s",
            self.bar.prefix(),
            log.stage + 1,
            log.epoch + 1,
            log.train_loss,
            log.valid_metric * 100.0,
            layers.join(" "),
            log.seconds
        );
        let warning = log
            .unlearned_warning()
            .map(|w| format!("{:>12} warning: {w}", self.bar.prefix()));
        for line in std::iter::once(line).chain(warning) {
            if self.bar.is_hidden() {
                eprintln!("{line}");
            } else {
                self.bar.println(line);
            }
        }
        self.history.push(log.clone());
        let result = serde_json::to_vec_pretty(&self.history)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| self.run.write(&self.metrics_file, &bytes));
        if let Err(e) = result {
            self.write_error.get_or_insert(e);
        }
    }
}

/// A bar over training steps and a curve (one entry per evaluation) rewritten to the
/// run's `metrics.json` at every point: the progress of `ponder parity` and `ponder lm`.
pub struct CurveProgress<L> {
    /// The bar (its length is the number of steps).
    pub bar: ProgressBar,
    run: RunFolder,
    /// The curve so far.
    pub logs: Vec<L>,
    loss_ema: Option<f64>,
    /// First error met while writing `metrics.json` (reported after training).
    pub write_error: Option<anyhow::Error>,
}

impl<L: serde::Serialize> CurveProgress<L> {
    /// A bar of `steps` steps labelled `label`, continuing the curve `logs`.
    pub fn new(label: &str, steps: usize, run: RunFolder, logs: Vec<L>) -> Self {
        let bar = steps_bar(label, steps as u64);
        Self {
            bar,
            run,
            logs,
            loss_ema: None,
            write_error: None,
        }
    }

    /// Moves the bar to `step` and returns the smoothed loss (EMA, weight 0.02).
    pub fn step(&mut self, step: usize, loss: f64) -> f64 {
        let ema = self.loss_ema.map_or(loss, |e| 0.98 * e + 0.02 * loss);
        self.loss_ema = Some(ema);
        self.bar.set_position(step as u64);
        ema
    }

    /// Prints `line` above the bar (or to stderr without one), appends `log` to the
    /// curve and rewrites `metrics.json`.
    pub fn point(&mut self, line: &str, log: L) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
        self.logs.push(log);
        let result = serde_json::to_vec_pretty(&self.logs)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| self.run.write("metrics.json", &bytes));
        if let Err(e) = result {
            self.write_error.get_or_insert(e);
        }
    }
}
