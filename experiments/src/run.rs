//! Run folders: everything a run writes, each file written atomically.
//!
//! ```text
//! runs/NAME-TIMESTAMP/
//!   config.toml              the resolved experiment (what was actually run)
//!   models/METHOD/           one trained model per method (METHOD-seedS when
//!                            `compare.seeds` names several seeds; mamba-METHOD on the
//!                            Mamba backbone; jei_dnn-costC in a λ_cost sweep)
//!     last/                  resumable checkpoint (model, optimizer, training state)
//!     best.bpk               best weights on validation
//!     metrics.json           per-epoch log (loss, validation accuracy of every exit)
//!   results.json             every evaluated policy: accuracy, exits, speed-ups
//!   results.md               the same as a table
//!   accuracy_vs_flops.svg    accuracy against FLOP speed-up, one curve per policy
//!   ece_vs_flops.svg         ECE against FLOP speed-up, one curve per policy
//!   exit_histogram.svg       where samples exit, for a few policies
//!   reliability/MODEL/       every policy's reliability diagram (MODEL as in models/)
//! ```

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use ponder_models::{CheckpointFiles, Method, write_atomic};

use crate::config::{BackboneKind, Experiment};

/// A run folder.
#[derive(Debug, Clone)]
pub struct RunFolder {
    root: PathBuf,
}

/// The folder name of a method.
pub fn method_name(method: Method) -> &'static str {
    match method {
        Method::Pabee => "pabee",
        Method::DeeBert => "dee_bert",
        Method::FinalOnly => "final_only",
        Method::Palbert => "palbert",
        Method::PonderNet => "ponder_net",
        Method::JeiDnn => "jei_dnn",
    }
}

/// Which model of a run: its backbone, its method and, for JEI-DNN in runs that sweep
/// `compare.jei_cost_weights`, its λ_cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelKind {
    /// The backbone.
    pub backbone: BackboneKind,
    /// The training method.
    pub method: Method,
    /// λ_cost of a JEI-DNN model of a λ_cost sweep.
    pub cost_weight: Option<f64>,
    /// A JEI-DNN model whose gates were refitted to convergence after training
    /// (`compare.jei_refit`).
    pub gates_refit: bool,
}

impl ModelKind {
    /// A model without a λ_cost of its own.
    pub fn new(backbone: BackboneKind, method: Method) -> Self {
        Self {
            backbone,
            method,
            cost_weight: None,
            gates_refit: false,
        }
    }

    /// How the model is labelled in tables: the method, prefixed by `mamba/` on the
    /// Mamba backbone (the transformer, the default, has no prefix), followed by
    /// `[λ=…]` in a λ_cost sweep and `+refit` for refitted gates.
    pub fn label(&self) -> String {
        let mut label = match self.backbone {
            BackboneKind::Transformer => method_name(self.method).to_string(),
            other => format!("{}/{}", other.name(), method_name(self.method)),
        };
        if let Some(c) = self.cost_weight {
            label.push_str(&format!("[λ={c}]"));
        }
        if self.gates_refit {
            label.push_str("+refit");
        }
        label
    }

    /// The name of the model's folder in a run: `mamba-` on the Mamba backbone, the
    /// method, `-costC` in a λ_cost sweep, `-refit` for refitted gates (which have no
    /// folder of their own), and `-seedS` in runs that train several seeds.
    pub fn name(&self, seed: Option<u64>) -> String {
        let mut name = match self.backbone {
            BackboneKind::Transformer => method_name(self.method).to_string(),
            other => format!("{}-{}", other.name(), method_name(self.method)),
        };
        if let Some(c) = self.cost_weight {
            name.push_str(&format!("-cost{c}"));
        }
        if self.gates_refit {
            name.push_str("-refit");
        }
        if let Some(s) = seed {
            name.push_str(&format!("-seed{s}"));
        }
        name
    }
}

impl RunFolder {
    /// A new run folder under `parent`, named after the experiment and the time, with
    /// the resolved experiment written into it.
    pub fn create(parent: &Path, experiment: &Experiment) -> Result<Self> {
        Self::create_at(Self::timestamped(parent, &experiment.name), experiment)
    }

    /// A new run folder at exactly `root` (which must not hold a run already).
    pub fn create_at(root: PathBuf, experiment: &Experiment) -> Result<Self> {
        // record DeeBERT's off-ramp form: a saved file without it loads as `stacked`
        let mut experiment = experiment.clone();
        experiment.model.offramp_pooler = Some(experiment.offramp_pooler());
        let text = toml::to_string_pretty(&experiment).context("serialising the experiment")?;
        Self::create_with_config(root, &text)
    }

    /// A new run folder at exactly `root` (which must not hold a run already), with
    /// `config_toml` written as its `config.toml`.
    pub fn create_with_config(root: PathBuf, config_toml: &str) -> Result<Self> {
        if root.join("config.toml").exists() {
            bail!(
                "{} already holds a run; use --resume {} to continue it, or another --run-dir",
                root.display(),
                root.display()
            );
        }
        std::fs::create_dir_all(&root)
            .with_context(|| format!("creating run folder {}", root.display()))?;
        let run = Self { root };
        run.write("config.toml", config_toml.as_bytes())?;
        Ok(run)
    }

    /// A run folder at `root` as it is, without reading its config.
    pub fn existing(root: &Path) -> Result<Self> {
        if !root.join("config.toml").is_file() {
            bail!(
                "{} is not a run folder: it has no config.toml",
                root.display()
            );
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// A fresh folder name under `parent` for a run called `name`: `NAME-UNIXTIME`.
    pub fn timestamped(parent: &Path, name: &str) -> PathBuf {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        parent.join(format!("{name}-{stamp}"))
    }

    /// An existing run folder, with its resolved experiment.
    pub fn open(root: &Path) -> Result<(Self, Experiment)> {
        let config = root.join("config.toml");
        if !config.is_file() {
            bail!(
                "{} is not a run folder: it has no config.toml",
                root.display()
            );
        }
        let experiment = Experiment::load_saved(&config)?;
        Ok((
            Self {
                root: root.to_path_buf(),
            },
            experiment,
        ))
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes a file of the run atomically.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.root.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        write_atomic(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// The checkpoint folder of a model (`seed`: for runs that train several seeds).
    pub fn checkpoints(&self, kind: ModelKind, seed: Option<u64>) -> CheckpointFiles {
        CheckpointFiles::new(self.model_dir(kind, seed))
    }

    /// The folder of a model (`seed`: for runs that train several seeds).
    pub fn model_dir(&self, kind: ModelKind, seed: Option<u64>) -> PathBuf {
        self.root.join("models").join(kind.name(seed))
    }
}
