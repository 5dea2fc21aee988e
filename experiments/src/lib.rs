//! The `ponder` program as a library: experiment files, data loading, training and
//! evaluation pipelines, run folders, tables and plots. `main.rs` only parses the
//! command line.

pub mod calibrate;
pub mod config;
pub mod data;
pub mod lm;
pub mod parity;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod run;
pub mod token_exit;

use anyhow::{Result, bail};
use burn::tensor::Device;
use ponder_exits::{
    EntropyThreshold, Expectation, FixedLayer, LearnedGate, MaxProbThreshold, NeverExit, Oracle,
    Patience, PatienceRegression, Policy, PonderSample, QExit,
};
use ponder_models::Method;

/// The compute device a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// burn's `flex` CPU backend (multi-threaded, SIMD).
    Cpu,
    /// burn's wgpu GPU backend (needs a build with `--features wgpu`).
    Wgpu,
}

impl DeviceChoice {
    /// The burn device and a description for reports.
    pub fn device(self) -> Result<(Device, String)> {
        match self {
            Self::Cpu => Ok((Device::flex(), "cpu (burn flex)".to_string())),
            Self::Wgpu => wgpu_device(),
        }
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<(Device, String)> {
    Ok((
        Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        "wgpu (default adapter)".to_string(),
    ))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Result<(Device, String)> {
    bail!(
        "this `ponder` was built without the wgpu backend; rebuild with `cargo build --release -p ponder-experiments --features wgpu`"
    )
}

/// Parses a training method: `pabee`, `dee_bert`, `final_only`, `palbert`,
/// `ponder_net` or `jei_dnn`.
pub fn parse_method(name: &str) -> Result<Method> {
    Ok(match name.trim() {
        "pabee" => Method::Pabee,
        "dee_bert" | "deebert" => Method::DeeBert,
        "final_only" => Method::FinalOnly,
        "palbert" => Method::Palbert,
        "ponder_net" | "pondernet" => Method::PonderNet,
        "jei_dnn" | "jeidnn" => Method::JeiDnn,
        other => bail!(
            "unknown method `{other}`: use pabee, dee_bert, final_only, palbert, ponder_net or jei_dnn"
        ),
    })
}

/// Every training method, in table order.
pub const ALL_METHODS: [Method; 6] = [
    Method::Pabee,
    Method::DeeBert,
    Method::FinalOnly,
    Method::Palbert,
    Method::PonderNet,
    Method::JeiDnn,
];

/// Parses a policy written as `full`, `oracle`, `max_prob=T`, `entropy=S`,
/// `patience=T`, `fixed=L`, or, for models with a halting head, `q_exit=Q`,
/// `sample=SEED`, `expectation` or `expectation=TOL` (stop a row once its unassigned
/// mass is at most TOL), or, for JEI-DNN models, `gate=A` (exit at the first
/// conditional activation `a_l ≥ A`; JEI-DNN's rule is `gate=0.5`).
pub fn parse_policy(spec: &str) -> Result<Policy> {
    let (name, value) = match spec.split_once('=') {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None => (spec.trim(), None),
    };
    let number = |what: &str| -> Result<f64> {
        let Some(v) = value else {
            bail!("policy `{spec}`: `{what}` needs a value, as in `{what}=…`")
        };
        v.parse::<f64>()
            .map_err(|_| anyhow::anyhow!("policy `{spec}`: `{v}` is not a number"))
    };
    let integer = |what: &str| -> Result<usize> {
        let x = number(what)?;
        if x < 0.0 || x.fract() != 0.0 {
            bail!("policy `{spec}`: `{what}` needs a whole number ≥ 0");
        }
        Ok(x as usize)
    };
    Ok(match name {
        "full" => Policy::Full(NeverExit),
        "oracle" => Policy::Oracle(Oracle),
        "max_prob" => Policy::MaxProb(MaxProbThreshold::new(number(name)? as f32)?),
        "entropy" => Policy::Entropy(EntropyThreshold::new(number(name)? as f32)?),
        // PABEE's regression rule: `patience=T,tol=TAU`
        "patience" if value.is_some_and(|v| v.contains(",tol=")) => {
            let (t, tol) = value
                .and_then(|v| v.split_once(",tol="))
                .unwrap_or_else(|| unreachable!("checked"));
            let t = t
                .trim()
                .parse::<usize>()
                .map_err(|_| anyhow::anyhow!("policy `{spec}`: `{t}` is not a whole number ≥ 0"))?;
            let tol = tol
                .trim()
                .parse::<f32>()
                .map_err(|_| anyhow::anyhow!("policy `{spec}`: `{tol}` is not a number"))?;
            Policy::PatienceRegression(PatienceRegression::new(t, tol)?)
        }
        "patience" => Policy::Patience(Patience::new(integer(name)?)),
        "fixed" => Policy::Fixed(FixedLayer::new(integer(name)?)?),
        "q_exit" => Policy::QExit(QExit::new(number(name)?)?),
        "sample" => {
            let Some(v) = value else {
                bail!("policy `{spec}`: `sample` needs a seed, as in `sample=0`")
            };
            let seed = v.parse::<u64>().map_err(|_| {
                anyhow::anyhow!("policy `{spec}`: `{v}` is not a seed (a whole number ≥ 0)")
            })?;
            Policy::Sample(PonderSample::new(seed))
        }
        "expectation" => Policy::Expectation(Expectation::new(match value {
            Some(_) => number(name)?,
            None => 0.0,
        })?),
        "gate" => Policy::Gate(LearnedGate::new(match value {
            Some(_) => number(name)?,
            None => 0.5,
        })?),
        other => bail!(
            "unknown policy `{other}`: use full, oracle, max_prob=T, entropy=S, patience=T, patience=T,tol=TAU (regression), fixed=L, q_exit=Q, sample=SEED, expectation or gate=A"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_policy("patience=2").unwrap(),
            Policy::Patience(Patience::new(2))
        );
        assert!(matches!(
            parse_policy("max_prob=0.9").unwrap(),
            Policy::MaxProb(_)
        ));
        let e = parse_policy("max_prob=1.5").unwrap_err().to_string();
        assert!(e.contains("max_prob") && e.contains("1.5"), "{e}");
        assert!(
            parse_policy("entropy")
                .unwrap_err()
                .to_string()
                .contains("needs a value")
        );
        assert!(parse_policy("patience=1.5").is_err());
        assert_eq!(
            parse_policy("q_exit=0.5").unwrap(),
            Policy::QExit(QExit::new(0.5).unwrap())
        );
        assert!(
            parse_policy("q_exit=2")
                .unwrap_err()
                .to_string()
                .contains("q_exit")
        );
        assert!(matches!(
            parse_policy("sample=3").unwrap(),
            Policy::Sample(_)
        ));
        assert!(matches!(
            parse_policy("expectation").unwrap(),
            Policy::Expectation(_)
        ));
        assert!(parse_method("palbert").is_ok() && parse_method("ponder_net").is_ok());
        assert!(
            parse_method("alberto")
                .unwrap_err()
                .to_string()
                .contains("alberto")
        );
        assert!(
            parse_policy("bogus=1")
                .unwrap_err()
                .to_string()
                .contains("unknown policy")
        );
    }
}
