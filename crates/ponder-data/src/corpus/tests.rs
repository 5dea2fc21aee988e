//! Tests of the corpus readers on small files (and a small byte-level BPE) written by
//! each test.

use super::*;
use tokenizers::Tokenizer;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

/// GPT-2's map from bytes to printable characters.
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut extra = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    let mut out = vec!['\0'; 256];
    for (b, c) in printable.iter().zip(&chars) {
        out[*b as usize] = char::from_u32(*c).unwrap();
    }
    out
}

/// A byte-level BPE (every byte, and merges of words and of blanks: `Ġ` is the
/// blank, `Ċ` the newline) saved as `tokenizer.json`.
fn bpe_file(dir: &Path) -> PathBuf {
    let mut vocab: Vec<String> = byte_chars().iter().map(char::to_string).collect();
    let merges: Vec<(String, String)> = [
        ("t", "h"),
        ("th", "e"),
        ("Ġ", "the"),
        ("o", "r"),
        ("Ġ", "b"),
        ("Ġb", "e"),
        ("Ġ", "Ġ"),
        ("Ġ", "Ċ"),
        ("Ċ", "Ġ"),
        ("Ċ", "Ċ"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    for (a, b) in &merges {
        vocab.push(format!("{a}{b}"));
    }
    let vocab: Vocab = vocab
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .unwrap();
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    let path = dir.join("tokenizer.json");
    tokenizer.save(&path, false).unwrap();
    path
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn chars_of(c: &LmCorpus) -> &CharVocab {
    match &c.vocab {
        LmVocab::Chars(v) => v,
        LmVocab::Tokenizer(_) => panic!("not characters"),
    }
}

#[test]
fn files_and_folders_with_characters() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "train/b.txt", "bbb\r\n");
    write(dir.path(), "train/a.txt", "aaa\n");
    write(dir.path(), "train/notes.md", "ignored");
    let valid = write(dir.path(), "valid.txt", "ab\nba");
    let test = write(dir.path(), "test.txt", "b\n");
    let c = load_text_corpus(
        &dir.path().join("train"),
        &valid,
        Some(&test),
        VocabSource::Chars,
    )
    .unwrap();
    let v = chars_of(&c);
    assert_eq!(v.chars(), &['\n', 'a', 'b']);
    assert_eq!(v.decode(&c.train.ids), "aaa\n\n\nbbb\n");
    assert_eq!(c.train.files, vec!["a.txt", "b.txt"]);
    assert_eq!(v.decode(&c.valid.ids), "ab\nba");
    let t = c.test.as_ref().unwrap();
    assert_eq!((t.ids.clone(), t.chars), (vec![2, 0], 2));
    assert_eq!(c.valid.chars_covered(1..4), 3.0);
    assert_eq!(c.vocab.unit(), "characters");
    assert_eq!(c.vocab.decode(&c.valid.ids).unwrap(), "ab\nba");
}

#[test]
fn an_unknown_validation_character_names_file_line_and_character() {
    let dir = tempfile::tempdir().unwrap();
    let train = write(dir.path(), "train.txt", "abc\nabc\n");
    let valid = write(dir.path(), "valid.txt", "abc\nabQ\n");
    let err = load_text_corpus(&train, &valid, None, VocabSource::Chars)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("valid.txt") && err.contains("line 2") && err.contains("'Q'"),
        "{err}"
    );
    // ... which the vocabulary of every split accepts
    let c = load_text_corpus(&train, &valid, None, VocabSource::CharsOfAllSplits).unwrap();
    assert_eq!(c.vocab.len(), 5);
}

#[test]
fn bad_inputs_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.txt", "some text\n");
    let empty = write(dir.path(), "empty.txt", "");
    let check = |train: &Path, valid: &Path, vocab: VocabSource, needles: &[&str]| {
        let err = load_text_corpus(train, valid, None, vocab)
            .unwrap_err()
            .to_string();
        for n in needles {
            assert!(err.contains(n), "{err} lacks {n}");
        }
    };
    check(&empty, &good, VocabSource::Chars, &["empty.txt", "empty"]);
    check(&good, &empty, VocabSource::Chars, &["empty.txt", "empty"]);
    let bad = dir.path().join("latin1.txt");
    std::fs::write(&bad, b"fine\nalso fine\ncaf\xe9\n").unwrap();
    check(
        &bad,
        &good,
        VocabSource::Chars,
        &["latin1.txt", "line 3", "UTF-8"],
    );
    let folder = dir.path().join("no-txt");
    std::fs::create_dir_all(&folder).unwrap();
    write(&folder, "a.md", "text");
    check(
        &folder,
        &good,
        VocabSource::Chars,
        &["no-txt", "no .txt files"],
    );
    check(
        &dir.path().join("missing"),
        &good,
        VocabSource::Chars,
        &["missing"],
    );
    let broken = write(dir.path(), "tokenizer.json", "{\"model\": 3");
    check(
        &good,
        &good,
        VocabSource::Tokenizer(broken),
        &["tokenizer.json", "parse"],
    );
    check(
        &good,
        &good,
        VocabSource::Tokenizer(dir.path().join("none.json")),
        &["none.json"],
    );
    // a tokenizer that cannot encode a word (WordPiece without its unknown token)
    let no_unk = write(
        dir.path(),
        "no-unk.json",
        r###"{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordPiece", "unk_token": "[UNK]",
                      "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
                      "vocab": {"some": 0, "text": 1}}}"###,
    );
    let other = write(dir.path(), "other.txt", "some text\nsome other text\n");
    check(
        &good,
        &other,
        VocabSource::Tokenizer(no_unk),
        &["no-unk.json", "other.txt", "line 1"],
    );
    // a split whose text has no token
    let blank = write(dir.path(), "blank.txt", "   \n");
    let wordpiece = write(
        dir.path(),
        "vocab.txt",
        "[PAD]\n[UNK]\n[CLS]\n[SEP]\nsome\ntext\n",
    );
    check(
        &good,
        &blank,
        VocabSource::Tokenizer(wordpiece),
        &["validation", "blank.txt", "no tokens"],
    );
}

/// A text whose lines start with words, blanks, tabs and nothing, with runs of
/// blanks and blank lines.
fn tricky_text() -> String {
    let mut text = String::new();
    for i in 0..300 {
        match i % 6 {
            0 => text.push_str("the best or the rest\n"),
            1 => text.push_str("  indented   by two, then three\n"),
            2 => text.push_str("\n\n"),
            3 => text.push_str("\tthe tab\n"),
            4 => text.push_str("be or not be   \n"),
            _ => text.push_str(&format!("line {i} — ünïcödé\n")),
        }
    }
    text
}

#[test]
fn chunked_encoding_equals_encoding_the_whole_text() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = bpe_file(dir.path());
    let text = tricky_text();
    let train = write(dir.path(), "train.txt", &text);
    let valid = write(dir.path(), "valid.txt", &text);
    let whole = TextTokenizer::from_file(&tokenizer).unwrap();
    let expected = whole.inner().encode(text.as_str(), false).unwrap();
    for chunk in [1, 7, 64, 1000, DEFAULT_CHUNK_BYTES] {
        let c = CorpusFiles::new(
            vec![train.clone()],
            vec![valid.clone()],
            VocabSource::Tokenizer(tokenizer.clone()),
        )
        .with_chunk_bytes(chunk)
        .load()
        .unwrap();
        assert_eq!(c.train.ids, expected.get_ids(), "chunks of {chunk} bytes");
        assert_eq!(c.valid.ids, expected.get_ids());
        let n = text.chars().count();
        assert_eq!((c.train.chars, c.valid.chars), (n, n));
        // every character is covered by exactly one token
        assert!(c.train.token_chars.is_empty());
        assert_eq!(c.valid.token_chars.len(), c.valid.ids.len());
        assert_eq!(c.valid.chars_covered(0..c.valid.len()), n as f64);
        assert_eq!(
            c.vocab.decode(&c.valid.ids).unwrap(),
            text,
            "byte-level BPE decodes back"
        );
    }
    // merges did apply: fewer tokens than bytes
    assert!(expected.get_ids().len() < text.len());
}

#[test]
fn cuts_elsewhere_would_change_the_ids() {
    // why the rule: a cut before blanks, or after blanks and a newline, is not the
    // text encoded whole
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = TextTokenizer::from_file(bpe_file(dir.path())).unwrap();
    let ids = |t: &str| {
        tokenizer
            .inner()
            .encode(t, false)
            .unwrap()
            .get_ids()
            .to_vec()
    };
    for (a, b) in [("a\n", "  b"), ("be   \n", "line"), ("a\n\n", "b")] {
        let whole = ids(&format!("{a}{b}"));
        assert_ne!(whole, [ids(a), ids(b)].concat(), "{a:?} + {b:?}");
    }
    assert_eq!(ids("the\nbe"), [ids("the\n"), ids("be")].concat());
}

#[test]
fn files_of_a_folder_are_joined_by_a_blank_line_for_tokenizers_too() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = bpe_file(dir.path());
    write(dir.path(), "train/1.txt", "the bore\n");
    write(dir.path(), "train/2.txt", "or the");
    let valid = write(dir.path(), "valid.txt", "be the\n");
    let c = load_text_corpus(
        &dir.path().join("train"),
        &valid,
        None,
        VocabSource::Tokenizer(tokenizer.clone()),
    )
    .unwrap();
    let t = TextTokenizer::from_file(&tokenizer).unwrap();
    let expected = t.inner().encode("the bore\n\n\nor the", false).unwrap();
    assert_eq!(c.train.ids, expected.get_ids());
    assert_eq!(c.train.chars, 17);
    assert_eq!(c.vocab.unit(), "tokens");
    assert!(c.vocab.describe().contains("tokenizer.json"));
    assert_eq!(c.vocab.encode("the").unwrap().len(), 1);
}

#[test]
fn wordpiece_counts_dropped_blanks_for_the_next_token() {
    let dir = tempfile::tempdir().unwrap();
    let vocab = write(
        dir.path(),
        "vocab.txt",
        "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\ncat\nsat\n##s\n.\n",
    );
    let train = write(dir.path(), "train.txt", "the cat sat.\n");
    let valid = write(dir.path(), "valid.txt", "the  cats sat.\n");
    let c = load_text_corpus(&train, &valid, None, VocabSource::Tokenizer(vocab)).unwrap();
    // the | ␣␣cat | s | ␣sat | . (+ the final newline)
    assert_eq!(c.valid.token_chars, vec![3, 5, 1, 4, 2]);
    assert_eq!(c.valid.chars, 15);
    assert_eq!(c.valid.chars_covered(1..3), 6.0);
    // the training split uses its mean characters per token
    assert!(c.train.token_chars.is_empty());
    assert_eq!(c.train.chars_covered(0..2), 2.0 * 13.0 / 4.0);
}

#[test]
fn windows_and_chars_per_token() {
    let split = CorpusSplit {
        ids: (0..10).collect(),
        chars: 20,
        token_chars: Vec::new(),
        files: vec![],
    };
    let w = split.windows(3, 0);
    assert_eq!(w.len(), 3);
    assert_eq!(w[1], &[3, 4, 5, 6]);
    assert_eq!(split.windows(3, 2).len(), 2);
    assert_eq!(split.chars_per_token(), 2.0);
    let c = LmCorpus::from_texts("abcabc", "cab");
    assert_eq!(c.vocab.len(), 3);
    assert_eq!(c.valid.ids, vec![2, 0, 1]);
    let err = c.train_windows(2, 8, 0).unwrap_err().to_string();
    assert!(err.contains("6 characters"), "{err}");
}
