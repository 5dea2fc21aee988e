//! Policies that ignore confidence: a fixed exit layer, the full model, and the oracle.

use ponder_core::{ExitPolicy, ExitSignals, PonderError, Result};

/// Every row exits at `layer` (1-based): the model cut after `layer` layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedLayer {
    layer: usize,
}

impl FixedLayer {
    /// Exit at `layer` (1-based, `≥ 1`). A layer past the backbone's depth means the
    /// last layer.
    pub fn new(layer: usize) -> Result<Self> {
        if layer == 0 {
            return Err(PonderError::config(
                "fixed exit layer",
                "layers count from 1",
            ));
        }
        Ok(Self { layer })
    }

    /// The exit layer (1-based).
    pub fn layer(&self) -> usize {
        self.layer
    }
}

impl ExitPolicy for FixedLayer {
    type Carry = ();

    fn name(&self) -> String {
        format!("fixed={}", self.layer)
    }

    fn start(&self, _batch_size: usize) {}

    fn decide(&self, signals: &ExitSignals<'_>, _carry: &mut ()) -> Vec<bool> {
        vec![signals.layer_idx + 1 >= self.layer; signals.rows()]
    }

    fn retain_rows(&self, _carry: (), _rows: &[usize]) {}
}

/// Never exit early: full-depth inference through the same runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NeverExit;

impl ExitPolicy for NeverExit {
    type Carry = ();

    fn name(&self) -> String {
        "full".to_string()
    }

    fn start(&self, _batch_size: usize) {}

    fn decide(&self, signals: &ExitSignals<'_>, _carry: &mut ()) -> Vec<bool> {
        vec![false; signals.rows()]
    }

    fn retain_rows(&self, _carry: (), _rows: &[usize]) {}
}

/// Analysis only, never deployable: exit at the first layer whose prediction is right
/// (rows never right go to the last layer). It reads the true labels, so it gives an
/// upper bound on what any policy over the same heads could reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Oracle;

impl ExitPolicy for Oracle {
    type Carry = ();

    fn name(&self) -> String {
        "oracle".to_string()
    }

    fn start(&self, _batch_size: usize) {}

    /// # Panics
    /// If the runner was not given targets.
    fn decide(&self, signals: &ExitSignals<'_>, _carry: &mut ()) -> Vec<bool> {
        let targets = signals
            .targets
            .unwrap_or_else(|| panic!("the oracle policy needs the true labels (targets)"));
        (0..signals.rows())
            .map(|r| signals.argmax(r) == targets[r])
            .collect()
    }

    fn retain_rows(&self, _carry: (), _rows: &[usize]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_layer_exits_at_its_layer() {
        let p = FixedLayer::new(2).unwrap();
        let logits = [0.0; 4];
        assert_eq!(
            p.decide(&ExitSignals::new(0, 4, 2, &logits), &mut ()),
            vec![false; 2]
        );
        assert_eq!(
            p.decide(&ExitSignals::new(1, 4, 2, &logits), &mut ()),
            vec![true; 2]
        );
        assert!(FixedLayer::new(0).is_err());
    }

    #[test]
    fn oracle_exits_when_right() {
        let logits = [1.0, 0.0, 1.0, 0.0];
        let targets = [0, 1];
        let s = ExitSignals::new(0, 4, 2, &logits).with_targets(&targets);
        assert_eq!(Oracle.decide(&s, &mut ()), vec![true, false]);
    }
}
