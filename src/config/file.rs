//! The optional `--config` file: flat TOML read with the `config` crate's TOML source.

use std::collections::HashMap;
use std::path::Path;

use config::{FileFormat, Source, ValueKind};

use super::ConfigError;

/// Reads a flat TOML file of `KEY = value` pairs. Scalars become strings (`USER_APP_CPUS = 2` is
/// fine); an array of scalars becomes a comma list (`PAID_TIERS = ["pro", "elite"]`); tables are
/// refused. Parse errors are reduced to their position and reason: the toml crate's own message
/// quotes the offending line, which may hold a secret.
pub(super) fn read_file(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    const KEY: &str = "--config";
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(KEY, format!("cannot read {}: {e}", path.display())))?;
    let table = config::File::from_str(&text, FileFormat::Toml)
        .collect()
        .map_err(|e| {
            ConfigError::new(
                KEY,
                format!(
                    "{} is not valid TOML: {}",
                    path.display(),
                    toml_error_summary(&e)
                ),
            )
        })?;
    let mut out = HashMap::new();
    for (key, value) in table {
        let text = match value.kind {
            ValueKind::Table(_) => {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "is a table in {}; the file takes flat KEY = value pairs only",
                        path.display()
                    ),
                ));
            }
            ValueKind::Array(items) => {
                let mut parts = Vec::with_capacity(items.len());
                for item in items {
                    match scalar(item.kind) {
                        Some(s) => parts.push(s),
                        None => {
                            return Err(ConfigError::new(
                                key,
                                format!("in {}: array items must be plain values", path.display()),
                            ));
                        }
                    }
                }
                parts.join(",")
            }
            other => scalar(other).unwrap_or_default(),
        };
        out.insert(key, text);
    }
    Ok(out)
}

fn scalar(kind: ValueKind) -> Option<String> {
    match kind {
        ValueKind::Nil => Some(String::new()),
        ValueKind::Boolean(b) => Some(b.to_string()),
        ValueKind::I64(n) => Some(n.to_string()),
        ValueKind::I128(n) => Some(n.to_string()),
        ValueKind::U64(n) => Some(n.to_string()),
        ValueKind::U128(n) => Some(n.to_string()),
        ValueKind::Float(f) => Some(f.to_string()),
        ValueKind::String(s) => Some(s),
        ValueKind::Table(_) | ValueKind::Array(_) => None,
    }
}

/// "line 3, column 17: invalid basic string" from the toml crate's multi-line report, which also
/// quotes the line (possibly a secret). Keeps only the position line and the last line (the reason).
fn toml_error_summary(err: &config::ConfigError) -> String {
    let full = match err {
        config::ConfigError::FileParse { cause, .. } => cause.to_string(),
        other => other.to_string(),
    };
    let lines: Vec<&str> = full
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let position = lines
        .iter()
        .find_map(|l| l.find("at line ").map(|i| l[i + 3..].to_string()));
    let reason = lines
        .last()
        .filter(|l| !l.starts_with('|') && !l.contains('|'))
        .map(|l| l.to_string());
    match (position, reason) {
        (Some(p), Some(r)) => format!("{p}: {r}"),
        (Some(p), None) => p,
        _ => "syntax error".to_string(),
    }
}
