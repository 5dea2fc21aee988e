//! Training methods written as text (`pabee`, `dee_bert`, …), as experiment files and the
//! command line give them.

use std::str::FromStr;

use ponder_core::PonderError;

use crate::Method;

impl FromStr for Method {
    type Err = PonderError;

    /// Parses `pabee`, `dee_bert` (or `deebert`), `final_only`, `palbert`, `ponder_net`
    /// (or `pondernet`) or `jei_dnn` (or `jeidnn`), the names serde uses. Errors are
    /// [`PonderError::InvalidConfig`] with key `method`.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(match name.trim() {
            "pabee" => Method::Pabee,
            "dee_bert" | "deebert" => Method::DeeBert,
            "final_only" => Method::FinalOnly,
            "palbert" => Method::Palbert,
            "ponder_net" | "pondernet" => Method::PonderNet,
            "jei_dnn" | "jeidnn" => Method::JeiDnn,
            other => {
                return Err(PonderError::config(
                    "method",
                    format!(
                        "unknown method `{other}`: use pabee, dee_bert, final_only, palbert, ponder_net or jei_dnn"
                    ),
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_by_their_serde_names() {
        for m in Method::ALL {
            let name = serde_json::to_value(m).unwrap();
            assert_eq!(name.as_str().unwrap().parse::<Method>().unwrap(), m);
        }
        let err = "bert".parse::<Method>().unwrap_err().to_string();
        assert!(err.contains("unknown method `bert`"), "{err}");
    }
}
