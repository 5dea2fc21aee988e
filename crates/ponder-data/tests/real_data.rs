//! Checks against the real data sets fetched by `scripts/fetch-data.sh` into `data/` at the
//! workspace root. Each test prints a note and returns when its data set is absent (the
//! only tests of this crate allowed to skip).

use std::path::PathBuf;

use ponder_data::{
    FASHION_MNIST_CLASS_NAMES, TextTokenizer, TokenBatch, load_fashion_mnist, load_spam_assassin,
    split_indices,
};

fn data_dir(name: &str) -> Option<PathBuf> {
    // the folder cargo runs the test from, not the one it was compiled in (a build
    // folder shared between clones may hold a binary built in another clone)
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../../data")
        .join(name);
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "note: {} is absent, skipping (run `scripts/fetch-data.sh` to fetch it)",
            dir.display()
        );
        None
    }
}

#[test]
fn fashion_mnist_counts() {
    let Some(dir) = data_dir("fashion-mnist") else {
        return;
    };
    let data = load_fashion_mnist(&dir).expect("load Fashion-MNIST");
    assert_eq!(data.train_images.n_images, 60_000);
    assert_eq!(data.test_images.n_images, 10_000);
    assert_eq!(
        (data.train_images.n_rows, data.train_images.n_cols),
        (28, 28)
    );
    assert_eq!(data.train_images.pixels.len(), 60_000 * 784);
    assert_eq!(FASHION_MNIST_CLASS_NAMES.len(), 10);
    // Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
    let mut train_counts = [0usize; 10];
    for &l in &data.train_labels {
        train_counts[usize::from(l)] += 1;
    }
    let mut test_counts = [0usize; 10];
    for &l in &data.test_labels {
        test_counts[usize::from(l)] += 1;
    }
    assert_eq!(train_counts, [6000; 10]);
    assert_eq!(test_counts, [1000; 10]);

    let batch = data.test().batch(&[0, 1, 2]).expect("batch");
    assert_eq!(batch.shape(), [3, 1, 28, 28]);
    assert!(batch.pixels.iter().all(|p| (0.0..=1.0).contains(p)));
    assert!(batch.pixels.iter().any(|&p| p > 0.5));
}

#[test]
fn spam_assassin_counts() {
    let Some(dir) = data_dir("spamassassin") else {
        return;
    };
    let data = load_spam_assassin(&dir, 4096).expect("load SpamAssassin");
    assert_eq!(data.len(), 6046);
    assert_eq!(data.label_names, vec!["ham", "spam"]);
    assert_eq!(data.label_counts(), vec![4150, 1896]);
    assert!(data.examples.iter().all(|e| e.text.len() <= 4096));
    let with_subject = data
        .examples
        .iter()
        .filter(|e| e.text.starts_with("Subject:"))
        .count();
    assert!(
        with_subject > 6000,
        "only {with_subject} texts start with a subject"
    );
    // Routing headers are dropped; only a few bodies quote a forwarded message's headers.
    assert!(data.examples.iter().all(|e| !e.text.starts_with("From ")));
    let with_routing = data
        .examples
        .iter()
        .filter(|e| e.text.contains("Return-Path: <"))
        .count();
    assert!(
        with_routing < 30,
        "{with_routing} texts still contain Return-Path headers"
    );
    let splits = split_indices(data.len(), 0.1, 0.1, 1).expect("split");
    assert_eq!(
        splits.train.len() + splits.valid.len() + splits.test.len(),
        6046
    );
}

#[test]
fn minilm_tokenizer_json_and_vocab_agree() {
    let Some(dir) = data_dir("all-minilm-l6-v2") else {
        return;
    };
    let from_json = TextTokenizer::from_file(dir.join("tokenizer.json")).expect("tokenizer.json");
    let from_vocab = TextTokenizer::from_file(dir.join("vocab.txt")).expect("vocab.txt");
    assert_eq!(from_json.vocab_size(), 30_522);
    assert_eq!(from_vocab.vocab_size(), 30_522);
    assert_eq!(from_json.pad_id().unwrap(), 0);
    assert_eq!(from_json.cls_id().unwrap(), 101);
    // bert-base-uncased ids.
    let e = from_json.encode("Hello world", 128).unwrap();
    assert_eq!(e.ids, vec![101, 7592, 2088, 102]);
    for text in [
        "Hello, World! Unaffable naïve café [MASK] tokens",
        "Subject: FREE $$$ money!!! click http://example.com/x?y=1 now",
        "   multiple   spaces\tand\nnewlines 12345 3.14 e-mail",
    ] {
        let a = from_json.encode(text, 128).unwrap();
        let b = from_vocab.encode(text, 128).unwrap();
        assert_eq!(a, b, "{text}");
        let p = from_json.encode_pair(text, "second part", 12).unwrap();
        assert_eq!(p, from_vocab.encode_pair(text, "second part", 12).unwrap());
        assert_eq!(p.len(), 12);
        assert_eq!(p.ids.last(), Some(&102));
    }
    // Padding is off: lengths differ until a batch pads them.
    let a = from_json.encode("short", 128).unwrap();
    let b = from_json
        .encode("a somewhat longer sentence here", 128)
        .unwrap();
    assert!(a.len() < b.len());
    let batch = TokenBatch::from_encoded(&[&a, &b], vec![0, 1], 0).unwrap();
    assert_eq!(batch.seq_len, b.len());
}
