//! The user's own data of `data.format`: labelled text tables (TSV, CSV, JSON lines),
//! image folders (one sub-folder per class) and IDX files, with the splits of own data
//! (a split without a file of its own is carved from the training file, seeded) and
//! the images' size and per-channel normalisation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use ponder_data::{
    ImageFolderSpec, ImageSet, RawTable, TableColumns, TableFormat, read_idx_images,
    read_idx_labels, read_image_folder, read_table, shuffled_indices, sort_labels, split_indices,
    split_train_valid,
};
use ponder_models::{ImageSource, TextSource};

use super::{LoadedData, Splits, encode_all, limit, load_tokenizer};
use crate::config::DataConfig;

/// The side of square images, the same in every set, and `data.image_size` when it is
/// given.
pub(super) fn square_size(config: &DataConfig, path: &Path, sets: &[&ImageSet]) -> Result<usize> {
    let first = sets[0];
    for set in sets {
        if set.n_rows != set.n_cols {
            bail!(
                "the images of {} are {}×{} (rows × columns); the image encoder reads square images",
                path.display(),
                set.n_rows,
                set.n_cols
            );
        }
        if (set.n_rows, set.n_cols) != (first.n_rows, first.n_cols) {
            bail!(
                "the images of {} are of two sizes, {}×{} and {}×{}: every split must have the same",
                path.display(),
                first.n_rows,
                first.n_cols,
                set.n_rows,
                set.n_cols
            );
        }
    }
    if let Some(size) = config.image_size
        && size != first.n_rows
    {
        bail!(
            "invalid value for `data.image_size`: {size}, but the images of {} are {}×{} (IDX images are not resized; leave `image_size` out to take the files' size)",
            path.display(),
            first.n_rows,
            first.n_cols
        );
    }
    Ok(first.n_rows)
}

/// Indices of the training, validation and test splits of own data, as positions in the
/// training file's examples followed by the validation file's and then the test file's
/// (`n_valid` / `n_test`: the sizes of those files, `None` when there is none, in which
/// case the split is carved from the training examples with `valid_fraction` /
/// `test_fraction`, seeded). Every split must be non-empty; `train_limit` and
/// `test_limit` apply (a limited test file is a seeded random subset, in file order).
fn own_splits(
    config: &DataConfig,
    n_train: usize,
    n_valid: Option<usize>,
    n_test: Option<usize>,
    seed: u64,
) -> Result<ponder_data::Splits> {
    let (vf, tf) = (config.valid_fraction, config.test_fraction);
    let valid_start = n_train;
    let test_start = n_train + n_valid.unwrap_or(0);
    let mut parts = match (n_valid, n_test) {
        (None, None) => split_indices(n_train, vf, tf, seed)?,
        (Some(nv), None) => {
            let carved = split_train_valid(n_train, tf, seed)?;
            ponder_data::Splits {
                train: carved.train,
                valid: (valid_start..valid_start + nv).collect(),
                test: carved.valid,
            }
        }
        (None, Some(nt)) => {
            let carved = split_train_valid(n_train, vf, seed)?;
            ponder_data::Splits {
                train: carved.train,
                valid: carved.valid,
                test: (test_start..test_start + nt).collect(),
            }
        }
        (Some(nv), Some(nt)) => ponder_data::Splits {
            train: (0..n_train).collect(),
            valid: (valid_start..valid_start + nv).collect(),
            test: (test_start..test_start + nt).collect(),
        },
    };
    for (name, split, file, key) in [
        (
            "training",
            &parts.train,
            &config.train,
            "valid_fraction + test_fraction",
        ),
        ("validation", &parts.valid, &config.valid, "valid_fraction"),
        ("test", &parts.test, &config.test, "test_fraction"),
    ] {
        if split.is_empty() {
            match file {
                Some(path) if name != "training" => {
                    bail!(
                        "the {name} split is empty: {} holds no examples",
                        path.display()
                    )
                }
                _ => bail!(
                    "the {name} split is empty: {n_train} training examples are too few to hold out `data.{key}` of them; give more data or a file of its own (`data.{}`)",
                    match name {
                        "validation" => "valid",
                        "test" => "test",
                        _ => "train",
                    }
                ),
            }
        }
    }
    parts.train = limit(parts.train, config.train_limit);
    parts.test = if n_test.is_some() {
        random_subset(&parts.test, config.test_limit, seed)
    } else {
        limit(parts.test, config.test_limit)
    };
    Ok(parts)
}

/// At most `n` of `indices` (0: all), a seeded random subset kept in order (test files
/// may be grouped by class or source, so their first rows are not a fair sample).
pub(super) fn random_subset(indices: &[usize], n: usize, seed: u64) -> Vec<usize> {
    if n == 0 || n >= indices.len() {
        return indices.to_vec();
    }
    let mut pick = shuffled_indices(indices.len(), seed);
    pick.truncate(n);
    pick.sort_unstable();
    pick.into_iter().map(|i| indices[i]).collect()
}

/// Own text classification data from TSV, CSV or JSON-lines files.
pub(super) fn load_table(
    config: &mut DataConfig,
    format: TableFormat,
    seed: u64,
    fetch_missing: bool,
) -> Result<LoadedData> {
    let columns = TableColumns {
        text: config
            .text_column
            .clone()
            .context("missing `data.text_column`")?,
        text_pair: config.text_pair_column.clone(),
        label: config
            .label_column
            .clone()
            .context("missing `data.label_column`")?,
    };
    // errors name the key of the file and the column keys, so the fix is easy to find
    let read = |key: &str, path: &Path| -> Result<RawTable> {
        read_table(path, format, &columns).with_context(|| {
            format!(
                "reading `data.{key}` as {format} with `data.text_column` = {:?}{}, `data.label_column` = {:?}",
                columns.text,
                columns
                    .text_pair
                    .as_ref()
                    .map(|p| format!(", `data.text_pair_column` = {p:?}"))
                    .unwrap_or_default(),
                columns.label
            )
        })
    };
    let train_path = config.train_path()?.to_path_buf();
    let train = read("train", &train_path)?;
    let valid = config
        .valid
        .as_deref()
        .map(|p| read("valid", p))
        .transpose()?;
    let test = config
        .test
        .as_deref()
        .map(|p| read("test", p))
        .transpose()?;
    let found = train.distinct_labels();
    let labels = match &config.labels {
        Some(given) => given.iter().map(|l| l.trim().to_string()).collect(),
        None => found.clone(),
    };
    if found.len() < 2 {
        bail!(
            "{} holds {} class{} ({}) in column `{}`: a classifier needs at least two",
            train_path.display(),
            found.len(),
            if found.len() == 1 { "" } else { "es" },
            found.join(", "),
            columns.label
        );
    }
    let (n_valid, n_test) = (
        valid.as_ref().map(|t| t.rows.len()),
        test.as_ref().map(|t| t.rows.len()),
    );
    let n_train = train.rows.len();
    let tokenizer = load_tokenizer(config, fetch_missing)?;
    let mut ids = Vec::new();
    let mut targets = Vec::new();
    for table in [Some(train), valid, test].into_iter().flatten() {
        let path = table.path.clone();
        let dataset = table.into_dataset(&labels).with_context(|| match &config.labels {
            Some(_) => "the classes are `data.labels`".to_string(),
            None => format!(
                "the classes are the labels of `data.train` ({}); list every class in `data.labels`",
                train_path.display()
            ),
        })?;
        ids.extend(encode_all(&tokenizer, &dataset.examples, &path, config)?);
        targets.extend(dataset.examples.iter().map(|e| e.label));
    }
    let parts = own_splits(config, n_train, n_valid, n_test, seed)?;
    let n_classes = labels.len();
    config.labels = Some(labels);
    let pad = tokenizer.pad_id()?;
    let vocab_size = tokenizer.vocab_size();
    let (ids, targets) = (Arc::new(ids), Arc::new(targets));
    let source = |indices| TextSource::new(ids.clone(), targets.clone(), indices, n_classes, pad);
    Ok(LoadedData::Text(Splits {
        train: source(parts.train),
        valid: source(parts.valid),
        test: source(parts.test),
        n_classes,
        vocab_size,
    }))
}

/// Own images: one sub-folder per class, resized to `data.image_size`.
pub(super) fn load_image_folder(config: &mut DataConfig, seed: u64) -> Result<LoadedData> {
    let spec = ImageFolderSpec {
        image_size: config
            .image_size
            .context("missing `data.image_size` for an image folder")?,
        channels: config.channels.unwrap_or(3),
        skip_bad_images: config.skip_bad_images,
    };
    let train_path = config.train_path()?.to_path_buf();
    let read = |key: &str, path: &Path, classes: Option<&[String]>, require_all: bool| {
        let folder = read_image_folder(path, &spec, classes, require_all).with_context(|| {
            format!("reading `data.{key}` as an image folder (one sub-folder of images per class)")
        })?;
        if !folder.skipped.is_empty() {
            eprintln!(
                "{}: skipped {} image{} that could not be decoded (skip_bad_images = true), e.g. {}: {}",
                path.display(),
                folder.skipped.len(),
                if folder.skipped.len() == 1 { "" } else { "s" },
                folder.skipped[0].0.display(),
                folder.skipped[0].1
            );
        }
        Ok::<_, anyhow::Error>(folder)
    };
    let train = read("train", &train_path, config.labels.as_deref(), true)?;
    let classes = train.class_names.clone();
    let valid = config
        .valid
        .as_deref()
        .map(|p| read("valid", p, Some(&classes), false))
        .transpose()?;
    let test = config
        .test
        .as_deref()
        .map(|p| read("test", p, Some(&classes), false))
        .transpose()?;
    let (n_valid, n_test) = (
        valid.as_ref().map(|f| f.images.n_images),
        test.as_ref().map(|f| f.images.n_images),
    );
    let n_train = train.images.n_images;
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for folder in [Some(train), valid, test].into_iter().flatten() {
        images.push(folder.images);
        labels.extend(folder.labels);
    }
    let images = concat_images(images);
    let parts = own_splits(config, n_train, n_valid, n_test, seed)?;
    config.labels = Some(classes);
    image_splits(config, images, labels, parts)
}

/// Own IDX files (MNIST's format) of any square size.
pub(super) fn load_idx(config: &mut DataConfig, seed: u64) -> Result<LoadedData> {
    let pair = |images: &Option<PathBuf>,
                labels: &Option<PathBuf>|
     -> Result<Option<(PathBuf, ImageSet, Vec<u8>)>> {
        let (Some(images), Some(labels)) = (images, labels) else {
            return Ok(None);
        };
        let set = read_idx_images(images)?;
        let values = read_idx_labels(labels)?;
        if values.len() != set.n_images {
            bail!(
                "{} holds {} images but {} holds {} labels",
                images.display(),
                set.n_images,
                labels.display(),
                values.len()
            );
        }
        Ok(Some((labels.clone(), set, values)))
    };
    let train = pair(&config.train, &config.train_labels)?
        .context("missing `data.train` / `data.train_labels`")?;
    let valid = pair(&config.valid, &config.valid_labels)?;
    let test = pair(&config.test, &config.test_labels)?;
    let parts_present: Vec<&(PathBuf, ImageSet, Vec<u8>)> =
        [Some(&train), valid.as_ref(), test.as_ref()]
            .into_iter()
            .flatten()
            .collect();
    let sets: Vec<&ImageSet> = parts_present.iter().map(|p| &p.1).collect();
    let size = square_size(config, config.train_path()?, &sets)?;
    let found = sort_labels(train.2.iter().map(|v| v.to_string()));
    if found.len() < 2 {
        bail!(
            "{} holds {} class{}: a classifier needs at least two",
            train.0.display(),
            found.len(),
            if found.len() == 1 { "" } else { "es" }
        );
    }
    let classes = config.labels.clone().unwrap_or(found);
    let mut labels = Vec::new();
    for (path, _, values) in &parts_present {
        for (i, v) in values.iter().enumerate() {
            let name = v.to_string();
            let Some(class) = classes.iter().position(|c| c.trim() == name) else {
                bail!(
                    "label {name} of record {i} in {} is not in `data.labels` {classes:?}",
                    path.display()
                );
            };
            labels.push(class);
        }
    }
    let (n_train, n_valid, n_test) = (
        train.1.n_images,
        valid.as_ref().map(|p| p.1.n_images),
        test.as_ref().map(|p| p.1.n_images),
    );
    let images = concat_images(
        [Some(train), valid, test]
            .into_iter()
            .flatten()
            .map(|p| p.1)
            .collect(),
    );
    let parts = own_splits(config, n_train, n_valid, n_test, seed)?;
    config.image_size = Some(size);
    config.labels = Some(classes);
    image_splits(config, images, labels, parts)
}

/// One image set from several of the same size and channels, in order.
fn concat_images(sets: Vec<ImageSet>) -> ImageSet {
    let mut iter = sets.into_iter();
    let mut out = iter.next().expect("at least the training images");
    for set in iter {
        out.n_images += set.n_images;
        out.pixels.extend(set.pixels);
    }
    out
}

/// The three sources of own images, normalised per channel with `data.mean` / `data.std`,
/// measured on the training split when absent (and then written into `config`).
fn image_splits(
    config: &mut DataConfig,
    images: ImageSet,
    labels: Vec<usize>,
    parts: ponder_data::Splits,
) -> Result<LoadedData> {
    let n_classes = config.labels.as_ref().map_or(0, Vec::len);
    let (mean, std) = match (&config.mean, &config.std) {
        (Some(m), Some(s)) => (m.clone(), s.clone()),
        _ => images.channel_stats(&parts.train),
    };
    config.mean = Some(mean.clone());
    config.std = Some(std.clone());
    let (images, labels) = (Arc::new(images), Arc::new(labels));
    let source = |indices| {
        ImageSource::new(images.clone(), labels.clone(), indices, n_classes)
            .with_channel_normalisation(mean.clone(), std.clone())
    };
    Ok(LoadedData::Images(Splits {
        train: source(parts.train),
        valid: source(parts.valid),
        test: source(parts.test),
        n_classes,
        vocab_size: 0,
    }))
}
