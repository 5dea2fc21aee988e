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

const NO_HEADER: &str = "holds no examples: the file is empty (no header line)";

/// The lines of `bytes` with their 1-based numbers, `\r` stripped, checked for UTF-8.
fn utf8_lines<'a>(
    path: &'a Path,
    bytes: &'a [u8],
) -> impl Iterator<Item = Result<(usize, &'a str)>> + 'a {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(move |(i, raw)| {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let line = i + 1;
            std::str::from_utf8(raw).map(|s| (line, s)).map_err(|e| {
                DataError::format(path, format!("line {line} is not valid UTF-8: {e}"))
            })
        })
}

/// Indices of the text, pair and label columns in `header` (names compared trimmed).
fn header_columns(
    path: &Path,
    header: &[&str],
    columns: &TableColumns,
) -> Result<(usize, Option<usize>, usize)> {
    let column = |name: &str| {
        header.iter().position(|h| h.trim() == name).ok_or_else(|| {
            DataError::format(
                path,
                format!("no column named {name:?} in the header; columns: {header:?}"),
            )
        })
    };
    let text = column(&columns.text)?;
    let pair = columns.text_pair.as_deref().map(column).transpose()?;
    let label = column(&columns.label)?;
    Ok((text, pair, label))
}

fn parse_tsv(path: &Path, bytes: &[u8], columns: &TableColumns) -> Result<Vec<TableRow>> {
    let mut lines = utf8_lines(path, bytes);
    let header: Vec<&str> = match lines.next() {
        Some(line) => line?.1.split('\t').collect(),
        None => return Err(DataError::format(path, NO_HEADER)),
    };
    if header.len() == 1 && header[0].is_empty() {
        return Err(DataError::format(path, NO_HEADER));
    }
    let (text_col, pair_col, label_col) = header_columns(path, &header, columns)?;

    let mut rows = Vec::new();
    for line in lines {
        let (line_no, line) = line?;
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != header.len() {
            return Err(DataError::format(
                path,
                format!(
                    "line {line_no} has {} tab-separated fields but the header has {} \
                     (TSV is split on tabs only, without quoting)",
                    fields.len(),
                    header.len()
                ),
            ));
        }
        rows.push(TableRow {
            line: line_no,
            text: fields[text_col].to_string(),
            text_pair: pair_col.map(|c| fields[c].to_string()),
            label: fields[label_col].trim().to_string(),
        });
    }
    Ok(rows)
}

/// Describes the byte at `bytes[i]` for an error message.
fn describe_byte(bytes: &[u8], i: usize) -> String {
    match bytes.get(i) {
        Some(&b) if b.is_ascii_graphic() || b == b' ' => format!("{:?}", b as char),
        Some(&b) => format!("byte 0x{b:02x}"),
        None => "the end of the file".to_string(),
    }
}

/// Checks the quoting of a CSV file, which the `csv` crate accepts leniently: a field
/// that starts with `"` must end with a `"` followed by a comma, a line end or the end of
/// the file, and holds its quotes doubled. A `"` elsewhere in a field is an ordinary
/// character (as the `csv` crate reads it).
fn check_csv_quotes(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut line = 1;
    let mut field_start = true;
    let mut i = 0;
    while i < bytes.len() {
        if field_start && bytes[i] == b'"' {
            let open_line = line;
            i += 1;
            loop {
                match bytes.get(i) {
                    None => {
                        return Err(DataError::format(
                            path,
                            format!(
                                "line {open_line}: a quoted field is never closed \
                                 (the '\"' opening it has no closing '\"')"
                            ),
                        ));
                    }
                    Some(b'"') if bytes.get(i + 1) == Some(&b'"') => i += 2,
                    Some(b'"') => match bytes.get(i + 1) {
                        None | Some(b',' | b'\n' | b'\r') => {
                            i += 1;
                            break;
                        }
                        Some(_) => {
                            return Err(DataError::format(
                                path,
                                format!(
                                    "line {line}: malformed quote: the '\"' closing a quoted \
                                     field is followed by {} instead of a comma or a line end; \
                                     a '\"' inside a quoted field must be doubled (\"\")",
                                    describe_byte(bytes, i + 1)
                                ),
                            ));
                        }
                    },
                    Some(b'\n') => {
                        line += 1;
                        i += 1;
                    }
                    Some(_) => i += 1,
                }
            }
            field_start = false;
            continue;
        }
        match bytes[i] {
            b',' | b'\r' => field_start = true,
            b'\n' => {
                line += 1;
                field_start = true;
            }
            _ => field_start = false,
        }
        i += 1;
    }
    Ok(())
}

/// The fields of a CSV record as UTF-8; an error names the line of the offending byte.
fn csv_fields<'r>(path: &Path, record: &'r csv::ByteRecord, line: usize) -> Result<Vec<&'r str>> {
    let mut newlines_before = 0;
    let mut fields = Vec::with_capacity(record.len());
    for raw in record {
        match std::str::from_utf8(raw) {
            Ok(s) => fields.push(s),
            Err(e) => {
                let within = raw[..e.valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                let line = line + newlines_before + within;
                return Err(DataError::format(
                    path,
                    format!("line {line} is not valid UTF-8: {e}"),
                ));
            }
        }
        newlines_before += raw.iter().filter(|&&b| b == b'\n').count();
    }
    Ok(fields)
}

/// The 1-based line where a CSV record starts. The `csv` crate gives the position where
/// the previous record ended, before the line end and any empty lines it skips.
fn record_line(bytes: &[u8], position: Option<&csv::Position>) -> usize {
    let Some(position) = position else {
        return 0;
    };
    let mut line = usize::try_from(position.line()).unwrap_or(usize::MAX);
    let start = usize::try_from(position.byte()).unwrap_or(usize::MAX);
    for &b in bytes.get(start..).unwrap_or_default() {
        match b {
            b'\n' => line += 1,
            b'\r' => {}
            _ => break,
        }
    }
    line
}

fn parse_csv(path: &Path, bytes: &[u8], columns: &TableColumns) -> Result<Vec<TableRow>> {
    check_csv_quotes(path, bytes)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut record = csv::ByteRecord::new();
    let mut read = |record: &mut csv::ByteRecord| -> Result<Option<usize>> {
        match reader.read_byte_record(record) {
            Ok(false) => Ok(None),
            Ok(true) => Ok(Some(record_line(bytes, record.position()))),
            Err(e) => {
                let at = e
                    .position()
                    .map(|p| format!("line {}: ", p.line()))
                    .unwrap_or_default();
                Err(DataError::format(
                    path,
                    format!("{at}cannot parse CSV: {e}"),
                ))
            }
        }
    };

    let Some(header_line) = read(&mut record)? else {
        return Err(DataError::format(path, NO_HEADER));
    };
    let header_record = record.clone();
    let header = csv_fields(path, &header_record, header_line)?;
    let (text_col, pair_col, label_col) = header_columns(path, &header, columns)?;

    let mut rows = Vec::new();
    while let Some(line) = read(&mut record)? {
        if record.len() != header.len() {
            return Err(DataError::format(
                path,
                format!(
                    "line {line} has {} comma-separated fields but the header has {}",
                    record.len(),
                    header.len()
                ),
            ));
        }
        let fields = csv_fields(path, &record, line)?;
        rows.push(TableRow {
            line,
            text: fields[text_col].to_string(),
            text_pair: pair_col.map(|c| fields[c].to_string()),
            label: fields[label_col].trim().to_string(),
        });
    }
    Ok(rows)
}

/// What kind of JSON value `value` is, for error messages.
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn parse_jsonl(path: &Path, bytes: &[u8], columns: &TableColumns) -> Result<Vec<TableRow>> {
    let mut rows = Vec::new();
    for line in utf8_lines(path, bytes) {
        let (line_no, line) = line?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            DataError::format(path, format!("line {line_no} is not valid JSON: {e}"))
        })?;
        let serde_json::Value::Object(object) = value else {
            return Err(DataError::format(
                path,
                format!(
                    "line {line_no} is not a JSON object but {}",
                    json_kind(&value)
                ),
            ));
        };
        let get = |key: &str| {
            object.get(key).ok_or_else(|| {
                let keys: Vec<&String> = object.keys().collect();
                DataError::format(
                    path,
                    format!("line {line_no} has no key {key:?}; its keys: {keys:?}"),
                )
            })
        };
        let text = |key: &str| match get(key)? {
            serde_json::Value::String(s) => Ok(s.clone()),
            other => Err(DataError::format(
                path,
                format!(
                    "line {line_no}: key {key:?} holds {}, not a string",
                    json_kind(other)
                ),
            )),
        };
        let text_value = text(&columns.text)?;
        let pair_value = columns.text_pair.as_deref().map(text).transpose()?;
        let label = match get(&columns.label)? {
            serde_json::Value::String(s) => s.trim().to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            other => {
                return Err(DataError::format(
                    path,
                    format!(
                        "line {line_no}: key {:?} holds {} ({other}); a label must be a \
                         string, an integer or a boolean",
                        columns.label,
                        json_kind(other)
                    ),
                ));
            }
        };
        rows.push(TableRow {
            line: line_no,
            text: text_value,
            text_pair: pair_value,
            label,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `content` to a file `name` in a fresh temporary folder.
    fn write(name: &str, content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    fn cols() -> TableColumns {
        TableColumns::new("text", "label")
    }

    /// The message of the error of reading `content` as `format` with `columns`.
    fn read_err(name: &str, content: &[u8], format: TableFormat, columns: &TableColumns) -> String {
        let (_dir, path) = write(name, content);
        let err = read_table(&path, format, columns).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(name), "error does not name the file: {msg}");
        msg
    }

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn csv_reads_quoted_newline_comma_and_doubled_quote() {
        let (_dir, path) = write(
            "train.csv",
            b"\xef\xbb\xbfid,text,label\r\n\
              1,\"first line\nsecond, with comma\",pos\r\n\
              \r\n\
              2,\"she said \"\"hi\"\"\", neg \r\n\
              3,plain 5\" screen,pos\n",
        );
        let table = read_table(&path, TableFormat::Csv, &cols()).unwrap();
        assert_eq!(table.len(), 3);
        assert_eq!(table.rows[0].text, "first line\nsecond, with comma");
        assert_eq!(table.rows[0].line, 2);
        assert_eq!(table.rows[1].text, "she said \"hi\"");
        assert_eq!(table.rows[1].label, "neg");
        assert_eq!(table.rows[1].line, 5);
        assert_eq!(table.rows[2].text, "plain 5\" screen");
        assert_eq!(table.rows[2].line, 6);
        assert_eq!(table.distinct_labels(), labels(&["neg", "pos"]));
        let ds = table.into_dataset(&labels(&["neg", "pos"])).unwrap();
        assert_eq!(ds.label_counts(), vec![1, 2]);
        assert_eq!(ds.examples[1], TextExample::new("she said \"hi\"", 0));
    }

    #[test]
    fn jsonl_reads_integer_string_and_bool_labels() {
        let (_dir, path) = write(
            "data.jsonl",
            b"{\"text\": \"a\", \"label\": 1, \"extra\": [1, 2]}\n\
              \n   \n\
              {\"label\": \" 2 \", \"text\": \"b \\\"q\\\"\\n\"}\r\n\
              {\"text\": \"c\", \"label\": true}\n",
        );
        let table = read_table(&path, TableFormat::Jsonl, &cols()).unwrap();
        let got: Vec<(usize, &str, &str)> = table
            .rows
            .iter()
            .map(|r| (r.line, r.text.as_str(), r.label.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![(1, "a", "1"), (4, "b \"q\"\n", "2"), (5, "c", "true")]
        );
        // Not all integers: string order.
        assert_eq!(table.distinct_labels(), labels(&["1", "2", "true"]));
    }

    #[test]
    fn tsv_reads_pair_column() {
        let (_dir, path) = write(
            "pairs.tsv",
            b"id\tsentence1\tsentence2\tlabel\n0\tA man.\tA person.\tyes\n\n1\tA cat.\tNo cat.\t no\n",
        );
        let columns = TableColumns::new("sentence1", "label").with_pair("sentence2");
        let table = read_table(&path, TableFormat::Tsv, &columns).unwrap();
        assert_eq!(table.rows[1].line, 4);
        assert_eq!(table.rows[1].text_pair.as_deref(), Some("No cat."));
        let ds = table.into_dataset(&labels(&["no", "yes"])).unwrap();
        assert_eq!(ds.examples[0].text, "A man.");
        assert_eq!(ds.examples[0].text_pair.as_deref(), Some("A person."));
        assert_eq!(ds.examples[0].label, 1);
        assert_eq!(ds.examples[1].label, 0);
        assert_eq!(ds.label_names, labels(&["no", "yes"]));
    }

    #[test]
    fn fifteen_integer_labels_sort_numerically() {
        let mut content = String::from("text,label\n");
        for class in (0..15).rev() {
            content.push_str(&format!("example of class {class},{class}\n"));
        }
        let (_dir, path) = write("fifteen.csv", content.as_bytes());
        let table = read_table(&path, TableFormat::Csv, &cols()).unwrap();
        let distinct = table.distinct_labels();
        let expected: Vec<String> = (0..15).map(|c| c.to_string()).collect();
        assert_eq!(distinct, expected);
        let ds = table.into_dataset(&distinct).unwrap();
        assert_eq!(ds.examples[0].label, 14);
        assert_eq!(ds.examples[12].label, 2);
        assert_eq!(ds.n_classes(), 15);
    }

    #[test]
    fn sort_labels_numeric_or_string_order() {
        let s = |v: &[&str]| sort_labels(v.iter().map(|x| x.to_string()));
        assert_eq!(
            s(&["10", "2", "-1", "2", "07", "7"]),
            labels(&["-1", "2", "07", "7", "10"])
        );
        assert_eq!(
            s(&["spam", "ham", "10", "2", "ham"]),
            labels(&["10", "2", "ham", "spam"])
        );
        assert_eq!(
            s(&["positive", "negative", "neutral"]),
            labels(&["negative", "neutral", "positive"])
        );
        assert!(s(&[]).is_empty());
    }

    #[test]
    fn string_labels_in_a_file_sort_lexically() {
        let (_dir, path) = write(
            "moods.tsv",
            b"text\tlabel\nx\tpositive\ny\tnegative\nz\tneutral\nw\tnegative\n",
        );
        let table = read_table(&path, TableFormat::Tsv, &cols()).unwrap();
        assert_eq!(
            table.distinct_labels(),
            labels(&["negative", "neutral", "positive"])
        );
    }

    #[test]
    fn missing_file_is_missing_dataset() {
        let dir = tempfile::tempdir().unwrap();
        for format in TableFormat::ALL {
            let err = read_table(dir.path().join("nope.csv"), format, &cols()).unwrap_err();
            assert!(matches!(err, DataError::MissingDataset { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains("nope.csv") && msg.contains("no such file"),
                "{msg}"
            );
        }
    }

    #[test]
    fn empty_file_or_header_only_holds_no_examples() {
        for format in TableFormat::ALL {
            let msg = read_err("empty.txt", b"", format, &cols());
            assert!(msg.contains("holds no examples"), "{format}: {msg}");
        }
        for format in [TableFormat::Tsv, TableFormat::Csv] {
            let msg = read_err("empty.txt", b"\n\n", format, &cols());
            assert!(
                msg.contains("holds no examples") && msg.contains("no header"),
                "{msg}"
            );
        }
        let msg = read_err("head.tsv", b"text\tlabel\n\n", TableFormat::Tsv, &cols());
        assert!(msg.contains("holds no examples"), "{msg}");
        let msg = read_err("head.csv", b"text,label\r\n", TableFormat::Csv, &cols());
        assert!(msg.contains("holds no examples"), "{msg}");
        let msg = read_err("blank.jsonl", b"\n  \n", TableFormat::Jsonl, &cols());
        assert!(msg.contains("holds no examples"), "{msg}");
    }

    #[test]
    fn missing_column_names_it_and_lists_columns() {
        let columns = TableColumns::new("text", "label").with_pair("hypothesis");
        let msg = read_err("a.tsv", b"text\tlabel\nx\t0\n", TableFormat::Tsv, &columns);
        assert!(
            msg.contains("\"hypothesis\"") && msg.contains("[\"text\", \"label\"]"),
            "{msg}"
        );
        let msg = read_err("a.csv", b"sentence,label\nx,0\n", TableFormat::Csv, &cols());
        assert!(
            msg.contains("\"text\"") && msg.contains("[\"sentence\", \"label\"]"),
            "{msg}"
        );
        let msg = read_err(
            "a.jsonl",
            b"{\"text\": \"x\", \"label\": 0}\n{\"text\": \"y\", \"lbl\": 1}\n",
            TableFormat::Jsonl,
            &cols(),
        );
        assert!(
            msg.contains("line 2")
                && msg.contains("\"label\"")
                && msg.contains("[\"lbl\", \"text\"]"),
            "{msg}"
        );
    }

    #[test]
    fn empty_text_or_pair_is_an_error() {
        let msg = read_err(
            "t.tsv",
            b"text\tlabel\nok\t0\n  \t1\n",
            TableFormat::Tsv,
            &cols(),
        );
        assert!(
            msg.contains("line 3") && msg.contains("\"text\"") && msg.contains("empty"),
            "{msg}"
        );
        let columns = TableColumns::new("a", "label").with_pair("b");
        let msg = read_err(
            "t.csv",
            b"a,b,label\nx,y,0\nx,\" \",1\n",
            TableFormat::Csv,
            &columns,
        );
        assert!(
            msg.contains("line 3") && msg.contains("\"b\"") && msg.contains("empty"),
            "{msg}"
        );
        let msg = read_err(
            "t.jsonl",
            b"{\"text\": \"\\t\", \"label\": 0}\n",
            TableFormat::Jsonl,
            &cols(),
        );
        assert!(
            msg.contains("line 1") && msg.contains("\"text\"") && msg.contains("empty"),
            "{msg}"
        );
        let msg = read_err("l.csv", b"text,label\nx, \n", TableFormat::Csv, &cols());
        assert!(
            msg.contains("line 2") && msg.contains("label") && msg.contains("empty"),
            "{msg}"
        );
    }

    #[test]
    fn invalid_utf8_names_line() {
        let msg = read_err(
            "u.tsv",
            b"text\tlabel\nok\t1\nbad \xff\t0\n",
            TableFormat::Tsv,
            &cols(),
        );
        assert!(msg.contains("line 3") && msg.contains("UTF-8"), "{msg}");
        // The bad byte is on the third line of a row starting at line 2.
        let msg = read_err(
            "u.csv",
            b"label,text\n0,\"one\ntwo\nbad \xff\"\n",
            TableFormat::Csv,
            &cols(),
        );
        assert!(msg.contains("line 4") && msg.contains("UTF-8"), "{msg}");
        let msg = read_err(
            "u.jsonl",
            b"{\"text\": \"a\", \"label\": 0}\n{\"text\": \"\xc3\", \"label\": 0}\n",
            TableFormat::Jsonl,
            &cols(),
        );
        assert!(msg.contains("line 2") && msg.contains("UTF-8"), "{msg}");
    }

    #[test]
    fn malformed_csv_quotes_name_line() {
        let msg = read_err(
            "q.csv",
            b"text,label\nfine,0\n\"never closed,1\nmore,0\n",
            TableFormat::Csv,
            &cols(),
        );
        assert!(
            msg.contains("line 3") && msg.contains("never closed"),
            "{msg}"
        );
        let msg = read_err(
            "q.csv",
            b"text,label\n\"multi\nline\",0\n\"say \"hi\" now\",1\n",
            TableFormat::Csv,
            &cols(),
        );
        assert!(
            msg.contains("line 4") && msg.contains("malformed quote"),
            "{msg}"
        );
        assert!(msg.contains("'h'") && msg.contains("doubled"), "{msg}");
    }

    #[test]
    fn wrong_field_count_names_line() {
        let msg = read_err(
            "f.tsv",
            b"text\tlabel\ngood\t1\nhas\ta tab\t0\n",
            TableFormat::Tsv,
            &cols(),
        );
        assert!(
            msg.contains("line 3 has 3 tab-separated fields") && msg.contains("header has 2"),
            "{msg}"
        );
        let msg = read_err(
            "f.csv",
            b"text,label\n\"a, b\",1\nno comma\n",
            TableFormat::Csv,
            &cols(),
        );
        assert!(
            msg.contains("line 3 has 1 comma-separated fields") && msg.contains("header has 2"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_label_names_file_line_and_known_labels() {
        let (_dir, path) = write(
            "dev.jsonl",
            b"{\"text\": \"a\", \"label\": 0}\n\n{\"text\": \"b\", \"label\": 7}\n",
        );
        let table = read_table(&path, TableFormat::Jsonl, &cols()).unwrap();
        let err = table.into_dataset(&labels(&["0", "1"])).unwrap_err();
        match &err {
            DataError::UnknownLabel {
                line, label, known, ..
            } => {
                assert_eq!((*line, label.as_str()), (3, "7"));
                assert_eq!(known, &labels(&["0", "1"]));
            }
            other => panic!("expected UnknownLabel, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("dev.jsonl") && msg.contains("line 3") && msg.contains("\"0\", \"1\""),
            "{msg}"
        );
    }

    #[test]
    fn duplicate_labels_are_invalid_input() {
        let (_dir, path) = write("d.tsv", b"text\tlabel\nx\ta\n");
        let table = read_table(&path, TableFormat::Tsv, &cols()).unwrap();
        let err = table.into_dataset(&labels(&["a", "b", "a"])).unwrap_err();
        assert!(matches!(err, DataError::InvalidInput { .. }), "{err:?}");
        assert!(err.to_string().contains("d.tsv"), "{err}");
    }

    #[test]
    fn jsonl_rejects_bad_lines_and_types() {
        let cases: [(&[u8], &[&str]); 7] = [
            (b"[1, 2]\n", &["line 1", "not a JSON object", "an array"]),
            (
                b"{\"text\": \"a\", \"label\": 0}\n{\"text\": \"a\",\n",
                &["line 2", "not valid JSON"],
            ),
            (
                b"{\"text\": \"a\", \"label\": null}\n",
                &["line 1", "\"label\"", "null"],
            ),
            (
                b"{\"text\": \"a\", \"label\": 1.5}\n",
                &["line 1", "\"label\"", "a number"],
            ),
            (
                b"{\"text\": \"a\", \"label\": [\"x\"]}\n",
                &["line 1", "\"label\"", "an array"],
            ),
            (
                b"{\"text\": 3, \"label\": 0}\n",
                &["line 1", "\"text\"", "a number, not a string"],
            ),
            (
                b"{\"text\": null, \"label\": 0}\n",
                &["line 1", "\"text\"", "null, not a string"],
            ),
        ];
        for (content, needles) in cases {
            let msg = read_err("bad.jsonl", content, TableFormat::Jsonl, &cols());
            for needle in needles {
                assert!(msg.contains(needle), "missing {needle:?} in {msg}");
            }
        }
    }

    #[test]
    fn arbitrary_content_never_panics() {
        // Random mixes of the bytes that matter to the three parsers, behind a valid header.
        const PIECES: [&[u8]; 16] = [
            b"\"",
            b",",
            b"\t",
            b"\n",
            b"\r",
            b"{",
            b"}",
            b":",
            b"\"text\"",
            b"\"label\"",
            b"a",
            b"0",
            b" ",
            b"\xff",
            b"\xc3",
            b"\xef\xbb\xbf",
        ];
        let columns = TableColumns::new("text", "label").with_pair("pair");
        let path = Path::new("fuzz.txt");
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) as usize
        };
        for _ in 0..400 {
            for format in TableFormat::ALL {
                let mut content: Vec<u8> = match format {
                    TableFormat::Tsv => b"text\tpair\tlabel\n".to_vec(),
                    TableFormat::Csv => b"text,pair,label\n".to_vec(),
                    TableFormat::Jsonl => Vec::new(),
                };
                for _ in 0..next() % 40 {
                    content.extend_from_slice(PIECES[next() % PIECES.len()]);
                }
                if let Ok(rows) = parse_rows(path, &content, format, &columns) {
                    for row in &rows {
                        assert!(row.line >= 1, "{format}: {content:?}");
                    }
                    let table = RawTable {
                        path: path.to_path_buf(),
                        rows,
                    };
                    let labels = table.distinct_labels();
                    assert!(table.into_dataset(&labels).is_ok());
                }
            }
        }
    }

    #[test]
    fn format_names_parse_and_serialize() {
        for format in TableFormat::ALL {
            assert_eq!(format.to_string().parse::<TableFormat>().unwrap(), format);
            let json = serde_json::to_string(&format).unwrap();
            assert_eq!(json, format!("\"{format}\""));
            assert_eq!(serde_json::from_str::<TableFormat>(&json).unwrap(), format);
        }
        assert_eq!(" CSV ".parse::<TableFormat>().unwrap(), TableFormat::Csv);
        assert!("xlsx".parse::<TableFormat>().is_err());
        assert_eq!(
            TableFormat::from_path("a/b.JSONL"),
            Some(TableFormat::Jsonl)
        );
        assert_eq!(TableFormat::from_path("b.tsv"), Some(TableFormat::Tsv));
        assert_eq!(TableFormat::from_path("b.txt"), None);
    }
}
