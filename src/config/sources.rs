//! Where a setting's value comes from: the environment, over the `--config` file.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use crate::secret::Secret;

use super::{ConfigError, KNOWN_KEYS, USER_APP_RESERVED_NAMES, check, file, rules};

/// The process environment as UTF-8 pairs, plus the names of variables whose value is not UTF-8
/// (reported only if a setting needs them).
pub(super) fn process_env() -> (HashMap<String, String>, HashSet<String>) {
    let mut vars = HashMap::new();
    let mut invalid = HashSet::new();
    for (k, v) in std::env::vars_os() {
        let Ok(k) = k.into_string() else { continue };
        match v.into_string() {
            Ok(v) => {
                vars.insert(k, v);
            }
            Err(_) => {
                invalid.insert(k);
            }
        }
    }
    (vars, invalid)
}

/// The environment over the file.
pub(super) struct Sources<'a> {
    env: &'a HashMap<String, String>,
    env_invalid_utf8: HashSet<String>,
    file: HashMap<String, String>,
}

impl<'a> Sources<'a> {
    pub(super) fn new(
        env: &'a HashMap<String, String>,
        env_invalid_utf8: HashSet<String>,
        config_file: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let file = match config_file {
            Some(path) => file::read_file(path)?,
            None => HashMap::new(),
        };
        let sources = Sources {
            env,
            env_invalid_utf8,
            file,
        };
        if let Some(path) = config_file {
            sources.reject_unknown_file_keys(path)?;
        }
        Ok(sources)
    }

    /// The layered raw value: environment first, then file.
    pub(super) fn raw(&self, key: &str) -> Result<Option<&str>, ConfigError> {
        if self.env_invalid_utf8.contains(key) {
            return Err(ConfigError::new(key, "is not valid UTF-8"));
        }
        Ok(self
            .env
            .get(key)
            .or_else(|| self.file.get(key))
            .map(String::as_str))
    }

    pub(super) fn required(&self, key: &str) -> Result<&str, ConfigError> {
        match self.raw(key)? {
            None => Err(ConfigError::new(key, "is required but not set")),
            Some(v) if v.trim().is_empty() => Err(ConfigError::new(key, "is required but empty")),
            Some(v) => Ok(v),
        }
    }

    /// Trimmed, `None` when unset or empty.
    pub(super) fn optional(&self, key: &str) -> Result<Option<String>, ConfigError> {
        Ok(self
            .raw(key)?
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string))
    }

    pub(super) fn or_default(&self, key: &str, default: &str) -> Result<String, ConfigError> {
        Ok(self.optional(key)?.unwrap_or_else(|| default.to_string()))
    }

    pub(super) fn duration(&self, key: &str, default: &str) -> Result<Duration, ConfigError> {
        let value = self.or_default(key, default)?;
        check(key, rules::positive_duration(&value))
    }

    /// The names listed in `USER_APP_SECRETS`, unvalidated (for the unknown-key check).
    pub(super) fn user_app_secret_names(&self) -> Vec<String> {
        self.raw("USER_APP_SECRETS")
            .ok()
            .flatten()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    pub(super) fn user_app_secrets(&self) -> Result<Vec<(String, Secret)>, ConfigError> {
        const KEY: &str = "USER_APP_SECRETS";
        let list = self.optional(KEY)?.unwrap_or_default();
        let mut out: Vec<(String, Secret)> = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if !rules::env_name(name) {
                return Err(ConfigError::new(
                    KEY,
                    format!("{name:?} is not a variable name (letters, digits, '_')"),
                ));
            }
            if name == "SUPABASE_SERVICE_ROLE_KEY" {
                return Err(ConfigError::new(
                    KEY,
                    "lists SUPABASE_SERVICE_ROLE_KEY, which is already sent to every app when set",
                ));
            }
            if KNOWN_KEYS.contains(&name) {
                return Err(ConfigError::new(
                    KEY,
                    format!(
                        "lists {name}, one of vyx-fleet's own settings; it must not be copied into user apps"
                    ),
                ));
            }
            if name.starts_with("FLY_") {
                return Err(ConfigError::new(
                    KEY,
                    format!(
                        "lists {name}: FLY_* names are Fly's and must not be copied into user apps"
                    ),
                ));
            }
            if USER_APP_RESERVED_NAMES.contains(&name) {
                return Err(ConfigError::new(
                    KEY,
                    format!("lists {name}, which vyx-fleet sets in every app's environment itself"),
                ));
            }
            if out.iter().any(|(n, _)| n == name) {
                return Err(ConfigError::new(KEY, format!("lists {name} twice")));
            }
            // The value is copied verbatim (not trimmed); only an all-blank value is refused.
            let value = match self.raw(name)? {
                None => {
                    return Err(ConfigError::new(
                        name,
                        "is named in USER_APP_SECRETS but not set",
                    ));
                }
                Some(v) if v.trim().is_empty() => {
                    return Err(ConfigError::new(
                        name,
                        "is named in USER_APP_SECRETS but empty",
                    ));
                }
                Some(v) => v,
            };
            out.push((name.to_string(), Secret::new(value)));
        }
        Ok(out)
    }

    pub(super) fn reject_unknown_file_keys(&self, path: &Path) -> Result<(), ConfigError> {
        let allowed = self.user_app_secret_names();
        let mut unknown: Vec<&String> = self
            .file
            .keys()
            .filter(|k| !KNOWN_KEYS.contains(&k.as_str()) && !allowed.contains(k))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        unknown.sort();
        let first = unknown[0];
        if first == "RUST_LOG" {
            return Err(ConfigError::new(
                "RUST_LOG",
                format!(
                    "is read from the environment only; remove it from {}",
                    path.display()
                ),
            ));
        }
        let mut problem = format!("unknown key in config file {}", path.display());
        let upper = first.to_ascii_uppercase();
        if upper != *first && KNOWN_KEYS.contains(&upper.as_str()) {
            problem.push_str(&format!(" (keys are upper case: did you mean {upper}?)"));
        }
        if unknown.len() > 1 {
            let rest: Vec<&str> = unknown[1..].iter().map(|s| s.as_str()).collect();
            problem.push_str(&format!("; also unknown: {}", rest.join(", ")));
        }
        Err(ConfigError::new(first.clone(), problem))
    }
}
