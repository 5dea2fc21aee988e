//! The crate's error type.

/// Everything that can be wrong with the data or parameters handed to this crate.
///
/// Every variant names what was wrong and where, so that its `Display` text can be read
/// on its own, e.g. "probability of row 12, class 3 is NaN (not a number)".
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CalibrationError {
    /// The miscoverage level α lies outside the open interval (0, 1) (or is NaN).
    #[error("miscoverage level alpha = {alpha} is outside the open interval (0, 1)")]
    InvalidAlpha {
        /// The rejected α.
        alpha: f64,
    },
    /// An input that must hold data is empty.
    #[error("the {what} is empty; at least one element is needed")]
    Empty {
        /// What is empty ("calibration set", "confidences", …).
        what: String,
    },
    /// A NaN or infinite value, or, for a probability-like value, one outside [0, 1].
    #[error("{what} is {value} ({})", value_problem(*.value))]
    NonFinite {
        /// The value and where it is, e.g. "probability of row 12, class 3".
        what: String,
        /// The row (or, for one-dimensional inputs, the element) that holds the value.
        index: usize,
        /// The rejected value.
        value: f64,
    },
    /// Two lengths that must agree do not.
    #[error("{what} has length {actual}, expected {expected}")]
    ShapeMismatch {
        /// What has the wrong length, e.g. "probabilities (rows × n_classes)".
        what: String,
        /// The length implied by the other inputs.
        expected: usize,
        /// The length found.
        actual: usize,
    },
    /// A class label that is not below the number of classes.
    #[error(
        "label of row {index} is {label}, but there are only {n_classes} classes (labels 0..{n_classes})"
    )]
    InvalidLabel {
        /// The row that holds the label.
        index: usize,
        /// The rejected label.
        label: usize,
        /// The number of classes.
        n_classes: usize,
    },
    /// A probability level other than α (Learn-then-Test's risk tolerance δ or error level
    /// ε) lies outside the open interval (0, 1) (or is NaN).
    #[error("{name} = {value} is outside the open interval (0, 1)")]
    InvalidLevel {
        /// The level's name, e.g. "risk tolerance delta".
        name: String,
        /// The rejected value.
        value: f64,
    },
    /// A loss that is not exactly 0 or 1 given to a test that needs 0/1 losses (the exact
    /// binomial p-value of Learn-then-Test).
    #[error(
        "loss of candidate {candidate}, row {row} is {value}, but the binomial p-value needs losses of exactly 0 or 1 (use the Hoeffding–Bentkus p-value for other losses)"
    )]
    NonBinaryLoss {
        /// The candidate (threshold) whose losses hold the value.
        candidate: usize,
        /// The calibration row that holds the value.
        row: usize,
        /// The rejected loss.
        value: f64,
    },
    /// Any other bad parameter or input.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        /// The parameter's name (or the input and where).
        name: String,
        /// The rejected value, as text.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
}

/// What is wrong with a value rejected as [`CalibrationError::NonFinite`].
fn value_problem(value: f64) -> &'static str {
    if value.is_nan() {
        "not a number"
    } else if value.is_infinite() {
        "infinite"
    } else {
        "outside the allowed range [0, 1]"
    }
}

impl CalibrationError {
    /// The same error, naming exit `exit` in its `what` (or parameter name): for the
    /// functions that check every exit's inputs in turn.
    pub fn at_exit(self, exit: usize) -> Self {
        match self {
            Self::NonFinite { what, index, value } => Self::NonFinite {
                what: format!("{what} at exit {exit}"),
                index,
                value,
            },
            Self::ShapeMismatch {
                what,
                expected,
                actual,
            } => Self::ShapeMismatch {
                what: format!("{what} at exit {exit}"),
                expected,
                actual,
            },
            Self::InvalidParameter {
                name,
                value,
                reason,
            } => Self::InvalidParameter {
                name: format!("{name} at exit {exit}"),
                value,
                reason,
            },
            other => other,
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, CalibrationError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_and_where() {
        let e = CalibrationError::NonFinite {
            what: "probability of row 12, class 3".into(),
            index: 12,
            value: f64::NAN,
        };
        assert_eq!(
            e.to_string(),
            "probability of row 12, class 3 is NaN (not a number)"
        );
        let e = CalibrationError::NonFinite {
            what: "confidence at index 4".into(),
            index: 4,
            value: 1.5,
        };
        assert_eq!(
            e.to_string(),
            "confidence at index 4 is 1.5 (outside the allowed range [0, 1])"
        );
        let e = CalibrationError::InvalidLabel {
            index: 7,
            label: 10,
            n_classes: 10,
        };
        assert!(e.to_string().contains("row 7"));
        let e = CalibrationError::InvalidAlpha { alpha: 1.0 };
        assert!(e.to_string().contains("alpha = 1"));
        let e = CalibrationError::InvalidLevel {
            name: "risk tolerance delta".into(),
            value: 1.5,
        };
        assert_eq!(
            e.to_string(),
            "risk tolerance delta = 1.5 is outside the open interval (0, 1)"
        );
        let e = CalibrationError::NonBinaryLoss {
            candidate: 2,
            row: 17,
            value: 0.5,
        };
        assert!(
            e.to_string()
                .starts_with("loss of candidate 2, row 17 is 0.5, but the binomial p-value"),
            "{e}"
        );
    }
}
