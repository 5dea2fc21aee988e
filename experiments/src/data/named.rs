//! The named data sets of `data.dataset`: Fashion-MNIST and SpamAssassin (fetched with
//! `scripts/fetch-data.sh` when missing) and a GLUE task (downloaded by the user), each
//! read with `ponder-data`'s loader and split into training, validation and test
//! sources.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use ponder_data::{
    DataError, GlueSplit, load_fashion_mnist, load_spam_assassin, read_glue, split_indices,
    split_train_valid,
};
use ponder_models::{ImageSource, TextSource};

use super::own::{random_subset, square_size};
use super::{LoadedData, Splits, encode_all, fetch, limit, load_tokenizer};
use crate::config::DataConfig;

pub(super) fn load_fashion_mnist_preset(
    config: &mut DataConfig,
    seed: u64,
    fetch_missing: bool,
) -> Result<LoadedData> {
    let path = config.dataset_path()?.to_path_buf();
    let splits = match load_fashion_mnist(&path) {
        Err(e @ DataError::MissingDataset { .. }) if fetch_missing => {
            fetch("fashion-mnist", e)?;
            load_fashion_mnist(&path)?
        }
        other => other?,
    };
    let size = square_size(config, &path, &[&splits.train_images, &splits.test_images])?;
    config.image_size = Some(size);
    let n_classes = ponder_data::MNIST_CLASSES;
    let parts = split_train_valid(splits.train_images.n_images, config.valid_fraction, seed)?;
    let to_usize =
        |labels: Vec<u8>| Arc::new(labels.into_iter().map(usize::from).collect::<Vec<_>>());
    let train_images = Arc::new(splits.train_images);
    let train_labels = to_usize(splits.train_labels);
    let test_images = Arc::new(splits.test_images);
    let test_labels = to_usize(splits.test_labels);
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

pub(super) fn load_spam_assassin_preset(
    config: &mut DataConfig,
    seed: u64,
    fetch_missing: bool,
) -> Result<LoadedData> {
    let path = config.dataset_path()?.to_path_buf();
    let dataset = match load_spam_assassin(&path, config.max_bytes) {
        Err(e @ DataError::MissingDataset { .. }) if fetch_missing => {
            fetch("spamassassin", e)?;
            load_spam_assassin(&path, config.max_bytes)?
        }
        other => other?,
    };
    let tokenizer = load_tokenizer(config, fetch_missing)?;
    let ids = encode_all(&tokenizer, &dataset.examples, &path, config)?;
    let labels: Vec<usize> = dataset.examples.iter().map(|e| e.label).collect();
    let n_classes = dataset.n_classes();
    let pad = tokenizer.pad_id()?;
    let vocab_size = tokenizer.vocab_size();
    let parts = split_indices(ids.len(), config.valid_fraction, config.test_fraction, seed)?;
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

/// One GLUE task: `train.tsv` split into training and validation (`data.valid_fraction`),
/// the dev file as the test set (GLUE's test labels are not public). STS-B's scores
/// make a regression source.
pub(super) fn load_glue(config: &DataConfig, seed: u64, fetch_missing: bool) -> Result<LoadedData> {
    let path = config.dataset_path()?;
    let task = config
        .glue_task()?
        .context("a GLUE data set names its task (`data.task`)")?;
    let dev = if config.mismatched {
        GlueSplit::DevMismatched
    } else {
        GlueSplit::Dev
    };
    let train_file = path.join(task.file(GlueSplit::Train)?);
    if !train_file.is_file() {
        bail!(
            "no GLUE {} training file at {}: GLUE is not on any registry this program can fetch from; download the task (e.g. with the `download_glue_data.py` script of the GLUE baselines, which writes glue_data/{}/) and set `data.path` to its folder",
            task.name(),
            train_file.display(),
            task.name()
        );
    }
    let read = |split| {
        let data = read_glue(path, task, split)?;
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
    let ids = Arc::new(encode_all(&tokenizer, &examples, path, config)?);
    let parts = split_train_valid(n_train, config.valid_fraction, seed)?;
    // a limited test set is a seeded random subset of the dev file (some dev files are
    // grouped by genre or source), kept in file order
    let dev_indices: Vec<usize> = (n_train..ids.len()).collect();
    let test_indices = random_subset(&dev_indices, config.test_limit, seed);
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
