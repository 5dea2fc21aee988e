//! Loading an experiment's data into train / validation / test sources.
//!
//! This is where data enters `ponder`: a named data set (`data.dataset`: Fashion-MNIST,
//! SpamAssassin, a GLUE task) or the user's own files (`data.format`: TSV, CSV, JSON
//! lines, an image folder, IDX files). [`load`] reads them with `ponder-data`'s readers,
//! splits them (a split without a file of its own is carved from the training file,
//! seeded), tokenizes text, and fills in what the experiment file left open and a later
//! evaluation must reuse: the class order, the image size and the images' normalisation.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use ponder_data::{DataError, Encoded, TextExample, TextTokenizer};
use ponder_models::{ImageSource, TextSource};

use crate::config::{DataConfig, DataFormat, Dataset};
use named::{load_fashion_mnist_preset, load_glue, load_spam_assassin_preset};
use own::{load_idx, load_image_folder, load_table};

mod named;
mod own;

/// The three splits of a data set, which never overlap.
pub struct Splits<S> {
    /// Training examples.
    pub train: S,
    /// Validation examples (model selection).
    pub valid: S,
    /// Held-out test examples (reported numbers).
    pub test: S,
    /// Number of classes.
    pub n_classes: usize,
    /// Text only: vocabulary size of the tokenizer.
    pub vocab_size: usize,
}

/// Loaded data, images or text.
pub enum LoadedData {
    /// Images.
    Images(Splits<ImageSource>),
    /// Tokenized text.
    Text(Splits<TextSource>),
}

fn limit(mut v: Vec<usize>, n: usize) -> Vec<usize> {
    if n > 0 && v.len() > n {
        v.truncate(n);
    }
    v
}

/// Runs `scripts/fetch-data.sh NAME` if the data set is missing and the script is
/// reachable from the working directory; otherwise returns the loader's error.
pub(crate) fn fetch(name: &str, error: DataError) -> Result<()> {
    let script = Path::new("scripts/fetch-data.sh");
    if !script.is_file() {
        return Err(error).context(
            "the data set is missing and scripts/fetch-data.sh is not in the working directory",
        );
    }
    eprintln!("data set missing ({error}); fetching it with `scripts/fetch-data.sh {name}` …");
    let status = Command::new("bash")
        .arg(script)
        .arg(name)
        .status()
        .context("running scripts/fetch-data.sh")?;
    if !status.success() {
        bail!("scripts/fetch-data.sh {name} failed ({status}); run it by hand to see why");
    }
    Ok(())
}

/// Loads the data of `config`, fetching a named data set first if it is missing (and
/// `fetch_missing`).
///
/// What the experiment file left open and the data decides is written back into
/// `config`, for the run's `config.toml`: `labels` (own data), `image_size` (IDX files,
/// Fashion-MNIST) and `mean` / `std` (own images, measured on the training split). A
/// run loaded again with those values reads its data exactly as before.
///
/// # Errors
/// Missing files, malformed files (naming the file, the line or row, and the key), a
/// label outside `data.labels`, fewer than two classes, an empty split.
pub fn load(config: &mut DataConfig, seed: u64, fetch_missing: bool) -> Result<LoadedData> {
    match (config.dataset, config.format) {
        (Some(Dataset::FashionMnist), _) => load_fashion_mnist_preset(config, seed, fetch_missing),
        (Some(Dataset::Spamassassin), _) => load_spam_assassin_preset(config, seed, fetch_missing),
        (Some(Dataset::Glue), _) => load_glue(config, seed, fetch_missing),
        (None, Some(DataFormat::ImageFolder)) => load_image_folder(config, seed),
        (None, Some(DataFormat::Idx)) => load_idx(config, seed),
        (None, Some(format)) => {
            let table = format
                .table()
                .unwrap_or_else(|| unreachable!("image formats are matched above"));
            load_table(config, table, seed, fetch_missing)
        }
        (None, None) => bail!("missing `data.format` (or a named `data.dataset`)"),
    }
}

/// The text tokenizer of `data.tokenizer`, fetching all-MiniLM-L6-v2's when it is
/// missing (and `fetch_missing`).
fn load_tokenizer(config: &DataConfig, fetch_missing: bool) -> Result<TextTokenizer> {
    let path = config
        .tokenizer
        .as_ref()
        .context("`data.tokenizer` is required for text")?;
    Ok(match TextTokenizer::from_file(path) {
        Err(e) if fetch_missing && !path.exists() => {
            fetch("minilm", e)?;
            TextTokenizer::from_file(path)?
        }
        other => other?,
    })
}

/// Tokenizes every example (pairs as `[CLS] a [SEP] b [SEP]` with segment ids),
/// truncated to `data.max_tokens`.
fn encode_all(
    tokenizer: &TextTokenizer,
    examples: &[TextExample],
    path: &Path,
    config: &DataConfig,
) -> Result<Vec<Encoded>> {
    let mut ids = Vec::with_capacity(examples.len());
    for (i, example) in examples.iter().enumerate() {
        let encoded = tokenizer.encode_example(example, config.max_tokens)?;
        if encoded.is_empty() {
            bail!(
                "text {i} of {} encodes to no tokens with {}: the tokenizer must add [CLS]/[SEP]",
                path.display(),
                tokenizer.path().display()
            );
        }
        ids.push(encoded);
    }
    Ok(ids)
}
