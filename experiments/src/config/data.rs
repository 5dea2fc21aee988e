//! The `[data]` section: a named data set (`dataset = "fashion-mnist" | "spamassassin" |
//! "glue"`) or the user's own files (`format = "tsv" | "csv" | "jsonl" | "image-folder" |
//! "idx"`).
//!
//! Some values are only known once the data has been read: the class order (`labels`,
//! the sorted distinct labels of the training file or the sorted class folders), the
//! image size of IDX files (`image_size`) and the images' per-channel normalisation
//! (`mean`, `std`, measured on the training split). [`crate::data::load`] fills them in,
//! and the run's `config.toml` keeps them, so that evaluating or resuming a run uses the
//! same classes in the same order and the same normalisation.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ponder_data::{GlueTask, TableFormat};
use serde::{Deserialize, Serialize};

/// Which data, where, and how it is split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// A named data set: `fashion-mnist` (IDX images; also reads MNIST), `spamassassin`
    /// (e-mails, one folder per class) or `glue` (one GLUE task's TSV files, `data.task`).
    /// Give either this (with `path`) or `format` (with `train`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<Dataset>,
    /// Folder of a named data set; for GLUE, the task's folder (`glue_data/RTE`) holding
    /// `train.tsv` and `dev.tsv` (MNLI: `dev_matched.tsv`, `dev_mismatched.tsv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Your own data: `tsv` (a header line, tab-separated, no quoting, as GLUE's files),
    /// `csv` (quoted CSV with a header row), `jsonl` (one JSON object per line),
    /// `image-folder` (one sub-folder of PNG/JPEG images per class) or `idx` (MNIST's
    /// IDX files, any image size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DataFormat>,
    /// Own data: the training file (`tsv`, `csv`, `jsonl`: a file; `image-folder`: a
    /// folder of class folders; `idx`: the images file, with `train_labels`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<PathBuf>,
    /// Own data: the validation file or folder. Absent: `valid_fraction` of the training
    /// data is held out (seeded by `train.seed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<PathBuf>,
    /// Own data: the test file or folder. Absent: `test_fraction` of the training data
    /// is held out (seeded by `train.seed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<PathBuf>,
    /// `idx` only: the labels file of `train` (and of `valid` and `test` below).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_labels: Option<PathBuf>,
    /// `idx` only: the labels file of `valid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_labels: Option<PathBuf>,
    /// `idx` only: the labels file of `test`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_labels: Option<PathBuf>,
    /// `tsv`, `csv`, `jsonl`: the column (JSONL: the key) holding the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_column: Option<String>,
    /// `tsv`, `csv`, `jsonl`: the column holding the second text of a sentence pair
    /// (encoded `[CLS] a [SEP] b [SEP]` with segment ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_pair_column: Option<String>,
    /// `tsv`, `csv`, `jsonl`: the column holding the label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_column: Option<String>,
    /// Own data: the classes in order (a label's position is its class index; for
    /// `image-folder`, class folder names; for `idx`, the label numbers). Absent: the
    /// distinct labels of the training file, sorted (numerically when every label is an
    /// integer), or the class folders sorted by name; the run's `config.toml` then holds
    /// the list that was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// Images: the side in pixels of the square images the model reads (`image-folder`:
    /// every image is resized to it, bilinearly; `idx`, `fashion-mnist`: the files'
    /// size, filled in when absent). Must be a multiple of `model.patch_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
    /// `image-folder`: 1 (grayscale) or 3 (RGB). Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    /// `image-folder`: skip images that fail to decode (counted on the terminal)
    /// instead of stopping with an error naming the file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_bad_images: bool,
    /// Own images: per-channel mean of the pixels (scaled to `[0, 1]`) that inputs are
    /// normalised with. Absent: measured on the training split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f32>>,
    /// Own images: per-channel standard deviation, as `mean`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f32>>,
    /// GLUE only: the task (`cola`, `sst-2`, `mrpc`, `sts-b`, `qqp`, `mnli`, `qnli`, `rte`,
    /// `wnli`; case, `-` and `_` are ignored). Checkpoints are chosen on validation
    /// accuracy (STS-B: Pearson correlation), not on the task's official metric. The
    /// Mamba backbone reads a pair as one sequence (`[SEP]` marks the boundary; it has
    /// no segment embedding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// GLUE MNLI only: test on `dev_mismatched.tsv` instead of `dev_matched.tsv`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mismatched: bool,
    /// Fraction of the training data held out for validation (model selection and
    /// calibration), when there is no validation file (for GLUE, carved from
    /// `train.tsv`: the dev file is the test set).
    #[serde(default = "default_valid_fraction")]
    pub valid_fraction: f64,
    /// Fraction of the training data held out for the test set, when there is no test
    /// file (SpamAssassin; own data without `test`).
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// Use at most this many training examples (0: all), for quick runs.
    #[serde(default)]
    pub train_limit: usize,
    /// Use at most this many test examples (0: all).
    #[serde(default)]
    pub test_limit: usize,
    /// Text only: `tokenizer.json` or WordPiece `vocab.txt` (or a folder holding one).
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Text only: longest token sequence, special tokens included.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// SpamAssassin only: bytes of each e-mail kept after taking its subject and body.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
}

fn default_valid_fraction() -> f64 {
    0.1
}
fn default_test_fraction() -> f64 {
    0.2
}
fn default_max_tokens() -> usize {
    128
}
fn default_max_bytes() -> usize {
    4000
}

/// The named data sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dataset {
    /// Fashion-MNIST (or MNIST) IDX files.
    FashionMnist,
    /// The SpamAssassin public corpus.
    Spamassassin,
    /// A GLUE task (`data.task`) from its TSV files.
    Glue,
}

/// Formats of the user's own data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataFormat {
    /// Tab-separated text with a header line, no quoting (GLUE's layout).
    Tsv,
    /// Comma-separated text with a header row, RFC 4180 quoting.
    Csv,
    /// JSON lines: one object per line.
    Jsonl,
    /// One sub-folder of PNG/JPEG images per class.
    ImageFolder,
    /// IDX image and label files (MNIST's format), any image size.
    Idx,
}

impl DataFormat {
    /// The name used in experiment files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tsv => "tsv",
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
            Self::ImageFolder => "image-folder",
            Self::Idx => "idx",
        }
    }

    /// The table format of a text format (`None` for images).
    pub fn table(self) -> Option<TableFormat> {
        match self {
            Self::Tsv => Some(TableFormat::Tsv),
            Self::Csv => Some(TableFormat::Csv),
            Self::Jsonl => Some(TableFormat::Jsonl),
            Self::ImageFolder | Self::Idx => None,
        }
    }
}

/// What the model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Token ids.
    Text,
    /// Square images of `size` pixels with `channels` channels.
    Images {
        /// Side in pixels (`None`: known once the files are read).
        size: Option<usize>,
        /// Channels.
        channels: usize,
    },
}

const TABLE_KEYS: [&str; 3] = ["text_column", "text_pair_column", "label_column"];
const IDX_KEYS: [&str; 3] = ["train_labels", "valid_labels", "test_labels"];

impl DataConfig {
    /// The GLUE task of `dataset = "glue"` (`None` for other data sets).
    ///
    /// # Errors
    /// A GLUE data set without `task`, or an unknown task.
    pub fn glue_task(&self) -> Result<Option<GlueTask>> {
        if self.dataset != Some(Dataset::Glue) {
            return Ok(None);
        }
        let name = self.task.as_deref().context(
            "missing `data.task`: a GLUE experiment names its task (cola, sst-2, mrpc, sts-b, qqp, mnli, qnli, rte, wnli)",
        )?;
        GlueTask::parse(name)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("invalid value for `data.task`: {e}"))
    }

    /// What the model reads: text, or images of the given size and channels.
    pub fn input(&self) -> InputKind {
        match (self.dataset, self.format) {
            // Fashion-MNIST's images are 28×28 until its files say otherwise (MNIST-like
            // files of another size are read as they are)
            (Some(Dataset::FashionMnist), _) => InputKind::Images {
                size: Some(self.image_size.unwrap_or(28)),
                channels: 1,
            },
            (_, Some(DataFormat::Idx)) => InputKind::Images {
                size: self.image_size,
                channels: 1,
            },
            (_, Some(DataFormat::ImageFolder)) => InputKind::Images {
                size: self.image_size,
                channels: self.channels.unwrap_or(3),
            },
            _ => InputKind::Text,
        }
    }

    /// Whether examples are token sequences.
    pub fn is_text(&self) -> bool {
        self.input() == InputKind::Text
    }

    /// The folder of a named data set.
    ///
    /// # Errors
    /// Own data (which has `train`, not `path`).
    pub fn dataset_path(&self) -> Result<&Path> {
        self.path
            .as_deref()
            .context("missing `data.path`: the folder of the data set")
    }

    /// The training file of own data.
    ///
    /// # Errors
    /// A named data set (which has `path`, not `train`).
    pub fn train_path(&self) -> Result<&Path> {
        self.train
            .as_deref()
            .context("missing `data.train`: the training file or folder of your data")
    }

    /// Checks the section's keys against each other, naming the key at fault.
    pub fn validate(&self) -> Result<()> {
        let set = |key: &str| -> bool {
            match key {
                "path" => self.path.is_some(),
                "train" => self.train.is_some(),
                "valid" => self.valid.is_some(),
                "test" => self.test.is_some(),
                "train_labels" => self.train_labels.is_some(),
                "valid_labels" => self.valid_labels.is_some(),
                "test_labels" => self.test_labels.is_some(),
                "text_column" => self.text_column.is_some(),
                "text_pair_column" => self.text_pair_column.is_some(),
                "label_column" => self.label_column.is_some(),
                "labels" => self.labels.is_some(),
                "image_size" => self.image_size.is_some(),
                "channels" => self.channels.is_some(),
                "skip_bad_images" => self.skip_bad_images,
                "mean" => self.mean.is_some(),
                "std" => self.std.is_some(),
                _ => unreachable!("unknown key {key}"),
            }
        };
        let refuse = |keys: &[&str], why: &str| -> Result<()> {
            match keys.iter().find(|k| set(k)) {
                Some(k) => bail!("`data.{k}` {why}"),
                None => Ok(()),
            }
        };
        let own = [
            "train",
            "valid",
            "test",
            "train_labels",
            "valid_labels",
            "test_labels",
            "text_column",
            "text_pair_column",
            "label_column",
            "labels",
            "channels",
            "skip_bad_images",
            "mean",
            "std",
        ];
        match (self.dataset, self.format) {
            (Some(_), Some(_)) => bail!(
                "`data.dataset` and `data.format` exclude each other: name a data set (with `path`) or the format of your own files (with `train`)"
            ),
            (None, None) => bail!(
                "missing `data.format`: give the format of your own data (tsv, csv, jsonl, image-folder, idx) with `train`, or a named `data.dataset` (fashion-mnist, spamassassin, glue) with `path`"
            ),
            (Some(dataset), None) => {
                self.dataset_path()?;
                refuse(
                    &own,
                    "applies to your own data (`data.format`), not to a named data set",
                )?;
                if dataset != Dataset::FashionMnist {
                    refuse(&["image_size"], "applies to images")?;
                }
            }
            (None, Some(format)) => {
                refuse(
                    &["path"],
                    "names a data set's folder; your own data is given by `data.train` (and `valid`, `test`)",
                )?;
                self.train_path()?;
                let what = format!("does not apply to `format = \"{}\"`", format.name());
                if format.table().is_some() {
                    for key in ["text_column", "label_column"] {
                        if !set(key) {
                            bail!(
                                "missing `data.{key}`: a {} file names the column of its {}",
                                format.name(),
                                if key == "text_column" {
                                    "text"
                                } else {
                                    "labels"
                                }
                            );
                        }
                    }
                    refuse(&IDX_KEYS, &what)?;
                    refuse(
                        &["image_size", "channels", "skip_bad_images", "mean", "std"],
                        &what,
                    )?;
                } else {
                    refuse(&TABLE_KEYS, &what)?;
                }
                match format {
                    DataFormat::Idx => {
                        refuse(&["channels", "skip_bad_images"], &what)?;
                        for (file, labels) in [
                            ("train", "train_labels"),
                            ("valid", "valid_labels"),
                            ("test", "test_labels"),
                        ] {
                            if set(file) != set(labels) {
                                bail!(
                                    "`data.{file}` and `data.{labels}` go together: an IDX split is an images file and a labels file"
                                );
                            }
                        }
                    }
                    DataFormat::ImageFolder => {
                        refuse(&IDX_KEYS, &what)?;
                        if self.image_size.is_none() {
                            bail!(
                                "missing `data.image_size`: the side in pixels that every image is resized to"
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(c) = self.channels
            && c != 1
            && c != 3
        {
            bail!("invalid value for `data.channels`: {c} (1: grayscale, 3: RGB)");
        }
        if self.image_size == Some(0) {
            bail!("invalid value for `data.image_size`: must be at least 1");
        }
        if let Some(labels) = &self.labels {
            if labels.len() < 2 {
                bail!("invalid value for `data.labels`: {labels:?} names fewer than two classes");
            }
            if let Some(l) = labels.iter().find(|l| l.trim().is_empty()) {
                bail!("invalid value for `data.labels`: {l:?} is empty");
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(l) = labels.iter().find(|l| !seen.insert(l.trim())) {
                bail!("invalid value for `data.labels`: {l:?} appears twice");
            }
        }
        if let InputKind::Images { channels, .. } = self.input() {
            for (key, values) in [("mean", &self.mean), ("std", &self.std)] {
                if let Some(v) = values {
                    if v.len() != channels {
                        bail!(
                            "invalid value for `data.{key}`: {} values for {channels} channel(s)",
                            v.len()
                        );
                    }
                    if v.iter()
                        .any(|x| !x.is_finite() || (key == "std" && *x <= 0.0))
                    {
                        bail!("invalid value for `data.{key}`: {v:?}");
                    }
                }
            }
            if self.mean.is_some() != self.std.is_some() {
                bail!("`data.mean` and `data.std` go together");
            }
        }
        if self.dataset != Some(Dataset::Glue) && (self.task.is_some() || self.mismatched) {
            bail!("`data.task` and `data.mismatched` apply to `dataset = \"glue\"` only");
        }
        if !(0.0..1.0).contains(&self.valid_fraction) || self.valid_fraction == 0.0 {
            bail!(
                "invalid value for `data.valid_fraction`: {} is not in (0, 1)",
                self.valid_fraction
            );
        }
        if !(0.0..1.0).contains(&self.test_fraction) {
            bail!(
                "invalid value for `data.test_fraction`: {} is not in [0, 1)",
                self.test_fraction
            );
        }
        if self.format.is_some() && self.test.is_none() && self.test_fraction == 0.0 {
            bail!(
                "invalid value for `data.test_fraction`: 0 leaves no test set; give `data.test` or a fraction in (0, 1)"
            );
        }
        if self.format.is_some()
            && self.valid.is_none()
            && self.test.is_none()
            && self.valid_fraction + self.test_fraction >= 1.0
        {
            bail!(
                "invalid value for `data.valid_fraction` / `data.test_fraction`: together they hold out all the training data"
            );
        }
        if self.is_text() && self.tokenizer.is_none() {
            bail!("missing `data.tokenizer`: text data sets need a tokenizer.json or vocab.txt");
        }
        if self.max_tokens < 3 {
            bail!(
                "invalid value for `data.max_tokens`: {} is too short",
                self.max_tokens
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<DataConfig> {
        let config: DataConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn message(text: &str) -> String {
        format!("{:#}", check(text).unwrap_err())
    }

    const CSV: &str = "format = \"csv\"\ntrain = \"t.csv\"\ntext_column = \"text\"\nlabel_column = \"label\"\ntokenizer = \"vocab.txt\"\n";

    #[test]
    fn own_text_data_needs_its_columns_and_no_dataset_keys() {
        let c = check(CSV).unwrap();
        assert_eq!(c.input(), InputKind::Text);
        assert_eq!(c.format.and_then(DataFormat::table), Some(TableFormat::Csv));
        assert!(message(&CSV.replace("text_column = \"text\"\n", "")).contains("data.text_column"));
        assert!(
            message(&CSV.replace("label_column = \"label\"\n", "")).contains("data.label_column")
        );
        assert!(message(&CSV.replace("train = \"t.csv\"\n", "")).contains("data.train"));
        assert!(
            message(&CSV.replace("tokenizer = \"vocab.txt\"\n", "")).contains("data.tokenizer")
        );
        let m = message(&format!("{CSV}path = \"x\"\n"));
        assert!(m.contains("data.path") && m.contains("data.train"), "{m}");
        let m = message(&format!("{CSV}dataset = \"spamassassin\"\n"));
        assert!(
            m.contains("data.dataset") && m.contains("data.format"),
            "{m}"
        );
        let m = message(&format!("{CSV}image_size = 32\n"));
        assert!(m.contains("data.image_size") && m.contains("csv"), "{m}");
        let m = message(&format!("{CSV}train_labels = \"l.idx\"\n"));
        assert!(m.contains("data.train_labels"), "{m}");
        assert!(message("tokenizer = \"v\"\n").contains("missing `data.format`"));
    }

    #[test]
    fn labels_are_checked() {
        assert!(check(&format!("{CSV}labels = [\"b\", \"a\", \"c\"]\n")).is_ok());
        for (bad, needle) in [
            ("[\"only\"]", "fewer than two"),
            ("[\"a\", \"a\"]", "appears twice"),
            ("[\"a\", \" \"]", "empty"),
        ] {
            let m = message(&format!("{CSV}labels = {bad}\n"));
            assert!(m.contains("data.labels") && m.contains(needle), "{m}");
        }
        // a named data set has its own classes
        let m = message("dataset = \"fashion-mnist\"\npath = \"x\"\nlabels = [\"a\", \"b\"]\n");
        assert!(m.contains("data.labels"), "{m}");
    }

    #[test]
    fn image_keys_are_checked() {
        let folder = "format = \"image-folder\"\ntrain = \"imgs\"\nimage_size = 32\n";
        let c = check(folder).unwrap();
        assert_eq!(
            c.input(),
            InputKind::Images {
                size: Some(32),
                channels: 3
            }
        );
        assert!(
            message("format = \"image-folder\"\ntrain = \"imgs\"\n").contains("data.image_size")
        );
        assert!(message(&format!("{folder}channels = 2\n")).contains("data.channels"));
        assert!(message(&format!("{folder}mean = [0.5]\nstd = [0.2]\n")).contains("data.mean"));
        assert!(message(&format!("{folder}mean = [0.5, 0.5, 0.5]\n")).contains("data.std"));
        let m = message(&format!(
            "{folder}mean = [0.5, 0.5, 0.5]\nstd = [0.2, 0.0, 0.2]\n"
        ));
        assert!(m.contains("data.std"), "{m}");
        assert!(message(&format!("{folder}text_column = \"t\"\n")).contains("data.text_column"));
        let idx = "format = \"idx\"\ntrain = \"i.gz\"\ntrain_labels = \"l.gz\"\n";
        assert_eq!(
            check(idx).unwrap().input(),
            InputKind::Images {
                size: None,
                channels: 1
            }
        );
        let m = message(&format!("{idx}test = \"t.gz\"\n"));
        assert!(
            m.contains("data.test") && m.contains("data.test_labels"),
            "{m}"
        );
        assert!(message(&format!("{idx}channels = 3\n")).contains("data.channels"));
    }

    #[test]
    fn carved_splits_must_leave_something() {
        let m = message(&format!("{CSV}test_fraction = 0.0\n"));
        assert!(m.contains("data.test_fraction"), "{m}");
        assert!(check(&format!("{CSV}test = \"x.csv\"\ntest_fraction = 0.0\n")).is_ok());
        let m = message(&format!("{CSV}valid_fraction = 0.5\ntest_fraction = 0.5\n"));
        assert!(m.contains("hold out all"), "{m}");
    }
}
