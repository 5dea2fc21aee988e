//! Calibrating the exits of any early-exit model with `ponder-calibration` alone (no burn,
//! no tensors): everything below works on host copies, `&[f32]` logits or probabilities
//! (row-major `[n, n_classes]`) and `&[usize]` labels.
//!
//! ```text
//! cargo run -p ponder-calibration --example calibrate_exits
//! ```
//!
//! The model is simulated: a 4-exit, 5-class classifier whose exits get more accurate
//! with depth, the early ones over-confident and the late ones under-confident, so one
//! temperature for the whole model cannot fix both and one per exit can. A
//! max-probability policy picks each row's exit. Then, fitted on a calibration split and
//! measured on a test split:
//!
//! 1. the ECE of every exit and of the exited outputs, with the reliability bins;
//! 2. one temperature for the whole model, and one per exit;
//! 3. split-conformal prediction sets (LAC and APS, one threshold, and JEI-DNN's
//!    per-exit thresholds) and their coverage and mean size on the test split.
//!
//! With a real model, the per-exit logits are what `ponder_models::layer_outputs` (or
//! `forward_all`) copies to the host, and the exit layers what `run_adaptive` returns.

use ponder_calibration::{
    Binning, CalibrationError, ConformalScore, PerExitConformal, Predictions, SplitConformal,
    apply_temperature, calibration_error, fit_temperature, fit_temperatures_per_exit, softmax_rows,
};

const N_EXITS: usize = 4;
const N_CLASSES: usize = 5;
/// Rows of the calibration split and of the test split.
const N: usize = 2000;
/// The exit policy: leave at the first exit whose top probability is above this.
const THRESHOLD: f32 = 0.9;
/// Target miscoverage of the conformal sets.
const ALPHA: f64 = 0.1;

/// A small deterministic generator (SplitMix64), so the example needs no `rand`.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform(); // (0, 1]
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// One split of the simulated model's outputs.
struct Split {
    /// `logits[l]`: exit `l`'s logits `[n, N_CLASSES]`.
    logits: Vec<Vec<f32>>,
    labels: Vec<usize>,
}

/// `n` rows: exit `l`'s logits are `γ_l · (m_l·onehot(y) + ε + ½η_l)`, with noise `ε`
/// shared by all exits (a row's difficulty), fresh noise `η_l` per exit, a margin `m_l`
/// growing with depth and a scale `γ_l` shrinking with depth (too sharp early, too
/// flat late).
fn simulate(n: usize, rng: &mut SplitMix) -> Split {
    let mut logits: Vec<Vec<f32>> = (0..N_EXITS)
        .map(|_| Vec::with_capacity(n * N_CLASSES))
        .collect();
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let y = (rng.next_u64() % N_CLASSES as u64) as usize;
        let shared: Vec<f64> = (0..N_CLASSES).map(|_| rng.normal()).collect();
        for (l, exit_logits) in logits.iter_mut().enumerate() {
            let margin = 1.2 + 0.8 * l as f64;
            let gamma = 2.0 - 0.3 * l as f64;
            for (k, eps) in shared.iter().enumerate() {
                let signal = if k == y { margin } else { 0.0 };
                exit_logits.push((gamma * (signal + eps + 0.5 * rng.normal())) as f32);
            }
        }
        labels.push(y);
    }
    Split { logits, labels }
}

/// Max-probability policy: each row's exit (0-based) and that exit's logits, `[n, C]`.
fn exit_rows(split: &Split) -> (Vec<usize>, Vec<f32>) {
    let probs: Vec<Vec<f32>> = split
        .logits
        .iter()
        .map(|z| softmax_rows(z, N_CLASSES))
        .collect();
    let mut exits = Vec::new();
    let mut exited = Vec::new();
    for row in 0..split.labels.len() {
        let cols = row * N_CLASSES..(row + 1) * N_CLASSES;
        let exit = (0..N_EXITS)
            .find(|&l| probs[l][cols.clone()].iter().cloned().fold(0.0, f32::max) > THRESHOLD)
            .unwrap_or(N_EXITS - 1);
        exits.push(exit);
        exited.extend_from_slice(&split.logits[exit][cols]);
    }
    (exits, exited)
}

/// ECE (15 equal-mass bins, JEI-DNN's setting) and accuracy of probabilities.
fn ece(probs: &[f32], labels: &[usize]) -> Result<(f64, f64), CalibrationError> {
    let (confidence, correct) = Predictions::new(probs, N_CLASSES, labels)?.top_label();
    let report = calibration_error(&confidence, &correct, Binning::Quantile(15))?;
    let accuracy = correct.iter().filter(|&&c| c).count() as f64 / correct.len() as f64;
    Ok((report.ece, accuracy))
}

/// Softmax of each row at its own exit's temperature.
fn per_exit_scaled(logits: &[f32], exits: &[usize], temperatures: &[f64]) -> Vec<f32> {
    logits
        .chunks_exact(N_CLASSES)
        .zip(exits)
        .flat_map(|(row, &l)| apply_temperature(row, N_CLASSES, temperatures[l]))
        .collect()
}

fn main() -> Result<(), CalibrationError> {
    let mut rng = SplitMix(2024);
    let calib = simulate(N, &mut rng);
    let test = simulate(N, &mut rng);
    let (calib_exits, calib_exited) = exit_rows(&calib);
    let (test_exits, test_exited) = exit_rows(&test);

    // 1. Every exit's calibration, and the outputs the policy actually returns.
    println!(
        "{N_EXITS} exits, {N_CLASSES} classes, max-prob policy τ = {THRESHOLD}; {N} calibration and {N} test rows"
    );
    for l in 0..N_EXITS {
        let (e, acc) = ece(&softmax_rows(&test.logits[l], N_CLASSES), &test.labels)?;
        let share = test_exits.iter().filter(|&&x| x == l).count() as f64 / N as f64;
        println!(
            "  exit {}: accuracy {acc:.3}  ECE {e:.3}  rows exiting here {:.1}%",
            l + 1,
            100.0 * share
        );
    }
    let raw = softmax_rows(&test_exited, N_CLASSES);
    let (ece_raw, acc) = ece(&raw, &test.labels)?;
    println!("exited outputs: accuracy {acc:.3}, ECE {ece_raw:.3}");

    // The reliability diagram of the exited outputs (10 equal-width bins).
    let (confidence, correct) = Predictions::new(&raw, N_CLASSES, &test.labels)?.top_label();
    let report = calibration_error(&confidence, &correct, Binning::Uniform(10))?;
    println!("reliability bins (confidence range: count, mean confidence → accuracy):");
    for bin in &report.bins {
        println!(
            "  [{:.1}, {:.1}]: {:4}, {:.3} → {:.3}",
            bin.lower, bin.upper, bin.count, bin.mean_confidence, bin.accuracy
        );
    }

    // 2. Temperature scaling, fitted on the calibration split only. The policy still
    // decides on the raw probabilities; the temperatures rescale what it returns.
    let t = fit_temperature(&calib_exited, N_CLASSES, &calib.labels)?;
    let scaled = apply_temperature(&test_exited, N_CLASSES, t.temperature);
    let (ece_t, _) = ece(&scaled, &test.labels)?;
    println!(
        "one temperature T = {:.2} (calibration NLL {:.3} → {:.3}): test ECE {ece_raw:.3} → {ece_t:.3}",
        t.temperature, t.nll_before, t.nll_after
    );
    let exits: Vec<&[f32]> = calib.logits.iter().map(Vec::as_slice).collect();
    let per_exit: Vec<f64> = fit_temperatures_per_exit(&exits, N_CLASSES, &calib.labels)?
        .iter()
        .map(|t| t.temperature)
        .collect();
    let test_scaled = per_exit_scaled(&test_exited, &test_exits, &per_exit);
    let (ece_pe, _) = ece(&test_scaled, &test.labels)?;
    let shown: Vec<String> = per_exit.iter().map(|t| format!("{t:.2}")).collect();
    println!(
        "per-exit temperatures [{}]: test ECE {ece_raw:.3} → {ece_pe:.3}",
        shown.join(", ")
    );

    // 3. Conformal prediction sets at α = 0.1 on the temperature-scaled exited outputs:
    // sets that hold the label in at least 90% of exchangeable test rows (on average over
    // calibration draws). Sets are not forced to be non-empty: a LAC set is empty when
    // no class is likely enough, so its mean size can fall below 1.
    let calib_scaled = per_exit_scaled(&calib_exited, &calib_exits, &per_exit);
    let calib_preds = Predictions::new(&calib_scaled, N_CLASSES, &calib.labels)?;
    let test_preds = Predictions::new(&test_scaled, N_CLASSES, &test.labels)?;
    println!(
        "conformal sets, α = {ALPHA} (target coverage ≥ {:.2}):",
        1.0 - ALPHA
    );
    for (name, score) in [("LAC", ConformalScore::Lac), ("APS", ConformalScore::Aps)] {
        let conformal = SplitConformal::calibrate(score, &calib_preds, ALPHA)?;
        let r = conformal.evaluate(&test_preds)?;
        println!(
            "  {name}, one threshold q̂ = {:.3}: coverage {:.3}, mean set size {:.2}",
            conformal.q_hat, r.coverage, r.mean_set_size
        );
        assert!(r.coverage > 1.0 - ALPHA - 0.03, "coverage far below target");
    }
    // JEI-DNN's per-exit variant: one q̂ per exit from the rows that exit there (all rows'
    // scores at that exit when 20 or fewer exit there).
    let calib_layer_probs: Vec<Vec<f32>> = calib
        .logits
        .iter()
        .zip(&per_exit)
        .map(|(z, &t)| apply_temperature(z, N_CLASSES, t))
        .collect();
    let layer_probs: Vec<&[f32]> = calib_layer_probs.iter().map(Vec::as_slice).collect();
    let gated = PerExitConformal::calibrate(
        ConformalScore::Lac,
        ALPHA,
        20,
        &calib_exits,
        &calib_preds,
        &layer_probs,
    )?;
    let r = gated.evaluate(&test_exits, &test_preds)?;
    let q: Vec<String> = gated.q_hat.iter().map(|q| format!("{q:.3}")).collect();
    println!(
        "  LAC, per-exit q̂ [{}]: coverage {:.3}, mean set size {:.2}",
        q.join(", "),
        r.coverage,
        r.mean_set_size
    );
    let row = test_preds.row(0);
    println!(
        "  e.g. test row 0 (label {}, exit {}): LAC set {:?}",
        test.labels[0],
        test_exits[0] + 1,
        gated.prediction_set(test_exits[0], row)
    );
    Ok(())
}
