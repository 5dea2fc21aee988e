use std::path::Path;

use ponder_data::LmCorpus;

use super::evaluate::families;
use super::sequences::sequences;
use super::*;

#[test]
fn the_preset_parses_and_bad_values_are_named() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/shakespeare-token-exit.toml");
    assert!(TokenExitExperiment::is_token_exit(&path));
    assert!(!TokenExitExperiment::is_token_exit(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/shakespeare-mamba.toml")
    ));
    let e = TokenExitExperiment::load(&path, &[]).unwrap();
    assert_eq!(e.backbones.len(), 2);
    assert_eq!(e.specs(84).len(), e.token_exit.classifiers.len());
    // every family, thresholds from the most conservative
    let families = families(&e, 84);
    assert_eq!(families.len(), e.token_exit.classifiers.len() + 3);
    for (_, _, rules) in &families {
        assert!(
            rules
                .windows(2)
                .all(|w| w[0].threshold() > w[1].threshold())
        );
    }
    for (set, key) in [
        ("token_exit.exits=[2, 1]", "token_exit.exits"),
        ("token_exit.exits=[]", "token_exit.exits"),
        (
            "token_exit.target_consistency=1.0",
            "token_exit.target_consistency",
        ),
        ("token_exit.ltt_epsilon=0.0", "token_exit.ltt_epsilon"),
        ("token_exit.gen_len=1", "token_exit.gen_len"),
        ("token_exit.batch_size=0", "token_exit.batch_size"),
        (
            "token_exit.always_run_last=[]",
            "token_exit.always_run_last",
        ),
        ("classifier_train.steps=0", "classifier_train.steps"),
        ("token_exit.colour=1", "colour"),
        (
            "token_exit.classifiers=[{ kind = \"linear\", top_k = 1, k_fraction = 0.1 }]",
            "not both",
        ),
        (
            "token_exit.classifiers=[{ kind = \"linear\", k_fraction = 1.5 }]",
            "k_fraction",
        ),
        (
            "backbones=[{ name = \"x\", lm = \"a.toml\", run = \"runs/a\", pretrained = \"data/m\", skip_rule = \"copy\" }]",
            "either `lm` and `run`",
        ),
        (
            "backbones=[{ name = \"x\", lm = \"a.toml\", skip_rule = \"copy\" }]",
            "either `lm` and `run`",
        ),
    ] {
        let err = TokenExitExperiment::load(&path, &[set.into()]).unwrap_err();
        assert!(format!("{err:#}").contains(key), "{set}: {err:#}");
    }
}

#[test]
fn k_fraction_is_a_share_of_the_vocabulary() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/shakespeare-token-exit.toml");
    let set = "token_exit.classifiers=[{ kind = \"linear\", k_fraction = 0.0005 }, { kind = \"mamba\", top_k = 15 }]";
    let e = TokenExitExperiment::load(&path, &[set.into()]).unwrap();
    let k = |vocab| e.specs(vocab).iter().map(|s| s.top_k).collect::<Vec<_>>();
    // DYNAMAX's k = 15 of Mistral's 32,000 tokens; at least 1 of a small vocabulary
    assert_eq!(k(32_000), vec![16, 15]);
    assert_eq!(k(84), vec![1, 15]);
    assert_eq!(e.specs(49_152)[0].name(), "linear[k=25]");
}

#[test]
fn pretrained_backbones_need_the_checkpoint_tokenizer() {
    let dir = std::env::temp_dir().join(format!("ponder-pretrained-vocab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let chars = LmCorpus::from_texts("abc", "abc").vocab;
    // no tokenizer.json in the folder
    let err = crate::lm::check_pretrained_vocab(&dir, &chars).unwrap_err();
    assert!(format!("{err:#}").contains("no tokenizer.json"), "{err:#}");
    // a character corpus for a model that reads tokens
    let word_level = r#"{"version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [], "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"a": 0, "b": 1, "[UNK]": 2}, "unk_token": "[UNK]"}}"#;
    std::fs::write(dir.join("tokenizer.json"), word_level).unwrap();
    let err = crate::lm::check_pretrained_vocab(&dir, &chars).unwrap_err();
    assert!(format!("{err:#}").contains("data.tokenizer"), "{err:#}");
    // the checkpoint's own tokenizer, but more tokens than the model's vocabulary
    let tokens = ponder_data::LmVocab::Tokenizer(Box::new(
        ponder_data::TextTokenizer::from_file(dir.join("tokenizer.json")).unwrap(),
    ));
    std::fs::write(dir.join("config.json"), r#"{"vocab_size": 2}"#).unwrap();
    let err = crate::lm::check_pretrained_vocab(&dir, &tokens).unwrap_err();
    assert!(format!("{err:#}").contains("vocab_size = 2"), "{err:#}");
    std::fs::write(dir.join("config.json"), r#"{"vocab_size": 3}"#).unwrap();
    crate::lm::check_pretrained_vocab(&dir, &tokens).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sequences_interleave_calibration_and_test() {
    let corpus = LmCorpus::from_texts(&"a".repeat(100), &"ab".repeat(500));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/shakespeare-token-exit.toml");
    let mut sweep = TokenExitExperiment::load(&path, &[]).unwrap().token_exit;
    (sweep.prompt_len, sweep.gen_len) = (4, 6);
    (sweep.calibration_sequences, sweep.test_sequences) = (7, 3);
    let (cal, test) = sequences(&corpus, &sweep).unwrap();
    assert_eq!((cal.prompts.len(), test.prompts.len()), (7, 3));
    assert!(
        cal.prompts
            .iter()
            .chain(&test.prompts)
            .all(|p| p.len() == 4)
    );
    assert!(cal.truth.iter().chain(&test.truth).all(|t| t.len() == 6));
    sweep.calibration_sequences = 200;
    assert!(sequences(&corpus, &sweep).is_err(), "windows would overlap");
}
