//! Tests of the table readers on small files written by each test.

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
        msg.contains("line 2") && msg.contains("\"label\"") && msg.contains("[\"lbl\", \"text\"]"),
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
