//! The vocabulary a run records (`vocab.json`, the characters in id order, or a copy of
//! the `tokenizer.json`), and the check that a corpus's vocabulary is the one a trained
//! model's ids mean.

use std::path::Path;

use anyhow::{Context, Result, bail};
use ponder_data::{LmVocab, TextTokenizer};

use crate::run::RunFolder;

/// The recorded vocabulary of a run: `vocab.json` or `tokenizer.json`.
const CHARS_FILE: &str = "vocab.json";
const TOKENIZER_FILE: &str = "tokenizer.json";

/// Writes the corpus's vocabulary into a run folder (`vocab.json`: the characters in
/// id order; or `tokenizer.json`: a copy of the tokenizer), after checking that the run
/// holds no other one.
pub fn record_vocab(run: &RunFolder, vocab: &LmVocab) -> Result<()> {
    check_vocab(run.root(), vocab, false)?;
    match vocab {
        LmVocab::Chars(v) => {
            let chars: String = v.chars().iter().collect();
            run.write(CHARS_FILE, &serde_json::to_vec(&chars)?)
        }
        LmVocab::Tokenizer(t) => {
            if run.root().join(TOKENIZER_FILE).is_file() {
                return Ok(());
            }
            let bytes = std::fs::read(t.path())
                .with_context(|| format!("reading {}", t.path().display()))?;
            run.write(TOKENIZER_FILE, &bytes)
        }
    }
}

/// The serialised form of a tokenizer (padding and truncation off): equal for two files
/// that tokenize alike, whatever their formatting.
fn canonical(tokenizer: &TextTokenizer) -> Result<String> {
    tokenizer
        .inner()
        .to_string(false)
        .map_err(|e| anyhow::anyhow!("serialising {}: {e}", tokenizer.path().display()))
}

/// Checks that the vocabulary `run_dir` recorded is `vocab` (the model's ids mean the
/// same characters or tokens); `required`: a run that recorded none is an error.
pub fn check_vocab(run_dir: &Path, vocab: &LmVocab, required: bool) -> Result<()> {
    let chars_file = run_dir.join(CHARS_FILE);
    let tokenizer_file = run_dir.join(TOKENIZER_FILE);
    let run = run_dir.display();
    if tokenizer_file.is_file() {
        let saved = TextTokenizer::from_file(&tokenizer_file)
            .with_context(|| format!("reading the run's {}", tokenizer_file.display()))?;
        match vocab {
            LmVocab::Chars(_) => bail!(
                "the language model in {run} was trained with a tokenizer ({}), but the corpus uses characters (`data.tokenizer = \"chars\"`): its ids would mean other tokens",
                tokenizer_file.display()
            ),
            LmVocab::Tokenizer(t) => {
                if canonical(t)? != canonical(&saved)? {
                    bail!(
                        "the tokenizer {} is not the one the language model in {run} was trained with ({}): its ids would mean other tokens",
                        t.path().display(),
                        tokenizer_file.display()
                    );
                }
            }
        }
        return Ok(());
    }
    if chars_file.is_file() {
        let saved: String = serde_json::from_slice(
            &std::fs::read(&chars_file)
                .with_context(|| format!("reading {}", chars_file.display()))?,
        )
        .with_context(|| format!("reading {}", chars_file.display()))?;
        match vocab {
            LmVocab::Tokenizer(t) => bail!(
                "the language model in {run} was trained on characters ({}), but the corpus uses the tokenizer {}: its ids would mean other characters",
                chars_file.display(),
                t.path().display()
            ),
            LmVocab::Chars(v) => {
                if saved != v.chars().iter().collect::<String>() {
                    bail!(
                        "the corpus has other characters than the language model in {run} was trained on ({}): its ids would mean other characters",
                        chars_file.display()
                    );
                }
            }
        }
        return Ok(());
    }
    if required {
        bail!(
            "{run} records no vocabulary ({CHARS_FILE} or {TOKENIZER_FILE}): it holds no language model trained by `ponder lm`"
        );
    }
    Ok(())
}

/// Checks that a corpus can feed the pretrained model in `folder`: the corpus uses the
/// folder's `tokenizer.json`, and the tokenizer's ids fit the model's `vocab_size`.
pub fn check_pretrained_vocab(folder: &Path, vocab: &LmVocab) -> Result<()> {
    let tokenizer = folder.join(TOKENIZER_FILE);
    if !tokenizer.is_file() {
        bail!(
            "the checkpoint folder {} has no {TOKENIZER_FILE}: a pretrained model needs its tokenizer",
            folder.display()
        );
    }
    if let LmVocab::Chars(_) = vocab {
        bail!(
            "the corpus uses characters, but the pretrained model in {} reads the tokens of its {TOKENIZER_FILE}: set `data.tokenizer = \"{}\"`",
            folder.display(),
            tokenizer.display()
        );
    }
    check_vocab(folder, vocab, true)?;
    let (json, _) = super::trained::checkpoint_config(folder)?;
    if let Some(model_vocab) = json.get("vocab_size").and_then(|v| v.as_u64())
        && vocab.len() as u64 > model_vocab
    {
        bail!(
            "the tokenizer {} has {} tokens, more than the model's vocab_size = {model_vocab} in {}",
            tokenizer.display(),
            vocab.len(),
            folder.join("config.json").display()
        );
    }
    Ok(())
}
