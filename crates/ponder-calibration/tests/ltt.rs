//! Statistical acceptance tests of Learn-then-Test on simulated losses: validity of both
//! p-values at the hardest null (true risk exactly δ), power far from the null, and the
//! family-wise guarantee of the fixed-sequence walk. Every test is seeded, so it is
//! deterministic; each tolerance is stated with its reasoning next to the check.

use ponder_calibration::{LttCandidate, PValue, learn_then_test};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const N: usize = 300;
const DELTA: f64 = 0.1;
const EPSILON: f64 = 0.1;
const SIMULATIONS: usize = 4000;
const BOTH: [PValue; 2] = [PValue::HoeffdingBentkus, PValue::Binomial];

/// One loss drawn from a distribution on [0, 1].
type LossDraw = dyn Fn(&mut StdRng) -> f64;

/// `n` i.i.d. Bernoulli(`risk`) losses.
fn bernoulli_losses(rng: &mut StdRng, n: usize, risk: f64) -> Vec<f64> {
    (0..n)
        .map(|_| f64::from(u8::from(rng.random::<f64>() < risk)))
        .collect()
}

/// The p-value of one candidate, through [`learn_then_test`].
fn p_value_of(losses: &[f64], p_value: PValue) -> f64 {
    let candidate = LttCandidate {
        threshold: 0.5,
        losses,
    };
    let outcome = learn_then_test(&[candidate], DELTA, EPSILON, p_value).unwrap();
    // One candidate: chosen iff its p-value is at most ε.
    assert_eq!(outcome.chosen.is_some(), outcome.p_values[0] <= EPSILON);
    outcome.p_values[0]
}

/// `P(Binomial(n, p) = k)` for every `k`, by the ratio recursion in log space.
fn binomial_pmf(n: usize, p: f64) -> Vec<f64> {
    let mut log_pmf = n as f64 * (-p).ln_1p();
    let log_odds = p.ln() - (-p).ln_1p();
    let mut pmf = vec![log_pmf.exp()];
    for i in 0..n {
        log_pmf += ((n - i) as f64 / (i + 1) as f64).ln() + log_odds;
        pmf.push(log_pmf.exp());
    }
    pmf
}

/// Three binomial standard errors of a frequency estimated from `SIMULATIONS` draws at `rate`.
fn three_se(rate: f64) -> f64 {
    3.0 * (rate * (1.0 - rate) / SIMULATIONS as f64).sqrt()
}

/// Both p-values are valid at the hardest null: with Bernoulli losses of true risk exactly δ
/// the rejection frequency is at most ε (plus sampling error), and it matches the exact
/// rejection probability of the test's rejection region.
#[test]
fn rejection_rate_at_the_boundary_null_is_at_most_epsilon() {
    let pmf = binomial_pmf(N, DELTA);
    for p_value in BOTH {
        // Exact: with 0/1 losses the p-value depends only on the failure count k, so the
        // rejection probability is the Binomial(N, δ) mass of {k : p(k) ≤ ε}.
        let exact: f64 = (0..=N)
            .filter(|&k| {
                let mut losses = vec![0.0; N];
                losses[..k].fill(1.0);
                p_value_of(&losses, p_value) <= EPSILON
            })
            .map(|k| pmf[k])
            .sum();
        // mpmath: rejection region k ≤ 22 (binomial), k ≤ 20 (HB); masses 0.0699, 0.0287.
        eprintln!("{p_value:?}: exact rejection probability at risk δ = {exact:.5}");
        assert!(exact <= EPSILON, "{p_value:?}: exact size {exact} > ε");

        let mut rng = StdRng::seed_from_u64(11);
        let rejections = (0..SIMULATIONS)
            .filter(|_| p_value_of(&bernoulli_losses(&mut rng, N, DELTA), p_value) <= EPSILON)
            .count();
        let rate = rejections as f64 / SIMULATIONS as f64;
        eprintln!("{p_value:?}: simulated rejection rate {rate:.4} over {SIMULATIONS} runs");
        // Validity: the frequency is a mean of SIMULATIONS Bernoulli(size ≤ ε) draws, so it
        // exceeds ε + 3 standard errors with probability < 0.2% if the test is valid.
        assert!(
            rate <= EPSILON + three_se(EPSILON),
            "{p_value:?}: rejection rate {rate} at the boundary null"
        );
        // And the simulation agrees with the exact size (a 4-sigma band around it).
        assert!(
            (rate - exact).abs() <= 4.0 / 3.0 * three_se(exact),
            "{p_value:?}: simulated {rate} vs exact {exact}"
        );
    }
}

/// Hoeffding–Bentkus is valid for fractional losses too: losses 1 with probability 0.06,
/// 0.5 with probability 0.08, else 0 (mean exactly δ), and uniform on [0, 2δ] (mean δ).
#[test]
fn hoeffding_bentkus_is_valid_for_fractional_losses() {
    let mut rng = StdRng::seed_from_u64(12);
    let three_point = |rng: &mut StdRng| {
        let u: f64 = rng.random();
        if u < 0.06 {
            1.0
        } else if u < 0.14 {
            0.5
        } else {
            0.0
        }
    };
    let uniform = |rng: &mut StdRng| 2.0 * DELTA * rng.random::<f64>();
    let draws: [(&str, &LossDraw); 2] = [("three-point", &three_point), ("uniform", &uniform)];
    for (name, draw) in draws {
        let rejections = (0..SIMULATIONS)
            .filter(|_| {
                let losses: Vec<f64> = (0..N).map(|_| draw(&mut rng)).collect();
                p_value_of(&losses, PValue::HoeffdingBentkus) <= EPSILON
            })
            .count();
        let rate = rejections as f64 / SIMULATIONS as f64;
        eprintln!("HB, {name} losses with mean δ: rejection rate {rate:.4}");
        // As above: at most ε plus 3 standard errors. (Losses with less variance than a
        // Bernoulli(δ) make HB more conservative still, so the rate is below the 0/1 case.)
        assert!(rate <= EPSILON + three_se(EPSILON), "{name}: rate {rate}");
    }
}

/// Power: with true risk 0.02 (far below δ = 0.1) both tests reject nearly always.
#[test]
fn low_risk_is_rejected_nearly_always() {
    for p_value in BOTH {
        let mut rng = StdRng::seed_from_u64(13);
        let rejections = (0..SIMULATIONS)
            .filter(|_| p_value_of(&bernoulli_losses(&mut rng, N, 0.02), p_value) <= EPSILON)
            .count();
        let rate = rejections as f64 / SIMULATIONS as f64;
        eprintln!("{p_value:?}: rejection rate at risk 0.02: {rate:.4}");
        // Exact power (mpmath): P(Bin(300, 0.02) ≤ 22) = 1 − 6e-8 (binomial),
        // P(Bin(300, 0.02) ≤ 20) = 1 − 1e-6 (HB): no miss is expected in 4000 runs.
        assert!(rate >= 0.995, "{p_value:?}: power {rate}");
    }
}

/// The fixed-sequence walk over nested, correlated candidates (like real exit thresholds:
/// row `i` fails at candidate `j` iff `u_i < r_j` for one shared uniform `u_i`) chooses a
/// candidate whose true risk is ≥ δ in at most a fraction ε of the calibration draws, and
/// usually gets well past the conservative end.
#[test]
fn fixed_sequence_walk_controls_the_family_wise_error() {
    let risks = [0.0, 0.01, 0.03, 0.05, 0.07, 0.1, 0.12, 0.2, 0.4];
    let first_bad = risks.iter().position(|&r| r >= DELTA).unwrap();
    for p_value in BOTH {
        let mut rng = StdRng::seed_from_u64(14);
        let (mut bad, mut past_conservative, mut nothing) = (0, 0, 0);
        for _ in 0..SIMULATIONS {
            let u: Vec<f64> = (0..N).map(|_| rng.random()).collect();
            let losses: Vec<Vec<f64>> = risks
                .iter()
                .map(|&r| u.iter().map(|&ui| f64::from(u8::from(ui < r))).collect())
                .collect();
            let candidates: Vec<LttCandidate> = losses
                .iter()
                .zip(&risks)
                .map(|(l, &r)| LttCandidate {
                    threshold: 1.0 - r,
                    losses: l,
                })
                .collect();
            let outcome = learn_then_test(&candidates, DELTA, EPSILON, p_value).unwrap();
            match outcome.chosen {
                None => nothing += 1,
                Some(j) => {
                    bad += usize::from(j >= first_bad);
                    past_conservative += usize::from(j >= 2);
                    assert_eq!(outcome.threshold, Some(1.0 - risks[j]));
                    // The walk: every candidate up to the choice is rejected, the next not.
                    assert!(outcome.p_values[..=j].iter().all(|&p| p <= EPSILON));
                    assert!(outcome.p_values.get(j + 1).is_none_or(|&p| p > EPSILON));
                }
            }
        }
        let fwer = bad as f64 / SIMULATIONS as f64;
        let reach = past_conservative as f64 / SIMULATIONS as f64;
        eprintln!(
            "{p_value:?}: chose a risk ≥ δ in {fwer:.4}, reached risk ≥ 0.03 in {reach:.4}, \
             chose nothing in {nothing} of {SIMULATIONS}"
        );
        // Family-wise error: at most ε plus 3 standard errors (as above).
        assert!(
            fwer <= EPSILON + three_se(EPSILON),
            "{p_value:?}: FWER {fwer}"
        );
        // Power: the risk-0.03 candidate is rejected unless its failure count exceeds 20
        // (HB) or 22 (binomial), P = 3.4e-4 and 4.8e-5 for Binomial(300, 0.03) (mpmath);
        // the ones before it are rejected whenever it is (nested losses, so fewer failures),
        // so the walk reaches it nearly always.
        assert!(reach >= 0.99, "{p_value:?}: reached index 2 in {reach}");
    }
}
