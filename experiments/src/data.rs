//! Loading an experiment's data into train / validation / test sources.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use ponder_data::{
    DataError, Encoded, GlueSplit, TextExample, TextTokenizer, load_fashion_mnist,
    load_spam_assassin, read_glue, shuffled_indices, split_indices, split_train_valid,
};
use ponder_models::{ImageSource, TextSource};

use crate::config::{DataConfig, Dataset};

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

/// Loads the data set of `config`, fetching it first if it is missing (and `fetch_missing`).
pub fn load(config: &DataConfig, seed: u64, fetch_missing: bool) -> Result<LoadedData> {
    match config.dataset {
        Dataset::FashionMnist => {
            let splits = match load_fashion_mnist(&config.path) {
                Err(e @ DataError::MissingDataset { .. }) if fetch_missing => {
                    fetch("fashion-mnist", e)?;
                    load_fashion_mnist(&config.path)?
                }
                other => other?,
            };
            for (name, set) in [
                ("training", &splits.train_images),
                ("test", &splits.test_images),
            ] {
                if set.n_rows != 28 || set.n_cols != 28 {
                    bail!(
                        "the {name} images in {} are {}×{}; the image encoder is built for 28×28",
                        config.path.display(),
                        set.n_rows,
                        set.n_cols
                    );
                }
            }
            let n_classes = ponder_data::MNIST_CLASSES;
            let parts =
                split_train_valid(splits.train_images.n_images, config.valid_fraction, seed)?;
            let train_images = Arc::new(splits.train_images);
            let train_labels = Arc::new(splits.train_labels);
            let test_images = Arc::new(splits.test_images);
            let test_labels = Arc::new(splits.test_labels);
            let test_indices = limit((0..test_images.n_images).collect(), config.test_limit);
            Ok(LoadedData::Images(Splits {
                train: ImageSource::new(
                    train_images.clone(),
                    train_labels.clone(),
                    limit(parts.train, config.train_limit),
                    n_classes,
                ),
                valid: ImageSource::new(train_images, train_labels, parts.valid, n_classes),
                test: ImageSource::new(test_images, test_labels, test_indices, n_classes),
                n_classes,
                vocab_size: 0,
            }))
        }
        Dataset::Spamassassin => {
            let dataset = match load_spam_assassin(&config.path, config.max_bytes) {
                Err(e @ DataError::MissingDataset { .. }) if fetch_missing => {
                    fetch("spamassassin", e)?;
                    load_spam_assassin(&config.path, config.max_bytes)?
                }
                other => other?,
            };
            let tokenizer = load_tokenizer(config, fetch_missing)?;
            let ids = encode_all(&tokenizer, &dataset.examples, config)?;
            let labels: Vec<usize> = dataset.examples.iter().map(|e| e.label).collect();
            let n_classes = dataset.n_classes();
            let pad = tokenizer.pad_id()?;
            let vocab_size = tokenizer.vocab_size();
            let parts =
                split_indices(ids.len(), config.valid_fraction, config.test_fraction, seed)?;
            let ids = Arc::new(ids);
            let labels = Arc::new(labels);
            Ok(LoadedData::Text(Splits {
                train: TextSource::new(
                    ids.clone(),
                    labels.clone(),
                    limit(parts.train, config.train_limit),
                    n_classes,
                    pad,
                ),
                valid: TextSource::new(ids.clone(), labels.clone(), parts.valid, n_classes, pad),
                test: TextSource::new(
                    ids,
                    labels,
                    limit(parts.test, config.test_limit),
                    n_classes,
                    pad,
                ),
                n_classes,
                vocab_size,
            }))
        }
        Dataset::Glue => load_glue(config, seed, fetch_missing),
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
    config: &DataConfig,
) -> Result<Vec<Encoded>> {
    let mut ids = Vec::with_capacity(examples.len());
    for (i, example) in examples.iter().enumerate() {
        let encoded = tokenizer.encode_example(example, config.max_tokens)?;
        if encoded.is_empty() {
            bail!(
                "text {i} of {} encodes to no tokens with {}: the tokenizer must add [CLS]/[SEP]",
                config.path.display(),
                tokenizer.path().display()
            );
        }
        ids.push(encoded);
    }
    Ok(ids)
}

/// One GLUE task: `train.tsv` split into training and validation (`data.valid_fraction`),
/// the dev file as the test set (GLUE's test labels are not public). STS-B's scores
/// make a regression source.
fn load_glue(config: &DataConfig, seed: u64, fetch_missing: bool) -> Result<LoadedData> {
    let task = config
        .glue_task()?
        .context("a GLUE data set names its task (`data.task`)")?;
    let dev = if config.mismatched {
        GlueSplit::DevMismatched
    } else {
        GlueSplit::Dev
    };
    let train_file = config.path.join(task.file(GlueSplit::Train)?);
    if !train_file.is_file() {
        bail!(
            "no GLUE {} training file at {}: GLUE is not on any registry this program can fetch from; download the task (e.g. with the `download_glue_data.py` script of the GLUE baselines, which writes glue_data/{}/) and set `data.path` to its folder",
            task.name(),
            train_file.display(),
            task.name()
        );
    }
    let read = |split| {
        let data = read_glue(&config.path, task, split)?;
        if !data.skipped_lines.is_empty() {
            eprintln!(
                "{}: skipped {} malformed lines (missing fields), as GLUE's reference processor does",
                data.path.display(),
                data.skipped_lines.len()
            );
        }
        if data.is_empty() {
            bail!("{} holds no examples", data.path.display());
        }
        Ok::<_, anyhow::Error>(data)
    };
    let (train, test) = (read(GlueSplit::Train)?, read(dev)?);
    let tokenizer = load_tokenizer(config, fetch_missing)?;
    let n_train = train.len();
    let mut examples = train.examples;
    examples.extend(test.examples);
    let ids = Arc::new(encode_all(&tokenizer, &examples, config)?);
    let parts = split_train_valid(n_train, config.valid_fraction, seed)?;
    // a limited test set is a seeded random subset of the dev file (some dev files are
    // grouped by genre or source), kept in file order
    let n_dev = ids.len() - n_train;
    let test_indices: Vec<usize> = if config.test_limit > 0 && config.test_limit < n_dev {
        let mut pick = shuffled_indices(n_dev, seed);
        pick.truncate(config.test_limit);
        pick.sort_unstable();
        pick.into_iter().map(|i| n_train + i).collect()
    } else {
        (n_train..ids.len()).collect()
    };
    let train_indices = limit(parts.train, config.train_limit);
    let pad = tokenizer.pad_id()?;
    let vocab_size = tokenizer.vocab_size();
    let splits = match (train.scores, test.scores) {
        (Some(mut scores), Some(test_scores)) => {
            scores.extend(test_scores);
            let scores = Arc::new(scores);
            let source =
                |indices| TextSource::regression(ids.clone(), scores.clone(), indices, pad);
            Splits {
                train: source(train_indices),
                valid: source(parts.valid),
                test: source(test_indices),
                n_classes: 1,
                vocab_size,
            }
        }
        _ => {
            let labels = Arc::new(examples.iter().map(|e| e.label).collect::<Vec<_>>());
            let n_classes = task.labels().len();
            let source =
                |indices| TextSource::new(ids.clone(), labels.clone(), indices, n_classes, pad);
            Splits {
                train: source(train_indices),
                valid: source(parts.valid),
                test: source(test_indices),
                n_classes,
                vocab_size,
            }
        }
    };
    Ok(LoadedData::Text(splits))
}
