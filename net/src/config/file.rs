//! The TOML file layer of the configuration: its keys turned into flags, so the file
//! sits under the environment and the command line.

use std::collections::BTreeMap;
use std::ffi::OsString;

use super::{Config, ConfigError, closest};

impl Config {
    /// The settings of a TOML file as flags (`--key=value`), by key; unknown keys are
    /// refused by name.
    pub(super) fn toml_args(
        path: &std::path::Path,
    ) -> Result<BTreeMap<String, OsString>, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::toml_to_args(&text).map_err(|message| ConfigError::File {
            path: path.to_path_buf(),
            message,
        })
    }

    pub(super) fn toml_to_args(text: &str) -> Result<BTreeMap<String, OsString>, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let keys = Self::toml_keys();
        let unknown: Vec<String> = table
            .keys()
            .filter(|key| !keys.contains(key))
            .map(|key| match closest(key, keys.iter().map(String::as_str)) {
                Some(near) => format!("{key} (did you mean {near}?)"),
                None => key.clone(),
            })
            .collect();
        if !unknown.is_empty() {
            return Err(format!("unknown keys: {}", unknown.join(", ")));
        }
        let mut out = BTreeMap::new();
        for (key, value) in table {
            let flag = format!("--{}", key.replace('_', "-"));
            let text = match &value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(true) => {
                    out.insert(key, OsString::from(flag));
                    continue;
                }
                // A flag that is off by default: nothing to pass.
                toml::Value::Boolean(false) => continue,
                toml::Value::Array(items) => items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string).ok_or(()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|()| format!("{key}: expected a list of strings"))?
                    .join(","),
                other => return Err(format!("{key}: unexpected {}", other.type_str())),
            };
            out.insert(key, OsString::from(format!("{flag}={text}")));
        }
        Ok(out)
    }
}
