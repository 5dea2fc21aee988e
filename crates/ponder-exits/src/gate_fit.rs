//! JEI-DNN's gate objective on the host, and its exact minimiser.
//!
//! With the inference modules frozen, each gate `σ(w·φ + b)` on the four confidence
//! features `φ` of its module's logits is a weighted logistic regression: the gate
//! phase's loss for gate `l` is
//!
//! `L_l(w, b) = mean_i [ w⁺_l·t_i·softplus(−z_i) + (1 − t_i)·softplus(z_i) ]`,
//! `z_i = w·φ_i + b`, `t_i = 1[l ≥ l*_i]`,
//!
//! which is convex in `(w, b)`. [`fit_gate`] solves it by Newton's method, so a trained
//! gate can be compared with the best gate its features allow: if the trained gates
//! collapse and the refitted ones do not, the training under-fitted them (JEI-DNN,
//! Regol, Chataoui, Coates, ICLR 2024, arXiv:2310.09163).

use crate::jei::N_CONFIDENCE_FEATURES;

/// Parameters of one gate: `[w_1, …, w_4, b]` (the bias last).
pub type GateParams = [f64; N_CONFIDENCE_FEATURES + 1];

/// The rows one gate is fitted on.
#[derive(Debug, Clone, Copy)]
pub struct GateRows<'a> {
    /// Confidence features of the gate's inference module, one row per example.
    pub features: &'a [[f32; N_CONFIDENCE_FEATURES]],
    /// Targets `t_i = 1[l ≥ l*_i]`.
    pub targets: &'a [bool],
    /// Weight `w⁺` of the positive rows.
    pub positive_weight: f64,
}

/// The objective at some parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateObjective {
    /// The weighted BCE, averaged over rows.
    pub loss: f64,
    /// Its gradient with respect to `[w, b]`.
    pub gradient: GateParams,
}

impl GateObjective {
    /// Euclidean norm of the gradient.
    pub fn gradient_norm(&self) -> f64 {
        self.gradient.iter().map(|g| g * g).sum::<f64>().sqrt()
    }
}

/// A gate fitted by [`fit_gate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateFit {
    /// The minimiser found.
    pub params: GateParams,
    /// The objective there.
    pub objective: GateObjective,
    /// Newton iterations taken.
    pub iterations: usize,
}

const D: usize = N_CONFIDENCE_FEATURES + 1;

fn row(features: &[f32; N_CONFIDENCE_FEATURES]) -> [f64; D] {
    let mut x = [1.0; D];
    for (x, &f) in x.iter_mut().zip(features) {
        *x = f as f64;
    }
    x
}

fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

fn check(rows: &GateRows<'_>) {
    assert_eq!(
        rows.features.len(),
        rows.targets.len(),
        "gate rows: {} feature rows, {} targets",
        rows.features.len(),
        rows.targets.len()
    );
    assert!(!rows.targets.is_empty(), "gate rows: no rows");
    assert!(
        rows.positive_weight > 0.0 && rows.positive_weight.is_finite(),
        "gate rows: positive weight {} is not > 0",
        rows.positive_weight
    );
}

/// The loss, gradient and (with `hessian`) Hessian of the objective at `params`.
fn evaluate(
    rows: &GateRows<'_>,
    params: &GateParams,
    mut hessian: Option<&mut [[f64; D]; D]>,
) -> GateObjective {
    let n = rows.targets.len() as f64;
    let mut loss = 0.0;
    let mut gradient = [0.0; D];
    if let Some(h) = hessian.as_deref_mut() {
        *h = [[0.0; D]; D];
    }
    for (features, &target) in rows.features.iter().zip(rows.targets) {
        let x = row(features);
        let z: f64 = x.iter().zip(params).map(|(x, p)| x * p).sum();
        let s = sigmoid(z);
        // d/dz of w⁺·softplus(−z) is −w⁺·(1 − σ); of softplus(z) it is σ
        let (value, slope, weight) = if target {
            (
                rows.positive_weight * softplus(-z),
                -rows.positive_weight * (1.0 - s),
                rows.positive_weight,
            )
        } else {
            (softplus(z), s, 1.0)
        };
        loss += value;
        for (g, x) in gradient.iter_mut().zip(&x) {
            *g += slope * x;
        }
        if let Some(h) = hessian.as_deref_mut() {
            let curvature = weight * s * (1.0 - s);
            for i in 0..D {
                for j in 0..D {
                    h[i][j] += curvature * x[i] * x[j];
                }
            }
        }
    }
    if let Some(h) = hessian {
        for r in h.iter_mut() {
            for v in r.iter_mut() {
                *v /= n;
            }
        }
    }
    GateObjective {
        loss: loss / n,
        gradient: gradient.map(|g| g / n),
    }
}

/// The gate objective and its gradient at `params` (`[w_1, …, w_4, b]`).
///
/// # Panics
/// If the rows are empty, of different lengths, or the positive weight is not > 0.
pub fn gate_objective(rows: &GateRows<'_>, params: &GateParams) -> GateObjective {
    check(rows);
    evaluate(rows, params, None)
}

/// Solves `h·x = g` for the 5×5 symmetric positive semi-definite `h` by Gaussian
/// elimination with partial pivoting, after adding `damping` to the diagonal.
fn solve(mut h: [[f64; D]; D], mut g: [f64; D], damping: f64) -> Option<[f64; D]> {
    for (i, r) in h.iter_mut().enumerate() {
        r[i] += damping;
    }
    for col in 0..D {
        let pivot = (col..D).max_by(|&a, &b| h[a][col].abs().total_cmp(&h[b][col].abs()))?;
        if h[pivot][col].abs() < 1e-300 {
            return None;
        }
        h.swap(col, pivot);
        g.swap(col, pivot);
        for r in col + 1..D {
            let f = h[r][col] / h[col][col];
            for c in col..D {
                h[r][c] -= f * h[col][c];
            }
            g[r] -= f * g[col];
        }
    }
    let mut x = [0.0; D];
    for r in (0..D).rev() {
        let tail: f64 = (r + 1..D).map(|c| h[r][c] * x[c]).sum();
        x[r] = (g[r] - tail) / h[r][r];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Minimises the gate objective from `start` by damped Newton steps with a
/// backtracking line search, until the gradient norm is below `tolerance`, the loss
/// stops decreasing, or `max_iterations` steps. The objective is convex, so a point
/// with a vanishing gradient is its global minimum; when the two classes are
/// separable by the features there is none (the loss tends to 0 as the weights grow),
/// and the fit stops where the loss no longer moves in f64.
///
/// # Panics
/// As [`gate_objective`].
pub fn fit_gate(
    rows: &GateRows<'_>,
    start: &GateParams,
    tolerance: f64,
    max_iterations: usize,
) -> GateFit {
    check(rows);
    let mut params = *start;
    let mut hessian = [[0.0; D]; D];
    let mut objective = evaluate(rows, &params, Some(&mut hessian));
    let mut iterations = 0;
    while iterations < max_iterations && objective.gradient_norm() > tolerance {
        iterations += 1;
        // a tiny damping keeps the step defined when the curvature vanishes in some
        // direction (a constant feature, saturated sigmoids)
        let scale = (0..D).map(|i| hessian[i][i]).fold(0.0, f64::max);
        let Some(step) = solve(hessian, objective.gradient, 1e-10 * scale.max(1e-12)) else {
            break;
        };
        let slope: f64 = step
            .iter()
            .zip(&objective.gradient)
            .map(|(s, g)| s * g)
            .sum();
        let mut t = 1.0;
        let mut accepted = None;
        while t > 1e-12 {
            let mut trial = params;
            for (p, s) in trial.iter_mut().zip(&step) {
                *p -= t * s;
            }
            let value = evaluate(rows, &trial, None).loss;
            if value <= objective.loss - 1e-4 * t * slope {
                accepted = Some(trial);
                break;
            }
            t *= 0.5;
        }
        let Some(next) = accepted else {
            break;
        };
        let previous = objective.loss;
        params = next;
        objective = evaluate(rows, &params, Some(&mut hessian));
        if previous - objective.loss <= f64::EPSILON * previous.abs() {
            break;
        }
    }
    GateFit {
        params,
        objective,
        iterations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Overlapping classes: the positives have a larger first feature on average.
    fn data(n: usize) -> (Vec<[f32; 4]>, Vec<bool>) {
        let mut state = 12_345u64;
        let mut uniform = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) as f64 / (1u64 << 31) as f64) as f32
        };
        let mut features = Vec::new();
        let mut targets = Vec::new();
        for i in 0..n {
            let positive = i % 3 == 0;
            let shift = if positive { 0.3 } else { 0.0 };
            features.push([
                uniform() + shift,
                uniform() * 2.0,
                uniform(),
                uniform() - shift,
            ]);
            targets.push(positive);
        }
        (features, targets)
    }

    #[test]
    fn newton_reaches_a_vanishing_gradient_and_beats_every_nearby_point() {
        let (features, targets) = data(2_000);
        let rows = GateRows {
            features: &features,
            targets: &targets,
            positive_weight: 2.0,
        };
        let fit = fit_gate(&rows, &[0.0; 5], 1e-10, 100);
        assert!(
            fit.objective.gradient_norm() < 1e-10,
            "gradient norm {} after {} iterations",
            fit.objective.gradient_norm(),
            fit.iterations
        );
        assert!(fit.iterations < 30, "{} iterations", fit.iterations);
        for i in 0..5 {
            for delta in [-1e-3, 1e-3] {
                let mut p = fit.params;
                p[i] += delta;
                assert!(gate_objective(&rows, &p).loss > fit.objective.loss);
            }
        }
        // the first and last features separate the classes: they get the weights
        assert!(
            fit.params[0] > 1.0 && fit.params[3] < -1.0,
            "{:?}",
            fit.params
        );
    }

    #[test]
    fn the_gradient_matches_finite_differences() {
        let (features, targets) = data(300);
        let rows = GateRows {
            features: &features,
            targets: &targets,
            positive_weight: 3.5,
        };
        let p = [0.4, -0.2, 1.0, 0.3, -0.7];
        let at = gate_objective(&rows, &p);
        for i in 0..5 {
            let (mut up, mut down) = (p, p);
            up[i] += 1e-6;
            down[i] -= 1e-6;
            let numeric =
                (gate_objective(&rows, &up).loss - gate_objective(&rows, &down).loss) / 2e-6;
            assert!(
                (numeric - at.gradient[i]).abs() < 1e-7,
                "∂{i}: {numeric} vs {}",
                at.gradient[i]
            );
        }
        // at zero every z is 0: loss = mean(w⁺·t·ln 2 + (1 − t)·ln 2)
        let zero = gate_objective(&rows, &[0.0; 5]);
        let positives = targets.iter().filter(|&&t| t).count() as f64;
        let n = targets.len() as f64;
        let expected = (3.5 * positives + (n - positives)) * 2f64.ln() / n;
        assert!((zero.loss - expected).abs() < 1e-12);
    }

    #[test]
    fn separable_targets_end_with_a_vanishing_loss_without_diverging_to_nan() {
        let (features, _) = data(200);
        let targets = vec![false; features.len()];
        let rows = GateRows {
            features: &features,
            targets: &targets,
            positive_weight: 5.0,
        };
        let fit = fit_gate(&rows, &[0.0; 5], 1e-12, 200);
        assert!(fit.params.iter().all(|p| p.is_finite()));
        assert!(fit.objective.loss < 1e-6, "{}", fit.objective.loss);
    }
}
