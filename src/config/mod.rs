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
mod database;
mod duration;
mod file;
mod operations;
mod parse;
mod rules;
mod sources;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::secret::Secret;

pub use amount::CountOrPercent;
pub use database::{
    DatabaseConfig, database_url_from_map, load_database, load_database_url, load_org_slug,
};
pub use duration::parse_duration;
pub use operations::{
    DEFAULT_HEALTH_PROBE_INTERVAL, DEFAULT_REPAIR_AFTER, DEFAULT_REPAIR_MAX_PER_PASS,
    DEFAULT_ROLLOUT_FAILURE_THRESHOLD, DEFAULT_ROLLOUT_MAX_UNAVAILABLE, DEFAULT_ROLLOUT_SOAK,
    Operations,
};
pub use rules::SHARED_APP;
use sources::{Sources, process_env};

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

#[cfg(test)]
mod tests;
