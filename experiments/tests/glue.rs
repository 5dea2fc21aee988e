//! `ponder` on GLUE tasks, named by task and folder: small TSV files in MRPC's and
//! STS-B's real layouts, a WordPiece vocabulary, a tiny encoder. A classification task
//! gets its official metric in every row; STS-B trains PABEE's regression heads and
//! sweeps the regression patience rule. Bad GLUE configurations are named.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{assert_clean_failure, ponder, stderr};

const WORDS: [&str; 12] = [
    "the", "cat", "dog", "sat", "ran", "on", "mat", "good", "bad", "very", "a", "day",
];

/// A WordPiece vocabulary of the special tokens and `WORDS`.
fn write_vocab(dir: &Path) -> PathBuf {
    let path = dir.join("vocab.txt");
    let mut text = String::from("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n");
    for w in WORDS {
        let _ = writeln!(text, "{w}");
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// A deterministic pseudo-random sentence of 3–6 words from `WORDS[..10]`, with `n`
/// extra "good".
fn sentence(i: usize, salt: usize, good: usize) -> String {
    let mut state = (i * 7919 + salt * 104_729 + 17) as u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let len = 3 + next() % 4;
    let mut words: Vec<&str> = (0..len).map(|_| WORDS[next() % 7]).collect();
    for _ in 0..good {
        let at = next() % (words.len() + 1);
        words.insert(at, "good");
    }
    words.join(" ")
}

/// MRPC's layout (header with `#`, BOM): a pair is a paraphrase (1) when the second
/// sentence says "very".
fn write_mrpc(dir: &Path, n_train: usize, n_dev: usize) -> PathBuf {
    let folder = dir.join("MRPC");
    std::fs::create_dir_all(&folder).unwrap();
    for (file, n, salt) in [("train.tsv", n_train, 1), ("dev.tsv", n_dev, 2)] {
        let mut text = String::from("\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n");
        for i in 0..n {
            let label = usize::from(i % 3 == 0);
            let second = if label == 1 {
                format!("very {}", sentence(i, salt + 10, 0))
            } else {
                sentence(i, salt + 10, 0)
            };
            let _ = writeln!(
                text,
                "{label}\t{}\t{}\t{}\t{second}",
                1000 + i,
                2000 + i,
                sentence(i, salt, 0)
            );
        }
        std::fs::write(folder.join(file), text).unwrap();
    }
    folder
}

/// STS-B's layout (10 columns): the score is the number of "good" in the pair (0–4).
fn write_stsb(dir: &Path, n_train: usize, n_dev: usize) -> PathBuf {
    let folder = dir.join("STS-B");
    std::fs::create_dir_all(&folder).unwrap();
    for (file, n, salt) in [("train.tsv", n_train, 3), ("dev.tsv", n_dev, 4)] {
        let mut text = String::from(
            "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n",
        );
        for i in 0..n {
            let (a, b) = (i % 3, (i / 3) % 2);
            let _ = writeln!(
                text,
                "{i}\tmain-captions\tMSRvid\t2012test\t{i:04}\tnone\tnone\t{}\t{}\t{:.3}",
                sentence(i, salt, a),
                sentence(i, salt + 10, b),
                (a + b) as f64
            );
        }
        std::fs::write(folder.join(file), text).unwrap();
    }
    folder
}

fn experiment(dir: &Path, name: &str, task: &str, data: &Path, extra: &str) -> PathBuf {
    let vocab = write_vocab(dir);
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        r#"name = "{name}"
[data]
dataset = "glue"
task = "{task}"
path = "{}"
tokenizer = "{}"
max_tokens = 24
valid_fraction = 0.2
[model]
n_layers = 3
d_model = 32
n_heads = 4
d_ff = 64
dropout = 0.0
head_dropout = 0.0
[train]
epochs = 6
batch_size = 16
learning_rate = 3e-3
[compare]
methods = ["pabee"]
max_prob = [0.9]
entropy = []
patience = [1, 2]
tolerance = [0.25, 1.0]
oracle = false
repeats = 0
batch_size = 64
{extra}"#,
        data.display(),
        vocab.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `ponder compare CONFIG --run-dir DIR/RUN --no-fetch` in `dir`.
fn run_compare(dir: &Path, config: &Path, run: &Path) -> Output {
    ponder(
        &[
            "compare",
            config.to_str().unwrap(),
            "--run-dir",
            run.to_str().unwrap(),
            "--no-fetch",
        ],
        dir,
    )
}

fn compare(dir: &Path, config: &Path, run: &str) -> (PathBuf, serde_json::Value, String) {
    let run = dir.join(run);
    let out = run_compare(dir, config, &run);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("results.json")).unwrap()).unwrap();
    let table = std::fs::read_to_string(run.join("results.md")).unwrap();
    (run, json, table)
}

#[test]
fn a_glue_classification_task_reports_its_official_metric_per_policy() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_mrpc(dir.path(), 240, 60);
    let config = experiment(dir.path(), "glue-mrpc", "MRPC", &data, "");
    let (_, json, table) = compare(dir.path(), &config, "run");
    assert_eq!(json["task"], "MRPC");
    assert_eq!(json["n_test"], 60, "the dev file is the test set");
    assert!(table.contains("| MRPC F1 / accuracy |"), "{table}");
    let policies = json["models"][0]["policies"].as_array().unwrap();
    assert!(policies.len() >= 4);
    for p in policies {
        let score = &p["task_score"];
        assert_eq!(score["metric"], "f1_accuracy", "{p}");
        // the task's accuracy is the row's accuracy, and F1 is a fraction
        let acc = score["accuracy"].as_f64().unwrap();
        assert!((acc - p["accuracy"].as_f64().unwrap()).abs() < 1e-12);
        let f1 = score["f1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&f1));
        // classification rows keep their calibration
        assert!(p["calibration"].is_object());
    }
    // over seeds: the task's single number, (F1 + accuracy)/2, as mean ± std
    let seeds = experiment(
        dir.path(),
        "glue-mrpc-seeds",
        "MRPC",
        &data,
        "seeds = [1, 2]\n",
    );
    let (_, json_seeds, table_seeds) = compare(dir.path(), &seeds, "run-seeds");
    assert!(
        table_seeds.contains("| MRPC (F1 + accuracy)/2 |"),
        "{table_seeds}"
    );
    for row in json_seeds["seed_summary"].as_array().unwrap() {
        let [mean, _] = [0, 1].map(|i| row["task_metric"][i].as_f64().unwrap());
        assert!((0.0..=1.0).contains(&mean), "{row}");
    }
    // the pattern ("very" in the second sentence) is learnt
    let full = &policies[0];
    assert_eq!(full["policy"], "full");
    assert!(full["task_score"]["f1"].as_f64().unwrap() > 0.8, "{table}");
}

#[test]
fn stsb_trains_regression_heads_and_sweeps_the_regression_patience() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_stsb(dir.path(), 300, 60);
    let config = experiment(dir.path(), "glue-stsb", "sts-b", &data, "");
    let (run, json, table) = compare(dir.path(), &config, "run");
    assert_eq!(json["task"], "STS-B");
    assert_eq!(json["regression"], true);
    assert!(table.contains("Pearson ×100"), "{table}");
    assert!(table.contains("| STS-B Pearson / Spearman |"), "{table}");
    let model = &json["models"][0];
    let names: Vec<&str> = model["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["policy"].as_str().unwrap())
        .collect();
    // full, patience × tolerance, fixed exits; no classification rule
    assert_eq!(
        names,
        [
            "full",
            "patience=1,tol=0.25",
            "patience=1,tol=1",
            "patience=2,tol=0.25",
            "patience=2,tol=1",
            "fixed=1",
            "fixed=2"
        ]
    );
    for p in model["policies"].as_array().unwrap() {
        assert!(p.get("calibration").is_none(), "{p}");
        let pearson = p["task_score"]["pearson"].as_f64().unwrap();
        assert!((pearson - p["accuracy"].as_f64().unwrap()).abs() < 1e-9);
    }
    // the score (a count of "good") is learnt
    let full = &model["policies"][0];
    assert!(full["accuracy"].as_f64().unwrap() > 0.8, "{table}");
    assert!(
        full["task_score"]["spearman"].as_f64().unwrap() > 0.7,
        "{table}"
    );
    // the plot has one patience curve per tolerance; no calibration plots
    let plot = std::fs::read_to_string(run.join("accuracy_vs_flops.svg")).unwrap();
    assert!(
        plot.contains("patience, τ = 0.25") && plot.contains("patience, τ = 1"),
        "legend of accuracy_vs_flops.svg"
    );
    assert!(!run.join("ece_vs_flops.svg").exists());
    // a lax tolerance exits earlier than a strict one
    let layer = |i: usize| model["policies"][i]["mean_exit_layer"].as_f64().unwrap();
    assert!(layer(2) <= layer(1), "{table}");

    // classification rules are refused on a regression run, and regression ones
    // parse
    let run_arg = run.to_str().unwrap();
    let out = ponder(
        &[
            "eval",
            "--run",
            run_arg,
            "--policy",
            "max_prob=0.9",
            "--no-fetch",
        ],
        dir.path(),
    );
    assert_clean_failure(&out, &["max_prob", "regression"]);
    let out = ponder(
        &[
            "eval",
            "--run",
            run_arg,
            "--policy",
            "patience=1,tol=0.5",
            "--no-fetch",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "stderr: {}", stderr(&out));
}

#[test]
fn bad_glue_configurations_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mrpc = write_mrpc(dir.path(), 8, 4);
    let stsb = write_stsb(dir.path(), 8, 4);
    // `edit` changes the experiment file's text before the run
    let check =
        |name: &str, task: &str, data: &Path, edit: &dyn Fn(String) -> String, needles: &[&str]| {
            let config = experiment(dir.path(), name, task, data, "");
            let text = edit(std::fs::read_to_string(&config).unwrap());
            std::fs::write(&config, text).unwrap();
            let run = dir.path().join(format!("run-{name}"));
            assert_clean_failure(&run_compare(dir.path(), &config, &run), needles);
        };
    let same = |t: String| t;
    check(
        "unknown",
        "glu",
        &mrpc,
        &same,
        &["data.task", "unknown GLUE task"],
    );
    check(
        "missing",
        "rte",
        &dir.path().join("nowhere"),
        &same,
        &["RTE", "train.tsv", "download_glue_data.py"],
    );
    check(
        "halting",
        "stsb",
        &stsb,
        &|t| {
            t.replace(
                r#"methods = ["pabee"]"#,
                r#"methods = ["pabee", "palbert"]"#,
            )
        },
        &["STS-B", "Palbert", "regression"],
    );
    check(
        "mism",
        "mrpc",
        &mrpc,
        &|t| {
            t.replace(
                "valid_fraction = 0.2",
                "valid_fraction = 0.2\nmismatched = true",
            )
        },
        &["data.mismatched", "MNLI"],
    );
    // a malformed line names the file and line
    std::fs::write(
        mrpc.join("dev.tsv"),
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\tonly two\n",
    )
    .unwrap();
    check("badline", "mrpc", &mrpc, &same, &["dev.tsv", "line 2"]);
}
