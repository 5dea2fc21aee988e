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
    assert_eq!(e.specs().len(), e.token_exit.classifiers.len());
    // every family, thresholds from the most conservative
    let families = families(&e);
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
    ] {
        let err = TokenExitExperiment::load(&path, &[set.into()]).unwrap_err();
        assert!(format!("{err:#}").contains(key), "{set}: {err:#}");
    }
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
