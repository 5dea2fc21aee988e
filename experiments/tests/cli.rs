//! The `ponder` binary on bad input: clear message naming the file or key, non-zero
//! exit code, no panic. And `--help` explains itself.

use std::path::Path;

mod common;
use common::{assert_clean_failure, ponder, stderr};

const BASE: &str = r#"name = "cli-test"
[data]
dataset = "fashion-mnist"
path = "DATA"
[model]
n_layers = 2
d_model = 16
n_heads = 2
d_ff = 32
[train]
epochs = 1
batch_size = 8
"#;

fn write_experiment(dir: &Path, extra: &str, data: &Path) -> std::path::PathBuf {
    let path = dir.join("exp.toml");
    let text = format!(
        "{}{extra}",
        BASE.replace("DATA", &data.display().to_string())
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn help_explains_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let out = ponder(&["--help"], dir.path());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["compare", "train", "eval", "parity", "--device"] {
        assert!(text.contains(word), "--help lacks {word}: {text}");
    }
}

#[test]
fn unknown_config_key_names_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let exp = write_experiment(dir.path(), "epochz = 3\n", dir.path());
    let out = ponder(&["train", exp.to_str().unwrap(), "--no-fetch"], dir.path());
    assert_clean_failure(&out, &["epochz", "exp.toml"]);
}

#[test]
fn threshold_out_of_range_names_key() {
    let dir = tempfile::tempdir().unwrap();
    let exp = write_experiment(dir.path(), "[compare]\nmax_prob = [0.9, 1.7]\n", dir.path());
    let out = ponder(
        &["compare", exp.to_str().unwrap(), "--no-fetch"],
        dir.path(),
    );
    assert_clean_failure(&out, &["max_prob", "1.7", "exp.toml"]);
    let out = ponder(
        &[
            "eval",
            "--run",
            dir.path().to_str().unwrap(),
            "--policy",
            "entropy=-2",
        ],
        dir.path(),
    );
    assert_clean_failure(&out, &[]);
}

#[test]
fn missing_data_folder_says_how_to_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-folder");
    let exp = write_experiment(dir.path(), "", &missing);
    let out = ponder(
        &[
            "train",
            exp.to_str().unwrap(),
            "--no-fetch",
            "--run-dir",
            dir.path().join("run").to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_clean_failure(&out, &["no-such-folder", "fetch-data.sh"]);
}

#[test]
fn truncated_idx_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fm");
    std::fs::create_dir_all(&data).unwrap();
    // a valid header announcing 100 images of 28×28, followed by only 10 bytes
    let mut images = vec![0u8, 0, 8, 3];
    images.extend(100u32.to_be_bytes());
    images.extend(28u32.to_be_bytes());
    images.extend(28u32.to_be_bytes());
    images.extend([0u8; 10]);
    let mut labels = vec![0u8, 0, 8, 1];
    labels.extend(100u32.to_be_bytes());
    labels.extend([0u8; 100]);
    for split in ["train", "t10k"] {
        std::fs::write(data.join(format!("{split}-images-idx3-ubyte")), &images).unwrap();
        std::fs::write(data.join(format!("{split}-labels-idx1-ubyte")), &labels).unwrap();
    }
    let exp = write_experiment(dir.path(), "", &data);
    let out = ponder(
        &[
            "train",
            exp.to_str().unwrap(),
            "--no-fetch",
            "--run-dir",
            dir.path().join("run").to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_clean_failure(&out, &["images-idx3-ubyte", "truncated"]);
}

#[test]
fn resume_of_a_folder_that_is_not_a_run_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = ponder(
        &["compare", "--resume", dir.path().to_str().unwrap()],
        dir.path(),
    );
    assert_clean_failure(&out, &["not a run folder"]);
}

#[test]
fn bad_override_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let exp = write_experiment(dir.path(), "", dir.path());
    let out = ponder(
        &[
            "train",
            exp.to_str().unwrap(),
            "--set",
            "train.learning_rate=5",
            "--no-fetch",
        ],
        dir.path(),
    );
    assert_clean_failure(&out, &["learning_rate"]);
}

const PARITY: &str = r#"name = "parity-test"
[task]
n_elems = 6
mode = "extrapolation"
n_valid = 64
n_test = 96
[model]
n_hidden = 8
max_steps = 5
[train]
steps = 40
batch_size = 16
eval_every = 20
"#;

/// Runs `ponder COMMAND CONFIG --run-dir DIR/run` in `dir`, checks that it succeeds and
/// wrote `files` into the run folder, and returns the run folder.
fn run_into(dir: &Path, command: &str, config: &Path, files: &[&str]) -> std::path::PathBuf {
    let run = dir.join("run");
    let out = ponder(
        &[
            command,
            config.to_str().unwrap(),
            "--run-dir",
            run.to_str().unwrap(),
        ],
        dir,
    );
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    for file in files {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    run
}

#[test]
fn parity_runs_end_to_end_and_writes_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("parity.toml");
    std::fs::write(&config, PARITY).unwrap();
    let run = run_into(
        dir.path(),
        "parity",
        &config,
        &[
            "config.toml",
            "model.bpk",
            "metrics.json",
            "results.json",
            "results.md",
            "steps_vs_difficulty.svg",
        ],
    );
    let table = std::fs::read_to_string(run.join("results.md")).unwrap();
    // extrapolation: tested on 4..=6 and, for reference, on 1..=3 non-zero elements
    assert!(
        table.contains("4..=6") && table.contains("1..=3"),
        "{table}"
    );
    assert!(
        table.contains("q_exit=0.5") && table.contains("sample(seed=0)"),
        "{table}"
    );
    // a second call on the same folder loads the model instead of training again
    let again = ponder(&["parity", "--resume", run.to_str().unwrap()], dir.path());
    assert!(again.status.success(), "stderr: {}", stderr(&again));
    assert!(stderr(&again).contains("already trained"));
}

#[test]
fn parity_bad_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("parity.toml");
    std::fs::write(&config, PARITY.replace("max_steps = 5", "max_stepz = 5")).unwrap();
    let out = ponder(&["parity", config.to_str().unwrap()], dir.path());
    assert_clean_failure(&out, &["max_stepz"]);
    let ponder_table = "[train.ponder]\nlambda_p = 0.2\nprior_leftover_on_last = false\nkl = \"prior_to_exits\"\nlast_layer = \"force_halt\"\n";
    std::fs::write(&config, format!("{PARITY}{ponder_table}beta = -1\n")).unwrap();
    let out = ponder(&["parity", config.to_str().unwrap()], dir.path());
    assert_clean_failure(&out, &["train.ponder.beta"]);
    // a partial table names what it lacks instead of mixing in defaults
    std::fs::write(&config, format!("{PARITY}[train.ponder]\nbeta = 0.1\n")).unwrap();
    let out = ponder(&["parity", config.to_str().unwrap()], dir.path());
    assert_clean_failure(&out, &["lambda_p", "train.ponder"]);
    std::fs::write(&config, PARITY).unwrap();
    let out = ponder(
        &[
            "parity",
            config.to_str().unwrap(),
            "--set",
            "task.n_elems=1",
        ],
        dir.path(),
    );
    assert_clean_failure(&out, &["n_elems"]);
}

const LM: &str = r#"name = "lm-test"
[data]
path = "CORPUS"
valid_every = 3
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
prompt = "to "
tokens = 20
memory_lengths = [8, 32]
"#;

/// A tiny three-work character corpus in `DIR/corpus`.
fn write_corpus(dir: &Path) -> std::path::PathBuf {
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    for (i, text) in [
        "to be or not to be, ",
        "that is the question: ",
        "whether tis nobler ",
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(corpus.join(format!("w{i}_gut.txt")), text.repeat(20)).unwrap();
    }
    corpus
}

#[test]
fn lm_runs_end_to_end_resumes_and_names_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    let config = dir.path().join("lm.toml");
    std::fs::write(&config, LM.replace("CORPUS", &corpus.display().to_string())).unwrap();
    let run = run_into(
        dir.path(),
        "lm",
        &config,
        &[
            "config.toml",
            "vocab.json",
            "model.bpk",
            "model.safetensors",
            "metrics.json",
            "loss_curve.svg",
            "sample.txt",
            "results.json",
            "results.md",
        ],
    );
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("results.json")).unwrap()).unwrap();
    let bpc = results["valid_bpc"].as_f64().unwrap();
    assert!(bpc.is_finite() && bpc > 0.0, "{results}");
    let memory = results["memory"].as_array().unwrap();
    assert_eq!(memory[0]["state_bytes"], memory[1]["state_bytes"]);
    let sample = std::fs::read_to_string(run.join("sample.txt")).unwrap();
    assert!(
        sample.starts_with("to ") && sample.chars().count() == 23,
        "{sample:?}"
    );
    // resuming the finished run evaluates again without training
    let again = ponder(&["lm", "--resume", run.to_str().unwrap()], dir.path());
    assert!(again.status.success(), "stderr: {}", stderr(&again));
    let curve: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(curve.as_array().unwrap().len(), 2);

    // a prompt with a character the corpus lacks, and an unknown key
    let bad = LM
        .replace("CORPUS", &corpus.display().to_string())
        .replace("prompt = \"to \"", "prompt = \"Q\"");
    std::fs::write(&config, bad).unwrap();
    let out = ponder(&["lm", config.to_str().unwrap()], dir.path());
    assert_clean_failure(&out, &["generate.prompt", "'Q'"]);
    let bad = LM
        .replace("CORPUS", &corpus.display().to_string())
        .replace("d_state = 4", "d_statez = 4");
    std::fs::write(&config, bad).unwrap();
    let out = ponder(&["lm", config.to_str().unwrap()], dir.path());
    assert_clean_failure(&out, &["d_statez"]);
}

const TOKEN_EXIT: &str = r#"name = "token-exit-test"
[data]
path = "CORPUS"
valid_every = 3
[[backbones]]
name = "mamba"
lm = "mamba-lm.toml"
run = "lm-mamba"
skip_rule = "recompute"
[[backbones]]
name = "transformer"
lm = "transformer-lm.toml"
run = "lm-transformer"
skip_rule = "SKIP"
[classifier_train]
steps = 3
batch_size = 4
seq_len = 16
valid_windows = 2
[token_exit]
exits = [1]
always_run_last = [false, true]
classifiers = [{ kind = "linear", top_k = 1 }, { kind = "mamba", top_k = 2, summary = "confidence" }]
classifier_thresholds = [0.9, 0.5]
softmax_thresholds = [0.5, 0.9]
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
fn token_exit_compare_trains_the_models_sweeps_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    let lm = LM.replace("CORPUS", &corpus.display().to_string());
    std::fs::write(dir.path().join("mamba-lm.toml"), &lm).unwrap();
    let transformer = lm
        .replace(
            "d_state = 4",
            "backbone = \"transformer\"\nn_heads = 2\nd_ff = 32",
        )
        .replace("tokens = 20", "tokens = 8")
        .replace("memory_lengths = [8, 32]", "memory_lengths = [4, 8]");
    std::fs::write(dir.path().join("transformer-lm.toml"), transformer).unwrap();
    let config = dir.path().join("token-exit.toml");
    let text = TOKEN_EXIT.replace("CORPUS", &corpus.display().to_string());
    // the transformer has no un-advanced cache
    std::fs::write(&config, text.replace("SKIP", "unadvanced")).unwrap();
    let out = ponder(
        &["compare", config.to_str().unwrap(), "--run-dir", "bad"],
        dir.path(),
    );
    assert_clean_failure(&out, &["token_exit.skip_rule", "unadvanced", "transformer"]);
    // refused before any language model was trained
    assert!(!dir.path().join("lm-mamba").exists());

    std::fs::write(&config, text.replace("SKIP", "copy")).unwrap();
    let run = run_into(
        dir.path(),
        "compare",
        &config,
        &[
            "results.json",
            "results.md",
            "compute_vs_consistency_mamba.svg",
            "compute_vs_consistency_transformer.svg",
            "classifiers/mamba/linear[k=1]/classifier.bpk",
            "classifiers/transformer/mamba-confidence[k=2]/report.json",
        ],
    );
    assert!(dir.path().join("lm-mamba/model.bpk").is_file());
    assert!(dir.path().join("lm-transformer/model.bpk").is_file());
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("results.json")).unwrap()).unwrap();
    for b in results["backbones"].as_array().unwrap() {
        // 2 classifiers + softmax, margin, saturation; two always-run-last settings
        let curves = b["curves"].as_array().unwrap();
        assert_eq!(curves.len(), 10, "{b}");
        for c in curves {
            for p in c["points"].as_array().unwrap() {
                let consistency = p["test"]["consistency"].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&consistency));
                assert_eq!(p["calibration_losses"].as_array().unwrap().len(), 4);
            }
        }
        assert_eq!(b["ablation"].as_array().unwrap().len(), 4, "{b}");
    }
    // resuming reuses the classifiers (and the language models)
    let again = ponder(&["compare", "--resume", run.to_str().unwrap()], dir.path());
    assert!(again.status.success(), "stderr: {}", stderr(&again));
    assert!(
        !stderr(&again).contains("training the exit classifier"),
        "{}",
        stderr(&again)
    );
    assert!(!stderr(&again).contains("holds no trained language model"));

    // extending a sweep: the points already measured are read back, the new one decoded
    let curve_path = run.join("curves/mamba/softmax-lastfalse.json");
    let before: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&curve_path).unwrap()).unwrap();
    let config_path = run.join("config.toml");
    let mut config: toml::Table =
        toml::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["token_exit"]["softmax_thresholds"] =
        toml::Value::try_from(vec![0.5, 0.7, 0.9]).unwrap();
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    let third = ponder(&["compare", "--resume", run.to_str().unwrap()], dir.path());
    assert!(third.status.success(), "stderr: {}", stderr(&third));
    let after: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&curve_path).unwrap()).unwrap();
    let points = after["points"].as_array().unwrap();
    assert_eq!(points.len(), 3);
    let old = before["points"].as_array().unwrap();
    assert_eq!(points[0], old[0], "0.9 reused as measured");
    assert_eq!(points[2], old[1], "0.5 reused as measured");
    assert_eq!(points[1]["rule"]["threshold"], 0.7);
}

/// A character-level BPE `tokenizer.json` (no merges: every character is a token) over
/// the characters of `write_corpus`, for the committed tiny Llama (vocabulary 35).
fn char_tokenizer() -> String {
    let chars: Vec<char> = "?tobernhaisqu:wl, ".chars().collect();
    let vocab: serde_json::Map<String, serde_json::Value> = chars
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), i.into()))
        .collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
        "model": {"type": "BPE", "dropout": null, "unk_token": "?", "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "vocab": vocab, "merges": []}
    })
    .to_string()
}

/// The committed 4-layer Llama (grouped-query attention, rotary positions) with a
/// character tokenizer, as the checkpoint folder `DIR/tiny-llama`.
fn pretrained_folder(dir: &Path) -> std::path::PathBuf {
    let model = dir.join("tiny-llama");
    std::fs::create_dir_all(&model).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/ponder-transformer/tests/data/tiny-llama");
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(source.join(file), model.join(file)).unwrap();
    }
    std::fs::write(model.join("tokenizer.json"), char_tokenizer()).unwrap();
    model
}

#[test]
fn lm_fine_tunes_a_pretrained_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    pretrained_folder(dir.path());
    let text = LM
        .replace("CORPUS", &corpus.display().to_string())
        .replace(
            "valid_every = 3",
            "valid_every = 3\ntokenizer = \"tiny-llama/tokenizer.json\"",
        )
        .replace(
            "d_model = 16\nn_layers = 2\nd_state = 4",
            "pretrained = \"tiny-llama\"",
        )
        .replace("tokens = 20", "tokens = 8")
        .replace("memory_lengths = [8, 32]", "memory_lengths = [4, 8]");
    let config = dir.path().join("lm.toml");
    // a size that is not the checkpoint's
    std::fs::write(
        &config,
        text.replace("pretrained =", "d_model = 99\npretrained ="),
    )
    .unwrap();
    let out = ponder(
        &["lm", config.to_str().unwrap(), "--run-dir", "bad"],
        dir.path(),
    );
    assert_clean_failure(&out, &["model.d_model", "99", "16"]);
    std::fs::write(&config, &text).unwrap();
    let run = run_into(
        dir.path(),
        "lm",
        &config,
        &[
            "config.toml",
            "tokenizer.json",
            "model.bpk",
            "sample.txt",
            "results.json",
        ],
    );
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["backbone"], "transformer", "{results}");
    // the checkpoint's parameters (untied head over 35 tokens), not a new model's
    let checkpoint = ponder_transformer::load_hf_decoder(
        dir.path().join("tiny-llama"),
        &burn::tensor::Device::default(),
    )
    .unwrap();
    assert_eq!(
        results["n_params"].as_u64().unwrap() as usize,
        checkpoint.lm.n_params()
    );
    // the saved run resolves the same shape again (token-exit experiments load it)
    let saved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        saved.contains("pretrained") && saved.contains("d_model = 16"),
        "{saved}"
    );
    let again = ponder(&["lm", "--resume", run.to_str().unwrap()], dir.path());
    assert!(again.status.success(), "stderr: {}", stderr(&again));
}

#[test]
fn token_exit_compare_runs_on_a_pretrained_checkpoint_folder() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    let model = pretrained_folder(dir.path());
    let backbone =
        "[[backbones]]\nname = \"llama\"\npretrained = \"tiny-llama\"\nskip_rule = \"recompute\"\n";
    let start = TOKEN_EXIT.find("[[backbones]]").unwrap();
    let end = TOKEN_EXIT.find("[classifier_train]").unwrap();
    let text = format!("{}{backbone}{}", &TOKEN_EXIT[..start], &TOKEN_EXIT[end..])
        .replace("CORPUS", &corpus.display().to_string());
    let config = dir.path().join("token-exit.toml");
    // the corpus must be read with the checkpoint's tokenizer
    std::fs::write(&config, &text).unwrap();
    let out = ponder(
        &["compare", config.to_str().unwrap(), "--run-dir", "bad"],
        dir.path(),
    );
    assert_clean_failure(&out, &["data.tokenizer", "tiny-llama"]);
    assert!(!dir.path().join("bad").exists());
    let text = text.replace(
        "valid_every = 3",
        "valid_every = 3\ntokenizer = \"tiny-llama/tokenizer.json\"",
    );
    std::fs::write(&config, &text).unwrap();
    let run = run_into(
        dir.path(),
        "compare",
        &config,
        &["results.json", "compute_vs_consistency_llama.svg"],
    );
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("results.json")).unwrap()).unwrap();
    let b = &results["backbones"][0];
    assert_eq!(b["n_layers"], 4, "{b}");
    assert_eq!(b["curves"].as_array().unwrap().len(), 10, "{b}");
    // a folder that is not a checkpoint
    std::fs::remove_file(model.join("config.json")).unwrap();
    let out = ponder(
        &["compare", config.to_str().unwrap(), "--run-dir", "bad2"],
        dir.path(),
    );
    assert_clean_failure(&out, &["config.json"]);
}
