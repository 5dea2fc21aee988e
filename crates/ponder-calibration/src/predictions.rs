//! Validated class-probability predictions and a row-wise softmax.

use crate::error::{CalibrationError, Result};

/// How far a probability may lie outside [0, 1] before it is rejected (f32 round-off of a
/// softmax computed on a device).
pub const PROB_TOLERANCE: f32 = 1e-4;

/// How far a row's probabilities may sum away from 1 before the row is rejected.
pub const ROW_SUM_TOLERANCE: f64 = 1e-3;

/// Validated class-probability predictions with their labels.
///
/// # Shapes
///
/// * `probs`: `[n, n_classes]`, row-major (row `i` is `probs[i * n_classes..(i + 1) * n_classes]`);
/// * `labels`: `[n]`, each `< n_classes`.
///
/// # Invariants (checked by [`Predictions::new`])
///
/// `n_classes > 0`; every probability is finite and within [0, 1] up to
/// [`PROB_TOLERANCE`]; every row sums to 1 within [`ROW_SUM_TOLERANCE`]; every label is
/// below `n_classes`. Zero rows are allowed here; the functions that need data reject an
/// empty set themselves.
#[derive(Debug, Clone, Copy)]
pub struct Predictions<'a> {
    probs: &'a [f32],
    n_classes: usize,
    labels: &'a [usize],
}

impl<'a> Predictions<'a> {
    /// Checks and wraps row-major probabilities `[n, n_classes]` and labels `[n]`.
    ///
    /// # Errors
    ///
    /// * [`CalibrationError::InvalidParameter`] if `n_classes == 0` or a row does not sum
    ///   to 1 within [`ROW_SUM_TOLERANCE`];
    /// * [`CalibrationError::ShapeMismatch`] if `probs.len() != labels.len() * n_classes`;
    /// * [`CalibrationError::NonFinite`] for a NaN, infinite or out-of-[0, 1] probability
    ///   (`index` is its row);
    /// * [`CalibrationError::InvalidLabel`] for a label `>= n_classes`.
    pub fn new(probs: &'a [f32], n_classes: usize, labels: &'a [usize]) -> Result<Self> {
        if n_classes == 0 {
            return Err(CalibrationError::InvalidParameter {
                name: "n_classes".into(),
                value: "0".into(),
                reason: "predictions need at least one class".into(),
            });
        }
        check_len(
            "probabilities (rows × n_classes)",
            labels.len() * n_classes,
            probs.len(),
        )?;
        check_labels(labels, n_classes)?;
        check_probability_rows(probs, n_classes, "probability")?;
        Ok(Self {
            probs,
            n_classes,
            labels,
        })
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The number of classes.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Row `i`'s probabilities, `[n_classes]`.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    pub fn row(&self, i: usize) -> &'a [f32] {
        assert!(
            i < self.len(),
            "row {i} out of range for {} rows",
            self.len()
        );
        &self.probs[i * self.n_classes..(i + 1) * self.n_classes]
    }

    /// Row `i`'s label.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    pub fn label(&self, i: usize) -> usize {
        self.labels[i]
    }

    /// All probabilities, row-major `[n, n_classes]`.
    pub fn probs(&self) -> &'a [f32] {
        self.probs
    }

    /// All labels, `[n]`.
    pub fn labels(&self) -> &'a [usize] {
        self.labels
    }

    /// Iterates over `(probabilities, label)` per row.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = (&'a [f32], usize)> + 'a {
        self.probs
            .chunks_exact(self.n_classes)
            .zip(self.labels.iter().copied())
    }

    /// Per row, the top probability `p_max` and whether the arg-max class (the first one
    /// on ties) is the label: the inputs of [`calibration_error`](crate::calibration_error).
    pub fn top_label(&self) -> (Vec<f32>, Vec<bool>) {
        let mut confidences = Vec::with_capacity(self.len());
        let mut correct = Vec::with_capacity(self.len());
        for (row, label) in self.rows() {
            let (arg_max, p_max) = arg_max(row);
            confidences.push(p_max);
            correct.push(arg_max == label);
        }
        (confidences, correct)
    }
}

/// The index and value of a row's largest entry, the first one on ties.
///
/// # Panics
///
/// If `row` is empty.
pub(crate) fn arg_max(row: &[f32]) -> (usize, f32) {
    let mut best = (0, row[0]);
    for (k, &p) in row.iter().enumerate().skip(1) {
        if p > best.1 {
            best = (k, p);
        }
    }
    best
}

/// `Err(ShapeMismatch)` unless `actual == expected`.
pub(crate) fn check_len(what: &str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(CalibrationError::ShapeMismatch {
            what: what.into(),
            expected,
            actual,
        })
    }
}

/// `Err(InvalidLabel)` for the first label `>= n_classes`.
pub(crate) fn check_labels(labels: &[usize], n_classes: usize) -> Result<()> {
    match labels.iter().position(|&y| y >= n_classes) {
        Some(index) => Err(CalibrationError::InvalidLabel {
            index,
            label: labels[index],
            n_classes,
        }),
        None => Ok(()),
    }
}

/// Checks that every entry of row-major `[n, n_classes]` `probs` is finite and in [0, 1]
/// (up to [`PROB_TOLERANCE`]) and that every row sums to 1 (within [`ROW_SUM_TOLERANCE`]).
/// `what` names one entry in the errors ("probability", "probability at exit 2", …).
pub(crate) fn check_probability_rows(probs: &[f32], n_classes: usize, what: &str) -> Result<()> {
    for (i, row) in probs.chunks_exact(n_classes).enumerate() {
        let mut sum = 0.0f64;
        for (k, &p) in row.iter().enumerate() {
            if !(-PROB_TOLERANCE..=1.0 + PROB_TOLERANCE).contains(&p) {
                return Err(CalibrationError::NonFinite {
                    what: format!("{what} of row {i}, class {k}"),
                    index: i,
                    value: f64::from(p),
                });
            }
            sum += f64::from(p);
        }
        if (sum - 1.0).abs() > ROW_SUM_TOLERANCE {
            return Err(CalibrationError::InvalidParameter {
                name: format!("sum of the {what} row {i}"),
                value: sum.to_string(),
                reason: format!("a row of probabilities must sum to 1 within {ROW_SUM_TOLERANCE}"),
            });
        }
    }
    Ok(())
}

/// Numerically stable softmax of every row of row-major logits `[n, n_classes]`:
/// `p_k = exp(z_k − max z) / Σ_j exp(z_j − max z)`, computed in f64 and returned as f32.
///
/// # Panics
///
/// If `n_classes == 0` or `logits.len()` is not a multiple of `n_classes`.
pub fn softmax_rows(logits: &[f32], n_classes: usize) -> Vec<f32> {
    scaled_softmax_rows(logits, n_classes, 1.0)
}

/// `softmax(β·z)` of every row, in f64, returned as f32; shared by [`softmax_rows`] and
/// [`apply_temperature`](crate::apply_temperature) (β = 1/T).
pub(crate) fn scaled_softmax_rows(logits: &[f32], n_classes: usize, beta: f64) -> Vec<f32> {
    assert!(n_classes > 0, "softmax over zero classes");
    assert!(
        logits.len().is_multiple_of(n_classes),
        "{} logits are not a whole number of rows of {n_classes} classes",
        logits.len()
    );
    let mut out = vec![0.0f32; logits.len()];
    let mut exps = vec![0.0f64; n_classes];
    for (row, out_row) in logits
        .chunks_exact(n_classes)
        .zip(out.chunks_exact_mut(n_classes))
    {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let max = f64::from(max);
        let mut sum = 0.0;
        for (e, &z) in exps.iter_mut().zip(row) {
            *e = (beta * (f64::from(z) - max)).exp();
            sum += *e;
        }
        for (o, e) in out_row.iter_mut().zip(&exps) {
            *o = (e / sum) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_and_exposes_rows() {
        let probs = [0.7, 0.2, 0.1, 0.1, 0.1, 0.8];
        let labels = [0, 1];
        let p = Predictions::new(&probs, 3, &labels).unwrap();
        assert_eq!(p.len(), 2);
        assert!(!p.is_empty());
        assert_eq!(p.n_classes(), 3);
        assert_eq!(p.row(1), &[0.1, 0.1, 0.8]);
        assert_eq!(p.label(1), 1);
        let (conf, correct) = p.top_label();
        assert_eq!(conf, vec![0.7, 0.8]);
        assert_eq!(correct, vec![true, false]);
        assert!(Predictions::new(&[], 3, &[]).unwrap().is_empty());
    }

    #[test]
    fn top_label_takes_first_on_ties() {
        let probs = [0.4, 0.4, 0.2];
        let (_, correct) = Predictions::new(&probs, 3, &[1]).unwrap().top_label();
        assert_eq!(correct, vec![false]);
        let (_, correct) = Predictions::new(&probs, 3, &[0]).unwrap().top_label();
        assert_eq!(correct, vec![true]);
    }

    #[test]
    fn rejects_bad_inputs_with_the_right_variant() {
        let nan = [0.5, f32::NAN, 0.5, 0.5];
        match Predictions::new(&nan, 2, &[0, 0]).unwrap_err() {
            CalibrationError::NonFinite { what, index, value } => {
                assert_eq!(what, "probability of row 0, class 1");
                assert_eq!(index, 0);
                assert!(value.is_nan());
            }
            e => panic!("wrong error {e}"),
        }
        let negative = [1.1, -0.1];
        assert!(matches!(
            Predictions::new(&negative, 2, &[0]),
            Err(CalibrationError::NonFinite { index: 0, .. })
        ));
        let unnormalised = [0.5, 0.4];
        assert!(matches!(
            Predictions::new(&unnormalised, 2, &[0]),
            Err(CalibrationError::InvalidParameter { .. })
        ));
        assert!(matches!(
            Predictions::new(&[0.5, 0.5], 2, &[2]),
            Err(CalibrationError::InvalidLabel {
                index: 0,
                label: 2,
                n_classes: 2
            })
        ));
        assert_eq!(
            Predictions::new(&[0.5, 0.5, 1.0], 2, &[0]).unwrap_err(),
            CalibrationError::ShapeMismatch {
                what: "probabilities (rows × n_classes)".into(),
                expected: 2,
                actual: 3
            }
        );
        assert!(matches!(
            Predictions::new(&[], 0, &[]),
            Err(CalibrationError::InvalidParameter { .. })
        ));
    }

    #[test]
    fn softmax_matches_hand_values_and_is_stable() {
        // softmax([0, ln 3]) = [1/4, 3/4]; tolerance: f32 rounding of values ≤ 1 (≤ 6e-8).
        let p = softmax_rows(&[0.0, 3.0f32.ln(), 1000.0, 1000.0], 2);
        assert!((p[0] - 0.25).abs() < 1e-6 && (p[1] - 0.75).abs() < 1e-6);
        // Huge logits must not overflow: the max is subtracted first.
        assert_eq!(&p[2..], &[0.5, 0.5]);
    }
}
