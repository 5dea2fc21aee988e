//! Readers for labelled text tables that users bring themselves: TSV, CSV or JSON lines.
//!
//! [`read_table`] reads a file into a [`RawTable`] whose rows keep their labels as written
//! (trimmed); [`RawTable::distinct_labels`] lists the labels found, sorted by
//! [`sort_labels`], and [`RawTable::into_dataset`] maps the labels to class indices and
//! gives a [`TextDataset`]. Which columns hold the text, the optional second text of a
//! sentence pair and the label is said by [`TableColumns`]: header names for TSV and CSV,
//! keys for JSON lines.
//!
//! # Formats
//!
//! * [`TableFormat::Tsv`]: GLUE style. A header line, then one row per line; fields are
//!   split on `'\t'` only, without quoting (quotes are ordinary characters). A line with
//!   a different number of fields than the header is an error.
//! * [`TableFormat::Csv`]: RFC 4180 CSV (through the `csv` crate). A header row; fields
//!   may be quoted with `"`, and a quoted field may hold commas, line breaks and doubled
//!   quotes (`""` for one `"`). A `"` inside an unquoted field is an ordinary character,
//!   but a quoted field that is never closed, or whose closing quote is followed by
//!   anything but a comma or a line end, is an error. A row with a different number of
//!   fields than the header is an error.
//! * [`TableFormat::Jsonl`]: one JSON object per line. The text values must be JSON
//!   strings; the label may be a string, an integer or a boolean, kept as its JSON text
//!   (`1`, `true`). Other keys are ignored.
//!
//! In every format a UTF-8 byte-order mark is stripped, `\r\n` line ends are accepted and
//! empty lines are skipped (in TSV, a line is empty when it has no characters at all; in
//! JSON lines, also when it holds only whitespace). Column names in a TSV or CSV header
//! are compared after trimming whitespace.
//!
//! # Errors
//!
//! Every error names the file, and the 1-based line when it concerns one (for a CSV row
//! spanning several lines, the line where the row starts). [`read_table`] rejects a file
//! that does not exist ([`DataError::MissingDataset`]), one that holds no examples, a
//! missing column (listing the columns found), invalid UTF-8, malformed quoting, a wrong
//! number of fields, a row whose text (or pair text) is empty or only whitespace and a row
//! whose label is empty. [`RawTable::into_dataset`] rejects a label that is not among the
//! given labels ([`DataError::UnknownLabel`]). Nothing panics on the content of a file.
//!
//! # Example
//!
//! ```no_run
//! use ponder_data::{TableColumns, TableFormat, read_table};
//!
//! # fn main() -> ponder_data::Result<()> {
//! let columns = TableColumns::new("review", "stars");
//! let train = read_table("data/reviews/train.csv", TableFormat::Csv, &columns)?;
//! let labels = train.distinct_labels(); // e.g. ["1", "2", ..., "5"]
//! let dev = read_table("data/reviews/dev.csv", TableFormat::Csv, &columns)?;
//! let train = train.into_dataset(&labels)?;
//! let dev = dev.into_dataset(&labels)?;
//! assert_eq!(train.label_names, dev.label_names);
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{DataError, Result};
use crate::text::{TextDataset, TextExample};
use parse::{parse_csv, parse_jsonl, parse_tsv};

mod parse;
#[cfg(test)]
mod tests;

/// File formats of labelled text tables (see the [module documentation](self) for the
/// rules of each).
///
/// Serialized, displayed and parsed ([`FromStr`], case-insensitive) as `tsv`, `csv` and
/// `jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    /// Tab-separated, GLUE style: a header line, no quoting.
    Tsv,
    /// Comma-separated with RFC 4180 quoting and a header row.
    Csv,
    /// JSON lines: one JSON object per line.
    Jsonl,
}

impl TableFormat {
    /// All formats, in the order `tsv`, `csv`, `jsonl`.
    pub const ALL: [TableFormat; 3] = [TableFormat::Tsv, TableFormat::Csv, TableFormat::Jsonl];

    /// The lowercase name: `tsv`, `csv` or `jsonl`.
    pub fn name(self) -> &'static str {
        match self {
            TableFormat::Tsv => "tsv",
            TableFormat::Csv => "csv",
            TableFormat::Jsonl => "jsonl",
        }
    }

    /// The format named by a file's extension (case-insensitive): `.tsv`, `.csv`, and
    /// `.jsonl` or `.ndjson` for JSON lines; `None` for any other extension or none.
    pub fn from_path(path: impl AsRef<Path>) -> Option<Self> {
        let ext = path.as_ref().extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "tsv" => Some(TableFormat::Tsv),
            "csv" => Some(TableFormat::Csv),
            "jsonl" | "ndjson" => Some(TableFormat::Jsonl),
            _ => None,
        }
    }
}

impl fmt::Display for TableFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TableFormat {
    type Err = DataError;

    /// Parses `tsv`, `csv` or `jsonl`, ignoring case and surrounding whitespace; anything
    /// else is [`DataError::InvalidInput`].
    fn from_str(s: &str) -> Result<Self> {
        let name = s.trim();
        TableFormat::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| DataError::InvalidInput {
                message: format!("unknown table format {s:?}; expected tsv, csv or jsonl"),
            })
    }
}

/// Which columns hold the text, the optional second text and the label: header names in
/// TSV and CSV files, keys in JSON lines.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableColumns {
    /// The column of the text (the first sentence of a pair), e.g. `sentence`.
    pub text: String,
    /// The column of the second text, for sentence-pair tasks; `None` for single texts.
    #[serde(default)]
    pub text_pair: Option<String>,
    /// The column of the label, e.g. `label`.
    pub label: String,
}

impl TableColumns {
    /// Single-text columns.
    pub fn new(text: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            text_pair: None,
            label: label.into(),
        }
    }

    /// The same columns with a second text column, for sentence pairs.
    pub fn with_pair(mut self, text_pair: impl Into<String>) -> Self {
        self.text_pair = Some(text_pair.into());
        self
    }
}

/// One row of a table as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRow {
    /// The 1-based line where the row starts (a quoted CSV field may span several lines).
    pub line: usize,
    /// The text, as written (not trimmed).
    pub text: String,
    /// The second text, as written, when [`TableColumns::text_pair`] is set.
    pub text_pair: Option<String>,
    /// The label as written, trimmed of surrounding whitespace; a JSON integer or boolean
    /// label is kept as its JSON text (`3`, `true`).
    pub label: String,
}

/// A labelled text table as read by [`read_table`], labels not yet mapped to classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTable {
    /// The file it was read from (named by the errors of [`RawTable::into_dataset`]).
    pub path: PathBuf,
    /// The rows, in file order.
    pub rows: Vec<TableRow>,
}

impl RawTable {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows (never the case for a table from [`read_table`]).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The distinct labels of the rows, sorted by [`sort_labels`]: numerically when every
    /// label is an integer (`"2"` before `"10"`), otherwise in string order.
    pub fn distinct_labels(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        let distinct = self
            .rows
            .iter()
            .filter(|r| seen.insert(r.label.as_str()))
            .map(|r| r.label.clone());
        sort_labels(distinct)
    }

    /// Maps every row's label to its index in `labels` and gives a [`TextDataset`] whose
    /// `label_names` are `labels`, examples in file order.
    ///
    /// Pass the same `labels` for every split of a data set (usually the
    /// [`distinct_labels`](Self::distinct_labels) of the training file) so that class
    /// indices agree between them.
    ///
    /// # Errors
    ///
    /// [`DataError::UnknownLabel`] (naming the file and line, listing `labels`) for a row
    /// whose label is not in `labels`; [`DataError::InvalidInput`] when `labels` names a
    /// label twice.
    pub fn into_dataset(self, labels: &[String]) -> Result<TextDataset> {
        let mut index = HashMap::with_capacity(labels.len());
        for (i, label) in labels.iter().enumerate() {
            if index.insert(label.as_str(), i).is_some() {
                return Err(DataError::InvalidInput {
                    message: format!(
                        "the labels for {} name {label:?} twice: {labels:?}",
                        self.path.display()
                    ),
                });
            }
        }
        let mut examples = Vec::with_capacity(self.rows.len());
        for row in self.rows {
            let Some(&label) = index.get(row.label.as_str()) else {
                return Err(DataError::UnknownLabel {
                    path: self.path,
                    line: row.line,
                    label: row.label,
                    known: labels.to_vec(),
                });
            };
            examples.push(TextExample {
                text: row.text,
                text_pair: row.text_pair,
                label,
            });
        }
        Ok(TextDataset {
            examples,
            label_names: labels.to_vec(),
        })
    }
}

/// Sorts and deduplicates labels: numerically when every label parses as an integer
/// (optional sign, decimal digits; so `"2"` comes before `"10"` and `"-1"` before `"0"`),
/// otherwise in string (byte) order. Integers that are equal but written differently
/// (`"7"`, `"07"`) stay distinct labels, ordered by their text.
pub fn sort_labels(labels: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut labels: Vec<String> = labels.into_iter().collect();
    labels.sort_unstable();
    labels.dedup();
    let numbers: Option<Vec<i128>> = labels.iter().map(|l| l.parse::<i128>().ok()).collect();
    if let Some(numbers) = numbers {
        let mut pairs: Vec<(i128, String)> = numbers.into_iter().zip(labels).collect();
        pairs.sort_unstable();
        labels = pairs.into_iter().map(|(_, l)| l).collect();
    }
    labels
}

/// Reads a labelled text table in `format`, taking the text, pair text and label from
/// `columns` (see the [module documentation](self) for the formats).
///
/// # Errors
///
/// [`DataError::MissingDataset`] when the file does not exist, [`DataError::Io`] when it
/// cannot be read, and [`DataError::Format`] (naming the file, and the line where one is
/// concerned) when it holds no examples, lacks a column (the message lists the columns
/// found; for JSON lines, the keys of the offending line), is not valid UTF-8, has
/// malformed CSV quoting or JSON, a row with the wrong number of fields, a text (or pair
/// text) that is empty or only whitespace, or an empty label.
pub fn read_table(
    path: impl AsRef<Path>,
    format: TableFormat,
    columns: &TableColumns,
) -> Result<RawTable> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DataError::MissingDataset {
                path: path.to_path_buf(),
                hint: format!("no such file (a {format} table was expected); check the path"),
            }
        } else {
            DataError::io(path, "read", e)
        }
    })?;
    let rows = parse_rows(path, &bytes, format, columns)?;
    if rows.is_empty() {
        let message = match format {
            TableFormat::Tsv | TableFormat::Csv => "holds no examples: a header line but no rows",
            TableFormat::Jsonl => "holds no examples: no non-empty line",
        };
        return Err(DataError::format(path, message));
    }
    for row in &rows {
        let empty_text = |column: &str| {
            DataError::format(
                path,
                format!(
                    "line {}: the text in column {column:?} is empty or only whitespace",
                    row.line
                ),
            )
        };
        if row.text.trim().is_empty() {
            return Err(empty_text(&columns.text));
        }
        if let (Some(pair), Some(column)) = (&row.text_pair, &columns.text_pair)
            && pair.trim().is_empty()
        {
            return Err(empty_text(column));
        }
        if row.label.is_empty() {
            return Err(DataError::format(
                path,
                format!(
                    "line {}: the label in column {:?} is empty",
                    row.line, columns.label
                ),
            ));
        }
    }
    Ok(RawTable {
        path: path.to_path_buf(),
        rows,
    })
}

/// Parses the rows of a table held in `bytes` (read from `path`, which errors name).
///
/// Unlike [`read_table`], accepts a table without rows and rows with empty texts or
/// labels (GLUE files read by [`read_tsv`](crate::read_tsv) keep doing so). An empty file
/// (no header line) is an error for TSV and CSV, whose message says it "holds no
/// examples" and has "no header line".
pub(crate) fn parse_rows(
    path: &Path,
    bytes: &[u8],
    format: TableFormat,
    columns: &TableColumns,
) -> Result<Vec<TableRow>> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    match format {
        TableFormat::Tsv => parse_tsv(path, bytes, columns),
        TableFormat::Csv => parse_csv(path, bytes, columns),
        TableFormat::Jsonl => parse_jsonl(path, bytes, columns),
    }
}
