//! The nine GLUE tasks: their TSV files, with each task's real column layout and quirks,
//! and their official metrics.
//!
//! | task | files | text (pair) | label | quirk | metric |
//! |---|---|---|---|---|---|
//! | CoLA | `train.tsv`, `dev.tsv` | column 4 | column 2 (`0`/`1`) | **no header**: `source, label, original label, sentence` | Matthews correlation |
//! | SST-2 | same | `sentence` | `label` (`0`/`1`) | | accuracy |
//! | MRPC | same | `#1 String` (`#2 String`) | `Quality` (`0`/`1`) | header names with `#` and spaces | F1 (positive class) and accuracy |
//! | STS-B | same | `sentence1` (`sentence2`) | `score` (0–5, a float) | regression | Pearson and Spearman correlation |
//! | QQP | same | `question1` (`question2`) | `is_duplicate` (`0`/`1`) | some lines have missing fields: skipped and counted, as the reference processors do (longer lines are errors) | F1 and accuracy |
//! | MNLI | `train.tsv`, `dev_matched.tsv`, `dev_mismatched.tsv` | `sentence1` (`sentence2`) | `gold_label`, the **last** column | dev files have five annotator columns before it | accuracy (matched / mismatched) |
//! | QNLI | `train.tsv`, `dev.tsv` | `question` (`sentence`) | `label` (`entailment`/`not_entailment`) | | accuracy |
//! | RTE | same | `sentence1` (`sentence2`) | `label` (`entailment`/`not_entailment`) | | accuracy |
//! | WNLI | same | `sentence1` (`sentence2`) | `label` (`0`/`1`) | | accuracy |
//!
//! Fields are split on tabs only (GLUE files are not quoted CSV: quotes are text); a
//! UTF-8 BOM and `\r\n` line ends are accepted; empty lines are skipped. Test files have
//! no labels and are not read (GLUE scores them on its server).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::stats;
use crate::text::TextExample;

/// A GLUE task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GlueTask {
    /// Corpus of Linguistic Acceptability.
    Cola,
    /// Stanford Sentiment Treebank (binary).
    Sst2,
    /// Microsoft Research Paraphrase Corpus.
    Mrpc,
    /// Semantic Textual Similarity Benchmark (regression).
    Stsb,
    /// Quora Question Pairs.
    Qqp,
    /// Multi-Genre NLI.
    Mnli,
    /// Question NLI.
    Qnli,
    /// Recognising Textual Entailment.
    Rte,
    /// Winograd NLI.
    Wnli,
}

/// Which file of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GlueSplit {
    /// `train.tsv`.
    Train,
    /// `dev.tsv` (MNLI: `dev_matched.tsv`).
    Dev,
    /// MNLI's `dev_mismatched.tsv`.
    DevMismatched,
}

/// How a task is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GlueMetric {
    /// Accuracy.
    Accuracy,
    /// F1 of the positive class, and accuracy.
    F1Accuracy,
    /// Matthews correlation coefficient.
    Matthews,
    /// Pearson and Spearman correlation of scores.
    PearsonSpearman,
}

/// Where a task's columns are.
enum Columns {
    /// By header name.
    Named {
        text: &'static str,
        pair: Option<&'static str>,
        label: &'static str,
    },
    /// CoLA: no header; fixed positions.
    Fixed { text: usize, label: usize, n: usize },
    /// MNLI: the label is the last column.
    NamedLastLabel {
        text: &'static str,
        pair: &'static str,
    },
}

impl GlueTask {
    /// Every task.
    pub const ALL: [GlueTask; 9] = [
        GlueTask::Cola,
        GlueTask::Sst2,
        GlueTask::Mrpc,
        GlueTask::Stsb,
        GlueTask::Qqp,
        GlueTask::Mnli,
        GlueTask::Qnli,
        GlueTask::Rte,
        GlueTask::Wnli,
    ];

    /// The task's usual name (`CoLA`, `SST-2`, ...).
    pub fn name(self) -> &'static str {
        match self {
            GlueTask::Cola => "CoLA",
            GlueTask::Sst2 => "SST-2",
            GlueTask::Mrpc => "MRPC",
            GlueTask::Stsb => "STS-B",
            GlueTask::Qqp => "QQP",
            GlueTask::Mnli => "MNLI",
            GlueTask::Qnli => "QNLI",
            GlueTask::Rte => "RTE",
            GlueTask::Wnli => "WNLI",
        }
    }

    /// A task by name, ignoring case and `-`/`_` (`sst2`, `SST-2`, `sts_b`).
    pub fn parse(name: &str) -> Result<Self> {
        let key: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        GlueTask::ALL
            .into_iter()
            .find(|t| {
                t.name()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .map(|c| c.to_ascii_lowercase())
                    .collect::<String>()
                    == key
            })
            .ok_or_else(|| DataError::InvalidInput {
                message: format!(
                    "unknown GLUE task {name:?}; tasks: {}",
                    GlueTask::ALL.map(|t| t.name()).join(", ")
                ),
            })
    }

    /// The label values as written in the files (a label's index is its class); empty
    /// for STS-B, whose label is a score.
    pub fn labels(self) -> &'static [&'static str] {
        match self {
            GlueTask::Cola | GlueTask::Sst2 | GlueTask::Mrpc | GlueTask::Qqp | GlueTask::Wnli => {
                &["0", "1"]
            }
            GlueTask::Mnli => &["contradiction", "entailment", "neutral"],
            GlueTask::Qnli | GlueTask::Rte => &["entailment", "not_entailment"],
            GlueTask::Stsb => &[],
        }
    }

    /// Whether examples are sentence pairs.
    pub fn is_pair(self) -> bool {
        !matches!(self, GlueTask::Cola | GlueTask::Sst2)
    }

    /// Whether the label is a real-valued score (STS-B).
    pub fn is_regression(self) -> bool {
        self == GlueTask::Stsb
    }

    /// The official metric.
    pub fn metric(self) -> GlueMetric {
        match self {
            GlueTask::Cola => GlueMetric::Matthews,
            GlueTask::Mrpc | GlueTask::Qqp => GlueMetric::F1Accuracy,
            GlueTask::Stsb => GlueMetric::PearsonSpearman,
            _ => GlueMetric::Accuracy,
        }
    }

    /// The file of `split` in the task's folder.
    pub fn file(self, split: GlueSplit) -> Result<&'static str> {
        match (self, split) {
            (_, GlueSplit::Train) => Ok("train.tsv"),
            (GlueTask::Mnli, GlueSplit::Dev) => Ok("dev_matched.tsv"),
            (GlueTask::Mnli, GlueSplit::DevMismatched) => Ok("dev_mismatched.tsv"),
            (_, GlueSplit::Dev) => Ok("dev.tsv"),
            (task, GlueSplit::DevMismatched) => Err(DataError::InvalidInput {
                message: format!("{} has no mismatched dev set (MNLI only)", task.name()),
            }),
        }
    }

    fn columns(self) -> Columns {
        use Columns::*;
        match self {
            GlueTask::Cola => Fixed {
                text: 3,
                label: 1,
                n: 4,
            },
            GlueTask::Sst2 => Named {
                text: "sentence",
                pair: None,
                label: "label",
            },
            GlueTask::Mrpc => Named {
                text: "#1 String",
                pair: Some("#2 String"),
                label: "Quality",
            },
            GlueTask::Stsb => Named {
                text: "sentence1",
                pair: Some("sentence2"),
                label: "score",
            },
            GlueTask::Qqp => Named {
                text: "question1",
                pair: Some("question2"),
                label: "is_duplicate",
            },
            GlueTask::Mnli => NamedLastLabel {
                text: "sentence1",
                pair: "sentence2",
            },
            GlueTask::Qnli => Named {
                text: "question",
                pair: Some("sentence"),
                label: "label",
            },
            GlueTask::Rte | GlueTask::Wnli => Named {
                text: "sentence1",
                pair: Some("sentence2"),
                label: "label",
            },
        }
    }
}

/// One split of a GLUE task.
#[derive(Debug, Clone, PartialEq)]
pub struct GlueData {
    /// The task.
    pub task: GlueTask,
    /// The file read.
    pub path: PathBuf,
    /// Examples; for STS-B the class is 0 and [`GlueData::scores`] holds the labels.
    pub examples: Vec<TextExample>,
    /// STS-B's scores, one per example.
    pub scores: Option<Vec<f32>>,
    /// 1-based line numbers of lines skipped as malformed (QQP only).
    pub skipped_lines: Vec<usize>,
}

impl GlueData {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// No examples.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }
}

/// Reads `split` of `task` from the task's folder (e.g. `glue_data/SST-2`).
pub fn read_glue(folder: impl AsRef<Path>, task: GlueTask, split: GlueSplit) -> Result<GlueData> {
    read_glue_file(folder.as_ref().join(task.file(split)?), task)
}

/// Reads one labelled GLUE TSV file of `task`. Errors name the file and the 1-based
/// line: a wrong number of fields (except QQP's known malformed lines, skipped), a
/// missing column, an unknown label or a score that is not a number.
pub fn read_glue_file(path: impl AsRef<Path>, task: GlueTask) -> Result<GlueData> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, "read", e))?;
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        DataError::format(
            path,
            format!("not valid UTF-8 (at byte {})", e.valid_up_to()),
        )
    })?;
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l));

    // Column positions, and the expected number of fields.
    let (text_col, pair_col, label_col, n_fields) = match task.columns() {
        Columns::Fixed { text, label, n } => (text, None, label, n),
        named => {
            let header: Vec<&str> = match lines.next() {
                Some((_, l)) if !l.is_empty() => l.split('\t').map(str::trim).collect(),
                _ => return Err(DataError::format(path, "empty file: no header line")),
            };
            let column = |name: &str| {
                header.iter().position(|h| *h == name).ok_or_else(|| {
                    DataError::format(
                        path,
                        format!(
                            "no column named {name:?} in the header of this {} file; columns: {header:?}",
                            task.name()
                        ),
                    )
                })
            };
            match named {
                Columns::Named { text, pair, label } => (
                    column(text)?,
                    pair.map(column).transpose()?,
                    column(label)?,
                    header.len(),
                ),
                Columns::NamedLastLabel { text, pair } => {
                    if header.last() != Some(&"gold_label") {
                        return Err(DataError::format(
                            path,
                            format!(
                                "the last column of an MNLI file is `gold_label`; the header ends with {:?}",
                                header.last()
                            ),
                        ));
                    }
                    (
                        column(text)?,
                        Some(column(pair)?),
                        header.len() - 1,
                        header.len(),
                    )
                }
                Columns::Fixed { .. } => unreachable!("handled above"),
            }
        }
    };

    let labels = task.labels();
    let mut examples = Vec::new();
    let mut scores = task.is_regression().then(Vec::new);
    let mut skipped_lines = Vec::new();
    for (line_no, line) in lines {
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != n_fields {
            if task == GlueTask::Qqp && fields.len() < n_fields {
                skipped_lines.push(line_no);
                continue;
            }
            return Err(DataError::format(
                path,
                format!(
                    "line {line_no} has {} tab-separated fields, a {} file has {n_fields} \
                     (GLUE TSV is split on tabs only, without quoting)",
                    fields.len(),
                    task.name()
                ),
            ));
        }
        let label_text = fields[label_col].trim();
        let label = match &mut scores {
            Some(scores) => {
                let score: f32 = label_text
                    .parse()
                    .ok()
                    .filter(|s: &f32| s.is_finite())
                    .ok_or_else(|| {
                        DataError::format(
                            path,
                            format!("line {line_no}: score {label_text:?} is not a number"),
                        )
                    })?;
                scores.push(score);
                0
            }
            None => labels
                .iter()
                .position(|l| *l == label_text)
                .ok_or_else(|| DataError::UnknownLabel {
                    path: path.to_path_buf(),
                    line: line_no,
                    label: label_text.to_string(),
                    known: labels.iter().map(|l| l.to_string()).collect(),
                })?,
        };
        examples.push(TextExample {
            text: fields[text_col].to_string(),
            text_pair: pair_col.map(|c| fields[c].to_string()),
            label,
        });
    }
    Ok(GlueData {
        task,
        path: path.to_path_buf(),
        examples,
        scores,
        skipped_lines,
    })
}

/// A task's official scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlueScore {
    /// The metric.
    pub metric: GlueMetric,
    /// Accuracy (classification tasks).
    pub accuracy: Option<f64>,
    /// F1 of class 1 (MRPC, QQP).
    pub f1: Option<f64>,
    /// Matthews correlation (CoLA).
    pub matthews: Option<f64>,
    /// Pearson correlation (STS-B).
    pub pearson: Option<f64>,
    /// Spearman correlation (STS-B).
    pub spearman: Option<f64>,
}

impl GlueScore {
    /// The task's single number, as GLUE's leaderboard averages it: accuracy,
    /// Matthews correlation, the mean of F1 and accuracy (MRPC, QQP), or the mean of
    /// Pearson and Spearman (STS-B). NaN when a correlation is undefined.
    pub fn primary(&self) -> f64 {
        let v = |x: Option<f64>| x.unwrap_or(f64::NAN);
        match self.metric {
            GlueMetric::Accuracy => v(self.accuracy),
            GlueMetric::Matthews => v(self.matthews),
            GlueMetric::F1Accuracy => (v(self.f1) + v(self.accuracy)) / 2.0,
            GlueMetric::PearsonSpearman => (v(self.pearson) + v(self.spearman)) / 2.0,
        }
    }
}

fn length_check(a: usize, b: usize) -> Result<()> {
    if a != b || a == 0 {
        return Err(DataError::InvalidInput {
            message: format!("{a} predictions for {b} labels (need equal, non-zero counts)"),
        });
    }
    Ok(())
}

/// Scores class predictions of a classification task.
pub fn glue_classification_score(
    task: GlueTask,
    predictions: &[usize],
    labels: &[usize],
) -> Result<GlueScore> {
    length_check(predictions.len(), labels.len())?;
    if task.is_regression() {
        return Err(DataError::InvalidInput {
            message: "STS-B is scored on real-valued predictions (glue_regression_score)".into(),
        });
    }
    let n = labels.len() as f64;
    let accuracy = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count() as f64
        / n;
    let count = |p: usize, l: usize| {
        predictions
            .iter()
            .zip(labels)
            .filter(|&(&a, &b)| (a == 1) == (p == 1) && (b == 1) == (l == 1))
            .count() as f64
    };
    let (tp, fp, fneg, tn) = (count(1, 1), count(1, 0), count(0, 1), count(0, 0));
    let metric = task.metric();
    Ok(GlueScore {
        metric,
        accuracy: Some(accuracy),
        f1: (metric == GlueMetric::F1Accuracy).then(|| {
            if tp == 0.0 {
                0.0
            } else {
                2.0 * tp / (2.0 * tp + fp + fneg)
            }
        }),
        matthews: (metric == GlueMetric::Matthews).then(|| {
            let denominator = ((tp + fp) * (tp + fneg) * (tn + fp) * (tn + fneg)).sqrt();
            // sklearn's convention: 0 when a marginal is empty
            if denominator == 0.0 {
                0.0
            } else {
                (tp * tn - fp * fneg) / denominator
            }
        }),
        pearson: None,
        spearman: None,
    })
}

/// Scores STS-B: Pearson and Spearman correlation of predicted and gold scores
/// ([`stats::pearson`], [`stats::spearman`]), NaN when undefined (either side constant,
/// or a single pair).
pub fn glue_regression_score(predictions: &[f64], scores: &[f64]) -> Result<GlueScore> {
    length_check(predictions.len(), scores.len())?;
    if let Some(bad) = predictions.iter().chain(scores).find(|v| !v.is_finite()) {
        return Err(DataError::InvalidInput {
            message: format!("STS-B scores must be finite, got {bad}"),
        });
    }
    Ok(GlueScore {
        metric: GlueMetric::PearsonSpearman,
        accuracy: None,
        f1: None,
        matthews: None,
        // undefined correlations are reported, as NaN (and so is the primary score)
        pearson: Some(stats::pearson(predictions, scores).unwrap_or(f64::NAN)),
        spearman: Some(stats::spearman(predictions, scores).unwrap_or(f64::NAN)),
    })
}
