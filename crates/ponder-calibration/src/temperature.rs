//! Temperature scaling (Guo et al. 2017): one scalar `T > 0` that divides the logits before
//! the softmax, fitted by minimising the negative log-likelihood on held-out data.

use serde::{Deserialize, Serialize};

use crate::error::{CalibrationError, Result};
use crate::predictions::{check_labels, check_len, scaled_softmax_rows};

/// The smallest inverse temperature searched, `β = 1/T` (so `T ≤ 1000`).
pub const BETA_MIN: f64 = 1e-3;
/// The largest inverse temperature searched (so `T ≥ 0.001`).
pub const BETA_MAX: f64 = 1e3;
/// The most NLL passes over the data that one fit makes (safeguarded Newton usually stops
/// after 5–7; bisection of the whole bracket to [`STEP_TOLERANCE`] needs about 35).
const MAX_ITERATIONS: usize = 60;
/// The Newton step, relative to β, below which the fit has converged: Newton converges
/// quadratically, so the point it would step to is then within ~1e-16 of the minimum and
/// the current one within the step, far below any meaningful precision of T.
const STEP_TOLERANCE: f64 = 1e-8;

/// A fitted temperature with the NLL of its fit set before (`T = 1`) and after.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Temperature {
    /// The fitted temperature `T > 0`; calibrated probabilities are `softmax(z / T)`.
    pub temperature: f64,
    /// Mean NLL of `softmax(z)` on the fit set.
    pub nll_before: f64,
    /// Mean NLL of `softmax(z / T)` on the fit set; never above `nll_before`.
    pub nll_after: f64,
}

/// The mean NLL `g(β)` of `softmax(β z)` and its first two derivatives in β.
#[derive(Debug, Clone, Copy, Default)]
struct NllAt {
    nll: f64,
    d1: f64,
    d2: f64,
}

/// Rows per unit of work in [`nll_at`]. The partial sums of the chunks are added in chunk
/// order, so the result does not depend on how many threads ran.
const CHUNK_ROWS: usize = 1 << 14;

/// The sums (not yet means) of [`nll_at`] over some rows.
fn nll_sums(logits: &[f32], n_classes: usize, labels: &[usize], beta: f64) -> NllAt {
    let mut sums = NllAt::default();
    for (row, &label) in logits.chunks_exact(n_classes).zip(labels) {
        let max = f64::from(row.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        let (mut s0, mut s1, mut s2) = (0.0f64, 0.0f64, 0.0f64);
        for &z in row {
            let d = f64::from(z) - max;
            let e = (beta * d).exp();
            s0 += e;
            s1 += e * d;
            s2 += e * d * d;
        }
        let mean = s1 / s0;
        let d_label = f64::from(row[label]) - max;
        sums.nll += s0.ln() - beta * d_label;
        sums.d1 += mean - d_label;
        sums.d2 += (s2 / s0 - mean * mean).max(0.0);
    }
    sums
}

/// `g(β) = (1/n) Σ_i [logsumexp(β z_i) − β z_{i,y_i}]` with
/// `g'(β) = (1/n) Σ_i (E_{softmax(β z_i)}[z_i] − z_{i,y_i})` and
/// `g''(β) = (1/n) Σ_i Var_{softmax(β z_i)}[z_i] ≥ 0` (so g is convex in β), in one pass,
/// in f64, with each row shifted by its maximum `m_i`:
/// `logsumexp(β z_i) = β m_i + ln Σ_k exp(β (z_ik − m_i))`.
///
/// Chunks of [`CHUNK_ROWS`] rows run on up to `available_parallelism` scoped threads.
fn nll_at(logits: &[f32], n_classes: usize, labels: &[usize], beta: f64) -> NllAt {
    let n_chunks = labels.len().div_ceil(CHUNK_ROWS);
    let chunk = |c: usize| {
        let rows = c * CHUNK_ROWS..((c + 1) * CHUNK_ROWS).min(labels.len());
        nll_sums(
            &logits[rows.start * n_classes..rows.end * n_classes],
            n_classes,
            &labels[rows],
            beta,
        )
    };
    let n_threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(n_chunks);
    let partials: Vec<NllAt> = if n_threads <= 1 {
        (0..n_chunks).map(chunk).collect()
    } else {
        let mut partials = vec![NllAt::default(); n_chunks];
        std::thread::scope(|scope| {
            let chunk = &chunk;
            let handles: Vec<_> = (0..n_threads)
                .map(|t| {
                    scope.spawn(move || {
                        (t..n_chunks)
                            .step_by(n_threads)
                            .map(|c| (c, chunk(c)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for handle in handles {
                for (c, partial) in handle.join().expect("an NLL worker thread panicked") {
                    partials[c] = partial;
                }
            }
        });
        partials
    };
    let mut total = NllAt::default();
    for p in partials {
        total.nll += p.nll;
        total.d1 += p.d1;
        total.d2 += p.d2;
    }
    let n = labels.len() as f64;
    NllAt {
        nll: total.nll / n,
        d1: total.d1 / n,
        d2: total.d2 / n,
    }
}

/// Checks logits `[n, n_classes]` and labels `[n]` for [`fit_temperature`].
fn check_logits(logits: &[f32], n_classes: usize, labels: &[usize]) -> Result<()> {
    if n_classes == 0 {
        return Err(CalibrationError::InvalidParameter {
            name: "n_classes".into(),
            value: "0".into(),
            reason: "logits need at least one class".into(),
        });
    }
    check_len(
        "logits (rows × n_classes)",
        labels.len() * n_classes,
        logits.len(),
    )?;
    if labels.is_empty() {
        return Err(CalibrationError::Empty {
            what: "calibration set".into(),
        });
    }
    check_labels(labels, n_classes)?;
    if let Some(flat) = logits.iter().position(|z| !z.is_finite()) {
        let (row, class) = (flat / n_classes, flat % n_classes);
        return Err(CalibrationError::NonFinite {
            what: format!("logit of row {row}, class {class}"),
            index: row,
            value: f64::from(logits[flat]),
        });
    }
    Ok(())
}

/// Fits the temperature `T > 0` that minimises the mean NLL of `softmax(z / T)` on
/// `(logits, labels)` (Guo et al. 2017, §4.2).
///
/// The NLL is convex in the inverse temperature `β = 1/T`:
/// `g(β) = (1/n) Σ_i [logsumexp(β z_i) − β z_{i,y_i}]`, whose second derivative is the mean
/// variance of `z` under `softmax(β z)`. The fit is a safeguarded Newton search for
/// `g'(β) = 0` in `[BETA_MIN, BETA_MAX]` (`T` in [0.001, 1000]), starting at `β = 1`: each
/// iteration is one f64 pass over the data giving `g`, `g'` and `g''`; a sign of `g'`
/// shrinks the bracket, and a Newton step that leaves it is replaced by the geometric
/// midpoint of the bracket (or, once, by the bracket end it points at). When the minimum
/// lies outside the bracket (e.g. a fit set that the arg-max classifies perfectly, where the
/// NLL keeps falling as `T → 0`, or one with labels no better than chance, where it falls as
/// `T → ∞`) the bracket end is returned. On 131 072 rows or more, the search first runs on
/// an evenly strided subsample of 32 768 rows and jumps to that optimum after the `β = 1`
/// pass, which saves about two passes. The search stops when the Newton step falls below
/// `1e-8·β`. Each pass splits the rows into fixed chunks over up to `available_parallelism`
/// scoped threads; the chunk sums are added in a fixed order, so the result does not depend
/// on the number of threads.
///
/// The NLL here is the exact one from the logits (log-sum-exp, no floor), so it can differ
/// from [`negative_log_likelihood`](crate::negative_log_likelihood) of the f32 probabilities
/// where a `p_y` underflows.
///
/// Guarantee: `nll_after ≤ nll_before`; `β = 1` is the first point evaluated and the best
/// point evaluated is returned.
///
/// # Shapes
///
/// `logits`: `[n, n_classes]` row-major; `labels`: `[n]`.
///
/// # Errors
///
/// [`CalibrationError::InvalidParameter`] for `n_classes == 0`;
/// [`CalibrationError::ShapeMismatch`] if `logits.len() != labels.len() * n_classes`;
/// [`CalibrationError::Empty`] for no rows; [`CalibrationError::InvalidLabel`];
/// [`CalibrationError::NonFinite`] for a NaN or infinite logit.
pub fn fit_temperature(logits: &[f32], n_classes: usize, labels: &[usize]) -> Result<Temperature> {
    check_logits(logits, n_classes, labels)?;
    let n = labels.len();
    // Warm start: the same search on an evenly strided subsample lands within ~1% of the
    // optimum, so the full-data search needs about two fewer passes. The full-data search
    // alone decides the result; the warm start only saves time.
    let warm_start = (n >= 4 * WARM_START_ROWS).then(|| {
        let rows: Vec<usize> = (0..WARM_START_ROWS)
            .map(|i| i * n / WARM_START_ROWS)
            .collect();
        let sub_logits: Vec<f32> = rows
            .iter()
            .flat_map(|&i| logits[i * n_classes..(i + 1) * n_classes].iter().copied())
            .collect();
        let sub_labels: Vec<usize> = rows.iter().map(|&i| labels[i]).collect();
        minimise(
            |beta| nll_at(&sub_logits, n_classes, &sub_labels, beta),
            None,
        )
        .beta
    });
    let fit = minimise(|beta| nll_at(logits, n_classes, labels, beta), warm_start);
    Ok(Temperature {
        temperature: 1.0 / fit.beta,
        nll_before: fit.nll_at_one,
        nll_after: fit.nll,
    })
}

/// Rows of the subsample that warm-starts [`fit_temperature`] on sets of at least four
/// times as many rows.
const WARM_START_ROWS: usize = 1 << 15;

/// The outcome of [`minimise`].
struct Minimum {
    /// The best β evaluated.
    beta: f64,
    /// `g` there.
    nll: f64,
    /// `g(1)`, the first point evaluated.
    nll_at_one: f64,
}

/// Safeguarded Newton search for the minimum of the convex `g(β)` on
/// `[BETA_MIN, BETA_MAX]`, from `β = 1`, jumping to `warm_start` (if it lies in the bracket)
/// after the first evaluation. Returns the best point evaluated (so `nll ≤ nll_at_one`).
fn minimise(eval: impl Fn(f64) -> NllAt, mut warm_start: Option<f64>) -> Minimum {
    let (mut lo, mut hi) = (BETA_MIN, BETA_MAX);
    let (mut tried_lo, mut tried_hi) = (false, false);
    let mut beta = 1.0;
    let mut at = eval(beta);
    let nll_at_one = at.nll;
    let mut best = (beta, at.nll);
    for _ in 0..MAX_ITERATIONS {
        // g is convex, so g' is non-decreasing: its sign tells on which side the minimum is.
        if at.d1 > 0.0 {
            hi = beta;
        } else if at.d1 < 0.0 {
            lo = beta;
        } else {
            break;
        }
        if hi <= lo * (1.0 + STEP_TOLERANCE) {
            break;
        }
        let newton = beta - at.d1 / at.d2;
        let next = if let Some(w) = warm_start.take().filter(|&w| w > lo && w < hi && w != beta) {
            w
        } else if newton > lo && newton < hi {
            if (newton - beta).abs() <= STEP_TOLERANCE * beta {
                // Converged: the last pass is not needed.
                break;
            }
            newton
        } else if newton >= hi && hi == BETA_MAX && !tried_hi {
            tried_hi = true;
            BETA_MAX
        } else if newton <= lo && lo == BETA_MIN && !tried_lo {
            tried_lo = true;
            BETA_MIN
        } else {
            // Bisect on log β: the bracket spans six orders of magnitude.
            (lo * hi).sqrt()
        };
        beta = next;
        at = eval(beta);
        // `<=`: on a tie (the NLL can be flat to f64 precision) the later point, nearer the
        // minimum the iteration is heading for, wins.
        if at.nll <= best.1 {
            best = (beta, at.nll);
        }
    }
    Minimum {
        beta: best.0,
        nll: best.1,
        nll_at_one,
    }
}

/// `softmax(z / T)` of every row of row-major logits `[n, n_classes]` (in f64, returned as f32).
///
/// # Panics
///
/// If `temperature` is not finite and positive, `n_classes == 0`, or `logits.len()` is not
/// a multiple of `n_classes`.
pub fn apply_temperature(logits: &[f32], n_classes: usize, temperature: f64) -> Vec<f32> {
    assert!(
        temperature.is_finite() && temperature > 0.0,
        "temperature must be finite and positive, got {temperature}"
    );
    scaled_softmax_rows(logits, n_classes, 1.0 / temperature)
}

/// One temperature per exit: `layer_logits[l]` is exit `l`'s logits `[n, n_classes]` for
/// the same rows, all with the labels `[n]`.
///
/// # Errors
///
/// [`CalibrationError::Empty`] for no exits, and those of [`fit_temperature`] for any
/// exit (a shape or non-finite error names the exit).
pub fn fit_temperatures_per_exit(
    layer_logits: &[&[f32]],
    n_classes: usize,
    labels: &[usize],
) -> Result<Vec<Temperature>> {
    if layer_logits.is_empty() {
        return Err(CalibrationError::Empty {
            what: "list of exits' logits".into(),
        });
    }
    layer_logits
        .iter()
        .enumerate()
        .map(|(l, logits)| fit_temperature(logits, n_classes, labels).map_err(|e| e.at_exit(l)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivatives_match_finite_differences() {
        let logits = [2.0, -1.0, 0.5, 0.3, 0.2, 3.0, -2.0, 1.0, 1.5];
        let labels = [0, 2, 1];
        let h = 1e-5;
        for beta in [0.3, 1.0, 2.7] {
            let at = nll_at(&logits, 3, &labels, beta);
            let plus = nll_at(&logits, 3, &labels, beta + h);
            let minus = nll_at(&logits, 3, &labels, beta - h);
            // Central differences: truncation O(h²) ≈ 1e-10, round-off ≈ 1e-16/h² for g''.
            assert!(((plus.nll - minus.nll) / (2.0 * h) - at.d1).abs() < 1e-7);
            assert!(((plus.d1 - minus.d1) / (2.0 * h) - at.d2).abs() < 1e-7);
        }
    }

    #[test]
    fn warm_start_reaches_the_same_minimum_as_the_cold_search() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        // Enough rows for the warm start; labels loosely tied to the logits.
        let (n, k) = (4 * WARM_START_ROWS, 4);
        let mut rng = StdRng::seed_from_u64(9);
        let logits: Vec<f32> = (0..n * k)
            .map(|_| 4.0 * rng.random::<f32>() - 2.0)
            .collect();
        let labels: Vec<usize> = logits
            .chunks_exact(k)
            .map(|row| {
                if rng.random::<f64>() < 0.5 {
                    crate::predictions::arg_max(row).0
                } else {
                    rng.random_range(0..k)
                }
            })
            .collect();
        let warm = fit_temperature(&logits, k, &labels).unwrap();
        let cold = minimise(|beta| nll_at(&logits, k, &labels, beta), None);
        // Both stop once the Newton step is below 1e-8·β, i.e. within ~1e-8 of the optimum.
        assert!(
            (warm.temperature * cold.beta - 1.0).abs() < 1e-7,
            "{warm:?} vs β {}",
            cold.beta
        );
        // g is flat at its minimum: a 1e-8 error in β moves it by ~1e-16.
        assert!((warm.nll_after - cold.nll).abs() < 1e-12);
        assert_eq!(warm.nll_before, cold.nll_at_one);
        assert!(warm.nll_after < warm.nll_before);
    }

    #[test]
    fn degenerate_sets_end_at_the_bracket() {
        // Every arg-max is the label: NLL = ln(1 + e^{−3/T}) falls as T → 0 (and is 0 in f64
        // once T < 3/37), so the fit heads for the bracket end T = 1/BETA_MAX.
        let logits = [3.0, 0.0, 0.0, 3.0];
        let t = fit_temperature(&logits, 2, &[0, 1]).unwrap();
        assert!(t.temperature < 0.1 && t.nll_after < 1e-15, "{t:?}");
        assert!(t.nll_after <= t.nll_before);
        // Every arg-max is wrong: NLL falls as T → ∞ (towards ln 2), so it ends at 1/BETA_MIN.
        let t = fit_temperature(&logits, 2, &[1, 0]).unwrap();
        assert!((t.temperature - 1.0 / BETA_MIN).abs() < 1e-6, "{t:?}");
        // Constant logits: g' = 0 everywhere, T = 1 is kept.
        let t = fit_temperature(&[1.0, 1.0], 2, &[0]).unwrap();
        assert_eq!(t.temperature, 1.0);
    }

    #[test]
    fn apply_temperature_divides_the_logits() {
        // softmax([0, 2 ln 3] / 2) = [1/4, 3/4].
        let p = apply_temperature(&[0.0, 2.0 * 3.0f32.ln()], 2, 2.0);
        assert!((p[0] - 0.25).abs() < 1e-6 && (p[1] - 0.75).abs() < 1e-6);
    }

    #[test]
    fn fit_rejects_bad_inputs() {
        assert!(matches!(
            fit_temperature(&[], 2, &[]),
            Err(CalibrationError::Empty { .. })
        ));
        assert!(matches!(
            fit_temperature(&[], 0, &[]),
            Err(CalibrationError::InvalidParameter { .. })
        ));
        assert!(matches!(
            fit_temperature(&[0.0, 1.0, 2.0], 2, &[0]),
            Err(CalibrationError::ShapeMismatch {
                expected: 2,
                actual: 3,
                ..
            })
        ));
        assert!(matches!(
            fit_temperature(&[0.0, 1.0], 2, &[2]),
            Err(CalibrationError::InvalidLabel { label: 2, .. })
        ));
        assert_eq!(
            fit_temperature(&[0.0, 1.0, f32::INFINITY, 0.0], 2, &[0, 0]).unwrap_err(),
            CalibrationError::NonFinite {
                what: "logit of row 1, class 0".into(),
                index: 1,
                value: f64::INFINITY
            }
        );
        assert_eq!(
            fit_temperatures_per_exit(&[&[0.0, 1.0], &[0.0, f32::NEG_INFINITY]], 2, &[0])
                .unwrap_err(),
            CalibrationError::NonFinite {
                what: "logit of row 0, class 1 at exit 1".into(),
                index: 0,
                value: f64::NEG_INFINITY
            }
        );
        assert!(matches!(
            fit_temperatures_per_exit(&[], 2, &[0]),
            Err(CalibrationError::Empty { .. })
        ));
    }
}
