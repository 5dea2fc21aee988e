//! Serde helpers for f64 fields that may be infinite (a conformal `q̂` is `+∞` when the
//! calibration set is too small for α; a Learn-then-Test threshold may be `±∞` for "never
//! exit").
//!
//! JSON has no infinity: serde_json writes `f64::INFINITY` as `null` and then cannot read it
//! back. These helpers write finite values as numbers and non-finite ones as the strings
//! `"inf"`, `"-inf"` and `"nan"`, and read either form back.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An f64 that serialises its non-finite values as strings.
#[derive(Debug, Clone, Copy)]
struct ExtendedF64(f64);

/// What an [`ExtendedF64`] reads: a number or one of the strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum Repr {
    Number(f64),
    Text(String),
}

impl Serialize for ExtendedF64 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.is_finite() {
            serializer.serialize_f64(v)
        } else if v.is_nan() {
            serializer.serialize_str("nan")
        } else if v > 0.0 {
            serializer.serialize_str("inf")
        } else {
            serializer.serialize_str("-inf")
        }
    }
}

impl<'de> Deserialize<'de> for ExtendedF64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Repr::deserialize(deserializer)? {
            Repr::Number(v) => Ok(Self(v)),
            Repr::Text(t) => match t.as_str() {
                "inf" | "+inf" | "infinity" => Ok(Self(f64::INFINITY)),
                "-inf" | "-infinity" => Ok(Self(f64::NEG_INFINITY)),
                "nan" => Ok(Self(f64::NAN)),
                other => Err(D::Error::custom(format!(
                    "expected a number, \"inf\", \"-inf\" or \"nan\", found \"{other}\""
                ))),
            },
        }
    }
}

/// `#[serde(with = "crate::serde_ext::f64_or_inf")]` for an `f64` field.
pub(crate) mod f64_or_inf {
    use super::*;

    /// Writes a number, or `"inf"`/`"-inf"`/`"nan"`.
    pub(crate) fn serialize<S: Serializer>(v: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        ExtendedF64(*v).serialize(serializer)
    }

    /// Reads a number, or `"inf"`/`"-inf"`/`"nan"`.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        ExtendedF64::deserialize(deserializer).map(|v| v.0)
    }
}

/// `#[serde(with = "crate::serde_ext::vec_f64_or_inf")]` for a `Vec<f64>` field.
pub(crate) mod vec_f64_or_inf {
    use super::*;

    /// Writes a sequence of numbers or `"inf"`/`"-inf"`/`"nan"`.
    pub(crate) fn serialize<S: Serializer>(v: &[f64], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(v.iter().map(|&x| ExtendedF64(x)))
    }

    /// Reads a sequence of numbers or `"inf"`/`"-inf"`/`"nan"`.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<f64>, D::Error> {
        Vec::<ExtendedF64>::deserialize(deserializer).map(|v| v.into_iter().map(|x| x.0).collect())
    }
}

/// `#[serde(with = "crate::serde_ext::option_f64_or_inf")]` for an `Option<f64>` field.
pub(crate) mod option_f64_or_inf {
    use super::*;

    /// Writes `null` for `None`, else a number or `"inf"`/`"-inf"`/`"nan"`.
    pub(crate) fn serialize<S: Serializer>(
        v: &Option<f64>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(x) => serializer.serialize_some(&ExtendedF64(*x)),
            None => serializer.serialize_none(),
        }
    }

    /// Reads `null` as `None`, else a number or `"inf"`/`"-inf"`/`"nan"`.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<f64>, D::Error> {
        Option::<ExtendedF64>::deserialize(deserializer).map(|v| v.map(|x| x.0))
    }
}
