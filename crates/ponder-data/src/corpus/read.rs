//! How [`CorpusFiles::load`] reads a corpus: files streamed line by line (UTF-8 checked,
//! `"\r\n"` as `"\n"`, files joined by a blank line), characters numbered as they come,
//! and tokenizer text gathered into chunks cut only at lone newlines and encoded on
//! worker threads that keep only the ids (and each token's characters).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};

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
