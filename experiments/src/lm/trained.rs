//! The trained language model of a run folder, for the experiments that build on one
//! (token exits): [`ensure_trained`] trains it first when the run has none, and
//! [`load_trained`] loads it, either backbone, as a [`TrainedLm`].

use std::path::Path;

use anyhow::{Context, Result};
use burn::tensor::Device;
use ponder_data::LmVocab;
use ponder_mamba::MambaLm;
use ponder_transformer::DecoderLm;

use super::{LmBackbone, LmExperiment, check_vocab, loss_plot, run, table};
use crate::run::RunFolder;

/// A trained language model of either backbone.
#[derive(Debug)]
pub enum TrainedLm {
    /// Mamba.
    Mamba(MambaLm),
    /// Transformer decoder.
    Transformer(DecoderLm),
}

impl TrainedLm {
    /// The model a run starts from: the pretrained checkpoint of `model.pretrained`, or
    /// new weights of the experiment's backbone for a vocabulary of `vocab_size` ids.
    pub fn initial(experiment: &LmExperiment, vocab_size: usize, device: &Device) -> Result<Self> {
        Ok(match &experiment.model.pretrained {
            Some(folder) => load_pretrained(folder, device)?,
            None => match experiment.model.backbone {
                LmBackbone::Mamba => {
                    Self::Mamba(experiment.mamba_config(vocab_size).init_lm(device))
                }
                LmBackbone::Transformer => {
                    Self::Transformer(experiment.decoder_config(vocab_size).init_lm(device))
                }
            },
        })
    }
}

/// Makes sure `run_dir` holds a trained LM: trains it from `config_path` (or finishes
/// an interrupted run there) when `model.bpk` is missing, writing the run as `ponder
/// lm` does. Returns the run's experiment.
pub fn ensure_trained(config_path: &Path, run_dir: &Path, device: &Device) -> Result<LmExperiment> {
    let saved = run_dir.join("config.toml");
    if run_dir.join("model.bpk").is_file() {
        return LmExperiment::load(&saved, &[]);
    }
    let (folder, experiment, inputs) = if saved.is_file() {
        eprintln!("finishing the language model in {}", run_dir.display());
        let experiment = LmExperiment::load(&saved, &[])?;
        let inputs = experiment.inputs()?;
        (RunFolder::existing(run_dir)?, experiment, inputs)
    } else {
        eprintln!(
            "{} holds no trained language model: training {} there first",
            run_dir.display(),
            config_path.display()
        );
        let experiment = LmExperiment::load(config_path, &[])?;
        // the corpus is read and checked before the run folder is made
        let inputs = experiment.inputs()?;
        let text = toml::to_string_pretty(&experiment).context("serialising the experiment")?;
        (
            RunFolder::create_with_config(run_dir.to_path_buf(), &text)?,
            experiment,
            inputs,
        )
    };
    let (results, logs) = run(&experiment, &inputs, &folder, device)?;
    folder.write("results.json", &serde_json::to_vec_pretty(&results)?)?;
    folder.write("results.md", table(&results, &logs).as_bytes())?;
    folder.write(
        "loss_curve.svg",
        loss_plot(&experiment.name, &logs)?.as_bytes(),
    )?;
    Ok(experiment)
}

/// Loads the model `ponder lm` trained in `run_dir` and checks that its vocabulary is
/// `vocab` ([`check_vocab`]).
pub fn load_trained(
    run_dir: &Path,
    vocab: &LmVocab,
    device: &Device,
) -> Result<(LmExperiment, TrainedLm)> {
    let experiment = LmExperiment::load(&run_dir.join("config.toml"), &[])?;
    check_vocab(run_dir, vocab, true)?;
    let n = vocab.len();
    let path = run_dir.join("model.bpk");
    let load_err = |e: burn::store::RecordError| {
        anyhow::anyhow!(
            "loading {}: {e} (was it trained with this config?)",
            path.display()
        )
    };
    use burn::module::Module;
    let lm = match TrainedLm::initial(&experiment, n, device)? {
        TrainedLm::Mamba(m) => TrainedLm::Mamba(m.try_load_file(&path).map_err(load_err)?),
        TrainedLm::Transformer(t) => {
            TrainedLm::Transformer(t.try_load_file(&path).map_err(load_err)?)
        }
    };
    Ok((experiment, lm))
}

/// Loads a pretrained Hugging Face language model from a checkpoint folder
/// (`config.json`, `model.safetensors`): Mamba for `model_type = "mamba"`, otherwise a
/// GPT-2 or Llama-family decoder (unsupported kinds are refused by name).
pub fn load_pretrained(folder: &Path, device: &Device) -> Result<TrainedLm> {
    let (_, mamba) = checkpoint_config(folder)?;
    if mamba {
        let (lm, _) = ponder_mamba::load_hf_mamba(folder, device)?;
        Ok(TrainedLm::Mamba(lm))
    } else {
        let loaded = ponder_transformer::load_hf_decoder(folder, device)?;
        Ok(TrainedLm::Transformer(loaded.lm))
    }
}

/// A checkpoint folder's `config.json`, and whether it describes a Mamba model
/// (`model_type = "mamba"`; anything else goes to the decoder loader).
pub(crate) fn checkpoint_config(folder: &Path) -> Result<(serde_json::Value, bool)> {
    let json = ponder_core::read_config_json(folder.join("config.json"))
        .with_context(|| format!("is {} a checkpoint folder?", folder.display()))?;
    let mamba = json.get("model_type").and_then(|v| v.as_str()) == Some("mamba");
    Ok((json, mamba))
}
