//! Statistical acceptance tests on synthetic data: ECE of calibrated predictions, temperature
//! recovery, split-conformal coverage, and nested prediction sets. Every test is seeded, so
//! it is deterministic; each tolerance is stated with its reasoning next to the check.

use ponder_calibration::{
    Binning, ConformalScore, Predictions, SplitConformal, apply_temperature, calibration_error,
    fit_temperature, fit_temperatures_per_exit, negative_log_likelihood, softmax_rows,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A class drawn from one row of probabilities.
fn sample_class(rng: &mut StdRng, probs: &[f32]) -> usize {
    let u: f64 = rng.random();
    let mut cumulative = 0.0;
    for (k, &p) in probs.iter().enumerate() {
        cumulative += f64::from(p);
        if u < cumulative {
            return k;
        }
    }
    probs.len() - 1
}

/// `n` rows of `n_classes` Gaussian logits with standard deviation `scale`.
fn gaussian_logits(rng: &mut StdRng, n: usize, n_classes: usize, scale: f64) -> Vec<f32> {
    (0..n * n_classes)
        .map(|_| (scale * normal(rng)) as f32)
        .collect()
}

/// Labels drawn from `softmax(logits / t_true)`.
fn labels_at_temperature(
    rng: &mut StdRng,
    logits: &[f32],
    n_classes: usize,
    t_true: f64,
) -> Vec<usize> {
    apply_temperature(logits, n_classes, t_true)
        .chunks_exact(n_classes)
        .map(|row| sample_class(rng, row))
        .collect()
}

/// Acceptance 1: ECE of perfectly calibrated predictions is within sampling error of 0.
#[test]
fn ece_of_calibrated_predictions_is_near_zero() {
    let mut rng = StdRng::seed_from_u64(1);
    let n = 100_000;
    let n_bins = 15;
    let confidences: Vec<f32> = (0..n).map(|_| 0.5 + 0.5 * rng.random::<f32>()).collect();
    let correct: Vec<bool> = confidences
        .iter()
        .map(|&c| rng.random::<f64>() < f64::from(c))
        .collect();
    // Within a bin, acc − conf is a mean of n_b independent (Bernoulli(c) − c) terms: zero
    // mean, std ≤ sqrt(0.25/n_b), so E|gap_b| ≤ sqrt(2/π)·sqrt(0.25/n_b), and by
    // Cauchy–Schwarz E[ECE] ≤ sqrt(2/π)·0.5·sqrt(B/n) ≈ 0.0049 for B = 15, n = 1e5.
    // The bound checked, 3·sqrt(0.25/(n/15)) ≈ 0.0184, is 3.75 times that expectation, and
    // ECE (an average of many independent |gap_b|) fluctuates far less than its mean.
    let bound = 3.0 * (0.25 / (n as f64 / n_bins as f64)).sqrt();
    for binning in [Binning::Uniform(n_bins), Binning::Quantile(n_bins)] {
        let r = calibration_error(&confidences, &correct, binning).unwrap();
        eprintln!(
            "calibrated, {binning:?}: ECE {:.5} (bound {bound:.5})",
            r.ece
        );
        assert!(r.ece < bound, "{binning:?}: ECE {} ≥ {bound}", r.ece);
        assert_eq!(r.bins.iter().map(|b| b.count).sum::<usize>(), n);
    }
    // Over-confident by 0.15 (correct ~ Bernoulli(c − 0.15)): ECE ≈ 0.15, far above the bound.
    let over: Vec<bool> = confidences
        .iter()
        .map(|&c| rng.random::<f64>() < f64::from(c) - 0.15)
        .collect();
    for binning in [Binning::Uniform(n_bins), Binning::Quantile(n_bins)] {
        let r = calibration_error(&confidences, &over, binning).unwrap();
        eprintln!("over-confident, {binning:?}: ECE {:.5}", r.ece);
        // Sampling error as above (≤ 0.0184); 0.15 − 0.0184 > 0.13.
        assert!(
            r.ece > 0.13 && r.ece > 5.0 * bound,
            "{binning:?}: ECE {}",
            r.ece
        );
        assert!((r.ece - 0.15).abs() < bound, "{binning:?}: ECE {}", r.ece);
    }
}

/// Acceptance 3 (part 1): temperature scaling recovers a known temperature.
#[test]
fn temperature_scaling_recovers_a_known_temperature() {
    let mut rng = StdRng::seed_from_u64(3);
    let (n, n_classes) = (20_000, 10);
    for t_true in [2.5, 0.6] {
        let logits = gaussian_logits(&mut rng, n, n_classes, 3.0);
        let labels = labels_at_temperature(&mut rng, &logits, n_classes, t_true);
        let fit = fit_temperature(&logits, n_classes, &labels).unwrap();
        // The MLE of β = 1/T has standard error 1/sqrt(n·E[Var_β z]); with logits of
        // std 3 over 10 classes that is well under 1% of β for both temperatures at n = 2e4,
        // so 5% is a > 5-sigma tolerance.
        let rel = (fit.temperature - t_true).abs() / t_true;
        eprintln!("T_true {t_true}: {fit:?}");
        assert!(
            rel < 0.05,
            "T_true {t_true}: fitted {fit:?} (rel. error {rel})"
        );
        assert!(fit.nll_after <= fit.nll_before);
    }
}

/// Acceptance 3 (part 2): temperature scaling never increases the NLL of its fit set, and
/// the fitted T is a minimum.
#[test]
fn temperature_scaling_never_increases_nll() {
    let mut rng = StdRng::seed_from_u64(4);
    let n_classes = 10;
    // Calibrated (T_true = 1), over-confident (2.5), under-confident (0.6), very
    // over-confident (8), random labels; large and small sets.
    let mut cases = Vec::new();
    for (seed_n, t_true) in [
        (5_000, Some(1.0)),
        (5_000, Some(2.5)),
        (5_000, Some(0.6)),
        (300, Some(8.0)),
        (50, Some(1.0)),
        (2_000, None),
    ] {
        let logits = gaussian_logits(&mut rng, seed_n, n_classes, 2.0);
        let labels = match t_true {
            Some(t) => labels_at_temperature(&mut rng, &logits, n_classes, t),
            None => (0..seed_n)
                .map(|_| rng.random_range(0..n_classes))
                .collect(),
        };
        cases.push((logits, labels));
    }
    for (i, (logits, labels)) in cases.iter().enumerate() {
        let fit = fit_temperature(logits, n_classes, labels).unwrap();
        assert!(fit.nll_after <= fit.nll_before, "case {i}: {fit:?}");
        // Independently, from the f32 probabilities: f32 rounding (relative 6e-8 per
        // probability) moves the mean NLL by < 1e-6.
        let nll = |probs: &[f32]| {
            negative_log_likelihood(&Predictions::new(probs, n_classes, labels).unwrap()).unwrap()
        };
        let before = nll(&softmax_rows(logits, n_classes));
        let after = nll(&apply_temperature(logits, n_classes, fit.temperature));
        assert!((before - fit.nll_before).abs() < 1e-6, "case {i}");
        assert!((after - fit.nll_after).abs() < 1e-6, "case {i}");
        assert!(after <= before + 1e-6, "case {i}: {after} > {before}");
        // A minimum: 2% either side is no better (up to the same 1e-6 rounding), unless the
        // fit ended on the search bracket.
        if fit.temperature > 1.001e-3 && fit.temperature < 999.0 {
            for t in [fit.temperature * 1.02, fit.temperature / 1.02] {
                let other = nll(&apply_temperature(logits, n_classes, t));
                assert!(
                    other >= after - 1e-6,
                    "case {i}: T {t} gives {other} < {after}"
                );
            }
        }
    }
    // Per exit: the same as fitting each exit alone.
    let (a, b) = (&cases[0], &cases[1]);
    let per_exit = fit_temperatures_per_exit(&[&a.0, &a.0], n_classes, &a.1).unwrap();
    assert_eq!(per_exit[0], fit_temperature(&a.0, n_classes, &a.1).unwrap());
    assert_eq!(per_exit[0], per_exit[1]);
    assert!(fit_temperatures_per_exit(&[&a.0, &b.0[..10]], n_classes, &a.1).is_err());
}

/// Exchangeable synthetic data: `n` rows of `n_classes` probabilities `softmax(σ·g)` with
/// `g ~ N(0, I)` and `σ ~ U(0.5, 3)` per row (a spread of sharp and flat rows; continuous,
/// so scores have no ties), and labels drawn from the rows.
fn synthetic_probabilities(rng: &mut StdRng, n: usize, n_classes: usize) -> (Vec<f32>, Vec<usize>) {
    let mut probs = Vec::with_capacity(n * n_classes);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let sigma = 0.5 + 2.5 * rng.random::<f64>();
        let logits = gaussian_logits(rng, 1, n_classes, sigma);
        let row = softmax_rows(&logits, n_classes);
        labels.push(sample_class(rng, &row));
        probs.extend(row);
    }
    (probs, labels)
}

/// Gathers rows `idx` of row-major `probs` and their labels.
fn gather(
    probs: &[f32],
    labels: &[usize],
    n_classes: usize,
    idx: &[usize],
) -> (Vec<f32>, Vec<usize>) {
    let p = idx
        .iter()
        .flat_map(|&i| probs[i * n_classes..(i + 1) * n_classes].iter().copied())
        .collect();
    let y = idx.iter().map(|&i| labels[i]).collect();
    (p, y)
}

const SCORES: [ConformalScore; 3] = [
    ConformalScore::Lac,
    ConformalScore::Aps,
    ConformalScore::Raps {
        lambda: 0.01,
        k_reg: 2,
    },
];

/// Acceptance 4: split-conformal coverage, averaged over 100 random splits, lies in
/// [1 − α, 1 − α + 1/(n+1)] up to a stated tolerance, for LAC, APS and RAPS.
#[test]
fn split_conformal_coverage_is_within_the_guarantee() {
    let mut rng = StdRng::seed_from_u64(5);
    let n_classes = 10;
    let (probs, labels) = synthetic_probabilities(&mut rng, 2000, n_classes);
    let n_cal = 1000;
    let splits = 100;
    let mut coverage = vec![[0.0f64; 2]; SCORES.len()];
    let mut idx: Vec<usize> = (0..2000).collect();
    for _ in 0..splits {
        idx.shuffle(&mut rng);
        let (cp, cy) = gather(&probs, &labels, n_classes, &idx[..n_cal]);
        let (tp, ty) = gather(&probs, &labels, n_classes, &idx[n_cal..]);
        let cal = Predictions::new(&cp, n_classes, &cy).unwrap();
        let test = Predictions::new(&tp, n_classes, &ty).unwrap();
        for (s, &score) in SCORES.iter().enumerate() {
            for (a, alpha) in [0.1, 0.05].into_iter().enumerate() {
                let sc = SplitConformal::calibrate(score, &cal, alpha).unwrap();
                let report = sc.evaluate(&test).unwrap();
                assert_eq!(report.n, 1000);
                coverage[s][a] += report.coverage / splits as f64;
            }
        }
    }
    // Over random splits of one exchangeable set, the expected test coverage is in
    // [1 − α, 1 − α + 1/(n_cal+1)] for tie-free scores. One split's coverage has std
    // ≈ sqrt(2·α(1−α)/1000) ≤ 0.0134 (test sampling plus q̂'s), so the mean of 100 has
    // std ≤ 0.0014; the tolerance 0.01 is about 7 of those.
    let tol = 0.01;
    for (s, score) in SCORES.iter().enumerate() {
        for (a, alpha) in [0.1, 0.05].into_iter().enumerate() {
            let c = coverage[s][a];
            eprintln!("{score:?}, α = {alpha}: mean coverage {c:.5}");
            let (lo, hi) = (1.0 - alpha, 1.0 - alpha + 1.0 / (n_cal as f64 + 1.0));
            assert!(
                c >= lo - tol && c <= hi + tol,
                "{score:?}, α = {alpha}: mean coverage {c} outside [{lo}, {hi}] ± {tol}"
            );
        }
    }
}

/// Acceptance 5: prediction sets nest as α decreases (LAC, APS, RAPS), on every test row.
#[test]
fn prediction_sets_nest_as_alpha_decreases() {
    let mut rng = StdRng::seed_from_u64(6);
    let n_classes = 10;
    let (probs, labels) = synthetic_probabilities(&mut rng, 2000, n_classes);
    let cal = Predictions::new(&probs[..1000 * n_classes], n_classes, &labels[..1000]).unwrap();
    let test = Predictions::new(&probs[1000 * n_classes..], n_classes, &labels[1000..]).unwrap();
    let alphas = [0.2, 0.1, 0.05, 0.01];
    for score in SCORES {
        let models: Vec<SplitConformal> = alphas
            .iter()
            .map(|&alpha| SplitConformal::calibrate(score, &cal, alpha).unwrap())
            .collect();
        let mut total_sizes = vec![0usize; alphas.len()];
        for i in 0..test.len() {
            let sets: Vec<Vec<usize>> = models
                .iter()
                .map(|m| m.prediction_set(test.row(i)))
                .collect();
            for (a, pair) in sets.windows(2).enumerate() {
                assert!(
                    pair[0].iter().all(|k| pair[1].contains(k)),
                    "{score:?}, row {i}: set at α = {} {:?} ⊄ set at α = {} {:?}",
                    alphas[a],
                    pair[0],
                    alphas[a + 1],
                    pair[1]
                );
            }
            for (total, set) in total_sizes.iter_mut().zip(&sets) {
                *total += set.len();
            }
        }
        // Not vacuous: the sets do grow from α = 0.2 to α = 0.01.
        assert!(
            total_sizes[3] > total_sizes[0],
            "{score:?}: sizes {total_sizes:?}"
        );
        // And the thresholds are non-decreasing as α falls.
        assert!(
            models.windows(2).all(|m| m[0].q_hat <= m[1].q_hat),
            "{score:?}"
        );
    }
}
