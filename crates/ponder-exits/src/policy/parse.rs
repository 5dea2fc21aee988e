//! Policies written as text (`max_prob=0.9`, `patience=3`, …), as experiment files and
//! the command line give them.

use std::str::FromStr;

use ponder_core::PonderError;

use super::{
    EntropyThreshold, Expectation, FixedLayer, LearnedGate, MaxProbThreshold, NeverExit, Oracle,
    Patience, PatienceRegression, Policy, PonderSample, QExit,
};

impl FromStr for Policy {
    type Err = PonderError;

    /// Parses `full`, `oracle`, `max_prob=T`, `entropy=S`, `patience=T`,
    /// `patience=T,tol=TAU` (PABEE's regression rule), `fixed=L`, or, for models with a
    /// halting head, `q_exit=Q`, `sample=SEED`, `expectation` or `expectation=TOL` (stop a
    /// row once its unassigned mass is at most TOL), or, for JEI-DNN models, `gate=A`
    /// (exit at the first conditional activation `a_l ≥ A`; JEI-DNN's rule is
    /// `gate=0.5`). Errors are [`PonderError::InvalidConfig`] with key `policy`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let fail = |message: String| PonderError::config("policy", message);
        // a policy's own check (e.g. a threshold outside [0, 1]), with the policy named
        let named = |e: PonderError| match e {
            PonderError::InvalidConfig { message, .. } => {
                fail(format!("policy `{spec}`: {message}"))
            }
            other => other,
        };
        let (name, value) = match spec.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (spec.trim(), None),
        };
        let number = |what: &str| -> Result<f64, PonderError> {
            let Some(v) = value else {
                return Err(fail(format!(
                    "policy `{spec}`: `{what}` needs a value, as in `{what}=…`"
                )));
            };
            v.parse::<f64>()
                .map_err(|_| fail(format!("policy `{spec}`: `{v}` is not a number")))
        };
        let integer = |what: &str| -> Result<usize, PonderError> {
            let x = number(what)?;
            if x < 0.0 || x.fract() != 0.0 {
                return Err(fail(format!(
                    "policy `{spec}`: `{what}` needs a whole number ≥ 0"
                )));
            }
            Ok(x as usize)
        };
        Ok(match name {
            "full" => Policy::Full(NeverExit),
            "oracle" => Policy::Oracle(Oracle),
            "max_prob" => {
                Policy::MaxProb(MaxProbThreshold::new(number(name)? as f32).map_err(named)?)
            }
            "entropy" => {
                Policy::Entropy(EntropyThreshold::new(number(name)? as f32).map_err(named)?)
            }
            "patience" => match value.and_then(|v| v.split_once(",tol=")) {
                // PABEE's regression rule: `patience=T,tol=TAU`
                Some((t, tol)) => {
                    let t = t.trim().parse::<usize>().map_err(|_| {
                        fail(format!("policy `{spec}`: `{t}` is not a whole number ≥ 0"))
                    })?;
                    let tol = tol
                        .trim()
                        .parse::<f32>()
                        .map_err(|_| fail(format!("policy `{spec}`: `{tol}` is not a number")))?;
                    Policy::PatienceRegression(PatienceRegression::new(t, tol).map_err(named)?)
                }
                None => Policy::Patience(Patience::new(integer(name)?)),
            },
            "fixed" => Policy::Fixed(FixedLayer::new(integer(name)?).map_err(named)?),
            "q_exit" => Policy::QExit(QExit::new(number(name)?).map_err(named)?),
            "sample" => {
                let Some(v) = value else {
                    return Err(fail(format!(
                        "policy `{spec}`: `sample` needs a seed, as in `sample=0`"
                    )));
                };
                let seed = v.parse::<u64>().map_err(|_| {
                    fail(format!(
                        "policy `{spec}`: `{v}` is not a seed (a whole number ≥ 0)"
                    ))
                })?;
                Policy::Sample(PonderSample::new(seed))
            }
            "expectation" => Policy::Expectation(
                Expectation::new(match value {
                    Some(_) => number(name)?,
                    None => 0.0,
                })
                .map_err(named)?,
            ),
            "gate" => Policy::Gate(
                LearnedGate::new(match value {
                    Some(_) => number(name)?,
                    None => 0.5,
                })
                .map_err(named)?,
            ),
            other => {
                return Err(fail(format!(
                    "unknown policy `{other}`: use full, oracle, max_prob=T, entropy=S, patience=T, patience=T,tol=TAU (regression), fixed=L, q_exit=Q, sample=SEED, expectation or gate=A"
                )));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_bad_ones_say_why() {
        assert!(matches!("full".parse::<Policy>(), Ok(Policy::Full(_))));
        assert!(matches!(
            " max_prob = 0.9 ".parse::<Policy>(),
            Ok(Policy::MaxProb(_))
        ));
        assert!(matches!(
            "patience=3".parse::<Policy>(),
            Ok(Policy::Patience(_))
        ));
        assert!(matches!(
            "patience=2,tol=0.1".parse::<Policy>(),
            Ok(Policy::PatienceRegression(_))
        ));
        assert!(matches!("gate".parse::<Policy>(), Ok(Policy::Gate(_))));
        for (bad, says) in [
            ("max_prob", "needs a value"),
            ("max_prob=x", "is not a number"),
            ("patience=1.5", "whole number"),
            ("sample=-1", "is not a seed"),
            ("nope=1", "unknown policy `nope`"),
            ("max_prob=1.5", "policy `max_prob=1.5`: "),
            ("fixed=0", "policy `fixed=0`: "),
        ] {
            let err = bad.parse::<Policy>().expect_err(bad).to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
