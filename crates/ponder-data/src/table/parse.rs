//! The three parsers of [`read_table`](super::read_table): TSV (split on tabs), CSV
//! (the `csv` crate, with a check of its quoting first) and JSON lines (`serde_json`).

use std::path::Path;

use super::{TableColumns, TableRow};
use crate::error::{DataError, Result};

pub(super) const NO_HEADER: &str = "holds no examples: the file is empty (no header line)";

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

pub(super) fn parse_tsv(
    path: &Path,
    bytes: &[u8],
    columns: &TableColumns,
) -> Result<Vec<TableRow>> {
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

pub(super) fn parse_csv(
    path: &Path,
    bytes: &[u8],
    columns: &TableColumns,
) -> Result<Vec<TableRow>> {
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

pub(super) fn parse_jsonl(
    path: &Path,
    bytes: &[u8],
    columns: &TableColumns,
) -> Result<Vec<TableRow>> {
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
