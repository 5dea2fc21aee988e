//! The error type of this crate.
//!
//! Every variant that concerns a file names that file, and says what is wrong with it,
//! so that a message such as
//! `truncated file data/x.gz: header says 60000 images of 28x28 (47040000 bytes) but only 1234 bytes follow`
//! is enough to act on without a debugger.

use std::fmt;
use std::path::{Path, PathBuf};

/// Result with a [`DataError`].
pub type Result<T> = std::result::Result<T, DataError>;

/// Everything that can go wrong while reading, tokenizing or batching data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An I/O operation on a file or folder failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What was being done ("read", "open", "list the folder", ...).
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A file does not have the expected format.
    #[error("bad format in {}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A file is shorter than its header (or its format) says it should be.
    #[error(
        "truncated file {}: {what} ({expected} bytes) but only {actual} bytes follow",
        path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What the header promised, e.g. "header says 60000 images of 28x28".
        what: String,
        /// Bytes expected.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },

    /// A label in a text data set is not one of the known label names.
    #[error(
        "unknown label {label:?} in {} line {line}; known labels: {}",
        path.display(),
        KnownLabels(known)
    )]
    UnknownLabel {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The label found.
        label: String,
        /// The labels that are accepted.
        known: Vec<String>,
    },

    /// A data set (file or folder) is not where it was looked for.
    #[error("data set not found at {}: {hint}", path.display())]
    MissingDataset {
        /// Where it was looked for.
        path: PathBuf,
        /// How to get it, e.g. "run `scripts/fetch-data.sh fashion-mnist`".
        hint: String,
    },

    /// Building or running a tokenizer failed.
    #[error("tokenizer {}: {message}", path.display())]
    Tokenizer {
        /// The tokenizer file (`tokenizer.json` or `vocab.txt`).
        path: PathBuf,
        /// What went wrong.
        message: String,
    },

    /// Split fractions are invalid.
    #[error("invalid split: {message}")]
    InvalidSplit {
        /// What is wrong.
        message: String,
    },

    /// An argument given by the calling code is invalid (mismatched lengths, index out of
    /// range, ...).
    #[error("invalid input: {message}")]
    InvalidInput {
        /// What is wrong.
        message: String,
    },
}

impl DataError {
    /// An [`DataError::Io`] error for `path`.
    pub fn io(path: impl AsRef<Path>, action: &'static str, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().to_path_buf(),
            action,
            source,
        }
    }

    /// A [`DataError::Format`] error for `path`.
    pub fn format(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self::Format {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }
}

/// Formats a list of labels as `"a", "b", "c"`.
struct KnownLabels<'a>(&'a [String]);

impl fmt::Display for KnownLabels<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(none)");
        }
        for (i, label) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{label:?}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_message_names_file_and_sizes() {
        let e = DataError::Truncated {
            path: PathBuf::from("data/x.gz"),
            what: "header says 60000 images of 28x28".into(),
            expected: 47_040_000,
            actual: 1234,
        };
        assert_eq!(
            e.to_string(),
            "truncated file data/x.gz: header says 60000 images of 28x28 (47040000 bytes) \
             but only 1234 bytes follow"
        );
    }

    #[test]
    fn unknown_label_lists_known_labels() {
        let e = DataError::UnknownLabel {
            path: PathBuf::from("train.tsv"),
            line: 7,
            label: "maybe".into(),
            known: vec!["0".into(), "1".into()],
        };
        assert_eq!(
            e.to_string(),
            "unknown label \"maybe\" in train.tsv line 7; known labels: \"0\", \"1\""
        );
    }

    #[test]
    fn io_error_keeps_source() {
        let e = DataError::io(
            "a/b",
            "read",
            std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        );
        assert_eq!(e.to_string(), "cannot read a/b: gone");
        assert!(std::error::Error::source(&e).is_some());
    }
}
