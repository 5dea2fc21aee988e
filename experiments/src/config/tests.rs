use std::path::Path;

use anyhow::Result;
use ponder_data::GlueTask;
use ponder_exits::{NeverExit, OffRampPooler, Policy};
use ponder_mamba::Pooling;
use ponder_models::{BackboneConfig, Method, TrainConfig};

use super::*;

/// Every committed experiment file of `ponder compare`/`train` parses and passes
/// its checks (the pretrained ones' sizes against the checkpoint when it has been
/// fetched).
#[test]
fn committed_experiment_files_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = root.parent().unwrap();
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(root.join("configs")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        // language-model, parity and token-exit files have their own commands
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if text.contains("[token_exit]")
            || name.starts_with("parity")
            || name.starts_with("lm-")
            || (name.starts_with("shakespeare") && !text.contains("[compare]"))
        {
            continue;
        }
        let text = text.replace(
            "pretrained = \"data/",
            &format!("pretrained = \"{}/data/", workspace.display()),
        );
        // without the checkpoint, everything but its sizes is checked
        let text = if workspace.join("data/all-minilm-l6-v2").is_dir() {
            text
        } else {
            text.lines()
                .filter(|l| !l.starts_with("pretrained = "))
                .collect::<Vec<_>>()
                .join("\n")
        };
        Experiment::parse(&text).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        checked.push(name);
    }
    for name in [
        "glue.toml",
        "glue-stsb.toml",
        "spamassassin-minilm.toml",
        "fashion-mnist-jei.toml",
    ] {
        assert!(
            checked.iter().any(|c| c == name),
            "{name} not checked: {checked:?}"
        );
    }
}

const MINIMAL: &str = r#"
name = "t"
[data]
dataset = "fashion-mnist"
path = "data/fashion-mnist"
[model]
n_layers = 4
d_model = 32
n_heads = 4
d_ff = 64
"#;

#[test]
fn a_cost_sweep_names_one_jei_dnn_model_per_cost_weight() {
    let e = Experiment::parse(MINIMAL).unwrap();
    // without a sweep: one JEI-DNN model, named by its method only
    assert_eq!(e.cost_variants(Method::JeiDnn), vec![None]);
    assert_eq!(e.model_kind(Method::JeiDnn).name(Some(2)), "jei_dnn-seed2");
    let e = Experiment::parse(&format!(
        "{MINIMAL}[compare]\njei_cost_weights = [0.05, 0.5]\n"
    ))
    .unwrap();
    assert_eq!(e.cost_variants(Method::JeiDnn), vec![Some(0.05), Some(0.5)]);
    assert_eq!(e.cost_variants(Method::Pabee), vec![None]);
    let jei = e.with_cost_weight(Some(0.5));
    assert_eq!(jei.train.jei.cost_weight, 0.5);
    let kind = jei.model_kind(Method::JeiDnn);
    assert_eq!(kind.name(Some(1)), "jei_dnn-cost0.5-seed1");
    assert_eq!(kind.label(), "jei_dnn[λ=0.5]");
    assert_eq!(jei.model_kind(Method::Pabee).name(None), "pabee");
    for bad in ["[-1.0]", "[0.1, 0.1]", "[nan]"] {
        let err = Experiment::parse(&format!("{MINIMAL}[compare]\njei_cost_weights = {bad}\n"))
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("compare.jei_cost_weights"),
            "{err:#}"
        );
    }
}

#[test]
fn minimal_file_parses_with_defaults() {
    let e = Experiment::parse(MINIMAL).unwrap();
    assert_eq!(e.train, TrainConfig::default());
    assert_eq!(e.policies().unwrap()[0], Policy::Full(NeverExit));
}

#[test]
fn mamba_backbone_needs_text_and_builds_the_same_size() {
    let err = Experiment::parse(&format!("{MINIMAL}backbone = \"mamba\"\n")).unwrap_err();
    assert!(format!("{err:#}").contains("model.backbone"), "{err:#}");
    let text = MINIMAL
        .replace("data/fashion-mnist", "data/spamassassin")
        .replace(
            "\"fashion-mnist\"",
            "\"spamassassin\"\ntokenizer = \"vocab.txt\"",
        );
    let both = format!("{text}d_state = 8\n[compare]\nbackbones = [\"transformer\", \"mamba\"]\n");
    let e = Experiment::parse(&both).unwrap();
    assert_eq!(
        e.backbones(),
        vec![BackboneKind::Transformer, BackboneKind::Mamba]
    );
    let mamba = e.with_backbone(BackboneKind::Mamba);
    match mamba.backbone_config(100, 64).unwrap() {
        BackboneConfig::Mamba(c) => {
            assert_eq!(
                (c.mamba.n_layers, c.mamba.d_model, c.mamba.d_state),
                (4, 32, 8)
            );
            assert_eq!(c.pooling, Pooling::Last);
        }
        BackboneConfig::Transformer(_) => panic!("expected the Mamba backbone"),
    }
    let twice = both.replace("\"transformer\", \"mamba\"", "\"mamba\", \"mamba\"");
    let err = Experiment::parse(&twice).unwrap_err();
    assert!(format!("{err:#}").contains("compare.backbones"), "{err:#}");
    let err = Experiment::parse(&format!("{text}backbone = \"mamba\"\nd_state = 0\n")).unwrap_err();
    assert!(format!("{err:#}").contains("model.d_state"), "{err:#}");
}

#[test]
fn unknown_key_is_named() {
    let err = Experiment::parse(&format!("{MINIMAL}\n[train]\nepochz = 3\n")).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("epochz"), "{msg}");
}

#[test]
fn out_of_range_threshold_is_named() {
    let err =
        Experiment::parse(&format!("{MINIMAL}\n[compare]\nmax_prob = [0.5, 1.5]\n")).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("max_prob") && msg.contains("1.5"), "{msg}");
    let err = Experiment::parse(&format!("{MINIMAL}\n[compare]\nentropy = [-1.0]\n")).unwrap_err();
    assert!(format!("{err:#}").contains("entropy"));
}

#[test]
fn bad_model_shape_is_named() {
    let err = Experiment::parse(&MINIMAL.replace("n_heads = 4", "n_heads = 5")).unwrap_err();
    assert!(format!("{err:#}").contains("n_heads"));
}

#[test]
fn glue_settings_are_checked() {
    let glue = |data: &str, compare: &str| {
        let text = MINIMAL
            .replace(
                "dataset = \"fashion-mnist\"",
                &format!("dataset = \"glue\"\ntokenizer = \"vocab.txt\"\n{data}"),
            )
            .replace("path = \"data/fashion-mnist\"", "path = \"glue_data/X\"");
        Experiment::parse(&format!("{text}\n[compare]\n{compare}\n"))
    };
    let message = |r: Result<Experiment>| format!("{:#}", r.unwrap_err());
    let e = glue("task = \"SST-2\"", "").unwrap();
    assert_eq!(e.glue_task().unwrap(), Some(GlueTask::Sst2));
    assert!(!e.is_regression());
    assert!(message(glue("", "")).contains("missing `data.task`"));
    let m = message(glue("task = \"sst3\"", ""));
    assert!(m.contains("data.task") && m.contains("sst3"), "{m}");
    let m = message(glue("task = \"qnli\"\nmismatched = true", ""));
    assert!(m.contains("data.mismatched"), "{m}");
    assert!(glue("task = \"mnli\"\nmismatched = true", "").is_ok());
    // STS-B: regression policies only, and methods with a regression variant
    let e = glue(
        "task = \"sts_b\"",
        "methods = [\"pabee\"]\npatience = [2]\ntolerance = [0.3]",
    )
    .unwrap();
    assert!(e.is_regression());
    let names: Vec<String> = e
        .policies()
        .unwrap()
        .iter()
        .map(ponder_core::ExitPolicy::name)
        .collect();
    assert_eq!(
        names,
        [
            "full",
            "patience=2,tol=0.3",
            "fixed=1",
            "fixed=2",
            "fixed=3"
        ]
    );
    let m = message(glue("task = \"stsb\"", "methods = [\"jei_dnn\"]"));
    assert!(m.contains("regression variant"), "{m}");
    let m = message(glue("task = \"stsb\"", "tolerance = [-1.0]"));
    assert!(m.contains("compare.tolerance"), "{m}");
    let m = message(glue("task = \"stsb\"", "tolerance = []"));
    assert!(m.contains("compare.tolerance"), "{m}");
    // a task on another data set
    let m = message(Experiment::parse(&MINIMAL.replace(
        "dataset = \"fashion-mnist\"",
        "dataset = \"fashion-mnist\"\ntask = \"rte\"",
    )));
    assert!(m.contains("data.task"), "{m}");
}

#[test]
fn deebert_needs_two_layers() {
    let err = Experiment::parse(&MINIMAL.replace("n_layers = 4", "n_layers = 1")).unwrap_err();
    assert!(format!("{err:#}").contains("n_layers"));
}

#[test]
fn overrides_apply_and_are_checked() {
    let e = Experiment::parse(MINIMAL)
        .unwrap()
        .with_overrides(&["train.epochs=2".into(), "compare.patience=[1]".into()])
        .unwrap();
    assert_eq!(e.train.epochs, 2);
    assert_eq!(e.compare.patience, vec![1]);
    let err = Experiment::parse(MINIMAL)
        .unwrap()
        .with_overrides(&["train.learning_rate=0".into()])
        .unwrap_err();
    assert!(format!("{err:#}").contains("learning_rate"));
    assert!(
        Experiment::parse(MINIMAL)
            .unwrap()
            .with_overrides(&["train.nope=1".into()])
            .is_err()
    );
}

#[test]
fn offramp_pooler_is_separate_for_new_experiments_and_stacked_for_old_runs() {
    use crate::run::RunFolder;
    // a new experiment without the key: DeeBERT's reference form
    let e = Experiment::parse(MINIMAL).unwrap();
    assert_eq!(e.model.offramp_pooler, Some(OffRampPooler::Separate));
    for (value, form) in [
        ("separate", OffRampPooler::Separate),
        ("stacked", OffRampPooler::Stacked),
    ] {
        let text = format!("{MINIMAL}offramp_pooler = \"{value}\"\n");
        assert_eq!(Experiment::parse(&text).unwrap().offramp_pooler(), form);
        let e = Experiment::parse(MINIMAL)
            .unwrap()
            .with_overrides(&[format!("model.offramp_pooler={value}")])
            .unwrap();
        assert_eq!(e.offramp_pooler(), form);
    }
    let err = Experiment::parse(&format!("{MINIMAL}offramp_pooler = \"cls\"\n")).unwrap_err();
    assert!(format!("{err:#}").contains("offramp_pooler"), "{err:#}");

    let dir = tempfile::tempdir().unwrap();
    // a run folder saved before the key existed was trained in the stacked form
    let old = dir.path().join("old");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("config.toml"), MINIMAL).unwrap();
    let (_, e) = RunFolder::open(&old).unwrap();
    assert_eq!(e.offramp_pooler(), OffRampPooler::Stacked);
    // a new run records its form, so that it opens as it was trained
    for value in ["separate", "stacked"] {
        let text = format!("{MINIMAL}offramp_pooler = \"{value}\"\n");
        let e = Experiment::parse(&text).unwrap();
        let root = dir.path().join(value);
        RunFolder::create_at(root.clone(), &e).unwrap();
        let saved = std::fs::read_to_string(root.join("config.toml")).unwrap();
        assert!(
            saved.contains(&format!("offramp_pooler = \"{value}\"")),
            "{saved}"
        );
        let (_, reopened) = RunFolder::open(&root).unwrap();
        assert_eq!(reopened, e);
    }
    // even an experiment built in code without the key
    let mut e = Experiment::parse(MINIMAL).unwrap();
    e.model.offramp_pooler = None;
    let root = dir.path().join("unset");
    RunFolder::create_at(root.clone(), &e).unwrap();
    let (_, reopened) = RunFolder::open(&root).unwrap();
    assert_eq!(reopened.offramp_pooler(), OffRampPooler::Separate);
}

#[test]
fn only_deebert_models_get_offramp_poolers() {
    let heads = |text: &str, method: Method| {
        let e = Experiment::parse(text).unwrap();
        crate::pipeline::model_config(&e, method, 3, 10)
            .unwrap()
            .offramp_pooler
    };
    assert_eq!(
        heads(MINIMAL, Method::DeeBert),
        Some(OffRampPooler::Separate)
    );
    let stacked = format!("{MINIMAL}offramp_pooler = \"stacked\"\n");
    assert_eq!(
        heads(&stacked, Method::DeeBert),
        Some(OffRampPooler::Stacked)
    );
    for method in [
        Method::Pabee,
        Method::FinalOnly,
        Method::Palbert,
        Method::PonderNet,
        Method::JeiDnn,
    ] {
        assert_eq!(heads(&stacked, method), None, "{method:?}");
    }
}

/// A new experiment on a pretrained encoder gets [`pretrained_defaults`] for the keys it
/// leaves unset (and says which), keeps what it sets, and `--set` overrides them; an
/// experiment without a checkpoint, and a run folder's saved `config.toml`, get none.
#[test]
fn pretrained_experiments_get_the_exit_defaults_where_unset() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/ponder-transformer/tests/data/tiny-bert");
    let text = |extra_model: &str, extra_train: &str| {
        format!(
            "name = \"t\"\n[data]\ndataset = \"spamassassin\"\npath = \"x\"\ntokenizer = \"vocab.txt\"\nmax_tokens = 8\n[model]\npretrained = {:?}\nn_layers = 3\nd_model = 16\nn_heads = 4\nd_ff = 24\n{extra_model}[train]\nlearning_rate = 5e-5\n{extra_train}[compare]\nmethods = [\"pabee\", \"dee_bert\"]\n",
            dir.display().to_string()
        )
    };
    let e = Experiment::parse(&text("", "")).unwrap();
    assert_eq!(e.train.head_learning_rate, Some(1e-3));
    assert_eq!(e.train.heads_first_epochs, 1);
    assert!(e.model.head_input_norm);
    assert_eq!(e.model.dropout, 0.0);
    assert_eq!(e.pretrained_defaults.len(), 4);
    // with mean pooling, the encoder keeps its dropout
    let e = Experiment::parse(&text("pooling = \"mean\"\n", "")).unwrap();
    assert_eq!(
        (e.train.head_learning_rate, e.train.heads_first_epochs),
        (Some(1e-3), 1)
    );
    assert!(e.model.head_input_norm);
    assert_eq!(e.model.dropout, 0.1);
    assert_eq!(
        e.pretrained_defaults,
        vec![
            "train.head_learning_rate = 1e-3",
            "train.heads_first_epochs = 1",
            "model.head_input_norm = true"
        ]
    );
    // the heads-first stage is PABEE's: DeeBERT's configuration has none
    assert_eq!(e.train_config(Method::Pabee, 1).heads_first_epochs, 1);
    assert_eq!(e.train_config(Method::DeeBert, 1).heads_first_epochs, 0);
    e.train_config(Method::DeeBert, 1).validate().unwrap();
    // what the file sets stays
    let e = Experiment::parse(&text(
        "head_input_norm = false\ndropout = 0.2\n",
        "head_learning_rate = 2e-4\nheads_first_epochs = 0\n",
    ))
    .unwrap();
    assert_eq!(e.model.dropout, 0.2);
    assert_eq!(e.train.head_learning_rate, Some(2e-4));
    assert_eq!(e.train.heads_first_epochs, 0);
    assert!(!e.model.head_input_norm);
    assert!(e.pretrained_defaults.is_empty());
    // --set overrides a default, and the others stay defaults
    let e = Experiment::parse(&text("", ""))
        .unwrap()
        .with_overrides(&["train.heads_first_epochs=0".into()])
        .unwrap();
    assert_eq!(e.train.heads_first_epochs, 0);
    assert_eq!(
        e.pretrained_defaults,
        vec![
            "train.head_learning_rate = 1e-3",
            "model.head_input_norm = true",
            "model.dropout = 0.0"
        ]
    );
    // the defaults follow a pooling set on the command line
    let e = Experiment::parse(&text("", ""))
        .unwrap()
        .with_overrides(&["model.pooling=\"mean\"".into()])
        .unwrap();
    assert!(e.model.head_input_norm);
    assert_eq!(e.model.dropout, 0.1);
    assert_eq!(e.pretrained_defaults.len(), 3);
    // without a checkpoint: nothing is filled in
    let e = Experiment::parse(MINIMAL).unwrap();
    assert_eq!(
        (e.train.head_learning_rate, e.train.heads_first_epochs),
        (None, 0)
    );
    assert!(!e.model.head_input_norm && e.pretrained_defaults.is_empty());
    // a saved config.toml holds the values it was trained with: a folder saved before
    // the defaults existed has none, and loads without them
    let saved = tempfile::tempdir().unwrap();
    let path = saved.path().join("config.toml");
    std::fs::write(&path, text("", "")).unwrap();
    let e = Experiment::load_saved(&path).unwrap();
    assert_eq!(
        (e.train.head_learning_rate, e.train.heads_first_epochs),
        (None, 0)
    );
    assert!(!e.model.head_input_norm);
    assert_eq!(e.model.dropout, 0.1);
    // and one saved with them keeps them
    let new = Experiment::parse(&text("", "")).unwrap();
    std::fs::write(&path, toml::to_string(&new).unwrap()).unwrap();
    let e = Experiment::load_saved(&path).unwrap();
    assert_eq!(e.train.head_learning_rate, Some(1e-3));
    assert_eq!(e.train.heads_first_epochs, 1);
    assert!(e.model.head_input_norm);
    assert_eq!(e.model.dropout, 0.0);
}
