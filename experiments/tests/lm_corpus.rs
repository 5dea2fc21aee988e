//! `ponder lm` on a text corpus of the user's: files and folders in `[data]` with
//! `format = "text"`, with characters or a `tokenizer.json`; bits per token and per
//! character in the results; resuming; and bad input answered with a clear error and no
//! run folder.

use std::path::{Path, PathBuf};

use ponder_experiments::lm::{CorpusFormat, LmExperiment};
use serde_json::Value;

mod common;
use common::{assert_clean_failure, ponder, stderr};

/// A tiny Mamba LM on `format = "text"` files (`TOKENIZER` and `TEST` are filled in).
const LM: &str = r#"name = "lm-corpus-test"
[data]
format = "text"
train = "corpus/train"
valid = "corpus/valid.txt"
TEST
tokenizer = "TOKENIZER"
[model]
d_model = 16
n_layers = 2
d_state = 4
[train]
steps = 6
batch_size = 4
seq_len = 16
warmup_steps = 2
eval_every = 3
eval_windows = 2
checkpoint_every = 3
[generate]
prompt = "the "
tokens = 12
memory_lengths = [4, 8]
"#;

const TRAIN_A: &str = "the bear or the boar, then the boat.\nthe oar bore the heat.\n";
const TRAIN_B: &str = "to be or not to be: the other one.\nthat the bee bore. the bank rests.\n";
const VALID: &str = "the boat bore the bear to the other bank.\nthe heat, then the rest.\n";

/// `DIR/corpus/{train/a.txt, train/b.txt, valid.txt, test.txt}`.
fn write_corpus(dir: &Path) {
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(corpus.join("train")).unwrap();
    std::fs::write(corpus.join("train/a.txt"), TRAIN_A.repeat(6)).unwrap();
    std::fs::write(corpus.join("train/b.txt"), TRAIN_B.repeat(6)).unwrap();
    std::fs::write(corpus.join("train/notes.md"), "not read").unwrap();
    std::fs::write(corpus.join("valid.txt"), VALID.repeat(3)).unwrap();
    std::fs::write(corpus.join("test.txt"), VALID.repeat(2)).unwrap();
}

fn write_config(dir: &Path, tokenizer: &str, test: bool) -> PathBuf {
    let text = LM.replace("TOKENIZER", tokenizer).replace(
        "TEST",
        if test {
            "test = \"corpus/test.txt\""
        } else {
            ""
        },
    );
    let path = dir.join("lm.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// GPT-2's map from bytes to printable characters.
fn byte_chars() -> Vec<char> {
    let mut bytes: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = bytes.clone();
    for b in 0..256u32 {
        if !bytes.contains(&b) {
            chars.push(256 + (bytes.len() as u32 - 188));
            bytes.push(b);
        }
    }
    let mut out = vec!['\0'; 256];
    for (b, c) in bytes.iter().zip(&chars) {
        out[*b as usize] = char::from_u32(*c).unwrap();
    }
    out
}

/// A byte-level BPE `tokenizer.json` (every byte, then `merges`; `Ġ` is the blank).
fn bpe_json(merges: &[(&str, &str)]) -> String {
    let mut vocab: Vec<String> = byte_chars().iter().map(char::to_string).collect();
    for (a, b) in merges {
        vocab.push(format!("{a}{b}"));
    }
    let vocab: serde_json::Map<String, Value> = vocab
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, Value::from(i)))
        .collect();
    let merges: Vec<String> = merges.iter().map(|(a, b)| format!("{a} {b}")).collect();
    let byte_level = serde_json::json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
    });
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": byte_level, "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges
        }
    })
    .to_string()
}

const MERGES: &[(&str, &str)] = &[
    ("t", "h"),
    ("th", "e"),
    ("Ġ", "the"),
    ("o", "r"),
    ("b", "e"),
    ("Ġ", "b"),
    ("e", "a"),
    ("Ġb", "o"),
];

fn results(run: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(run.join("results.json")).unwrap()).unwrap()
}

fn run_lm(dir: &Path, config: &Path, run: &Path) {
    let out = ponder(
        &[
            "lm",
            config.to_str().unwrap(),
            "--run-dir",
            run.to_str().unwrap(),
        ],
        dir,
    );
    assert!(out.status.success(), "stderr: {}", stderr(&out));
}

fn resume(dir: &Path, run: &Path) -> std::process::Output {
    ponder(&["lm", "--resume", run.to_str().unwrap()], dir)
}

#[test]
fn the_committed_text_preset_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/lm-text.toml");
    let e = LmExperiment::load(&path, &[]).unwrap();
    assert_eq!(e.data.form(), CorpusFormat::Text);
    assert!(e.data.uses_chars());
    assert!(e.data.train.is_some() && e.data.valid.is_some());
}

#[test]
fn characters_from_text_files_train_report_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let config = write_config(dir.path(), "chars", true);
    let run = dir.path().join("run");
    run_lm(dir.path(), &config, &run);
    for file in [
        "config.toml",
        "vocab.json",
        "model.bpk",
        "sample.txt",
        "results.md",
    ] {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    assert!(!run.join("tokenizer.json").exists());
    let r = results(&run);
    let (bpt, bpc) = (
        r["valid_bpt"].as_f64().unwrap(),
        r["valid_bpc"].as_f64().unwrap(),
    );
    assert!(bpt.is_finite() && bpt > 0.0, "{r}");
    assert_eq!(
        bpt, bpc,
        "characters: bits per token are bits per character"
    );
    assert_eq!(r["vocabulary"], "characters");
    assert_eq!(r["valid_tokens"], r["valid_chars"]);
    assert_eq!(r["valid_chars"], VALID.len() * 3);
    // the two training files, joined by a blank line
    assert_eq!(r["train_chars"], (TRAIN_A.len() + TRAIN_B.len()) * 6 + 2);
    let test = &r["test"];
    assert_eq!(test["files"][0], "test.txt");
    assert_eq!(test["bpt"], test["bpc"]);
    assert!(test["bpc"].as_f64().unwrap() > 0.0, "{r}");
    let sample = std::fs::read_to_string(run.join("sample.txt")).unwrap();
    assert!(
        sample.starts_with("the ") && sample.chars().count() == 16,
        "{sample:?}"
    );
    let curve: Value =
        serde_json::from_slice(&std::fs::read(run.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(curve[1]["valid_bpt"], curve[1]["valid_bpc"]);

    let again = resume(dir.path(), &run);
    assert!(again.status.success(), "stderr: {}", stderr(&again));
    assert_eq!(results(&run)["valid_bpc"], r["valid_bpc"]);

    // resuming on a corpus with other characters is refused
    std::fs::write(dir.path().join("corpus/train/c.txt"), "XYZ\n").unwrap();
    let out = resume(dir.path(), &run);
    assert_clean_failure(&out, &["other characters", "vocab.json"]);
}

#[test]
fn a_bpe_tokenizer_gives_bits_per_token_and_per_character() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let tokenizer = dir.path().join("bpe.json");
    std::fs::write(&tokenizer, bpe_json(MERGES)).unwrap();
    let config = write_config(dir.path(), "bpe.json", true);
    let run = dir.path().join("run");
    run_lm(dir.path(), &config, &run);
    assert!(run.join("tokenizer.json").is_file());
    assert!(!run.join("vocab.json").exists());
    let r = results(&run);
    assert_eq!(r["vocabulary"], "tokenizer bpe.json");
    assert_eq!(r["vocab_size"], 256 + MERGES.len());
    let (bpt, bpc) = (
        r["valid_bpt"].as_f64().unwrap(),
        r["valid_bpc"].as_f64().unwrap(),
    );
    let tokens = r["valid_tokens"].as_f64().unwrap();
    let chars = r["valid_chars"].as_f64().unwrap();
    assert!(tokens < chars, "merges apply: {r}");
    assert!(bpt.is_finite() && bpc.is_finite() && bpt > bpc, "{r}");
    let test = &r["test"];
    let covered = test["chars"].as_f64().unwrap();
    let ratio = test["bpt"].as_f64().unwrap() / test["bpc"].as_f64().unwrap();
    assert!(
        (ratio - covered / test["tokens"].as_f64().unwrap()).abs() < 1e-9,
        "{r}"
    );
    let sample = std::fs::read_to_string(run.join("sample.txt")).unwrap();
    assert!(sample.starts_with("the "), "{sample:?}");
    let md = std::fs::read_to_string(run.join("results.md")).unwrap();
    assert!(
        md.contains("bits/token") && md.contains("bits/char"),
        "{md}"
    );

    let again = resume(dir.path(), &run);
    assert!(again.status.success(), "stderr: {}", stderr(&again));

    // a resumed run must use the same tokenizer
    std::fs::write(&tokenizer, bpe_json(&MERGES[..3])).unwrap();
    let out = resume(dir.path(), &run);
    assert_clean_failure(&out, &["bpe.json", "tokenizer", "trained with"]);
}

#[test]
fn bad_corpora_fail_cleanly_and_leave_no_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_corpus(d);
    std::fs::write(d.join("bad-tokenizer.json"), "{\"model\": [").unwrap();
    std::fs::write(d.join("corpus/empty.txt"), "").unwrap();
    std::fs::write(d.join("corpus/latin1.txt"), b"good line\nna\xefve\n").unwrap();
    std::fs::write(d.join("corpus/short.txt"), "the heat\n").unwrap();
    std::fs::create_dir_all(d.join("corpus/no-text")).unwrap();
    std::fs::write(d.join("corpus/no-text/a.md"), "the bear").unwrap();
    let base = LM.replace("TOKENIZER", "chars").replace("TEST", "");
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            base.replace("corpus/valid.txt", "corpus/empty.txt"),
            vec!["empty.txt", "empty"],
        ),
        (
            base.replace("corpus/train", "corpus/latin1.txt"),
            vec!["latin1.txt", "line 2", "UTF-8"],
        ),
        (
            base.replace("corpus/train", "corpus/no-text"),
            vec!["no-text", "no .txt files"],
        ),
        (
            base.replace("\"chars\"", "\"bad-tokenizer.json\""),
            vec!["bad-tokenizer.json", "parse"],
        ),
        (
            base.replace("corpus/valid.txt", "corpus/short.txt"),
            vec!["train.seq_len", "short.txt", "fewer than one window"],
        ),
        (
            base.replace("prompt = \"the \"", "prompt = \"Zebra\""),
            vec!["generate.prompt", "'Z'"],
        ),
        (
            base.replace("format = \"text\"\n", "path = \"corpus\"\n"),
            vec!["data.train", "data.valid", "format"],
        ),
        (
            base.replace(
                "format = \"text\"\n",
                "format = \"text\"\nvalid_every = 3\n",
            ),
            vec!["data.valid_every", "Shakespeare"],
        ),
        (
            base.replace("corpus/valid.txt", "corpus/missing.txt"),
            vec!["missing.txt"],
        ),
    ];
    let config = d.join("bad.toml");
    for (i, (text, needles)) in cases.iter().enumerate() {
        std::fs::write(&config, text).unwrap();
        let run = d.join(format!("run-{i}"));
        let out = ponder(
            &[
                "lm",
                config.to_str().unwrap(),
                "--run-dir",
                run.to_str().unwrap(),
            ],
            d,
        );
        assert_clean_failure(&out, needles);
        assert!(!run.exists(), "case {i} left a run folder");
    }
}

const TOKEN_EXIT: &str = r#"name = "token-exit-text"
[data]
format = "text"
train = "corpus/train"
valid = "corpus/valid.txt"
tokenizer = "TOKENIZER"
[[backbones]]
name = "mamba"
lm = "lm.toml"
run = "lm-run"
skip_rule = "recompute"
[classifier_train]
steps = 3
batch_size = 4
seq_len = 16
valid_windows = 2
[token_exit]
exits = [1]
always_run_last = [false]
classifiers = [{ kind = "linear", top_k = 1 }]
classifier_thresholds = [0.5]
softmax_thresholds = [0.5]
margin_thresholds = [0.5]
saturation_thresholds = [0.9]
prompt_len = 4
gen_len = 6
calibration_sequences = 4
test_sequences = 3
batch_size = 2
target_consistency = 0.9
ltt_epsilon = 0.2
ablation_threshold = 0.5
"#;

#[test]
fn token_exit_runs_on_tokenizer_ids_and_refuses_another_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_corpus(d);
    std::fs::write(d.join("bpe.json"), bpe_json(MERGES)).unwrap();
    write_config(d, "bpe.json", false);
    let config = d.join("token-exit.toml");
    std::fs::write(&config, TOKEN_EXIT.replace("TOKENIZER", "bpe.json")).unwrap();
    let run = d.join("run");
    let out = ponder(
        &[
            "compare",
            config.to_str().unwrap(),
            "--run-dir",
            run.to_str().unwrap(),
        ],
        d,
    );
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    // the language model was trained first, on the tokenizer's ids
    assert!(d.join("lm-run/tokenizer.json").is_file());
    let r = results(&run);
    assert_eq!(r["vocabulary"], "tokenizer bpe.json");
    let md = std::fs::read_to_string(run.join("results.md")).unwrap();
    assert!(md.contains("bits/token"), "{md}");

    // the same language model with a character corpus: refused, and no run folder left
    std::fs::write(&config, TOKEN_EXIT.replace("TOKENIZER", "chars")).unwrap();
    let other = d.join("run-chars");
    let out = ponder(
        &[
            "compare",
            config.to_str().unwrap(),
            "--run-dir",
            other.to_str().unwrap(),
        ],
        d,
    );
    assert_clean_failure(&out, &["lm-run", "tokenizer", "characters"]);
    assert!(!other.exists());
    // a corpus the sequences do not fit is refused before the run folder is made
    let short = TOKEN_EXIT
        .replace("TOKENIZER", "bpe.json")
        .replace("calibration_sequences = 4", "calibration_sequences = 400");
    std::fs::write(&config, short).unwrap();
    let none = d.join("run-short");
    let out = ponder(
        &[
            "compare",
            config.to_str().unwrap(),
            "--run-dir",
            none.to_str().unwrap(),
        ],
        d,
    );
    assert_clean_failure(&out, &["token_exit.calibration_sequences"]);
    assert!(!none.exists());
}
