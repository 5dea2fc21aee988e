//! Confidence thresholds: maximum probability and entropy (DeeBERT).

use ponder_core::{ExitPolicy, ExitSignals, PonderError, Result, softmax};

/// Shannon entropy `H(p) = −Σ p ln p` (natural log) of a probability vector.
pub fn entropy(probs: &[f32]) -> f32 {
    -probs
        .iter()
        .filter(|&&p| p > 0.0)
        .map(|&p| p * p.ln())
        .sum::<f32>()
}

/// Exit at the first layer whose softmax maximum is **strictly greater** than `threshold`
/// (the "softmax response" / max-probability baseline).
///
/// `threshold = 0` exits every row at layer 1 (a maximum is at least `1/C`);
/// `threshold = 1` never exits early (a probability never exceeds 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaxProbThreshold {
    threshold: f32,
}

impl MaxProbThreshold {
    /// A max-probability policy; `threshold` must be in `[0, 1]`.
    pub fn new(threshold: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&threshold) {
            return Err(PonderError::config(
                "max_prob threshold",
                format!("{threshold} is not in [0, 1]"),
            ));
        }
        Ok(Self { threshold })
    }

    /// The threshold.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }
}

impl ExitPolicy for MaxProbThreshold {
    type Carry = ();

    fn name(&self) -> String {
        format!("max_prob>{}", self.threshold)
    }

    fn start(&self, _batch_size: usize) {}

    fn decide(&self, signals: &ExitSignals<'_>, _carry: &mut ()) -> Vec<bool> {
        (0..signals.rows())
            .map(|r| {
                let p = softmax(signals.row(r));
                p.iter().copied().fold(0.0f32, f32::max) > self.threshold
            })
            .collect()
    }

    fn retain_rows(&self, _carry: (), _rows: &[usize]) {}
}

/// DeeBERT: exit at the first layer whose prediction entropy is **strictly below** `S`.
///
/// `S = 0` never exits early (an entropy is never negative); any `S > ln C` (or
/// `f32::INFINITY`) exits every row at layer 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EntropyThreshold {
    threshold: f32,
}

impl EntropyThreshold {
    /// An entropy policy; `threshold` must be `≥ 0` (infinity allowed), not NaN.
    pub fn new(threshold: f32) -> Result<Self> {
        if threshold.is_nan() || threshold < 0.0 {
            return Err(PonderError::config(
                "entropy threshold",
                format!("{threshold} is not ≥ 0"),
            ));
        }
        Ok(Self { threshold })
    }

    /// The threshold.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }
}

impl ExitPolicy for EntropyThreshold {
    type Carry = ();

    fn name(&self) -> String {
        format!("entropy<{}", self.threshold)
    }

    fn start(&self, _batch_size: usize) {}

    fn decide(&self, signals: &ExitSignals<'_>, _carry: &mut ()) -> Vec<bool> {
        (0..signals.rows())
            .map(|r| entropy(&softmax(signals.row(r))) < self.threshold)
            .collect()
    }

    fn retain_rows(&self, _carry: (), _rows: &[usize]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_uniform_is_ln_c() {
        assert!((entropy(&[0.25; 4]) - 4f32.ln()).abs() < 1e-6);
        assert_eq!(entropy(&[1.0, 0.0]), 0.0);
    }

    #[test]
    fn max_prob_extremes() {
        let logits = [5.0, -5.0, 0.0, 0.0, 100.0, -100.0];
        let s = ExitSignals::new(0, 4, 2, &logits);
        assert_eq!(
            MaxProbThreshold::new(0.0).unwrap().decide(&s, &mut ()),
            vec![true; 3]
        );
        assert_eq!(
            MaxProbThreshold::new(1.0).unwrap().decide(&s, &mut ()),
            vec![false; 3]
        );
        assert_eq!(
            MaxProbThreshold::new(0.9).unwrap().decide(&s, &mut ()),
            vec![true, false, true]
        );
    }

    #[test]
    fn entropy_extremes() {
        let logits = [5.0, -5.0, 0.0, 0.0, 100.0, -100.0];
        let s = ExitSignals::new(0, 4, 2, &logits);
        assert_eq!(
            EntropyThreshold::new(0.0).unwrap().decide(&s, &mut ()),
            vec![false; 3]
        );
        assert_eq!(
            EntropyThreshold::new(f32::INFINITY)
                .unwrap()
                .decide(&s, &mut ()),
            vec![true; 3]
        );
        // uniform over 2 classes has entropy ln 2 ≈ 0.693: not < 0.5
        assert_eq!(
            EntropyThreshold::new(0.5).unwrap().decide(&s, &mut ()),
            vec![true, false, true]
        );
    }

    #[test]
    fn out_of_range_thresholds_are_errors() {
        assert!(
            MaxProbThreshold::new(1.5)
                .unwrap_err()
                .to_string()
                .contains("max_prob")
        );
        assert!(MaxProbThreshold::new(-0.1).is_err());
        assert!(MaxProbThreshold::new(f32::NAN).is_err());
        assert!(
            EntropyThreshold::new(-1.0)
                .unwrap_err()
                .to_string()
                .contains("entropy")
        );
        assert!(EntropyThreshold::new(f32::NAN).is_err());
    }
}
