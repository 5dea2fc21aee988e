//! The checks of an experiment: every value, naming the key at fault.

use anyhow::{Result, bail};
use ponder_data::GlueTask;
use ponder_models::Method;

use super::{BackboneKind, Dataset, Experiment};

impl Experiment {
    /// Checks every value, naming the key at fault.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!(
                "invalid value for `name`: {:?} must be non-empty letters, digits, '-', '_' or '.'",
                self.name
            );
        }
        self.train_config(self.train.method, self.train.seed)
            .validate()?;
        self.data.validate()?;
        match &self.model.pretrained {
            // the checkpoint's shape against [model] (the vocabulary is checked once the
            // tokenizer is loaded)
            Some(dir) => {
                self.pretrained_config(dir, None, 1)?;
            }
            None => self.encoder_config(10, 1)?.validate()?,
        }
        if self.data.dataset == Some(Dataset::Glue) {
            let task = self.glue_task()?.unwrap_or_else(|| unreachable!("checked"));
            if self.data.mismatched && task != GlueTask::Mnli {
                bail!(
                    "invalid value for `data.mismatched`: only MNLI has a mismatched dev set, not {}",
                    task.name()
                );
            }
            if task.is_regression()
                && self.compare.tolerance.is_empty()
                && !self.compare.patience.is_empty()
            {
                bail!(
                    "invalid value for `compare.tolerance`: {} is a regression task; its patience rule needs at least one tolerance",
                    task.name()
                );
            }
            if task.is_regression() {
                let methods = self.compare.methods.iter().chain([&self.train.method]);
                if let Some(m) = methods.into_iter().find(|m| !m.has_regression_variant()) {
                    bail!(
                        "invalid value for `compare.methods` / `train.method`: {} is a regression task and {m:?} has no regression variant (use pabee, dee_bert or final_only)",
                        task.name()
                    );
                }
            }
        }
        if self.backbones().contains(&BackboneKind::Mamba) {
            if !self.data.is_text() {
                bail!(
                    "invalid value for `model.backbone` / `compare.backbones`: the Mamba backbone reads token ids; use it with a text data set"
                );
            }
            self.mamba_config(10)
                .mamba
                .validate()
                .map_err(|e| anyhow::anyhow!("{e}").context("in section [model]"))?;
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(b) = self.compare.backbones.iter().find(|&&b| !seen.insert(b)) {
            bail!(
                "invalid value for `compare.backbones`: {} appears twice",
                b.name()
            );
        }
        if self.train.method.has_halting() || self.compare.methods.iter().any(|m| m.has_halting()) {
            self.train
                .ponder
                .validate_for("train.ponder", self.model.n_layers)?;
        }
        if self.model.pretrained.is_some()
            && (!self.data.is_text()
                || self
                    .backbones()
                    .iter()
                    .any(|b| *b != BackboneKind::Transformer))
        {
            bail!(
                "invalid value for `model.pretrained`: a pretrained encoder needs a text data set and the transformer backbone"
            );
        }
        if !(0.0..1.0).contains(&self.model.head_dropout) {
            bail!(
                "invalid value for `model.head_dropout`: {} is not in [0, 1)",
                self.model.head_dropout
            );
        }
        if self.compare.methods.is_empty() {
            bail!("invalid value for `compare.methods`: name at least one method");
        }
        if self.model.n_layers < 2
            && [Method::DeeBert, Method::JeiDnn]
                .iter()
                .any(|m| self.compare.methods.contains(m) || self.train.method == *m)
        {
            bail!(
                "invalid value for `model.n_layers`: DeeBERT and JEI-DNN (in `compare.methods` or `train.method`) need at least 2 layers"
            );
        }
        for (i, &c) in self.compare.jei_cost_weights.iter().enumerate() {
            if !(c >= 0.0 && c.is_finite()) {
                bail!("invalid value for `compare.jei_cost_weights`: {c} is not ≥ 0");
            }
            if self.compare.jei_cost_weights[..i].contains(&c) {
                bail!("invalid value for `compare.jei_cost_weights`: {c} appears twice");
            }
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(s) = self.compare.seeds.iter().find(|&&s| !seen.insert(s)) {
            bail!("invalid value for `compare.seeds`: seed {s} appears twice");
        }
        if self.compare.batch_size == 0 {
            bail!("invalid value for `compare.batch_size`: must be at least 1");
        }
        self.policies()?;
        Ok(())
    }
}
