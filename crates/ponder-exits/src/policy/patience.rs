//! PABEE's patience-based early exit (Zhou et al., "BERT Loses Patience", NeurIPS 2020,
//! arXiv:2006.04152).

use ponder_core::{ExitPolicy, ExitSignals, PonderError, Result, retain};

/// PABEE: exit once the prediction has stayed the same for `patience` consecutive
/// layers.
///
/// Counting, exactly as PABEE's reference code (per row):
/// * at layer 1 there is no previous prediction, so the counter is 0;
/// * at each later layer, the counter grows by one if `argmax` equals the previous
///   layer's `argmax`, and resets to 0 otherwise;
/// * the row exits when the counter **equals** `patience`, with the current layer's
///   prediction.
///
/// So an exit needs `patience + 1` identical predictions in a row, the earliest exit is
/// at layer `patience + 1`, and `patience = 0` means the full model (never exit early).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patience {
    patience: usize,
}

impl Patience {
    /// A patience policy (`patience = 0`: full model).
    pub fn new(patience: usize) -> Self {
        Self { patience }
    }

    /// The patience t.
    pub fn patience(&self) -> usize {
        self.patience
    }
}

/// Per-row state of [`Patience`]: the counter and the previous layer's prediction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatienceCarry {
    /// Consecutive agreements so far.
    pub counter: Vec<usize>,
    /// The previous layer's argmax (`None` before layer 1).
    pub previous: Vec<Option<usize>>,
}

impl ExitPolicy for Patience {
    type Carry = PatienceCarry;

    fn name(&self) -> String {
        format!("patience={}", self.patience)
    }

    fn start(&self, batch_size: usize) -> PatienceCarry {
        PatienceCarry {
            counter: vec![0; batch_size],
            previous: vec![None; batch_size],
        }
    }

    fn decide(&self, signals: &ExitSignals<'_>, carry: &mut PatienceCarry) -> Vec<bool> {
        (0..signals.rows())
            .map(|r| {
                let current = signals.argmax(r);
                if carry.previous[r] == Some(current) {
                    carry.counter[r] += 1;
                } else {
                    carry.counter[r] = 0;
                }
                carry.previous[r] = Some(current);
                self.patience > 0 && carry.counter[r] == self.patience
            })
            .collect()
    }

    fn retain_rows(&self, carry: PatienceCarry, rows: &[usize]) -> PatienceCarry {
        PatienceCarry {
            counter: retain(&carry.counter, rows),
            previous: retain(&carry.previous, rows),
        }
    }
}

/// PABEE's regression variant: two layers agree when their outputs differ by less than
/// `tolerance` (`|cur − prev| < τ`); counting as in [`Patience`]. The heads must have
/// one output (`n_classes = 1`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PatienceRegression {
    patience: usize,
    tolerance: f32,
}

impl PatienceRegression {
    /// A regression patience policy; `tolerance` must be `≥ 0` and finite.
    pub fn new(patience: usize, tolerance: f32) -> Result<Self> {
        if !(tolerance.is_finite() && tolerance >= 0.0) {
            return Err(PonderError::config(
                "patience tolerance",
                format!("{tolerance} is not a finite value ≥ 0"),
            ));
        }
        Ok(Self {
            patience,
            tolerance,
        })
    }
}

/// Per-row state of [`PatienceRegression`].
#[derive(Debug, Clone, PartialEq)]
pub struct RegressionCarry {
    /// Consecutive agreements so far.
    pub counter: Vec<usize>,
    /// The previous layer's output (`None` before layer 1).
    pub previous: Vec<Option<f32>>,
}

impl ExitPolicy for PatienceRegression {
    type Carry = RegressionCarry;

    fn name(&self) -> String {
        format!("patience={},tol={}", self.patience, self.tolerance)
    }

    fn start(&self, batch_size: usize) -> RegressionCarry {
        RegressionCarry {
            counter: vec![0; batch_size],
            previous: vec![None; batch_size],
        }
    }

    fn decide(&self, signals: &ExitSignals<'_>, carry: &mut RegressionCarry) -> Vec<bool> {
        assert_eq!(
            signals.n_classes, 1,
            "PatienceRegression needs one output per row, got {}",
            signals.n_classes
        );
        (0..signals.rows())
            .map(|r| {
                let current = signals.row(r)[0];
                let agree = carry.previous[r].is_some_and(|p| (current - p).abs() < self.tolerance);
                carry.counter[r] = if agree { carry.counter[r] + 1 } else { 0 };
                carry.previous[r] = Some(current);
                self.patience > 0 && carry.counter[r] == self.patience
            })
            .collect()
    }

    fn retain_rows(&self, carry: RegressionCarry, rows: &[usize]) -> RegressionCarry {
        RegressionCarry {
            counter: retain(&carry.counter, rows),
            previous: retain(&carry.previous, rows),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a policy over hand-made per-layer predictions of one row (one-hot logits
    /// for class `pred`) and returns the 1-based exit layer.
    fn exit_layer(policy: &Patience, predictions: &[usize]) -> usize {
        let n = predictions.len();
        let mut carry = policy.start(1);
        for (l, &pred) in predictions.iter().enumerate() {
            let mut logits = [0.0f32; 3];
            logits[pred] = 1.0;
            let signals = ExitSignals::new(l, n, 3, &logits);
            if policy.decide(&signals, &mut carry)[0] {
                return l + 1;
            }
        }
        n
    }

    #[test]
    fn exit_needs_t_plus_one_identical_predictions() {
        let p = Patience::new(2);
        // layers 1..3 agree: counter 0,1,2 -> exit at layer 3 = t + 1
        assert_eq!(exit_layer(&p, &[1, 1, 1, 1, 1, 1]), 3);
        // disagreement resets the counter to 0
        assert_eq!(exit_layer(&p, &[1, 1, 2, 2, 2, 0]), 5);
        assert_eq!(exit_layer(&p, &[0, 1, 0, 1, 0, 1]), 6);
        // a reset right before the threshold
        assert_eq!(exit_layer(&p, &[1, 1, 0, 0, 1, 1]), 6);
    }

    #[test]
    fn patience_one_exits_on_first_agreement() {
        let p = Patience::new(1);
        assert_eq!(exit_layer(&p, &[2, 2, 0, 0]), 2);
        assert_eq!(exit_layer(&p, &[2, 1, 1, 0]), 3);
    }

    #[test]
    fn patience_zero_is_the_full_model() {
        let p = Patience::new(0);
        assert_eq!(exit_layer(&p, &[1, 1, 1, 1]), 4);
    }

    #[test]
    fn rows_are_independent_and_retained() {
        let p = Patience::new(1);
        let mut carry = p.start(2);
        let l1 = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let l2 = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        assert_eq!(
            p.decide(&ExitSignals::new(0, 4, 3, &l1), &mut carry),
            vec![false, false]
        );
        assert_eq!(
            p.decide(&ExitSignals::new(1, 4, 3, &l2), &mut carry),
            vec![true, false]
        );
        let carry = p.retain_rows(carry, &[1]);
        assert_eq!(carry.counter, vec![0]);
        assert_eq!(carry.previous, vec![Some(2)]);
    }

    #[test]
    fn regression_agreement_uses_the_tolerance() {
        let p = PatienceRegression::new(2, 0.1).unwrap();
        let mut carry = p.start(1);
        let outs = [1.0f32, 1.05, 1.3, 1.35, 1.31, 2.0];
        let mut exit = None;
        for (l, o) in outs.iter().enumerate() {
            let logits = [*o];
            if p.decide(&ExitSignals::new(l, 6, 1, &logits), &mut carry)[0] {
                exit = Some(l + 1);
                break;
            }
        }
        // 1.0→1.05 agree (1), 1.05→1.3 reset (0), 1.3→1.35 (1), 1.35→1.31 (2): exit at 5
        assert_eq!(exit, Some(5));
        assert!(PatienceRegression::new(2, -0.1).is_err());
    }
}
