//! Tests of the LM experiment file: the presets parse, bad values are named, and the
//! Shakespeare and text forms of `[data]` do not mix.

use super::*;

fn config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs")
        .join(name)
}

#[test]
fn the_preset_parses_and_bad_values_are_named() {
    let path = config("shakespeare-mamba.toml");
    let e = LmExperiment::load(&path, &[]).unwrap();
    assert!(e.model.d_model > 0);
    let err = LmExperiment::load(&path, &["train.warmup_steps=1000000".into()]).unwrap_err();
    assert!(format!("{err:#}").contains("train.warmup_steps"), "{err:#}");
    let err = LmExperiment::load(&path, &["model.d_state=0".into()]).unwrap_err();
    assert!(format!("{err:#}").contains("model.d_state"), "{err:#}");
    let err = LmExperiment::load(&path, &["model.colour=1".into()]).unwrap_err();
    assert!(format!("{err:#}").contains("colour"), "{err:#}");
}

#[test]
fn the_shakespeare_form_reads_and_writes_as_before() {
    let e = LmExperiment::load(&config("shakespeare-mamba.toml"), &[]).unwrap();
    assert_eq!(e.data, LmData::shakespeare("data/shakespeare", 10));
    assert_eq!(e.data.vocab_source(), VocabSource::CharsOfAllSplits);
    assert_eq!(
        toml::to_string(&e.data).unwrap(),
        "path = \"data/shakespeare\"\nvalid_every = 10\n"
    );
}

#[test]
fn the_text_preset_parses_and_the_forms_do_not_mix() {
    let path = config("lm-text.toml");
    let e = LmExperiment::load(&path, &[]).unwrap();
    assert_eq!(e.data.form(), CorpusFormat::Text);
    assert_eq!(e.data.vocab_source(), VocabSource::CharsOfAllSplits);
    let tokens =
        LmExperiment::load(&path, &["data.tokenizer=\"t/tokenizer.json\"".into()]).unwrap();
    assert_eq!(
        tokens.data.vocab_source(),
        VocabSource::Tokenizer("t/tokenizer.json".into())
    );
    for (set, keys) in [
        ("data.path=\"x\"", vec!["data.path"]),
        ("data.valid_every=3", vec!["data.valid_every"]),
    ] {
        let err = LmExperiment::load(&path, &[set.into()]).unwrap_err();
        for key in keys {
            assert!(format!("{err:#}").contains(key), "{set}: {err:#}");
        }
    }
    let shakespeare = config("shakespeare-mamba.toml");
    let err = LmExperiment::load(
        &shakespeare,
        &["data.train=\"a\"".into(), "data.test=\"b\"".into()],
    )
    .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("data.train") && err.contains("data.test") && err.contains("format"),
        "{err}"
    );
    let mut data = LmData::text("a", "b");
    data.valid = None;
    let err = data.validate().unwrap_err().to_string();
    assert!(err.contains("data.valid"), "{err}");
    data.tokenizer = Some(" ".into());
    data.valid = Some("b".into());
    let err = data.validate().unwrap_err().to_string();
    assert!(err.contains("data.tokenizer"), "{err}");
}
