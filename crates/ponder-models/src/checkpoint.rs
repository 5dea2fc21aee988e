//! Checkpoint files, each written atomically (write to a temporary name, then rename).

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use ponder_core::{PonderError, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::classifier::MultiExitClassifier;

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, then a
/// rename, so a reader never sees a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    fs::write(&tmp, bytes).map_err(|source| PonderError::Io {
        action: "writing",
        path: tmp.clone(),
        source,
    })?;
    fs::rename(&tmp, path).map_err(|source| PonderError::Io {
        action: "renaming into place",
        path: path.to_path_buf(),
        source,
    })
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Copies the files of folder `from` into a new folder `to` (replacing it): into
/// `to.tmp/`, then renamed.
fn copy_dir_atomic(from: &Path, to: &Path) -> Result<()> {
    let tmp = tmp_path(to);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io("removing", &tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io("creating", &tmp))?;
    for entry in fs::read_dir(from).map_err(io("reading", from))? {
        let entry = entry.map_err(io("reading", from))?;
        let target = tmp.join(entry.file_name());
        fs::copy(entry.path(), &target).map_err(io("copying into", &target))?;
    }
    if to.exists() {
        fs::remove_dir_all(to).map_err(io("removing", to))?;
    }
    fs::rename(&tmp, to).map_err(io("renaming", &tmp))
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PonderError + 'a {
    move |source| PonderError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn ckpt_err(path: &Path, e: impl std::fmt::Display) -> PonderError {
    PonderError::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The checkpoint folder of a run:
/// * `last/` — model, optimizer state and training state after the latest checkpoint,
///   replaced as a whole (written to `last.tmp/`, then renamed);
/// * `best.bpk` — the weights that scored best on validation so far;
/// * `stageN/` — (JEI-DNN) a copy of `last/` as stage N starts, from which a model that
///   differs only from stage N on can start ([`fork_from`](Self::fork_from)).
#[derive(Debug, Clone)]
pub struct CheckpointFiles {
    dir: PathBuf,
}

impl CheckpointFiles {
    /// Checkpoints under `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the best weights.
    pub fn best_model(&self) -> PathBuf {
        self.dir.join("best.bpk")
    }

    fn last(&self) -> PathBuf {
        self.dir.join("last")
    }

    /// Whether a resumable checkpoint exists.
    pub fn has_last(&self) -> bool {
        self.last().join("state.json").is_file() || self.dir.join("last.old/state.json").is_file()
    }

    /// Saves model, optimizer and training state as the latest checkpoint.
    pub fn save_last<M: Module, S: Serialize>(
        &self,
        model: &M,
        optim: &ModuleOptimizer,
        state: &S,
    ) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(io("creating", &self.dir))?;
        let tmp = self.dir.join("last.tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io("removing", &tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io("creating", &tmp))?;
        let model_path = tmp.join("model.bpk");
        model
            .clone()
            .save_file(&model_path)
            .map_err(|e| ckpt_err(&model_path, e))?;
        let optim_path = tmp.join("optim.bpk");
        optim
            .save(&optim_path)
            .map_err(|e| ckpt_err(&optim_path, e))?;
        let state_json = serde_json::to_vec_pretty(state).map_err(|e| ckpt_err(&tmp, e))?;
        fs::write(tmp.join("state.json"), state_json).map_err(io("writing", &tmp))?;
        let last = self.last();
        let old = self.dir.join("last.old");
        if last.exists() {
            if old.exists() {
                fs::remove_dir_all(&old).map_err(io("removing", &old))?;
            }
            fs::rename(&last, &old).map_err(io("renaming", &last))?;
        }
        fs::rename(&tmp, &last).map_err(io("renaming", &tmp))?;
        if old.exists() {
            fs::remove_dir_all(&old).map_err(io("removing", &old))?;
        }
        Ok(())
    }

    /// The folder of the latest checkpoint: `last/`, or `last.old/` when a save was
    /// interrupted between its two renames.
    fn last_dir(&self) -> PathBuf {
        let dir = self.last();
        if dir.join("state.json").is_file() {
            dir
        } else {
            self.dir.join("last.old")
        }
    }

    /// Reads only the training state of the latest checkpoint (is it finished? where
    /// is it?), without loading any weights.
    pub fn load_state<S: DeserializeOwned>(&self) -> Result<S> {
        let state_path = self.last_dir().join("state.json");
        let bytes = fs::read(&state_path).map_err(io("reading", &state_path))?;
        // serde_json's `float_roundtrip` feature (set in the workspace) reads every float
        // back exactly, so a resumed run continues with bit-identical state.
        serde_json::from_slice(&bytes).map_err(|e| ckpt_err(&state_path, e))
    }

    /// Loads the latest checkpoint into `model` and `optim`.
    pub fn load_last<M: Module, S: DeserializeOwned>(
        &self,
        model: M,
        optim: ModuleOptimizer,
    ) -> Result<(M, ModuleOptimizer, S)> {
        let state = self.load_state()?;
        let dir = self.last_dir();
        let model_path = dir.join("model.bpk");
        let model = model
            .try_load_file(&model_path)
            .map_err(|e| ckpt_err(&model_path, e))?;
        let optim_path = dir.join("optim.bpk");
        let optim = optim
            .load(&optim_path)
            .map_err(|e| ckpt_err(&optim_path, e))?;
        Ok((model, optim, state))
    }

    fn stage_start(&self, stage: usize) -> PathBuf {
        self.dir.join(format!("stage{stage}"))
    }

    /// Whether a snapshot of the start of `stage` exists.
    pub fn has_stage_start(&self, stage: usize) -> bool {
        self.stage_start(stage).join("state.json").is_file()
    }

    /// Keeps a copy of the latest checkpoint as the start of `stage` (call it right after
    /// saving the checkpoint written as the stage starts).
    pub fn save_stage_start(&self, stage: usize) -> Result<()> {
        copy_dir_atomic(&self.last_dir(), &self.stage_start(stage))
    }

    /// Makes the start of `stage` of `other` this folder's latest checkpoint, so that
    /// training resumes from there: a model whose configuration differs from `other`'s
    /// only from `stage` on ends exactly as if trained from the beginning.
    ///
    /// # Errors
    /// `other` has no snapshot of that stage, or a file cannot be copied.
    pub fn fork_from(&self, other: &CheckpointFiles, stage: usize) -> Result<()> {
        if !other.has_stage_start(stage) {
            return Err(PonderError::Checkpoint {
                path: other.stage_start(stage),
                message: format!("no snapshot of the start of stage {stage} to start from"),
            });
        }
        fs::create_dir_all(&self.dir).map_err(io("creating", &self.dir))?;
        copy_dir_atomic(&other.stage_start(stage), &self.last())
    }

    /// Saves the best weights (atomically).
    pub fn save_best<M: Module>(&self, model: &M) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(io("creating", &self.dir))?;
        let path = self.best_model();
        let tmp = tmp_path(&path);
        model
            .clone()
            .save_file(&tmp)
            .map_err(|e| ckpt_err(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(io("renaming", &path))
    }

    /// Loads the best weights into `model`.
    pub fn load_best<M: Module>(&self, model: M) -> Result<M> {
        let path = self.best_model();
        model.try_load_file(&path).map_err(|e| ckpt_err(&path, e))
    }

    /// Loads the best weights into a classifier, also from runs written before the
    /// backbone became a choice ([`MultiExitClassifier::load_weights`]).
    pub fn load_best_classifier(&self, model: MultiExitClassifier) -> Result<MultiExitClassifier> {
        let path = self.best_model();
        model.load_weights(&path).map_err(|e| ckpt_err(&path, e))
    }
}
