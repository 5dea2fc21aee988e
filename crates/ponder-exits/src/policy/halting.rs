//! Policies that read the halting probabilities λ of a halting head: PALBERT's Q-exit,
//! PonderNet's sampling, and the expectation over the exit distribution
//! (PonderNet, Banino et al. 2021, arXiv:2107.05407; PALBERT, Balagansky & Gavrilov,
//! NeurIPS 2022, arXiv:2204.03276).
//!
//! Cumulative quantities are carried per row in `f64` on the host, so any batch size works
//! (the reference code handles batch size 1 only).

use std::sync::atomic::{AtomicU64, Ordering};

use ponder_core::{ExitPolicy, ExitSignals, PonderError, Result, softmax, splitmix64, uniform01};

fn lambdas<'a>(signals: &ExitSignals<'a>, policy: &str) -> &'a [f32] {
    signals.halting.unwrap_or_else(|| {
        panic!("policy {policy} needs halting probabilities, but the heads produce none")
    })
}

/// The per-row running state of the halting policies: `cdf = Σ_{j≤i} p_j` and
/// `cond = Π_{j≤i}(1 − λ_j)`.
#[derive(Debug, Clone, PartialEq)]
pub struct HaltingCarry {
    /// Cumulative exit probability so far, per row.
    pub cdf: Vec<f64>,
    /// Probability of not having halted yet, per row.
    pub cond: Vec<f64>,
}

impl HaltingCarry {
    fn new(batch_size: usize) -> Self {
        Self {
            cdf: vec![0.0; batch_size],
            cond: vec![1.0; batch_size],
        }
    }

    /// Adds layer `λ` of row `r`, returning `p` of this layer.
    fn advance(&mut self, r: usize, lambda: f64) -> f64 {
        let p = lambda * self.cond[r];
        // rounding must not take the cdf past 1 (q = 1 never exits early)
        self.cdf[r] = (self.cdf[r] + p).min(1.0);
        self.cond[r] *= 1.0 - lambda;
        p
    }

    fn retain(self, rows: &[usize]) -> Self {
        Self {
            cdf: ponder_core::retain(&self.cdf, rows),
            cond: ponder_core::retain(&self.cond, rows),
        }
    }
}

/// PALBERT's Q-exit: exit at the first layer whose cumulative exit probability
/// `Σ_{j≤i} p_j` is strictly greater than `q`, with that layer's prediction (the
/// q-quantile of the exit distribution). Deterministic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QExit {
    q: f64,
}

impl QExit {
    /// Q-exit at `q ∈ [0, 1]` (PALBERT's default: 0.5). `q = 1` never exits early.
    pub fn new(q: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&q) {
            return Err(PonderError::config(
                "q_exit",
                format!("q = {q} is not in [0, 1]"),
            ));
        }
        Ok(Self { q })
    }

    /// The quantile.
    pub fn q(&self) -> f64 {
        self.q
    }
}

impl ExitPolicy for QExit {
    type Carry = HaltingCarry;

    fn name(&self) -> String {
        format!("q_exit={}", self.q)
    }

    fn start(&self, batch_size: usize) -> HaltingCarry {
        HaltingCarry::new(batch_size)
    }

    fn decide(&self, signals: &ExitSignals<'_>, carry: &mut HaltingCarry) -> Vec<bool> {
        let lambda = lambdas(signals, "q_exit");
        (0..signals.rows())
            .map(|r| {
                carry.advance(r, lambda[r] as f64);
                carry.cdf[r] > self.q
            })
            .collect()
    }

    fn retain_rows(&self, carry: HaltingCarry, rows: &[usize]) -> HaltingCarry {
        carry.retain(rows)
    }
}

/// PonderNet's sampling: at each layer a row halts with probability `λ` (a Bernoulli
/// draw), so exits follow the exit distribution `p`.
///
/// Draws are reproducible: every row gets its own random stream from the seed, the
/// number of batches started before it, and its position in the batch. Evaluating the
/// same batches in the same order with the same seed gives the same exits; another seed
/// gives independent ones.
#[derive(Debug)]
pub struct PonderSample {
    seed: u64,
    batches: AtomicU64,
}

impl PonderSample {
    /// Sampling with this seed.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            batches: AtomicU64::new(0),
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Starts the streams over, as for a fresh policy with the same seed.
    pub fn reset(&self) {
        self.batches.store(0, Ordering::SeqCst);
    }
}

impl Clone for PonderSample {
    /// A fresh policy with the same seed (its streams start over).
    fn clone(&self) -> Self {
        Self::new(self.seed)
    }
}

impl PartialEq for PonderSample {
    fn eq(&self, other: &Self) -> bool {
        self.seed == other.seed
    }
}

/// The per-row random streams of [`PonderSample`].
#[derive(Debug, Clone, PartialEq)]
pub struct SampleCarry {
    streams: Vec<u64>,
}

impl ExitPolicy for PonderSample {
    type Carry = SampleCarry;

    fn name(&self) -> String {
        format!("sample(seed={})", self.seed)
    }

    fn start(&self, batch_size: usize) -> SampleCarry {
        let batch = self.batches.fetch_add(1, Ordering::SeqCst);
        let mut base = self.seed ^ splitmix64(&mut batch.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        SampleCarry {
            streams: (0..batch_size).map(|_| splitmix64(&mut base)).collect(),
        }
    }

    fn decide(&self, signals: &ExitSignals<'_>, carry: &mut SampleCarry) -> Vec<bool> {
        let lambda = lambdas(signals, "sample");
        (0..signals.rows())
            .map(|r| {
                // 53 random bits → uniform in [0, 1)
                let u = uniform01(&mut carry.streams[r]);
                u < lambda[r] as f64
            })
            .collect()
    }

    fn retain_rows(&self, carry: SampleCarry, rows: &[usize]) -> SampleCarry {
        SampleCarry {
            streams: ponder_core::retain(&carry.streams, rows),
        }
    }
}

/// The expectation over the exit distribution: the prediction is the mixture
/// `Σ_{i<N} p_i·softmax_i + (1 − cdf_{N−1})·softmax_N` (its log is reported), i.e.
/// `λ_N = 1` at the last layer. PALBERT's code weights the last layer by `1 − p_N`
/// instead; this is the corrected weight, so the weights sum to 1.
///
/// A row stops early once the mass not yet assigned, `Π(1 − λ)`, is at most
/// `tolerance`; that remainder then goes to the current layer. With tolerance 0 rows
/// run to the last layer unless λ reaches exactly 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expectation {
    tolerance: f64,
}

impl Expectation {
    /// The mixture, stopping a row once its unassigned mass is `≤ tolerance ∈ [0, 1)`.
    pub fn new(tolerance: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&tolerance) {
            return Err(PonderError::config(
                "expectation",
                format!("tolerance = {tolerance} is not in [0, 1)"),
            ));
        }
        Ok(Self { tolerance })
    }
}

/// The carry of [`Expectation`]: the halting state and the mixture so far.
#[derive(Debug, Clone, PartialEq)]
pub struct MixtureCarry {
    /// `cdf` and `cond` per row.
    pub halting: HaltingCarry,
    /// `Σ_{j≤i} p_j·softmax_j` per row.
    pub mixture: Vec<Vec<f64>>,
}

impl ExitPolicy for Expectation {
    type Carry = MixtureCarry;

    fn name(&self) -> String {
        if self.tolerance == 0.0 {
            "expectation".to_string()
        } else {
            format!("expectation(tol={})", self.tolerance)
        }
    }

    fn start(&self, batch_size: usize) -> MixtureCarry {
        MixtureCarry {
            halting: HaltingCarry::new(batch_size),
            mixture: vec![Vec::new(); batch_size],
        }
    }

    fn decide(&self, signals: &ExitSignals<'_>, carry: &mut MixtureCarry) -> Vec<bool> {
        let lambda = lambdas(signals, "expectation");
        (0..signals.rows())
            .map(|r| {
                let l = if signals.is_last_layer() {
                    1.0
                } else {
                    lambda[r] as f64
                };
                let p = carry.halting.advance(r, l);
                let probs = softmax(signals.row(r));
                let mix = &mut carry.mixture[r];
                if mix.is_empty() {
                    mix.resize(probs.len(), 0.0);
                }
                for (m, &q) in mix.iter_mut().zip(&probs) {
                    *m += p * q as f64;
                }
                carry.halting.cond[r] <= self.tolerance
            })
            .collect()
    }

    fn retain_rows(&self, carry: MixtureCarry, rows: &[usize]) -> MixtureCarry {
        MixtureCarry {
            halting: carry.halting.retain(rows),
            mixture: ponder_core::retain(&carry.mixture, rows),
        }
    }

    fn mixes_outputs(&self) -> bool {
        true
    }

    fn exit_output(
        &self,
        signals: &ExitSignals<'_>,
        carry: &MixtureCarry,
        rows: &[usize],
    ) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows.len() * signals.n_classes);
        for &r in rows {
            // the unassigned remainder (0 at the last layer) goes to this layer
            let rest = carry.halting.cond[r];
            let probs = softmax(signals.row(r));
            for (m, &q) in carry.mixture[r].iter().zip(&probs) {
                out.push((m + rest * q as f64).max(1e-30).ln() as f32);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a policy over hand-made per-layer λ (rows × layers) as the runner would,
    /// with constant logits; returns each row's 1-based exit layer.
    fn exits<P: ExitPolicy>(policy: &P, lambdas: &[Vec<f32>]) -> Vec<usize> {
        let n_layers = lambdas[0].len();
        let mut active: Vec<usize> = (0..lambdas.len()).collect();
        let mut carry = policy.start(active.len());
        let mut out = vec![0; lambdas.len()];
        for layer in 0..n_layers {
            let l: Vec<f32> = active.iter().map(|&r| lambdas[r][layer]).collect();
            let logits = vec![0.0f32; active.len() * 2];
            let s = ExitSignals::new(layer, n_layers, 2, &logits).with_halting(&l);
            let d = policy.decide(&s, &mut carry);
            let last = layer + 1 == n_layers;
            let stay: Vec<usize> = (0..active.len()).filter(|&i| !d[i] && !last).collect();
            for i in 0..active.len() {
                if d[i] || last {
                    out[active[i]] = layer + 1;
                }
            }
            carry = policy.retain_rows(carry, &stay);
            active = stay.iter().map(|&i| active[i]).collect();
        }
        out
    }

    #[test]
    fn q_exit_on_hand_made_sequences() {
        let q = QExit::new(0.5).unwrap();
        let rows = vec![
            vec![0.6, 0.0, 0.0, 0.0],  // cdf 0.6 > 0.5 at layer 1
            vec![0.5, 0.0, 0.0, 0.0],  // cdf exactly 0.5: not > q, never grows: last layer
            vec![0.5, 0.5, 0.0, 0.0],  // 0.5, then 0.75 at layer 2
            vec![0.2, 0.2, 0.2, 0.2],  // 0.2, 0.36, 0.488, 0.5904: layer 4
            vec![0.1, 0.9, 0.0, 0.0],  // 0.1, then 0.91: layer 2
            vec![0.0, 0.0, 0.0, 0.0],  // never: last layer
            vec![0.9, 0.95, 0.1, 0.1], // λ itself is not what counts: layer 1
        ];
        assert_eq!(exits(&q, &rows), vec![1, 4, 2, 4, 2, 4, 1]);
        // q = 0 exits at the first layer with any mass; q = 1 never early
        assert_eq!(
            exits(&QExit::new(0.0).unwrap(), &rows),
            vec![1, 1, 1, 1, 1, 4, 1]
        );
        assert_eq!(exits(&QExit::new(1.0).unwrap(), &rows), vec![4; 7]);
        assert!(QExit::new(1.5).is_err() && QExit::new(-0.1).is_err());
    }

    #[test]
    fn q_exit_ties_at_exactly_q_do_not_exit() {
        // cdf reaches exactly 0.5 at layer 2 and stays there through layer 3
        let q = QExit::new(0.5).unwrap();
        let rows = vec![vec![0.0, 0.5, 0.0, 0.5, 0.5], vec![0.0, 0.5, 0.5, 0.0, 0.0]];
        assert_eq!(exits(&q, &rows), vec![4, 3]);
        // q = 0.75 is hit exactly at layer 3 of the second row: not an exit
        let q = QExit::new(0.75).unwrap();
        assert_eq!(exits(&q, &rows), vec![5, 5]);
    }

    /// Chi-square statistic of observed counts against expected probabilities.
    fn chi_square(counts: &[u64], probs: &[f64], n: u64) -> f64 {
        counts
            .iter()
            .zip(probs)
            .map(|(&c, &p)| {
                let e = p * n as f64;
                (c as f64 - e).powi(2) / e
            })
            .sum()
    }

    #[test]
    fn sampling_frequencies_match_the_exit_distribution() {
        let lambda = [0.1f32, 0.3, 0.5, 0.2, 0.6, 0.9];
        let n_layers = lambda.len();
        // p with λ_N forced to 1, as the runner exits every row at the last layer
        let mut p = Vec::new();
        let mut cond = 1.0f64;
        for (i, &l) in lambda.iter().enumerate() {
            let l = if i + 1 == n_layers { 1.0 } else { l as f64 };
            p.push(l * cond);
            cond *= 1.0 - l;
        }
        let n: u64 = 100_000;
        let policy = PonderSample::new(7);
        let mut counts = vec![0u64; n_layers];
        // 10 batches of 10^4 rows: streams differ per batch
        for _ in 0..10 {
            let rows = vec![lambda.to_vec(); (n / 10) as usize];
            for e in exits(&policy, &rows) {
                counts[e - 1] += 1;
            }
        }
        let stat = chi_square(&counts, &p, n);
        // 5 degrees of freedom: the 99.9% quantile is 20.52
        assert!(stat < 20.52, "χ² = {stat}, counts {counts:?}, p {p:?}");
        // and it is not trivially satisfied: a wrong distribution is rejected
        let wrong: Vec<f64> = vec![1.0 / n_layers as f64; n_layers];
        assert!(chi_square(&counts, &wrong, n) > 1000.0);
    }

    #[test]
    fn sampling_is_reproducible_per_seed() {
        let rows: Vec<Vec<f32>> = (0..200)
            .map(|i| vec![0.3, (i % 7) as f32 / 7.0, 0.5, 0.5])
            .collect();
        let a = exits(&PonderSample::new(1), &rows);
        let b = exits(&PonderSample::new(1), &rows);
        let c = exits(&PonderSample::new(2), &rows);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // a policy that was reset replays its streams; a second batch gets new ones
        let p = PonderSample::new(1);
        let first = exits(&p, &rows);
        let second = exits(&p, &rows);
        p.reset();
        assert_eq!(exits(&p, &rows), first);
        assert_ne!(first, second);
    }

    #[test]
    fn expectation_weights_sum_to_one_with_the_corrected_last_weight() {
        let policy = Expectation::new(0.0).unwrap();
        let n_layers = 3;
        let lambda = [[0.2f32], [0.5], [0.3]];
        // one row, two classes; each layer is sure of a different class
        let layer_logits = [[10.0f32, -10.0], [-10.0, 10.0], [10.0, -10.0]];
        let mut carry = policy.start(1);
        let mut output = Vec::new();
        for layer in 0..n_layers {
            let s = ExitSignals::new(layer, n_layers, 2, &layer_logits[layer])
                .with_halting(&lambda[layer]);
            let d = policy.decide(&s, &mut carry);
            if layer + 1 < n_layers {
                assert_eq!(
                    d,
                    vec![false],
                    "mass is left: no exit before the last layer"
                );
            } else {
                output = policy.exit_output(&s, &carry, &[0]);
            }
        }
        let probs: Vec<f64> = output.iter().map(|&l| (l as f64).exp()).collect();
        // p = 0.2, 0.8·0.5 = 0.4, and the rest 0.4 (not 1 − p_N = 1 − 0.4·0.3)
        assert!((probs[0] - 0.6).abs() < 1e-6, "{probs:?}");
        assert!((probs[1] - 0.4).abs() < 1e-6, "{probs:?}");
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn expectation_stops_when_no_mass_is_left() {
        let policy = Expectation::new(0.01).unwrap();
        let rows = vec![vec![0.995, 0.5, 0.5], vec![0.5, 0.5, 0.5]];
        assert_eq!(exits(&policy, &rows), vec![1, 3]);
    }
}
