//! The database settings alone, for the commands that need nothing else.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::secret::Secret;

use super::sources::process_env;
use super::{ConfigError, Settings, Sources, check, rules};

/// How to reach the database: what `db::connect_db` needs.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub ssl_root_cert: Option<PathBuf>,
}

impl Settings {
    pub fn database(&self) -> DatabaseConfig {
        DatabaseConfig {
            url: self.database_url.clone(),
            ssl_root_cert: self.database_ssl_root_cert.clone(),
        }
    }
}

/// `DATABASE_URL` and `DATABASE_SSL_ROOT_CERT` only, validated as in [`Settings::load`]: for the
/// commands that need nothing else (`migrate`, `status`, `confirm-deletions`).
pub fn load_database(config_file: Option<&Path>) -> Result<DatabaseConfig, ConfigError> {
    let (vars, invalid) = process_env();
    let sources = Sources::new(&vars, invalid, config_file)?;
    Ok(DatabaseConfig {
        url: database_url_from(&sources)?,
        ssl_root_cert: ssl_root_cert_from(&sources)?,
    })
}

pub(super) fn ssl_root_cert_from(src: &Sources<'_>) -> Result<Option<PathBuf>, ConfigError> {
    let Some(path) = src.optional("DATABASE_SSL_ROOT_CERT")? else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Ok(Some(path)),
        Ok(_) => Err(ConfigError::new(
            "DATABASE_SSL_ROOT_CERT",
            "must name a file (the CA certificate, PEM)",
        )),
        Err(e) => Err(ConfigError::new(
            "DATABASE_SSL_ROOT_CERT",
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

/// Only `DATABASE_URL`, validated as in [`Settings::load`]: for `migrate` and `status`, which need
/// nothing else. The file, if given, is still checked for unknown keys.
pub fn load_database_url(config_file: Option<&Path>) -> Result<Secret, ConfigError> {
    let (vars, invalid) = process_env();
    let sources = Sources::new(&vars, invalid, config_file)?;
    database_url_from(&sources)
}

/// `FLY_ORG_SLUG` if set (env or `--config`), for the commands that do not need the full settings
/// (`status`), to compare the recorded orgs with.
pub fn load_org_slug(config_file: Option<&Path>) -> Result<Option<String>, ConfigError> {
    let (vars, invalid) = process_env();
    let sources = Sources::new(&vars, invalid, config_file)?;
    sources.optional("FLY_ORG_SLUG")
}

/// [`load_database_url`] over a given environment map.
pub fn database_url_from_map(
    vars: &HashMap<String, String>,
    config_file: Option<&Path>,
) -> Result<Secret, ConfigError> {
    let sources = Sources::new(vars, HashSet::new(), config_file)?;
    database_url_from(&sources)
}

fn database_url_from(src: &Sources<'_>) -> Result<Secret, ConfigError> {
    let url = Secret::new(src.required("DATABASE_URL")?.trim());
    check("DATABASE_URL", rules::database_url(url.expose()))?;
    Ok(url)
}
