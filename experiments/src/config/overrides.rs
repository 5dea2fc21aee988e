//! Reading a TOML experiment file of any kind, and the `--set key=value` overrides.

use std::path::Path;

use anyhow::{Context, Result};

/// Reads a TOML experiment file of kind `what` ("LM experiment", ...), applies
/// `key=value` overrides to it and returns it for the caller to validate.
pub(crate) fn load_toml<T>(path: &Path, overrides: &[String], what: &str) -> Result<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    let experiment: T =
        toml::from_str(&text).with_context(|| format!("in {what} {}", path.display()))?;
    if overrides.is_empty() {
        return Ok(experiment);
    }
    let mut value = toml::Value::try_from(&experiment)?;
    apply_overrides(&mut value, overrides)?;
    value
        .try_into()
        .context("after applying the --set overrides")
}

/// Applies `key=value` overrides (TOML values, dotted keys such as `train.epochs=2`;
/// a value that is not valid TOML is taken as a string) to a parsed TOML document.
pub fn apply_overrides(value: &mut toml::Value, overrides: &[String]) -> Result<()> {
    for item in overrides {
        let (key, raw) = item
            .split_once('=')
            .with_context(|| format!("override `{item}` is not of the form key=value"))?;
        let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .map(|mut t| {
                t.remove("v")
                    .unwrap_or(toml::Value::String(raw.to_string()))
            })
            .unwrap_or_else(|_| toml::Value::String(raw.to_string()));
        let mut slot = &mut *value;
        let parts: Vec<&str> = key.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let table = slot
                .as_table_mut()
                .with_context(|| format!("override `{key}`: `{part}` is not inside a table"))?;
            if i + 1 == parts.len() {
                table.insert(part.to_string(), parsed.clone());
                break;
            }
            slot = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        }
    }
    Ok(())
}
