//! The common error type of the library crates.

/// Result type of the ponder library crates.
pub type Result<T> = std::result::Result<T, PonderError>;

/// What went wrong, with the names a user needs to fix it.
#[derive(Debug, thiserror::Error)]
pub enum PonderError {
    /// A configuration value is out of its valid range or inconsistent.
    #[error("invalid value for `{key}`: {message}")]
    InvalidConfig {
        /// The configuration key (or parameter name) at fault.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A tensor or batch has a shape the operation cannot accept.
    #[error("shape mismatch in {context}: expected {expected}, got {actual}")]
    Shape {
        /// Where the mismatch was found.
        context: String,
        /// What was expected.
        expected: String,
        /// What was found.
        actual: String,
    },
    /// A loss or probability became NaN or infinite.
    #[error("non-finite value in {what} at step {step}: {value}")]
    NonFinite {
        /// What became non-finite (e.g. "training loss").
        what: String,
        /// The optimisation step at which it happened.
        step: usize,
        /// The value observed.
        value: f64,
    },
    /// Reading or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing").
        action: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint or weight file could not be used.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl PonderError {
    /// Shorthand for [`PonderError::InvalidConfig`].
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidConfig {
            key: key.into(),
            message: message.into(),
        }
    }
}
