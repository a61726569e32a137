//! Settings from the environment, optionally layered over a flat TOML file (`--config PATH`).
//!
//! The file holds the same keys as the environment (`FLY_ORG_SLUG = "vyx"`); a variable set in the
//! environment wins over the file, even when set to the empty string. After layering, an empty value
//! (whitespace only) of an optional key means "use the default"; of a required key it is an error.
//!
//! Every problem is reported as one [`ConfigError`], `KEY: what is wrong`, naming the key and never
//! showing the value of a secret (`DATABASE_URL`, `FLY_API_TOKEN`, `SUPABASE_SERVICE_ROLE_KEY`, the
//! variables named in `USER_APP_SECRETS`). The first problem in the order of [`KNOWN_KEYS`] wins.
//!
//! Durations are > 0 except `DEPROVISION_GRACE`, where 0 means "delete at once" (with a warning).
//!
//! The TOML file is read with the `config` crate's TOML source; layering and validation are ours.

mod amount;
mod duration;
mod file;
mod operations;
mod rules;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::secret::Secret;

pub use amount::CountOrPercent;
pub use duration::parse_duration;
pub use operations::{
    DEFAULT_HEALTH_PROBE_INTERVAL, DEFAULT_REPAIR_AFTER, DEFAULT_REPAIR_MAX_PER_PASS,
    DEFAULT_ROLLOUT_FAILURE_THRESHOLD, DEFAULT_ROLLOUT_MAX_UNAVAILABLE, DEFAULT_ROLLOUT_SOAK,
    Operations,
};
pub use rules::SHARED_APP;

/// Keys that must be set.
pub const REQUIRED_KEYS: [&str; 4] = [
    "DATABASE_URL",
    "FLY_API_TOKEN",
    "FLY_ORG_SLUG",
    "USER_APP_IMAGE",
];

/// Every key vyx-fleet reads from the environment or the file, in validation order. (`RUST_LOG` is
/// read from the environment only, by the log setup; the file refuses it.)
pub const KNOWN_KEYS: [&str; 36] = [
    "DATABASE_URL",
    "FLY_API_TOKEN",
    "FLY_ORG_SLUG",
    "USER_APP_IMAGE",
    "FLY_API_BASE_URL",
    "USER_APP_REGION",
    "USER_APP_CPUS",
    "USER_APP_MEMORY_MB",
    "APP_NAME_PREFIX",
    "PAID_TIERS",
    "PAID_STATUSES",
    "RECONCILE_INTERVAL",
    "MAX_CONCURRENCY",
    "DEPROVISION_GRACE",
    "ORPHAN_GRACE",
    "RESYNC_INTERVAL",
    "ROLLOUT_MAX_UNAVAILABLE",
    "ROLLOUT_FAILURE_THRESHOLD",
    "ROLLOUT_SOAK",
    "HEALTH_PROBE_INTERVAL",
    "HEALTH_URL_TEMPLATE",
    "REPAIR_AFTER",
    "REPAIR_MAX_PER_PASS",
    "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "USER_APP_SECRETS",
    "HTTP_ADDR",
    "LOG_FORMAT",
    "ADMIN_TOKEN",
    "ADMIN_ALLOWED_HOSTS",
    "ADMIN_TRUST_FLY_CLIENT_IP",
    "ALERT_WEBHOOK_URL",
    "ALERT_REPEAT_INTERVAL",
    "ALERT_UNHEALTHY_AFTER",
    "ALERT_RETRY_THRESHOLD",
    "DATABASE_SSL_ROOT_CERT",
];

/// Keys whose values are secrets: never echoed in errors.
pub const SECRET_KEYS: [&str; 5] = [
    "DATABASE_URL",
    "FLY_API_TOKEN",
    "SUPABASE_SERVICE_ROLE_KEY",
    "ADMIN_TOKEN",
    // Slack and Discord webhook URLs carry their credential in the path.
    "ALERT_WEBHOOK_URL",
];

/// Names the controller itself sets in every user app's environment; `USER_APP_SECRETS` may not
/// shadow them.
pub const USER_APP_RESERVED_NAMES: [&str; 3] = ["USER_ID", "RUN_MODE", "SUPABASE_URL"];

pub const DEFAULT_FLY_API_BASE_URL: &str = "https://api.machines.dev";
pub const DEFAULT_USER_APP_REGION: &str = "sin";
pub const DEFAULT_USER_APP_CPUS: u32 = 2;
pub const DEFAULT_USER_APP_MEMORY_MB: u32 = 512;
pub const DEFAULT_APP_NAME_PREFIX: &str = "vyx-user-";
pub const DEFAULT_PAID_TIERS: &str = "pro,elite";
pub const DEFAULT_PAID_STATUSES: &str = "active,past_due";
pub const DEFAULT_RECONCILE_INTERVAL: &str = "30s";
pub const DEFAULT_MAX_CONCURRENCY: usize = 8;
pub const DEFAULT_DEPROVISION_GRACE: &str = "10m";
pub const DEFAULT_ORPHAN_GRACE: &str = "1h";
/// Full Fly re-list (README "Incremental observation"): at 100,000 apps the ~400 list pages take
/// about 7 minutes at Fly's pace, so 10 minutes is the shortest interval a full list still fits in,
/// and between resyncs a quiet pass costs one changed-machine list.
pub const DEFAULT_RESYNC_INTERVAL: &str = "10m";
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:9090";
pub const DEFAULT_ALERT_REPEAT_INTERVAL: &str = "1h";
pub const DEFAULT_ALERT_UNHEALTHY_AFTER: &str = "15m";
pub const DEFAULT_ALERT_RETRY_THRESHOLD: i32 = 5;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub database_url: Secret,
    /// CA certificate (PEM) the database's certificate must chain to; with it the connection
    /// verifies the server (`sslmode=verify-full`) instead of only encrypting.
    pub database_ssl_root_cert: Option<PathBuf>,
    pub fly_api_token: Secret,
    pub fly_org_slug: String,
    pub user_app_image: String,
    /// Without a trailing `/`.
    pub fly_api_base_url: String,
    pub user_app_region: String,
    pub user_app_cpus: u32,
    pub user_app_memory_mb: u32,
    pub app_name_prefix: String,
    /// Non-empty, from `free|pro|elite`, no duplicates.
    pub paid_tiers: Vec<String>,
    /// Non-empty, from `active|cancelled|past_due`, no duplicates.
    pub paid_statuses: Vec<String>,
    pub reconcile_interval: Duration,
    pub max_concurrency: usize,
    pub deprovision_grace: Duration,
    pub orphan_grace: Duration,
    /// How often the observed Fly state is listed in full again (between: changed machines only).
    /// At or below `reconcile_interval`, every pass lists in full.
    pub resync_interval: Duration,
    /// Rollout pacing and halting, health probing, repair (`ROLLOUT_*`, `HEALTH_PROBE_INTERVAL`,
    /// `REPAIR_*`).
    pub operations: Operations,
    /// Without a trailing `/`. Set iff `supabase_service_role_key` is.
    pub supabase_url: Option<String>,
    pub supabase_service_role_key: Option<Secret>,
    /// `(name, value)` in the order listed in `USER_APP_SECRETS`; names unique.
    pub user_app_secrets: Vec<(String, Secret)>,
    pub http_addr: SocketAddr,
    pub log_format: LogFormat,
    /// Enables the dashboard's controls; at least 32 characters.
    pub admin_token: Option<Secret>,
    /// `Host` names the console answers (`ADMIN_ALLOWED_HOSTS`, comma-separated; `*.suffix` allowed);
    /// `None`: the console's defaults (see `admin::hosts`).
    pub admin_allowed_hosts: Option<Vec<String>>,
    /// Key sign-in throttling by `Fly-Client-IP` (`ADMIN_TRUST_FLY_CLIENT_IP=true`): only behind Fly's
    /// proxy, which sets it; anywhere else a client could pick its own key.
    pub admin_trust_fly_client_ip: bool,
    /// Slack/Discord-style incoming webhook for alerts; the URL is the credential.
    pub alert_webhook_url: Option<Secret>,
    /// No alert kind messages more often than this (start, update or clear).
    pub alert_repeat_interval: Duration,
    /// An app unhealthy for longer than this raises an alert.
    pub alert_unhealthy_after: Duration,
    /// A live row with at least this many failed attempts in a row raises an alert.
    pub alert_retry_threshold: i32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One compact JSON object per line (Fly log shippers parse it).
    #[default]
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

impl LogFormat {
    /// `LOG_FORMAT` from the process environment, JSON when unset or unreadable. For commands that
    /// log before (or without) loading [`Settings`]; the daemon validates it strictly.
    pub fn from_env() -> LogFormat {
        LogFormat::from_env_or(LogFormat::Json)
    }

    /// `LOG_FORMAT` from the process environment, `default` when unset, empty or invalid.
    pub fn from_env_or(default: LogFormat) -> LogFormat {
        std::env::var("LOG_FORMAT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            _ => Err(format!("{s:?} is not json or pretty")),
        }
    }
}

/// One setting that is missing or malformed. `Display` is one line: `KEY: problem`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    /// The setting's name (`FLY_ORG_SLUG`), a name listed in `USER_APP_SECRETS`, or `--config` for
    /// a problem with the file itself.
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        let problem: String = problem.into();
        // One line, whatever a lower layer put in the message.
        let problem = problem.split_whitespace().collect::<Vec<_>>().join(" ");
        ConfigError {
            key: key.into(),
            problem,
        }
    }
}

impl Settings {
    /// From the process environment, over the TOML file if given.
    pub fn load(config_file: Option<&Path>) -> Result<Settings, ConfigError> {
        let (vars, invalid) = process_env();
        let sources = Sources::new(&vars, invalid, config_file)?;
        Settings::from_sources(&sources)
    }

    /// The testable core of [`Settings::load`]: `vars` stands for the environment.
    pub fn from_map(
        vars: &HashMap<String, String>,
        config_file: Option<&Path>,
    ) -> Result<Settings, ConfigError> {
        let sources = Sources::new(vars, HashSet::new(), config_file)?;
        Settings::from_sources(&sources)
    }

    /// How long `/healthz` tolerates a silent controller loop: 3 × interval + 60 s.
    pub fn heartbeat_staleness(&self) -> Duration {
        self.reconcile_interval.saturating_mul(3) + Duration::from_secs(60)
    }

    /// Legal but suspicious settings, for the daemon to log once telemetry is up.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.http_addr.ip().is_loopback() {
            out.push(format!(
                "HTTP_ADDR {} is loopback: Fly's health checks and metrics scrape cannot reach it",
                self.http_addr
            ));
        }
        if self.paid_tiers.iter().any(|t| t == "free") {
            out.push(
                "PAID_TIERS includes free: free users with a subscription row get an app".into(),
            );
        }
        if self.paid_statuses.iter().any(|s| s == "cancelled") {
            out.push("PAID_STATUSES includes cancelled: cancelled users keep their app".into());
        }
        if self.supabase_url.is_none() {
            out.push(
                "SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are not set: user apps get no database access"
                    .into(),
            );
        }
        if self.deprovision_grace.is_zero() {
            out.push("DEPROVISION_GRACE is 0: a downgrade deletes the user's app at once".into());
        }
        if self.fly_api_base_url.starts_with("http://")
            && !self.fly_api_base_url.contains("_api.internal")
            && !is_loopback_url(&self.fly_api_base_url)
        {
            out.push("FLY_API_BASE_URL is plain http outside Fly's private network: the token travels in clear".into());
        }
        out
    }

    fn from_sources(src: &Sources<'_>) -> Result<Settings, ConfigError> {
        let database_url = Secret::new(src.required("DATABASE_URL")?.trim());
        check("DATABASE_URL", rules::database_url(database_url.expose()))?;
        let fly_api_token = Secret::new(src.required("FLY_API_TOKEN")?.trim());
        // It goes into an Authorization header: anything but visible ASCII can never work.
        if !fly_api_token
            .expose()
            .bytes()
            .all(|b| b.is_ascii_graphic() || b == b' ')
        {
            return Err(ConfigError::new(
                "FLY_API_TOKEN",
                "contains characters that cannot appear in an HTTP header (control or non-ASCII)",
            ));
        }
        let fly_org_slug = src.required("FLY_ORG_SLUG")?.trim().to_string();
        check("FLY_ORG_SLUG", rules::org_slug(&fly_org_slug))?;
        let user_app_image = src.required("USER_APP_IMAGE")?.trim().to_string();
        check("USER_APP_IMAGE", rules::image(&user_app_image))?;

        let fly_api_base_url = src.or_default("FLY_API_BASE_URL", DEFAULT_FLY_API_BASE_URL)?;
        check("FLY_API_BASE_URL", rules::http_url(&fly_api_base_url))?;
        let user_app_region = src.or_default("USER_APP_REGION", DEFAULT_USER_APP_REGION)?;
        check("USER_APP_REGION", rules::region(&user_app_region))?;
        let cpus = src.or_default("USER_APP_CPUS", &DEFAULT_USER_APP_CPUS.to_string())?;
        let user_app_cpus = check("USER_APP_CPUS", rules::cpus(&cpus))?;
        let memory = src.or_default(
            "USER_APP_MEMORY_MB",
            &DEFAULT_USER_APP_MEMORY_MB.to_string(),
        )?;
        let user_app_memory_mb = check(
            "USER_APP_MEMORY_MB",
            rules::memory_mb(&memory, user_app_cpus),
        )?;
        let app_name_prefix = src.or_default("APP_NAME_PREFIX", DEFAULT_APP_NAME_PREFIX)?;
        check("APP_NAME_PREFIX", rules::app_name_prefix(&app_name_prefix))?;
        let tiers = src.or_default("PAID_TIERS", DEFAULT_PAID_TIERS)?;
        let paid_tiers = check("PAID_TIERS", rules::word_list(&tiers, &rules::TIERS))?;
        let statuses = src.or_default("PAID_STATUSES", DEFAULT_PAID_STATUSES)?;
        let paid_statuses = check(
            "PAID_STATUSES",
            rules::word_list(&statuses, &rules::STATUSES),
        )?;
        let reconcile_interval = src.duration("RECONCILE_INTERVAL", DEFAULT_RECONCILE_INTERVAL)?;
        let concurrency =
            src.or_default("MAX_CONCURRENCY", &DEFAULT_MAX_CONCURRENCY.to_string())?;
        let max_concurrency = check("MAX_CONCURRENCY", rules::max_concurrency(&concurrency))?;
        // Zero is meaningful here (delete as soon as a user stops being wanted; tests use it).
        let grace = src.or_default("DEPROVISION_GRACE", DEFAULT_DEPROVISION_GRACE)?;
        let deprovision_grace = check("DEPROVISION_GRACE", parse_duration(&grace))?;
        let orphan_grace = src.duration("ORPHAN_GRACE", DEFAULT_ORPHAN_GRACE)?;
        // Shorter than RECONCILE_INTERVAL is allowed (every pass then lists in full): a long
        // interval with the default resync must not stop the daemon.
        let resync_interval = src.duration("RESYNC_INTERVAL", DEFAULT_RESYNC_INTERVAL)?;
        let operations = operations::parse(src)?;

        let supabase_url = src.optional("SUPABASE_URL")?;
        if let Some(url) = &supabase_url {
            check("SUPABASE_URL", rules::http_url(url))?;
        }
        let supabase_service_role_key = src.optional("SUPABASE_SERVICE_ROLE_KEY")?.map(Secret::new);
        match (&supabase_url, &supabase_service_role_key) {
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "SUPABASE_SERVICE_ROLE_KEY",
                    "must be set when SUPABASE_URL is (user apps need both)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "SUPABASE_URL",
                    "must be set when SUPABASE_SERVICE_ROLE_KEY is (user apps need both)",
                ));
            }
            _ => {}
        }
        let user_app_secrets = src.user_app_secrets()?;

        let addr = src.or_default("HTTP_ADDR", DEFAULT_HTTP_ADDR)?;
        let http_addr = check("HTTP_ADDR", rules::socket_addr(&addr))?;
        let format = src.or_default("LOG_FORMAT", "json")?;
        let log_format = check("LOG_FORMAT", format.parse::<LogFormat>())?;
        let admin_token = src.optional("ADMIN_TOKEN")?.map(Secret::new);
        if let Some(t) = &admin_token {
            check("ADMIN_TOKEN", rules::admin_token(t.expose()))?;
        }
        let admin_allowed_hosts = match src.optional("ADMIN_ALLOWED_HOSTS")? {
            Some(v) => Some(check("ADMIN_ALLOWED_HOSTS", rules::host_list(&v))?),
            None => None,
        };
        let trust = src.or_default("ADMIN_TRUST_FLY_CLIENT_IP", "false")?;
        let admin_trust_fly_client_ip = check("ADMIN_TRUST_FLY_CLIENT_IP", rules::boolean(&trust))?;
        let alert_webhook_url = src.optional("ALERT_WEBHOOK_URL")?.map(Secret::new);
        if let Some(u) = &alert_webhook_url {
            check("ALERT_WEBHOOK_URL", rules::webhook_url(u.expose()))?;
        }
        let alert_repeat_interval =
            src.duration("ALERT_REPEAT_INTERVAL", DEFAULT_ALERT_REPEAT_INTERVAL)?;
        let alert_unhealthy_after =
            src.duration("ALERT_UNHEALTHY_AFTER", DEFAULT_ALERT_UNHEALTHY_AFTER)?;
        let retries = src.or_default(
            "ALERT_RETRY_THRESHOLD",
            &DEFAULT_ALERT_RETRY_THRESHOLD.to_string(),
        )?;
        let alert_retry_threshold =
            check("ALERT_RETRY_THRESHOLD", rules::retry_threshold(&retries))?;
        let database_ssl_root_cert = ssl_root_cert_from(src)?;

        Ok(Settings {
            database_url,
            database_ssl_root_cert,
            fly_api_token,
            fly_org_slug,
            user_app_image,
            fly_api_base_url: fly_api_base_url.trim_end_matches('/').to_string(),
            user_app_region,
            user_app_cpus,
            user_app_memory_mb,
            app_name_prefix,
            paid_tiers,
            paid_statuses,
            reconcile_interval,
            max_concurrency,
            deprovision_grace,
            orphan_grace,
            resync_interval,
            operations,
            supabase_url: supabase_url.map(|u| u.trim_end_matches('/').to_string()),
            supabase_service_role_key,
            user_app_secrets,
            http_addr,
            log_format,
            admin_token,
            admin_allowed_hosts,
            admin_trust_fly_client_ip,
            alert_webhook_url,
            alert_repeat_interval,
            alert_unhealthy_after,
            alert_retry_threshold,
        })
    }
}

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

fn ssl_root_cert_from(src: &Sources<'_>) -> Result<Option<PathBuf>, ConfigError> {
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

fn check<T>(key: &str, result: Result<T, String>) -> Result<T, ConfigError> {
    result.map_err(|problem| ConfigError::new(key, problem))
}

fn is_loopback_url(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    let host = url.host_str().unwrap_or("");
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The process environment as UTF-8 pairs, plus the names of variables whose value is not UTF-8
/// (reported only if a setting needs them).
fn process_env() -> (HashMap<String, String>, HashSet<String>) {
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
struct Sources<'a> {
    env: &'a HashMap<String, String>,
    env_invalid_utf8: HashSet<String>,
    file: HashMap<String, String>,
}

impl<'a> Sources<'a> {
    fn new(
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
    fn raw(&self, key: &str) -> Result<Option<&str>, ConfigError> {
        if self.env_invalid_utf8.contains(key) {
            return Err(ConfigError::new(key, "is not valid UTF-8"));
        }
        Ok(self
            .env
            .get(key)
            .or_else(|| self.file.get(key))
            .map(String::as_str))
    }

    fn required(&self, key: &str) -> Result<&str, ConfigError> {
        match self.raw(key)? {
            None => Err(ConfigError::new(key, "is required but not set")),
            Some(v) if v.trim().is_empty() => Err(ConfigError::new(key, "is required but empty")),
            Some(v) => Ok(v),
        }
    }

    /// Trimmed, `None` when unset or empty.
    fn optional(&self, key: &str) -> Result<Option<String>, ConfigError> {
        Ok(self
            .raw(key)?
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string))
    }

    fn or_default(&self, key: &str, default: &str) -> Result<String, ConfigError> {
        Ok(self.optional(key)?.unwrap_or_else(|| default.to_string()))
    }

    fn duration(&self, key: &str, default: &str) -> Result<Duration, ConfigError> {
        let value = self.or_default(key, default)?;
        check(key, rules::positive_duration(&value))
    }

    /// The names listed in `USER_APP_SECRETS`, unvalidated (for the unknown-key check).
    fn user_app_secret_names(&self) -> Vec<String> {
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

    fn user_app_secrets(&self) -> Result<Vec<(String, Secret)>, ConfigError> {
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

    fn reject_unknown_file_keys(&self, path: &Path) -> Result<(), ConfigError> {
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

#[cfg(test)]
mod tests;
