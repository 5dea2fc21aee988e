//! `ponder` on the user's own data: every committed `own-*.toml` example runs on small
//! files written here at the paths it names (CSV with quotes and newlines, sentence
//! pairs in TSV, a 15-class JSON-lines set, a 3-channel image folder of PNG and JPEG
//! files of different sizes, 32×32 IDX files); the class order found in the training
//! file is kept in the run and reused by `eval` after the file changed; bad data is a
//! clear error (exit code 1, the file and line or key named) that leaves no run folder.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{assert_clean_failure, ponder, stderr};

const WORDS: [&str; 16] = [
    "the", "cat", "dog", "sat", "ran", "on", "mat", "good", "bad", "very", "a", "day", "red",
    "blue", "sky", "sea",
];

/// The committed example experiment `name`.
fn config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs")
        .join(name)
}

/// A WordPiece vocabulary at the path the examples name
/// (`data/all-minilm-l6-v2/vocab.txt`), under `dir`.
fn write_vocab(dir: &Path) {
    let folder = dir.join("data/all-minilm-l6-v2");
    std::fs::create_dir_all(&folder).unwrap();
    let mut text = String::from("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n");
    for w in WORDS {
        let _ = writeln!(text, "{w}");
    }
    std::fs::write(folder.join("vocab.txt"), text).unwrap();
}

/// A deterministic sentence of 3–6 words; the class's own word is put in front so that
/// the classes can be learnt.
fn sentence(i: usize, class_word: &str) -> String {
    let mut state = (i * 7919 + 17) as u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let len = 3 + next() % 4;
    let mut words = vec![class_word];
    words.extend((0..len).map(|_| WORDS[next() % 7]));
    words.join(" ")
}

/// Small sizes so that a whole `compare` takes seconds.
const SMALL: [&str; 10] = [
    "model.n_layers=2",
    "model.d_model=16",
    "model.n_heads=2",
    "model.d_ff=32",
    "train.epochs=1",
    "train.stage2_epochs=1",
    "train.batch_size=16",
    "compare.repeats=0",
    "compare.max_prob=[0.5]",
    "compare.patience=[1]",
];

/// `ponder CMD CONFIG --no-fetch --run-dir run` with the small sizes and `extra`
/// overrides, in `dir`.
fn run(dir: &Path, cmd: &str, config: &Path, extra: &[&str]) -> Output {
    let config = config.to_str().unwrap();
    let mut args = vec![cmd, config, "--no-fetch", "--run-dir", "run"];
    for set in SMALL.iter().chain(extra) {
        args.extend(["--set", set]);
    }
    ponder(&args, dir)
}

fn assert_success(out: &Output) -> String {
    assert!(out.status.success(), "ponder failed: {}", stderr(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `labels` list written into the run's config.toml.
fn run_labels(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("run/config.toml")).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    value["data"]["labels"]
        .as_array()
        .expect("labels in the run's config")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The compare table lists both methods' policies, and the run holds its results.
fn assert_compared(dir: &Path, stdout: &str) {
    for needle in ["pabee", "dee_bert", "max_prob>0.5", "patience=1"] {
        assert!(stdout.contains(needle), "table lacks {needle}: {stdout}");
    }
    for file in ["results.json", "results.md", "accuracy_vs_flops.svg"] {
        assert!(dir.join("run").join(file).is_file(), "no {file}");
    }
}

#[test]
fn csv_with_quotes_and_newlines_runs_the_committed_example_on_both_backbones() {
    let dir = tempfile::tempdir().unwrap();
    write_vocab(dir.path());
    let folder = dir.path().join("data/my-reviews");
    std::fs::create_dir_all(&folder).unwrap();
    for (file, n, salt) in [("train.csv", 80, 0), ("test.csv", 30, 1000)] {
        let mut text = String::from("id,review,sentiment\n");
        for i in 0..n {
            let (label, word) = if i % 2 == 0 {
                ("positive", "good")
            } else {
                ("negative", "bad")
            };
            // quoted fields with a comma, a doubled quote and a newline inside
            let _ = writeln!(
                text,
                "{},\"{}, \"\"really\"\"\n{}\",{label}",
                salt + i,
                sentence(salt + i, word),
                sentence(salt + i + 1, "the")
            );
        }
        std::fs::write(folder.join(file), text).unwrap();
    }
    // both backbones read own text
    let out = run(
        dir.path(),
        "compare",
        &config("own-csv.toml"),
        &["compare.backbones=[\"transformer\", \"mamba\"]"],
    );
    let stdout = assert_success(&out);
    assert_compared(dir.path(), &stdout);
    assert!(stdout.contains("mamba/pabee"), "{stdout}");
    assert_eq!(run_labels(dir.path()), ["negative", "positive"]);
}

#[test]
fn tsv_pairs_with_carved_splits_run_the_committed_example() {
    let dir = tempfile::tempdir().unwrap();
    write_vocab(dir.path());
    let folder = dir.path().join("data/my-pairs");
    std::fs::create_dir_all(&folder).unwrap();
    let mut text = String::from("sentence1\tsentence2\tlabel\n");
    for i in 0..100 {
        let label = i % 2;
        let second = if label == 1 { "very" } else { "sky" };
        let _ = writeln!(
            text,
            "{}\t{}\t{label}",
            sentence(i, "the"),
            sentence(i + 500, second)
        );
    }
    std::fs::write(folder.join("train.tsv"), text).unwrap();
    let out = run(dir.path(), "compare", &config("own-tsv.toml"), &[]);
    let stdout = assert_success(&out);
    assert_compared(dir.path(), &stdout);
    assert_eq!(run_labels(dir.path()), ["0", "1"]);
}

/// 15 classes with integer labels in JSON lines: they sort numerically (2 before 10).
fn write_genres(dir: &Path) {
    let folder = dir.join("data/my-genres");
    std::fs::create_dir_all(&folder).unwrap();
    for (file, n, salt) in [
        ("train.jsonl", 150, 0),
        ("valid.jsonl", 45, 5000),
        ("test.jsonl", 45, 9000),
    ] {
        let mut text = String::new();
        for i in 0..n {
            let class = (i * 7) % 15;
            let text_value = sentence(salt + i, WORDS[class]);
            let _ = writeln!(text, "{{\"text\": {text_value:?}, \"genre\": {class}}}");
        }
        std::fs::write(folder.join(file), text).unwrap();
    }
}

#[test]
fn fifteen_classes_in_json_lines_run_the_committed_example() {
    let dir = tempfile::tempdir().unwrap();
    write_vocab(dir.path());
    write_genres(dir.path());
    let out = run(dir.path(), "compare", &config("own-jsonl.toml"), &[]);
    let stdout = assert_success(&out);
    assert_compared(dir.path(), &stdout);
    let expected: Vec<String> = (0..15).map(|c| c.to_string()).collect();
    assert_eq!(run_labels(dir.path()), expected);
}

/// The run keeps the class order it found: after the training file loses a class (so
/// its sorted labels would shift), `eval` still reads the test file with the run's
/// order and gets the same numbers; without the stored order the test file's rows of
/// the dropped class would not even have a class.
#[test]
fn the_class_order_of_a_run_survives_a_changed_training_file() {
    let dir = tempfile::tempdir().unwrap();
    write_vocab(dir.path());
    write_genres(dir.path());
    let cfg = config("own-jsonl.toml");
    assert_success(&run(dir.path(), "train", &cfg, &["train.method=\"pabee\""]));
    let labels = run_labels(dir.path());
    let eval = |dir: &Path| {
        let out = ponder(
            &[
                "eval",
                "--run",
                "run",
                "--no-fetch",
                "--policy",
                "patience=1",
            ],
            dir,
        );
        assert_success(&out);
        std::fs::read_to_string(dir.join("run/eval-results.json")).unwrap()
    };
    let before = eval(dir.path());
    let train = dir.path().join("data/my-genres/train.jsonl");
    let kept: String = std::fs::read_to_string(&train)
        .unwrap()
        .lines()
        .filter(|l| !l.ends_with("\"genre\": 0}"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&train, kept).unwrap();
    let after = eval(dir.path());
    assert_eq!(run_labels(dir.path()), labels);
    let accuracy = |json: &str| -> Vec<f64> {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        v["models"][0]["policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["accuracy"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(accuracy(&before), accuracy(&after));
}

/// Writes a `w`×`h` image of one colour per class (with noise), as PNG or JPEG.
fn write_image(path: &Path, w: u32, h: u32, colour: [u8; 3], seed: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let noise = ((x * 31 + y * 17 + seed * 7) % 40) as u8;
        image::Rgb(colour.map(|c| c.saturating_add(noise)))
    });
    img.save(path).unwrap();
}

#[test]
fn a_three_channel_image_folder_runs_the_committed_example() {
    let dir = tempfile::tempdir().unwrap();
    let colours = [
        ("cat", [200, 30, 30]),
        ("dog", [30, 200, 30]),
        ("owl", [30, 30, 200]),
    ];
    for (split, n) in [("train", 24), ("test", 6)] {
        for (class, colour) in colours {
            let folder = dir.path().join("data/my-images").join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..n {
                // PNG and JPEG, of different sizes: all resized to image_size
                let (ext, w, h) = if i % 2 == 0 {
                    ("png", 40, 36)
                } else {
                    ("jpg", 20, 28)
                };
                write_image(&folder.join(format!("{i:03}.{ext}")), w, h, colour, i);
            }
        }
    }
    let out = run(
        dir.path(),
        "compare",
        &config("own-image-folder.toml"),
        &["data.image_size=8", "model.patch_size=4"],
    );
    let stdout = assert_success(&out);
    assert_compared(dir.path(), &stdout);
    assert_eq!(run_labels(dir.path()), ["cat", "dog", "owl"]);
    let text = std::fs::read_to_string(dir.path().join("run/config.toml")).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    for key in ["mean", "std"] {
        let values = value["data"][key].as_array().unwrap();
        assert_eq!(values.len(), 3, "{key}: one per channel");
    }
}

/// IDX bytes: images (magic 0x803) or labels (0x801).
fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let magic: u32 = if dims.len() == 3 { 0x803 } else { 0x801 };
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend(d.to_be_bytes());
    }
    out.extend(data);
    out
}

#[test]
fn idx_files_of_32_pixels_run_the_committed_example() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("data/my-idx");
    std::fs::create_dir_all(&folder).unwrap();
    for (prefix, n) in [("train", 60u32), ("t10k", 20)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 4) as u8 * 3).collect();
        let mut pixels = Vec::new();
        for (i, &l) in labels.iter().enumerate() {
            pixels.extend((0..32 * 32).map(|p| {
                let bright = (p / 32) as u8 / 8 == l / 3; // a bright band per class
                if bright { 200 } else { ((p + i) % 50) as u8 }
            }));
        }
        std::fs::write(
            folder.join(format!("{prefix}-images-idx3-ubyte.gz")),
            idx(&[n, 32, 32], &pixels),
        )
        .unwrap();
        std::fs::write(
            folder.join(format!("{prefix}-labels-idx1-ubyte.gz")),
            idx(&[n], &labels),
        )
        .unwrap();
    }
    let out = run(
        dir.path(),
        "compare",
        &config("own-idx.toml"),
        &["model.patch_size=8"],
    );
    let stdout = assert_success(&out);
    assert_compared(dir.path(), &stdout);
    // labels 0, 3, 6, 9: four classes, in numeric order
    assert_eq!(run_labels(dir.path()), ["0", "3", "6", "9"]);
    let text = std::fs::read_to_string(dir.path().join("run/config.toml")).unwrap();
    assert!(text.contains("image_size = 32"), "{text}");
}

/// An experiment on own text data in `dir` (`data` is the `[data]` body after
/// `format`), run with `ponder train`: it must fail cleanly, mention every needle, and
/// leave no run folder.
fn assert_bad_data(dir: &Path, data: &str, needles: &[&str]) {
    write_vocab(dir);
    let path = dir.join("bad.toml");
    let text = format!(
        "name = \"bad\"\n[data]\n{data}\n[model]\nn_layers = 2\nd_model = 16\nn_heads = 2\nd_ff = 32\npatch_size = 4\n[train]\nepochs = 1\n"
    );
    std::fs::write(&path, text).unwrap();
    let out = ponder(
        &["train", "bad.toml", "--no-fetch", "--run-dir", "bad-run"],
        dir,
    );
    assert_clean_failure(&out, needles);
    assert!(
        !dir.join("bad-run").exists(),
        "a failed load left a run folder"
    );
}

/// A text experiment of `format` on `train` (written with `content`).
fn bad_text(format: &str, file: &str, content: &[u8], extra: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(file), content).unwrap();
    let data = format!(
        "format = \"{format}\"\ntrain = \"{file}\"\ntext_column = \"text\"\nlabel_column = \"label\"\ntokenizer = \"data/all-minilm-l6-v2/vocab.txt\"\n{extra}"
    );
    assert_bad_data(dir.path(), &data, needles);
}

#[test]
fn bad_text_files_are_named_and_leave_no_run() {
    let rows = |n: usize| -> String {
        (0..n)
            .map(|i| format!("{},{}\n", sentence(i, "the"), i % 2))
            .collect()
    };
    let good = format!("text,label\n{}", rows(40));
    // a missing column: the columns found are listed
    bad_text(
        "csv",
        "t.csv",
        good.replace("text,label", "sentence,label").as_bytes(),
        "",
        &[
            "t.csv",
            "text",
            "sentence",
            "data.train",
            "data.text_column",
        ],
    );
    // a label outside `labels`
    bad_text(
        "csv",
        "t.csv",
        format!("{good}the cat,7\n").as_bytes(),
        "labels = [\"0\", \"1\"]",
        &["t.csv", "\"7\"", "line 42", "data.labels"],
    );
    // one class only
    bad_text(
        "csv",
        "t.csv",
        format!("text,label\n{}", "the cat,1\n".repeat(20)).as_bytes(),
        "",
        &["t.csv", "at least two"],
    );
    // an empty file, and a header without rows
    bad_text("csv", "t.csv", b"", "", &["t.csv"]);
    bad_text(
        "tsv",
        "t.tsv",
        b"text\tlabel\n",
        "",
        &["t.tsv", "no examples"],
    );
    // a row without text
    bad_text(
        "tsv",
        "t.tsv",
        format!("text\tlabel\nthe cat\t0\n \t1\n{}", "a dog\t1\n".repeat(10)).as_bytes(),
        "",
        &["t.tsv", "line 3"],
    );
    // invalid UTF-8
    let mut bytes = b"text\tlabel\nthe cat\t0\nthe \xff dog\t1\n".to_vec();
    bytes.extend("a dog\t1\n".repeat(10).as_bytes());
    bad_text("tsv", "t.tsv", &bytes, "", &["t.tsv", "line 3", "UTF-8"]);
    // a malformed CSV quote
    bad_text(
        "csv",
        "t.csv",
        format!("text,label\nthe cat,0\n\"the \"dog,1\n{}", rows(10)).as_bytes(),
        "",
        &["t.csv", "line 3"],
    );
    // a JSON line that is not an object
    bad_text(
        "jsonl",
        "t.jsonl",
        b"{\"text\": \"the cat\", \"label\": 0}\n[1, 2]\n",
        "",
        &["t.jsonl", "line 2"],
    );
}

#[test]
fn a_tokenizer_that_does_not_parse_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let rows: String = (0..40)
        .map(|i| format!("{},{}\n", sentence(i, "the"), i % 2))
        .collect();
    std::fs::write(dir.path().join("t.csv"), format!("text,label\n{rows}")).unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), "{\"model\": 3}").unwrap();
    let data = "format = \"csv\"\ntrain = \"t.csv\"\ntext_column = \"text\"\nlabel_column = \"label\"\ntokenizer = \"tokenizer.json\"\n";
    assert_bad_data(dir.path(), data, &["tokenizer.json"]);
}

/// An image-folder experiment on `train/` under a temporary folder prepared by `make`.
fn bad_images(make: impl Fn(&Path), extra: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    make(&dir.path().join("train"));
    let data = format!(
        "format = \"image-folder\"\ntrain = \"train\"\nimage_size = 8\nchannels = 3\n{extra}"
    );
    assert_bad_data(dir.path(), &data, needles);
}

fn some_images(folder: &Path, n: u32) {
    std::fs::create_dir_all(folder).unwrap();
    for i in 0..n {
        write_image(&folder.join(format!("{i}.png")), 10, 10, [100, 20, 20], i);
    }
}

#[test]
fn bad_image_folders_are_named_and_leave_no_run() {
    // an image that does not decode: named, not skipped
    bad_images(
        |train| {
            some_images(&train.join("a"), 10);
            some_images(&train.join("b"), 10);
            std::fs::write(train.join("b/broken.png"), b"not a png").unwrap();
        },
        "",
        &["broken.png", "data.train"],
    );
    // a class folder without images
    bad_images(
        |train| {
            some_images(&train.join("a"), 10);
            std::fs::create_dir_all(train.join("empty")).unwrap();
        },
        "",
        &["empty"],
    );
    // no folder at all
    bad_images(|_| {}, "", &["train"]);
}

#[test]
fn skip_bad_images_counts_what_it_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train");
    for (class, colour) in [("a", [200, 20, 20]), ("b", [20, 20, 200])] {
        std::fs::create_dir_all(train.join(class)).unwrap();
        for i in 0..20 {
            write_image(&train.join(class).join(format!("{i}.png")), 9, 9, colour, i);
        }
    }
    std::fs::write(train.join("b/broken.png"), b"not a png").unwrap();
    let path = dir.path().join("skip.toml");
    std::fs::write(
        &path,
        "name = \"skip\"\n[data]\nformat = \"image-folder\"\ntrain = \"train\"\nimage_size = 8\nskip_bad_images = true\n[model]\nn_layers = 2\nd_model = 16\nn_heads = 2\nd_ff = 32\npatch_size = 4\n[train]\nepochs = 1\nbatch_size = 16\n",
    )
    .unwrap();
    let out = ponder(
        &[
            "train",
            "skip.toml",
            "--no-fetch",
            "--run-dir",
            "run",
            "--method",
            "pabee",
        ],
        dir.path(),
    );
    assert_success(&out);
    let err = stderr(&out);
    assert!(
        err.contains("skipped 1 image") && err.contains("broken.png"),
        "{err}"
    );
}
