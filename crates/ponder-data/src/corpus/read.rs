//! How [`CorpusFiles::load`] reads a corpus: files streamed line by line (UTF-8 checked,
//! `"\r\n"` as `"\n"`, files joined by a blank line), characters numbered as they come,
//! and tokenizer text gathered into chunks cut only at lone newlines and encoded a batch
//! at a time on rayon's threads, keeping only the ids (and each token's characters).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{
    CorpusFiles, CorpusSplit, LmCorpus, LmVocab, MAX_CHUNK_BYTES, VocabSource, load_tokenizer,
    names,
};
use crate::chars::CharTable;
use crate::error::{DataError, Result};
use crate::tokenize::TextTokenizer;

/// How the files of a split are joined.
const SEPARATOR: &str = "\n\n";

impl CorpusFiles {
    pub(super) fn load_chars(&self) -> Result<LmCorpus> {
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

    pub(super) fn load_tokens(&self, path: &Path) -> Result<LmCorpus> {
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

    pub(super) fn read_tokens(
        &self,
        tokenizer: &TextTokenizer,
        files: &[PathBuf],
        record: bool,
    ) -> Result<CorpusSplit> {
        let mut encoder = TokenEncoder {
            tokenizer,
            chunk_bytes: self.chunk_bytes,
            record,
            batch: 2 * rayon::current_num_threads(),
            pending: Vec::new(),
            current: String::new(),
            current_at: (PathBuf::new(), 0),
            split: CorpusSplit::default(),
            carry: 0,
        };
        read_lines(files, |text, path, line| encoder.push(text, path, line))?;
        let mut split = encoder.finish()?;
        split.files = names(files);
        Ok(split)
    }
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

pub(super) fn read_chars(files: &[PathBuf], table: &mut CharTable) -> Result<Vec<u32>> {
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

/// Gathers lines into chunks cut at allowed places, encodes them `batch` at a time in
/// parallel, and keeps the ids (and, when `record`, each token's characters) in order.
/// Each chunk's bulky encoding is made and freed on its thread; only its ids come back.
struct TokenEncoder<'a> {
    tokenizer: &'a TextTokenizer,
    chunk_bytes: usize,
    record: bool,
    /// Chunks encoded together.
    batch: usize,
    /// Chunks cut but not yet encoded, with the file and line where each starts.
    pending: Vec<(String, (PathBuf, usize))>,
    current: String,
    current_at: (PathBuf, usize),
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

    /// Queues the current chunk, and encodes the queue once it holds a batch.
    fn cut(&mut self) -> Result<()> {
        let capacity = self.chunk_bytes.min(MAX_CHUNK_BYTES) + 4096;
        let chunk = std::mem::replace(&mut self.current, String::with_capacity(capacity));
        self.pending.push((chunk, self.current_at.clone()));
        if self.pending.len() >= self.batch {
            self.encode_pending()?;
        }
        Ok(())
    }

    /// Encodes the queued chunks in parallel and absorbs them in order.
    fn encode_pending(&mut self) -> Result<()> {
        let (inner, record) = (self.tokenizer.inner(), self.record);
        let encoded: Vec<_> = self
            .pending
            .par_iter()
            .map(|(chunk, _)| {
                std::panic::catch_unwind(AssertUnwindSafe(|| {
                    encode_chunk(inner, chunk, record).map_err(|e| e.to_string())
                }))
                .unwrap_or_else(|_| Err("the tokenizer panicked".into()))
            })
            .collect();
        for ((_, (path, line)), result) in
            std::mem::take(&mut self.pending).into_iter().zip(encoded)
        {
            let chunk = result.map_err(|message| DataError::Tokenizer {
                path: self.tokenizer.path().to_path_buf(),
                message: format!(
                    "cannot encode {} from line {line}: {message}",
                    path.display()
                ),
            })?;
            self.absorb(chunk);
        }
        Ok(())
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
        self.encode_pending()?;
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
