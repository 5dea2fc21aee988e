//! [`TextTokenizer`]: a BERT-style subword tokenizer (Hugging Face `tokenizers`), loaded
//! from a `tokenizer.json` or built from a WordPiece `vocab.txt`.

use std::path::{Path, PathBuf};

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, Encoding, PostProcessor, Tokenizer, TruncationDirection, TruncationParams,
    TruncationStrategy, truncate_encodings,
};

use crate::error::{DataError, Result};
use crate::text::TextExample;

/// Token ids of one text (or text pair), special tokens included.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encoded {
    /// Token ids, e.g. `[CLS] ... [SEP]`.
    pub ids: Vec<u32>,
    /// Segment ids: 0 for the first text (and its special tokens), 1 for the second.
    pub type_ids: Vec<u32>,
}

impl Encoded {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A subword tokenizer that adds the model's special tokens and truncates, without padding
/// (padding is done per batch by [`TokenBatch`](crate::TokenBatch)).
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    pad_token: String,
    vocab_size: usize,
}

impl TextTokenizer {
    /// Loads a tokenizer from a file (or a folder holding one):
    ///
    /// * a `tokenizer.json` of Hugging Face `tokenizers` (recognised by its content, a JSON
    ///   object); its own padding and truncation settings are turned off (e.g.
    ///   all-MiniLM-L6-v2's pads everything to 128 tokens);
    /// * a WordPiece `vocab.txt` (one token per line, the line number is the id): builds an
    ///   uncased BERT tokenizer (BERT normaliser with lowercasing, BERT pre-tokenizer,
    ///   WordPiece with `[UNK]`, `[CLS] A [SEP]` / `[CLS] A [SEP] B [SEP]` templates);
    /// * a folder: its `tokenizer.json` if there is one, else its `vocab.txt`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            let json = path.join("tokenizer.json");
            let vocab = path.join("vocab.txt");
            path = if json.is_file() {
                json
            } else if vocab.is_file() {
                vocab
            } else {
                return Err(DataError::MissingDataset {
                    hint: "the folder has neither tokenizer.json nor vocab.txt; \
                           run `scripts/fetch-data.sh minilm`"
                        .into(),
                    path,
                });
            };
        } else if !path.exists() {
            return Err(DataError::MissingDataset {
                path,
                hint: "run `scripts/fetch-data.sh minilm`".into(),
            });
        }
        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, "read", e))?;
        let is_json = bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|&b| b == b'{');
        if is_json {
            Self::from_json_bytes(&bytes, path)
        } else {
            Self::from_vocab_bytes(&bytes, path)
        }
    }

    fn from_json_bytes(bytes: &[u8], path: PathBuf) -> Result<Self> {
        let mut inner = Tokenizer::from_bytes(bytes).map_err(|e| DataError::Tokenizer {
            path: path.clone(),
            message: format!("cannot parse tokenizer.json: {e}"),
        })?;
        let pad_token = inner
            .get_padding()
            .map_or_else(|| "[PAD]".to_string(), |p| p.pad_token.clone());
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| DataError::Tokenizer {
                path: path.clone(),
                message: format!("cannot turn truncation off: {e}"),
            })?;
        Ok(Self::finish(inner, path, pad_token))
    }

    fn from_vocab_bytes(bytes: &[u8], path: PathBuf) -> Result<Self> {
        let err = |message: String| DataError::Tokenizer {
            path: path.clone(),
            message,
        };
        let vocab = WordPiece::read_bytes(bytes)
            .map_err(|e| err(format!("cannot read WordPiece vocabulary: {e}")))?;
        if vocab.is_empty() {
            return Err(err("empty vocabulary".into()));
        }
        for needed in ["[UNK]", "[CLS]", "[SEP]"] {
            if !vocab.contains_key(needed) {
                return Err(err(format!("vocabulary has no {needed} token")));
            }
        }
        let id = |t: &str| vocab.get(t).copied();
        let (cls, sep) = (id("[CLS]").unwrap_or(0), id("[SEP]").unwrap_or(0));
        let specials: Vec<AddedToken> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            .into_iter()
            .filter(|t| vocab.contains_key(*t))
            .map(|t| AddedToken::from(t, true))
            .collect();
        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token("[UNK]".into())
            .continuing_subword_prefix("##".into())
            .build()
            .map_err(|e| err(format!("cannot build WordPiece: {e}")))?;
        let template = TemplateProcessing::builder()
            .try_single("[CLS] $A [SEP]")
            .and_then(|b| b.try_pair("[CLS] $A [SEP] $B:1 [SEP]:1"))
            .map_err(|e| err(format!("bad template: {e}")))?
            .special_tokens(vec![("[CLS]", cls), ("[SEP]", sep)])
            .build()
            .map_err(|e| err(format!("bad template: {e}")))?;

        let mut inner = Tokenizer::new(model);
        inner
            .with_normalizer(Some(BertNormalizer::default()))
            .map_err(|e| err(format!("cannot set normaliser: {e}")))?;
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        inner.with_post_processor(Some(template));
        inner.with_decoder(Some(WordPieceDecoder::default()));
        inner
            .add_special_tokens(specials)
            .map_err(|e| err(format!("cannot add special tokens: {e}")))?;
        Ok(Self::finish(inner, path, "[PAD]".into()))
    }

    fn finish(inner: Tokenizer, path: PathBuf, pad_token: String) -> Self {
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1);
        Self {
            inner,
            path,
            pad_token,
            vocab_size,
        }
    }

    /// The file this tokenizer was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The wrapped `tokenizers::Tokenizer` (padding and truncation off).
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Size of an embedding table for these ids: the largest id + 1.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Id of a token, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Id of the padding token (`[PAD]`, or the pad token named by a `tokenizer.json`).
    pub fn pad_id(&self) -> Result<u32> {
        self.required_id(&self.pad_token)
    }

    /// Id of `[CLS]`.
    pub fn cls_id(&self) -> Result<u32> {
        self.required_id("[CLS]")
    }

    /// Id of `[SEP]`.
    pub fn sep_id(&self) -> Result<u32> {
        self.required_id("[SEP]")
    }

    fn required_id(&self, token: &str) -> Result<u32> {
        self.token_id(token).ok_or_else(|| DataError::Tokenizer {
            path: self.path.clone(),
            message: format!("vocabulary has no {token} token"),
        })
    }

    /// Encodes one text with special tokens (`[CLS] ... [SEP]`), keeping at most `max_len`
    /// tokens: the text is cut, the special tokens are kept (so `[SEP]` stays last).
    ///
    /// Errors if `max_len` is smaller than the number of special tokens.
    pub fn encode(&self, text: &str, max_len: usize) -> Result<Encoded> {
        self.encode_impl(text, None, max_len)
    }

    /// Encodes a text pair (`[CLS] a [SEP] b [SEP]`, type ids 0 then 1) keeping at most
    /// `max_len` tokens; the longer text is cut first.
    pub fn encode_pair(&self, a: &str, b: &str, max_len: usize) -> Result<Encoded> {
        self.encode_impl(a, Some(b), max_len)
    }

    /// Encodes an example's text, or its text pair if it has one.
    pub fn encode_example(&self, example: &TextExample, max_len: usize) -> Result<Encoded> {
        self.encode_impl(&example.text, example.text_pair.as_deref(), max_len)
    }

    /// Turns ids back into text (special tokens skipped), for inspection.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| self.error(e))
    }

    fn encode_impl(&self, a: &str, b: Option<&str>, max_len: usize) -> Result<Encoded> {
        let added = self
            .inner
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(b.is_some()));
        let budget = max_len
            .checked_sub(added)
            .ok_or_else(|| DataError::Tokenizer {
                path: self.path.clone(),
                message: format!("max_len {max_len} cannot hold the {added} special tokens"),
            })?;
        let raw = |text: &str| -> Result<Encoding> {
            self.inner
                .encode_fast(text, false)
                .map_err(|e| self.error(e))
        };
        let first = raw(a)?;
        let second = b.map(raw).transpose()?;
        let params = TruncationParams {
            direction: TruncationDirection::Right,
            max_length: budget,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        };
        let (first, second) =
            truncate_encodings(first, second, &params).map_err(|e| self.error(e))?;
        let encoding = self
            .inner
            .post_process(first, second, true)
            .map_err(|e| self.error(e))?;
        Ok(Encoded {
            ids: encoding.get_ids().to_vec(),
            type_ids: encoding.get_type_ids().to_vec(),
        })
    }

    fn error(&self, e: impl std::fmt::Display) -> DataError {
        DataError::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::{PaddingParams, PaddingStrategy};

    const VOCAB: &[&str] = &[
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "!", "un", "##aff",
        "##able", "the", "cat", ".",
    ];

    fn vocab_file() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vocab.txt");
        std::fs::write(&path, VOCAB.join("\n") + "\n").unwrap();
        (dir, path)
    }

    #[test]
    fn vocab_txt_gives_exact_ids() {
        let (_dir, path) = vocab_file();
        let tok = TextTokenizer::from_file(&path).unwrap();
        assert_eq!(tok.vocab_size(), VOCAB.len());
        assert_eq!(tok.pad_id().unwrap(), 0);
        assert_eq!(tok.cls_id().unwrap(), 2);
        assert_eq!(tok.sep_id().unwrap(), 3);
        // Lowercasing, a word split into pieces, and `,` / `zebra` unknown.
        let e = tok.encode("Hello, WORLD! unaffable zebra", 64).unwrap();
        assert_eq!(e.ids, vec![2, 5, 1, 6, 7, 8, 9, 10, 1, 3]);
        assert_eq!(e.type_ids, vec![0; 10]);
        assert_eq!(tok.decode(&e.ids).unwrap(), "hello world! unaffable");
    }

    #[test]
    fn truncation_keeps_sep_last() {
        let (_dir, path) = vocab_file();
        let tok = TextTokenizer::from_file(&path).unwrap();
        let e = tok.encode("hello world the cat.", 4).unwrap();
        assert_eq!(e.ids, vec![2, 5, 6, 3]);
        let e = tok.encode("hello world", 2).unwrap();
        assert_eq!(e.ids, vec![2, 3]);
        let err = tok.encode("hello", 1).unwrap_err().to_string();
        assert!(
            err.contains("vocab.txt") && err.contains("max_len 1"),
            "{err}"
        );
    }

    #[test]
    fn pairs_have_type_ids_and_truncate_longest_first() {
        let (_dir, path) = vocab_file();
        let tok = TextTokenizer::from_file(&path).unwrap();
        let e = tok.encode_pair("hello world", "the cat", 64).unwrap();
        assert_eq!(e.ids, vec![2, 5, 6, 3, 11, 12, 3]);
        assert_eq!(e.type_ids, vec![0, 0, 0, 0, 1, 1, 1]);
        let e = tok.encode_pair("hello world the cat .", "cat", 7).unwrap();
        assert_eq!(e.ids, vec![2, 5, 6, 11, 3, 12, 3]);
        let ex = TextExample {
            text: "hello".into(),
            text_pair: Some("cat".into()),
            label: 0,
        };
        assert_eq!(
            tok.encode_example(&ex, 64).unwrap().ids,
            vec![2, 5, 3, 12, 3]
        );
    }

    #[test]
    fn special_tokens_in_text_are_recognised() {
        let (_dir, path) = vocab_file();
        let tok = TextTokenizer::from_file(&path).unwrap();
        let e = tok.encode("hello [MASK] cat", 64).unwrap();
        assert_eq!(e.ids, vec![2, 5, 4, 12, 3]);
    }

    #[test]
    fn tokenizer_json_has_padding_and_truncation_turned_off() {
        let (dir, path) = vocab_file();
        let tok = TextTokenizer::from_file(&path).unwrap();
        let mut padded = tok.inner().clone();
        padded.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(16),
            pad_token: "[PAD]".into(),
            pad_id: 0,
            ..PaddingParams::default()
        }));
        padded
            .with_truncation(Some(TruncationParams {
                max_length: 16,
                ..TruncationParams::default()
            }))
            .unwrap();
        // The padded tokenizer really pads.
        assert_eq!(padded.encode("hello", true).unwrap().get_ids().len(), 16);
        let json = dir.path().join("tokenizer.json");
        padded.save(&json, false).unwrap();

        let loaded = TextTokenizer::from_file(&json).unwrap();
        assert!(loaded.inner().get_padding().is_none());
        assert!(loaded.inner().get_truncation().is_none());
        let e = loaded.encode("Hello world!", 64).unwrap();
        assert_eq!(e.ids, vec![2, 5, 6, 7, 3]);
        assert_eq!(loaded.pad_id().unwrap(), 0);
        assert_eq!(loaded.vocab_size(), VOCAB.len());
        // A folder with both files prefers tokenizer.json.
        let from_dir = TextTokenizer::from_file(dir.path()).unwrap();
        assert!(from_dir.path().ends_with("tokenizer.json"));
    }

    #[test]
    fn bad_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("tokenizer.json");
        std::fs::write(&json, "{ \"not\": \"a tokenizer\" }").unwrap();
        let msg = TextTokenizer::from_file(&json).unwrap_err().to_string();
        assert!(msg.contains("tokenizer.json"), "{msg}");

        let vocab = dir.path().join("vocab.txt");
        std::fs::write(&vocab, "a\nb\n[CLS]\n[SEP]\n").unwrap();
        let msg = TextTokenizer::from_file(&vocab).unwrap_err().to_string();
        assert!(msg.contains("vocab.txt") && msg.contains("[UNK]"), "{msg}");

        let missing = dir.path().join("minilm");
        let err = TextTokenizer::from_file(&missing).unwrap_err();
        assert!(matches!(err, DataError::MissingDataset { .. }), "{err}");
    }

    #[test]
    fn missing_pad_token_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let vocab = dir.path().join("vocab.txt");
        std::fs::write(&vocab, "[UNK]\n[CLS]\n[SEP]\nhi\n").unwrap();
        let tok = TextTokenizer::from_file(&vocab).unwrap();
        let msg = tok.pad_id().unwrap_err().to_string();
        assert!(msg.contains("vocab.txt") && msg.contains("[PAD]"), "{msg}");
    }
}
