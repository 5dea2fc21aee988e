//! The `ponder` program as a library: experiment files (`config`), data loading
//! (`data`), the training and evaluation pipeline and its results.json schema
//! (`pipeline`), the language-model and token-exit experiments (`lm`, `token_exit`),
//! calibration (`calibrate`), NumPy parity (`parity`), run folders (`run`), tables and
//! plots (`report`). The binary's `main.rs` holds the command line and its help, and
//! `commands/` the body of each command, built from these modules.

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

use anyhow::Result;
use burn::tensor::Device;
use ponder_exits::Policy;
use ponder_models::Method;

/// The compute device a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// burn's `flex` CPU backend (multi-threaded, SIMD).
    Cpu,
    /// burn's wgpu GPU backend (needs a build with `--features wgpu`).
    Wgpu,
    /// burn's CUDA backend on NVIDIA GPU 0 (needs a build with `--features
    /// cuda`, and the NVIDIA driver at run time).
    Cuda,
}

impl DeviceChoice {
    /// The burn device and a description for reports ([`ponder_core::device_named`]).
    pub fn device(self) -> Result<(Device, String)> {
        let name = match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        };
        ponder_core::device_named(name).map_err(|e| {
            anyhow::anyhow!(
                "{e} (for `ponder`: `cargo build --release -p ponder-experiments --features {name}`)"
            )
        })
    }
}

/// Parses a training method: `pabee`, `dee_bert`, `final_only`, `palbert`,
/// `ponder_net` or `jei_dnn` (`Method`'s `FromStr`).
pub fn parse_method(name: &str) -> Result<Method> {
    name.parse().map_err(plain_message)
}

/// The message of a parse error without the error's key prefix (the command line
/// reports it on its own line).
fn plain_message(e: ponder_core::PonderError) -> anyhow::Error {
    match e {
        ponder_core::PonderError::InvalidConfig { message, .. } => anyhow::anyhow!(message),
        other => other.into(),
    }
}

/// Parses a policy written as `full`, `oracle`, `max_prob=T`, `entropy=S`,
/// `patience=T`, `fixed=L`, or, for models with a halting head, `q_exit=Q`,
/// `sample=SEED`, `expectation` or `expectation=TOL`, or, for JEI-DNN models, `gate=A`
/// (`Policy`'s `FromStr` documents each).
pub fn parse_policy(spec: &str) -> Result<Policy> {
    spec.parse().map_err(plain_message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ponder_exits::{Patience, QExit};

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
