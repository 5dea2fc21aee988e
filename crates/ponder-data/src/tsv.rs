//! Reader for GLUE-style TSV files: a header line naming the columns, then one example
//! per line, fields separated by tabs.
//!
//! GLUE files are not quoted CSV: quotes are ordinary characters and fields are split on
//! `'\t'` only. `\r\n` line ends and a UTF-8 byte-order mark are accepted; empty lines are
//! skipped.
//!
//! The parsing is shared with [`read_table`](crate::read_table) ([`TableFormat::Tsv`]);
//! [`read_tsv`] adds the fixed label list of a [`TsvSpec`].

use std::path::Path;

use crate::error::{DataError, Result};
use crate::table::{RawTable, TableColumns, TableFormat, parse_rows};
use crate::text::TextDataset;

/// Which columns of a TSV file hold the text and the label, and which labels exist.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TsvSpec {
    /// Header name of the text column (e.g. `sentence`).
    pub text_column: String,
    /// Header name of the second text column, for sentence pairs.
    #[serde(default)]
    pub text_pair_column: Option<String>,
    /// Header name of the label column (e.g. `label`).
    pub label_column: String,
    /// The label values, as written in the file; a label's index here is its class.
    pub labels: Vec<String>,
}

impl TsvSpec {
    /// A single-text spec.
    pub fn new(
        text_column: impl Into<String>,
        label_column: impl Into<String>,
        labels: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            text_column: text_column.into(),
            text_pair_column: None,
            label_column: label_column.into(),
            labels: labels.into_iter().map(Into::into).collect(),
        }
    }

    /// The same spec with a second text column.
    pub fn with_pair(mut self, text_pair_column: impl Into<String>) -> Self {
        self.text_pair_column = Some(text_pair_column.into());
        self
    }

    /// GLUE SST-2 (`train.tsv`, `dev.tsv`): columns `sentence` and `label`, labels `0`
    /// (negative) and `1` (positive).
    pub fn sst2() -> Self {
        Self::new("sentence", "label", ["0", "1"])
    }
}

/// Reads a TSV file with a header line into a [`TextDataset`] whose label names are
/// `spec.labels`.
///
/// The parsing is that of [`read_table`](crate::read_table) with
/// [`TableFormat::Tsv`], but more lenient, as GLUE files need: a missing file is a plain
/// [`DataError::Io`] error, and a file with a header but no rows, or rows with an empty
/// text, is accepted.
///
/// Errors name the file, and the 1-based line number for a line with the wrong number of
/// fields, invalid UTF-8 or an unknown label ([`DataError::UnknownLabel`], listing the
/// known labels). Label values are compared after trimming spaces.
pub fn read_tsv(path: impl AsRef<Path>, spec: &TsvSpec) -> Result<TextDataset> {
    let path = path.as_ref();
    if spec.labels.is_empty() {
        return Err(DataError::InvalidInput {
            message: format!("TsvSpec for {} has no labels", path.display()),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, "read", e))?;
    let columns = TableColumns {
        text: spec.text_column.clone(),
        text_pair: spec.text_pair_column.clone(),
        label: spec.label_column.clone(),
    };
    let rows = parse_rows(path, &bytes, TableFormat::Tsv, &columns)?;
    RawTable {
        path: path.to_path_buf(),
        rows,
    }
    .into_dataset(&spec.labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::TextExample;

    fn write(content: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.tsv");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    #[test]
    fn reads_sst2_style_file_with_crlf() {
        let (_dir, path) = write(
            b"\xef\xbb\xbfsentence\tlabel\r\nit 's \"great\" \t1\r\n\r\na dull , flat film\t0\r\n",
        );
        let ds = read_tsv(&path, &TsvSpec::sst2()).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.examples[0].text, "it 's \"great\" ");
        assert_eq!(ds.examples[0].label, 1);
        assert_eq!(ds.examples[1], TextExample::new("a dull , flat film", 0));
        assert_eq!(ds.label_names, vec!["0", "1"]);
    }

    #[test]
    fn reads_pairs_by_header_name() {
        let (_dir, path) = write(
            b"index\tsentence1\tsentence2\tlabel\n0\tA man.\tA person.\tentailment\n\
              1\tA cat.\tNo cat.\tnot_entailment\n",
        );
        let spec = TsvSpec::new("sentence1", "label", ["entailment", "not_entailment"])
            .with_pair("sentence2");
        let ds = read_tsv(&path, &spec).unwrap();
        assert_eq!(ds.examples[1].text, "A cat.");
        assert_eq!(ds.examples[1].text_pair.as_deref(), Some("No cat."));
        assert_eq!(ds.examples[1].label, 1);
    }

    #[test]
    fn unknown_label_names_file_line_and_known_labels() {
        let (_dir, path) = write(b"sentence\tlabel\ngood\t1\nbad\t0\nodd\tmaybe\n");
        let err = read_tsv(&path, &TsvSpec::sst2()).unwrap_err();
        match &err {
            DataError::UnknownLabel {
                line, label, known, ..
            } => {
                assert_eq!(*line, 4);
                assert_eq!(label, "maybe");
                assert_eq!(known, &vec!["0".to_string(), "1".to_string()]);
            }
            other => panic!("expected UnknownLabel, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("train.tsv") && msg.contains("line 4"), "{msg}");
        assert!(msg.contains("\"0\", \"1\""), "{msg}");
    }

    #[test]
    fn wrong_field_count_names_line() {
        let (_dir, path) = write(b"sentence\tlabel\ngood\t1\nhas\ta tab\t0\n");
        let msg = read_tsv(&path, &TsvSpec::sst2()).unwrap_err().to_string();
        assert!(
            msg.contains("train.tsv") && msg.contains("line 3 has 3"),
            "{msg}"
        );
    }

    #[test]
    fn missing_column_and_empty_file() {
        let (_dir, path) = write(b"text\tlabel\nx\t0\n");
        let msg = read_tsv(&path, &TsvSpec::sst2()).unwrap_err().to_string();
        assert!(msg.contains("\"sentence\""), "{msg}");

        let (_dir2, empty) = write(b"");
        let msg = read_tsv(&empty, &TsvSpec::sst2()).unwrap_err().to_string();
        assert!(msg.contains("no header"), "{msg}");
    }

    #[test]
    fn invalid_utf8_names_line() {
        let (_dir, path) = write(b"sentence\tlabel\nok\t1\nbad \xff\t0\n");
        let msg = read_tsv(&path, &TsvSpec::sst2()).unwrap_err().to_string();
        assert!(msg.contains("line 3") && msg.contains("UTF-8"), "{msg}");
    }

    #[test]
    fn missing_file_is_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_tsv(dir.path().join("dev.tsv"), &TsvSpec::sst2()).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }));
        assert!(err.to_string().contains("dev.tsv"));
    }
}
