//! Reads a text corpus as a language model's training split and prints what it holds.
//!
//! ```text
//! cargo run --release -p ponder-data --example load_corpus -- TRAIN [TOKENIZER [CHUNK_BYTES]]
//! ```
//!
//! `TRAIN` is a text file or a folder of `.txt` files; `TOKENIZER` is `chars` (the
//! default: the characters of the text) or a `tokenizer.json`, encoded in chunks of
//! `CHUNK_BYTES` (default 1 MiB). Without arguments it reads this crate's `README.md`.
//! Run it under
//! `/usr/bin/time -v` to see the peak memory of loading: the text is read line by line
//! and only its ids (4 bytes per token) stay.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use ponder_data::{CorpusFiles, DEFAULT_CHUNK_BYTES, VocabSource, text_files};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // without arguments: this crate's README, so the example runs anywhere
    let readme = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md").to_string();
    let train = args.first().unwrap_or(&readme);
    let vocab = match args.get(1).map(String::as_str) {
        None | Some("chars") => VocabSource::Chars,
        Some(path) => VocabSource::Tokenizer(PathBuf::from(path)),
    };
    let chunk_bytes = match args.get(2).map(|a| a.parse::<usize>()) {
        None => DEFAULT_CHUNK_BYTES,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("CHUNK_BYTES: {e}");
            return ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    let loaded = text_files(Path::new(train)).and_then(|files| {
        CorpusFiles::new(files, Vec::new(), vocab)
            .with_chunk_bytes(chunk_bytes)
            .load_train()
    });
    match loaded {
        Ok((vocab, split)) => {
            println!("files: {}", split.files.len());
            println!("tokens: {}", split.len());
            println!("characters: {}", split.chars);
            println!("characters per token: {:.3}", split.chars_per_token());
            println!("vocabulary: {} ({} ids)", vocab.describe(), vocab.len());
            println!("seconds: {:.2}", start.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
