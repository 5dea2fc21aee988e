//! JEI-DNN's exit rule on learned gates (Regol, Chataoui & Coates, ICLR 2024,
//! arXiv:2310.09163).

use ponder_core::{ExitPolicy, ExitSignals, PonderError, Result};

/// The per-row running state of [`LearnedGate`]: the exit mass assigned so far
/// `Σ_{j<l} P_j`, and `Π_{j<l}(1 − a_j)`.
#[derive(Debug, Clone, PartialEq)]
pub struct GateCarry {
    /// Cumulative exit probability of the gates so far, per row.
    pub cdf: Vec<f64>,
    /// `Π_{j<l}(1 − a_j)`, per row.
    pub survive: Vec<f64>,
}

/// JEI-DNN's learned gates: with the gate values `g_l` of the heads
/// ([`GatedHeads`](crate::GatedHeads)), the exit probability
/// `P_l = max(0, min(g_l, 1 − Σ_{j<l} P_j))` and the conditional activation
/// `a_l = clip(P_l / Π_{j<l}(1 − a_j), 0, 1)`; a row exits at the first layer with
/// `a_l ≥ threshold` (JEI-DNN: 0.5), with that layer's prediction, else at the final
/// head. Not `P_l ≥ 0.5` and not `g_l ≥ 0.5`: the rule thresholds the probability of
/// exiting at `l` given that no earlier gate fired. Deterministic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearnedGate {
    threshold: f64,
}

impl LearnedGate {
    /// The rule at `threshold ∈ (0, 1]` (JEI-DNN's: 0.5; lower exits earlier).
    pub fn new(threshold: f64) -> Result<Self> {
        if !(threshold > 0.0 && threshold <= 1.0) {
            return Err(PonderError::config(
                "gate",
                format!("threshold {threshold} is not in (0, 1]"),
            ));
        }
        Ok(Self { threshold })
    }

    /// The threshold on `a_l`.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }
}

impl ExitPolicy for LearnedGate {
    type Carry = GateCarry;

    fn name(&self) -> String {
        format!("gate={}", self.threshold)
    }

    fn start(&self, batch_size: usize) -> GateCarry {
        GateCarry {
            cdf: vec![0.0; batch_size],
            survive: vec![1.0; batch_size],
        }
    }

    fn decide(&self, signals: &ExitSignals<'_>, carry: &mut GateCarry) -> Vec<bool> {
        let gates = signals.halting.unwrap_or_else(|| {
            panic!(
                "policy {} needs gate values at layer {}, but the heads produce none",
                self.name(),
                signals.layer_idx
            )
        });
        (0..signals.rows())
            .map(|r| {
                assert!(
                    gates[r].is_finite(),
                    "policy {}: gate value {} of row {r} at layer {} is not a number in [0, 1]",
                    self.name(),
                    gates[r],
                    signals.layer_idx
                );
                let p = crate::jei::exit_probability(gates[r] as f64, carry.cdf[r]);
                let a = if carry.survive[r] > 0.0 {
                    (p / carry.survive[r]).clamp(0.0, 1.0)
                } else {
                    1.0
                };
                carry.cdf[r] += p;
                carry.survive[r] *= 1.0 - a;
                a >= self.threshold
            })
            .collect()
    }

    fn retain_rows(&self, carry: GateCarry, rows: &[usize]) -> GateCarry {
        GateCarry {
            cdf: ponder_core::retain(&carry.cdf, rows),
            survive: ponder_core::retain(&carry.survive, rows),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(policy: &LearnedGate, gates: &[Vec<f32>]) -> Vec<Option<usize>> {
        let rows = gates[0].len();
        let logits = vec![0.0f32; rows * 2];
        let mut carry = policy.start(rows);
        let mut exit = vec![None; rows];
        for (l, g) in gates.iter().enumerate() {
            let s = ExitSignals::new(l, gates.len() + 1, 2, &logits).with_halting(g);
            for (r, e) in policy.decide(&s, &mut carry).into_iter().enumerate() {
                if e && exit[r].is_none() {
                    exit[r] = Some(l);
                }
            }
        }
        exit
    }

    #[test]
    fn exits_on_the_conditional_activation_not_on_g_or_p() {
        let gate = LearnedGate::new(0.5).unwrap();
        // row 0: g = 0.3, 0.4 → P = 0.3, 0.4; a = 0.3, 0.4/0.7 = 0.571 → exits at layer 1
        //   (neither g nor P ever reaches 0.5)
        // row 1: g = 0.6 → a = 0.6 → layer 0
        // row 2: g = 0.2, 0.3 → a = 0.2, 0.375 → no early exit
        // row 3: g = 0.45, 0.9 → P = 0.45, min(0.9, 0.55) = 0.55 → a = 1 → layer 1
        let gates = vec![vec![0.3, 0.6, 0.2, 0.45], vec![0.4, 0.1, 0.3, 0.9]];
        assert_eq!(run(&gate, &gates), vec![Some(1), Some(0), None, Some(1)]);
        // a higher threshold exits later
        let strict = LearnedGate::new(0.9).unwrap();
        assert_eq!(run(&strict, &gates), vec![None, None, None, Some(1)]);
    }

    #[test]
    fn activation_at_exactly_the_threshold_exits() {
        let gate = LearnedGate::new(0.5).unwrap();
        assert_eq!(run(&gate, &[vec![0.5]]), vec![Some(0)]);
    }

    #[test]
    fn bad_thresholds_are_errors() {
        for t in [0.0, -0.1, 1.5, f64::NAN] {
            assert!(LearnedGate::new(t).is_err(), "{t}");
        }
        assert!(LearnedGate::new(1.0).is_ok());
    }
}
