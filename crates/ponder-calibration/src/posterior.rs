//! JEI-DNN's exit-mixture posterior.

use crate::error::{CalibrationError, Result};
use crate::predictions::{PROB_TOLERANCE, check_len};

/// How far the exit weights may sum away from 1.
pub const WEIGHT_SUM_TOLERANCE: f64 = 1e-4;

/// JEI-DNN's posterior for one row: the mixture `Σ_l P_l · p_l` of every exit's class
/// probabilities, weighted by the exit distribution `P_l` (the probability that the row
/// exits at `l`; JEI-DNN, Regol et al., ICLR 2024, arXiv:2310.09163). Computed in f64,
/// returned as f32.
///
/// The result sums to 1 when the weights and every `layer_probs[l]` do.
///
/// # Shapes
///
/// `weights`: `[n_exits]`, each in [0, 1], summing to 1 within [`WEIGHT_SUM_TOLERANCE`];
/// `layer_probs`: `[n_exits]` of `[n_classes]`.
///
/// # Errors
///
/// [`CalibrationError::Empty`] for no exits or zero classes;
/// [`CalibrationError::ShapeMismatch`] if `layer_probs` and `weights` differ in length or
/// the exits' rows differ in length; [`CalibrationError::NonFinite`] for a NaN, infinite or
/// out-of-[0, 1] weight or probability; [`CalibrationError::InvalidParameter`] if the
/// weights do not sum to 1.
pub fn mixture_posterior(weights: &[f32], layer_probs: &[&[f32]]) -> Result<Vec<f32>> {
    if weights.is_empty() {
        return Err(CalibrationError::Empty {
            what: "exit weights".into(),
        });
    }
    check_len(
        "list of exits' probabilities",
        weights.len(),
        layer_probs.len(),
    )?;
    let n_classes = layer_probs[0].len();
    if n_classes == 0 {
        return Err(CalibrationError::Empty {
            what: "probabilities of exit 0".into(),
        });
    }
    let in_range = |p: f32| (-PROB_TOLERANCE..=1.0 + PROB_TOLERANCE).contains(&p);
    let mut weight_sum = 0.0f64;
    for (l, &w) in weights.iter().enumerate() {
        if !in_range(w) {
            return Err(CalibrationError::NonFinite {
                what: format!("weight of exit {l}"),
                index: l,
                value: f64::from(w),
            });
        }
        weight_sum += f64::from(w);
    }
    if (weight_sum - 1.0).abs() > WEIGHT_SUM_TOLERANCE {
        return Err(CalibrationError::InvalidParameter {
            name: "sum of the exit weights".into(),
            value: weight_sum.to_string(),
            reason: format!("the exit distribution must sum to 1 within {WEIGHT_SUM_TOLERANCE}"),
        });
    }
    let mut mixture = vec![0.0f64; n_classes];
    for (l, (&w, probs)) in weights.iter().zip(layer_probs).enumerate() {
        check_len(
            &format!("probabilities of exit {l}"),
            n_classes,
            probs.len(),
        )?;
        for (k, (m, &p)) in mixture.iter_mut().zip(probs.iter()).enumerate() {
            if !in_range(p) {
                return Err(CalibrationError::NonFinite {
                    what: format!("probability of class {k} at exit {l}"),
                    index: l,
                    value: f64::from(p),
                });
            }
            // JEI-DNN: p(y | x) = Σ_l P_l(x) · p_l(y | x).
            *m += f64::from(w) * f64::from(p);
        }
    }
    Ok(mixture.into_iter().map(|m| m as f32).collect())
}

/// [`mixture_posterior`] for a batch: `weights` is `[n, n_exits]` row-major and
/// `layer_probs[l]` is `[n, n_classes]` row-major; returns `[n, n_classes]`.
///
/// # Errors
///
/// As [`mixture_posterior`] for each row; [`CalibrationError::InvalidParameter`] for
/// `n_classes == 0`; [`CalibrationError::ShapeMismatch`] if the lengths do not describe the
/// same `n` rows.
pub fn mixture_posterior_rows(
    weights: &[f32],
    layer_probs: &[&[f32]],
    n_classes: usize,
) -> Result<Vec<f32>> {
    if n_classes == 0 {
        return Err(CalibrationError::InvalidParameter {
            name: "n_classes".into(),
            value: "0".into(),
            reason: "a posterior needs at least one class".into(),
        });
    }
    let n_exits = layer_probs.len();
    if n_exits == 0 {
        return Err(CalibrationError::Empty {
            what: "list of exits' probabilities".into(),
        });
    }
    let n = layer_probs[0].len() / n_classes;
    check_len("exit weights (rows × n_exits)", n * n_exits, weights.len())?;
    for (l, probs) in layer_probs.iter().enumerate() {
        check_len(
            &format!("probabilities of exit {l} (rows × n_classes)"),
            n * n_classes,
            probs.len(),
        )?;
    }
    let mut out = Vec::with_capacity(n * n_classes);
    let mut rows: Vec<&[f32]> = Vec::with_capacity(n_exits);
    for i in 0..n {
        rows.clear();
        rows.extend(
            layer_probs
                .iter()
                .map(|p| &p[i * n_classes..(i + 1) * n_classes]),
        );
        let row = mixture_posterior(&weights[i * n_exits..(i + 1) * n_exits], &rows)
            .map_err(|e| at_row(e, i))?;
        out.extend(row);
    }
    Ok(out)
}

/// Names row `row` in a value or sum error of [`mixture_posterior_rows`].
fn at_row(error: CalibrationError, row: usize) -> CalibrationError {
    match error {
        CalibrationError::NonFinite { what, value, .. } => CalibrationError::NonFinite {
            what: format!("{what} in row {row}"),
            index: row,
            value,
        },
        CalibrationError::InvalidParameter {
            name,
            value,
            reason,
        } => CalibrationError::InvalidParameter {
            name: format!("{name} in row {row}"),
            value,
            reason,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixture_matches_hand_values_and_sums_to_one() {
        let p0 = [0.6f32, 0.3, 0.1];
        let p1 = [0.2f32, 0.2, 0.6];
        let p2 = [0.0f32, 1.0, 0.0];
        let mix = mixture_posterior(&[0.5, 0.25, 0.25], &[&p0, &p1, &p2]).unwrap();
        // 0.5·p0 + 0.25·p1 + 0.25·p2 = [0.35, 0.45, 0.2]; f32 output: tolerance 1e-6.
        for (m, e) in mix.iter().zip([0.35, 0.45, 0.2]) {
            assert!((m - e).abs() < 1e-6, "{mix:?}");
        }
        assert!((mix.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // All the weight on one exit gives that exit's probabilities.
        assert_eq!(
            mixture_posterior(&[0.0, 1.0, 0.0], &[&p0, &p1, &p2]).unwrap(),
            p1.to_vec()
        );
        let batch = mixture_posterior_rows(
            &[0.5, 0.5, 1.0, 0.0],
            &[&[0.6, 0.4, 1.0, 0.0], &[0.2, 0.8, 0.0, 1.0]],
            2,
        )
        .unwrap();
        for (m, e) in batch.iter().zip([0.4, 0.6, 1.0, 0.0]) {
            assert!((m - e).abs() < 1e-6, "{batch:?}");
        }
    }

    #[test]
    fn bad_weights_are_rejected() {
        let p = [0.5f32, 0.5];
        assert!(matches!(
            mixture_posterior(&[0.5, 0.4], &[&p, &p]),
            Err(CalibrationError::InvalidParameter { .. })
        ));
        assert!(matches!(
            mixture_posterior(&[1.5, -0.5], &[&p, &p]),
            Err(CalibrationError::NonFinite { index: 0, .. })
        ));
        assert!(matches!(
            mixture_posterior(&[f32::NAN, 1.0], &[&p, &p]),
            Err(CalibrationError::NonFinite { index: 0, .. })
        ));
        assert!(matches!(
            mixture_posterior(&[1.0], &[&p, &p]),
            Err(CalibrationError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            mixture_posterior(&[], &[]),
            Err(CalibrationError::Empty { .. })
        ));
        assert!(matches!(
            mixture_posterior(&[0.5, 0.5], &[&p, &[0.2, 0.3, 0.5]]),
            Err(CalibrationError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            mixture_posterior(&[0.5, 0.5], &[&p, &[f32::NAN, 0.5]]),
            Err(CalibrationError::NonFinite { index: 1, .. })
        ));
        match mixture_posterior_rows(&[1.0, 0.0, 0.7, 0.7], &[&[1.0, 0.0], &[0.0, 1.0]], 1) {
            Err(CalibrationError::InvalidParameter { name, .. }) => {
                assert_eq!(name, "sum of the exit weights in row 1")
            }
            other => panic!("expected InvalidParameter, got {other:?}"),
        }
    }
}
