//! Table-driven: every malformed setting is refused at start-up with one line naming the key, and
//! no message ever contains the value of a secret.

use std::collections::HashMap;
use std::time::Duration;

use vyx_fleet::config::{ConfigError, LogFormat, Settings, parse_duration};

const TOKEN: &str = "FlyV1 fm2_SECRET_TOKEN_VALUE";
const DB_PASSWORD: &str = "SECRET_DB_PASSWORD";
const SERVICE_KEY: &str = "SECRET_SERVICE_ROLE_KEY";
const GEMINI: &str = "SECRET_GEMINI_VALUE";

/// Every secret value the environments below ever contain.
const SECRET_VALUES: [&str; 4] = [TOKEN, DB_PASSWORD, SERVICE_KEY, GEMINI];

fn good() -> HashMap<String, String> {
    [
        (
            "DATABASE_URL",
            format!("postgres://vyx:{DB_PASSWORD}@db.abc.supabase.co:5432/postgres"),
        ),
        ("FLY_API_TOKEN", TOKEN.to_string()),
        ("FLY_ORG_SLUG", "vyx".to_string()),
        ("USER_APP_IMAGE", "registry.fly.io/vyx-app:v42".to_string()),
        ("SUPABASE_URL", "https://abc.supabase.co".to_string()),
        ("SUPABASE_SERVICE_ROLE_KEY", SERVICE_KEY.to_string()),
        ("USER_APP_SECRETS", "GEMINI_API_KEY".to_string()),
        ("GEMINI_API_KEY", GEMINI.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn load(changes: &[(&str, Option<&str>)]) -> Result<Settings, ConfigError> {
    let mut vars = good();
    for (key, value) in changes {
        match value {
            Some(v) => vars.insert(key.to_string(), v.to_string()),
            None => vars.remove(*key),
        };
    }
    Settings::from_map(&vars, None)
}

fn assert_clean(err: &ConfigError) {
    let line = err.to_string();
    assert!(!line.contains('\n'), "not one line: {line:?}");
    assert_eq!(line, format!("{}: {}", err.key, err.problem));
    for secret in SECRET_VALUES {
        assert!(!line.contains(secret), "secret leaked: {line}");
    }
    assert!(!line.contains("SECRET_"), "secret leaked: {line}");
}

#[test]
fn the_good_environment_loads() {
    let s = load(&[]).unwrap();
    assert_eq!(s.supabase_url.as_deref(), Some("https://abc.supabase.co"));
    assert_eq!(
        s.supabase_service_role_key.as_ref().map(|k| k.expose()),
        Some(SERVICE_KEY)
    );
    assert_eq!(s.user_app_secrets.len(), 1);
    assert_eq!(s.log_format, LogFormat::Json);
    let debug = format!("{s:?}");
    for secret in SECRET_VALUES {
        assert!(!debug.contains(secret), "Debug leaked {secret}");
    }
}

#[test]
fn the_health_url_template_defaults_to_each_apps_fly_dev_endpoint_and_may_point_at_loopback() {
    let s = load(&[]).unwrap();
    assert_eq!(
        s.operations.health_url_template,
        "https://{app}.fly.dev/health"
    );
    let local = "http://127.0.0.1:4280/_sim/apps/{app}/health";
    let s = load(&[("HEALTH_URL_TEMPLATE", Some(local))]).unwrap();
    assert_eq!(s.operations.health_url_template, local);
}

#[test]
fn each_malformed_setting_names_its_key() {
    // (key to change, new value or None = unset, key the error must name)
    let table: &[(&str, Option<&str>, &str)] = &[
        ("DATABASE_URL", None, "DATABASE_URL"),
        ("DATABASE_URL", Some(""), "DATABASE_URL"),
        ("DATABASE_URL", Some("  "), "DATABASE_URL"),
        (
            "DATABASE_URL",
            Some("mysql://u:SECRET_DB_PASSWORD@h/db"),
            "DATABASE_URL",
        ),
        (
            "DATABASE_URL",
            Some("host=h password=SECRET_DB_PASSWORD"),
            "DATABASE_URL",
        ),
        (
            "DATABASE_URL",
            Some("postgres://u:SECRET_DB_PASSWORD@aws-0-x.pooler.supabase.com:6543/postgres"),
            "DATABASE_URL",
        ),
        (
            "DATABASE_URL",
            Some("postgres://u:SECRET_DB_PASSWORD@h:99999/db"),
            "DATABASE_URL",
        ),
        ("FLY_API_TOKEN", None, "FLY_API_TOKEN"),
        ("FLY_API_TOKEN", Some(""), "FLY_API_TOKEN"),
        ("FLY_ORG_SLUG", None, "FLY_ORG_SLUG"),
        ("FLY_ORG_SLUG", Some("Vyx"), "FLY_ORG_SLUG"),
        ("FLY_ORG_SLUG", Some("vyx org"), "FLY_ORG_SLUG"),
        ("FLY_ORG_SLUG", Some("-vyx"), "FLY_ORG_SLUG"),
        ("USER_APP_IMAGE", None, "USER_APP_IMAGE"),
        ("USER_APP_IMAGE", Some(""), "USER_APP_IMAGE"),
        (
            "USER_APP_IMAGE",
            Some("registry.fly.io/vyx app:v1"),
            "USER_APP_IMAGE",
        ),
        (
            "USER_APP_IMAGE",
            Some("registry.fly.io/vyx-app:latest"),
            "USER_APP_IMAGE",
        ),
        (
            "USER_APP_IMAGE",
            Some("registry.fly.io/vyx-app"),
            "USER_APP_IMAGE",
        ),
        (
            "USER_APP_IMAGE",
            Some("localhost:5000/vyx-app"),
            "USER_APP_IMAGE",
        ),
        ("USER_APP_IMAGE", Some("vyx-app@sha256:"), "USER_APP_IMAGE"),
        (
            "FLY_API_BASE_URL",
            Some("api.machines.dev"),
            "FLY_API_BASE_URL",
        ),
        (
            "FLY_API_BASE_URL",
            Some("ftp://api.machines.dev"),
            "FLY_API_BASE_URL",
        ),
        ("FLY_API_BASE_URL", Some("https://"), "FLY_API_BASE_URL"),
        (
            "FLY_API_BASE_URL",
            Some("https://u:SECRET_X@api.machines.dev"),
            "FLY_API_BASE_URL",
        ),
        (
            "FLY_API_BASE_URL",
            Some("https://api.machines.dev/?token=SECRET_X"),
            "FLY_API_BASE_URL",
        ),
        (
            "HEALTH_URL_TEMPLATE",
            Some("https://vyx.fly.dev/health"),
            "HEALTH_URL_TEMPLATE",
        ),
        (
            "HEALTH_URL_TEMPLATE",
            Some("ftp://{app}.fly.dev/health"),
            "HEALTH_URL_TEMPLATE",
        ),
        (
            "HEALTH_URL_TEMPLATE",
            Some("{app}.fly.dev"),
            "HEALTH_URL_TEMPLATE",
        ),
        ("USER_APP_REGION", Some("SIN"), "USER_APP_REGION"),
        ("USER_APP_REGION", Some("sing"), "USER_APP_REGION"),
        ("USER_APP_REGION", Some("s1n"), "USER_APP_REGION"),
        ("USER_APP_CPUS", Some("3"), "USER_APP_CPUS"),
        ("USER_APP_CPUS", Some("0"), "USER_APP_CPUS"),
        ("USER_APP_CPUS", Some("two"), "USER_APP_CPUS"),
        ("USER_APP_CPUS", Some("32"), "USER_APP_CPUS"),
        ("USER_APP_MEMORY_MB", Some("500"), "USER_APP_MEMORY_MB"),
        ("USER_APP_MEMORY_MB", Some("256"), "USER_APP_MEMORY_MB"), // < 256 per CPU with 2 CPUs
        ("USER_APP_MEMORY_MB", Some("4352"), "USER_APP_MEMORY_MB"), // > 2 GB per CPU
        ("USER_APP_MEMORY_MB", Some("1gb"), "USER_APP_MEMORY_MB"),
        ("USER_APP_MEMORY_MB", Some("-512"), "USER_APP_MEMORY_MB"),
        ("APP_NAME_PREFIX", Some("vyx-"), "APP_NAME_PREFIX"),
        ("APP_NAME_PREFIX", Some("vyx-a"), "APP_NAME_PREFIX"),
        ("APP_NAME_PREFIX", Some("vyx-app"), "APP_NAME_PREFIX"),
        ("APP_NAME_PREFIX", Some("vyx"), "APP_NAME_PREFIX"),
        ("APP_NAME_PREFIX", Some("Vyx-user-"), "APP_NAME_PREFIX"),
        ("APP_NAME_PREFIX", Some("9user-"), "APP_NAME_PREFIX"),
        ("APP_NAME_PREFIX", Some("vyx_user_"), "APP_NAME_PREFIX"),
        (
            "APP_NAME_PREFIX",
            Some("a-very-long-prefix-that-leaves-no-room-for-the-hash-suffix-"),
            "APP_NAME_PREFIX",
        ),
        ("PAID_TIERS", Some("pro,premium"), "PAID_TIERS"),
        ("PAID_TIERS", Some(","), "PAID_TIERS"),
        ("PAID_TIERS", Some("Pro"), "PAID_TIERS"),
        ("PAID_STATUSES", Some("active,trialing"), "PAID_STATUSES"),
        ("PAID_STATUSES", Some("canceled"), "PAID_STATUSES"),
        ("RECONCILE_INTERVAL", Some("30"), "RECONCILE_INTERVAL"),
        ("RECONCILE_INTERVAL", Some("0s"), "RECONCILE_INTERVAL"),
        ("RECONCILE_INTERVAL", Some("-30s"), "RECONCILE_INTERVAL"),
        ("RECONCILE_INTERVAL", Some("soon"), "RECONCILE_INTERVAL"),
        ("MAX_CONCURRENCY", Some("0"), "MAX_CONCURRENCY"),
        ("MAX_CONCURRENCY", Some("65"), "MAX_CONCURRENCY"),
        ("MAX_CONCURRENCY", Some("-1"), "MAX_CONCURRENCY"),
        ("MAX_CONCURRENCY", Some("eight"), "MAX_CONCURRENCY"),
        ("DEPROVISION_GRACE", Some("-1m"), "DEPROVISION_GRACE"),
        ("DEPROVISION_GRACE", Some("10 minutes"), "DEPROVISION_GRACE"),
        ("ORPHAN_GRACE", Some("0h"), "ORPHAN_GRACE"),
        ("ORPHAN_GRACE", Some("1.5h"), "ORPHAN_GRACE"),
        (
            "ROLLOUT_MAX_UNAVAILABLE",
            Some("0"),
            "ROLLOUT_MAX_UNAVAILABLE",
        ),
        (
            "ROLLOUT_MAX_UNAVAILABLE",
            Some("0%"),
            "ROLLOUT_MAX_UNAVAILABLE",
        ),
        (
            "ROLLOUT_MAX_UNAVAILABLE",
            Some("150%"),
            "ROLLOUT_MAX_UNAVAILABLE",
        ),
        (
            "ROLLOUT_MAX_UNAVAILABLE",
            Some("-1"),
            "ROLLOUT_MAX_UNAVAILABLE",
        ),
        (
            "ROLLOUT_MAX_UNAVAILABLE",
            Some("2.5%"),
            "ROLLOUT_MAX_UNAVAILABLE",
        ),
        (
            "ROLLOUT_FAILURE_THRESHOLD",
            Some("few"),
            "ROLLOUT_FAILURE_THRESHOLD",
        ),
        (
            "ROLLOUT_FAILURE_THRESHOLD",
            Some("101%"),
            "ROLLOUT_FAILURE_THRESHOLD",
        ),
        ("ROLLOUT_SOAK", Some("60"), "ROLLOUT_SOAK"),
        ("ROLLOUT_SOAK", Some("0s"), "ROLLOUT_SOAK"),
        ("HEALTH_PROBE_INTERVAL", Some("0m"), "HEALTH_PROBE_INTERVAL"),
        (
            "HEALTH_PROBE_INTERVAL",
            Some("5 min"),
            "HEALTH_PROBE_INTERVAL",
        ),
        ("REPAIR_AFTER", Some("-5m"), "REPAIR_AFTER"),
        ("REPAIR_MAX_PER_PASS", Some("0"), "REPAIR_MAX_PER_PASS"),
        ("REPAIR_MAX_PER_PASS", Some("1001"), "REPAIR_MAX_PER_PASS"),
        ("REPAIR_MAX_PER_PASS", Some("5%"), "REPAIR_MAX_PER_PASS"),
        ("SUPABASE_URL", Some("abc.supabase.co"), "SUPABASE_URL"),
        ("SUPABASE_URL", None, "SUPABASE_URL"), // key without URL
        (
            "SUPABASE_SERVICE_ROLE_KEY",
            None,
            "SUPABASE_SERVICE_ROLE_KEY",
        ), // URL without key
        (
            "USER_APP_SECRETS",
            Some("GEMINI_API_KEY,MISSING_KEY"),
            "MISSING_KEY",
        ),
        ("GEMINI_API_KEY", Some(""), "GEMINI_API_KEY"),
        ("GEMINI_API_KEY", None, "GEMINI_API_KEY"),
        (
            "USER_APP_SECRETS",
            Some("GEMINI-API-KEY"),
            "USER_APP_SECRETS",
        ),
        (
            "USER_APP_SECRETS",
            Some("GEMINI_API_KEY,GEMINI_API_KEY"),
            "USER_APP_SECRETS",
        ),
        (
            "USER_APP_SECRETS",
            Some("FLY_API_TOKEN"),
            "USER_APP_SECRETS",
        ),
        ("USER_APP_SECRETS", Some("DATABASE_URL"), "USER_APP_SECRETS"),
        (
            "USER_APP_SECRETS",
            Some("SUPABASE_SERVICE_ROLE_KEY"),
            "USER_APP_SECRETS",
        ),
        ("USER_APP_SECRETS", Some("FLY_REGION"), "USER_APP_SECRETS"),
        ("USER_APP_SECRETS", Some("RUN_MODE"), "USER_APP_SECRETS"),
        ("HTTP_ADDR", Some("9090"), "HTTP_ADDR"),
        ("HTTP_ADDR", Some("localhost:9090"), "HTTP_ADDR"),
        ("HTTP_ADDR", Some("0.0.0.0:99999"), "HTTP_ADDR"),
        ("LOG_FORMAT", Some("text"), "LOG_FORMAT"),
    ];
    for (key, value, want_key) in table {
        let result = load(&[(key, *value)]);
        let err = match result {
            Ok(_) => panic!("{key}={value:?} was accepted"),
            Err(e) => e,
        };
        assert_eq!(err.key, *want_key, "{key}={value:?} -> {err}");
        assert_clean(&err);
    }
}

#[test]
fn boundary_values_are_accepted() {
    let table: &[&[(&str, Option<&str>)]] = &[
        &[
            ("USER_APP_CPUS", Some("1")),
            ("USER_APP_MEMORY_MB", Some("256")),
        ],
        &[
            ("USER_APP_CPUS", Some("1")),
            ("USER_APP_MEMORY_MB", Some("2048")),
        ],
        &[
            ("USER_APP_CPUS", Some("16")),
            ("USER_APP_MEMORY_MB", Some("4096")),
        ],
        &[("USER_APP_MEMORY_MB", Some("4096"))],
        &[("MAX_CONCURRENCY", Some("1"))],
        &[("MAX_CONCURRENCY", Some("64"))],
        &[("RECONCILE_INTERVAL", Some("500ms"))],
        &[("DEPROVISION_GRACE", Some("1h30m"))],
        &[("DEPROVISION_GRACE", Some("0s"))],
        &[("APP_NAME_PREFIX", Some("vyx-app-user-"))],
        &[("APP_NAME_PREFIX", Some(&"a".repeat(55)))],
        &[("PAID_TIERS", Some("free,pro,elite"))],
        &[("PAID_STATUSES", Some("active"))],
        &[(
            "DATABASE_URL",
            Some("postgresql://u:SECRET_DB_PASSWORD@aws-0-x.pooler.supabase.com:5432/postgres"),
        )],
        &[("SUPABASE_URL", None), ("SUPABASE_SERVICE_ROLE_KEY", None)],
        &[("USER_APP_SECRETS", Some(""))],
        &[("HTTP_ADDR", Some("[::]:9090"))],
        &[("FLY_API_BASE_URL", Some("http://127.0.0.1:4280"))],
        &[("USER_APP_IMAGE", Some("localhost:5000/vyx-app:v1"))],
        &[("ROLLOUT_MAX_UNAVAILABLE", Some("1"))],
        &[("ROLLOUT_MAX_UNAVAILABLE", Some("100%"))],
        &[("ROLLOUT_FAILURE_THRESHOLD", Some("0"))],
        &[("ROLLOUT_FAILURE_THRESHOLD", Some("100%"))],
        &[("ROLLOUT_SOAK", Some("500ms"))],
        &[("REPAIR_MAX_PER_PASS", Some("1"))],
        &[("REPAIR_MAX_PER_PASS", Some("1000"))],
        &[(
            "USER_APP_IMAGE",
            Some("registry.fly.io/vyx-app@sha256:0123456789abcdef"),
        )],
    ];
    for changes in table {
        if let Err(e) = load(changes) {
            panic!("{changes:?} was refused: {e}");
        }
    }
}

#[test]
fn durations() {
    assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert!(parse_duration("-1s").is_err());
    assert!(parse_duration("1").is_err());
}

fn repo_file(name: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

/// `.env.example` documents every key, and its uncommented lines form a valid configuration.
#[test]
fn env_example_is_complete_and_valid() {
    let text = repo_file(".env.example");
    for key in vyx_fleet::config::KNOWN_KEYS
        .iter()
        .chain(["RUST_LOG"].iter())
    {
        assert!(
            text.lines()
                .any(|l| l.trim_start_matches('#').starts_with(&format!("{key}="))),
            ".env.example lacks {key}"
        );
    }
    let vars: HashMap<String, String> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .collect();
    for key in vyx_fleet::config::REQUIRED_KEYS {
        assert!(vars.contains_key(key), "{key} must be uncommented");
    }
    if let Err(e) = Settings::from_map(&vars, None) {
        panic!(".env.example does not load: {e}");
    }
}

/// fly.toml's [env] holds only known, non-FLY_ keys (Fly forbids those in [env]) and loads; the
/// check and the metrics scrape hit the HTTP_ADDR port; the kill signal is SIGTERM.
#[test]
fn fly_toml_matches_the_settings() {
    use config::{FileFormat, Source, ValueKind};
    let table = config::File::from_str(&repo_file("fly.toml"), FileFormat::Toml)
        .collect()
        .unwrap();
    let string = |v: &config::Value| v.clone().into_string().unwrap();
    assert_eq!(string(&table["app"]), "vyx-fleet");
    assert_eq!(string(&table["kill_signal"]), "SIGTERM");
    assert!(!table.contains_key("services") && !table.contains_key("http_service"));
    let ValueKind::Table(env) = table["env"].kind.clone() else {
        panic!("[env] missing")
    };
    let mut vars = good();
    for (key, value) in &env {
        assert!(!key.starts_with("FLY_"), "[env] {key}: FLY_* is reserved");
        assert!(
            key == "RUST_LOG" || vyx_fleet::config::KNOWN_KEYS.contains(&key.as_str()),
            "[env] {key} is not a setting"
        );
        vars.insert(key.clone(), string(value));
    }
    vars.remove("RUST_LOG");
    let s = Settings::from_map(&vars, None).unwrap_or_else(|e| panic!("fly.toml [env]: {e}"));
    let ValueKind::Table(checks) = table["checks"].kind.clone() else {
        panic!("[checks] missing")
    };
    let ValueKind::Table(alive) = checks["alive"].kind.clone() else {
        panic!("[checks.alive] missing")
    };
    assert_eq!(string(&alive["path"]), "/healthz");
    assert_eq!(string(&alive["port"]), s.http_addr.port().to_string());
    let ValueKind::Table(metrics) = table["metrics"].kind.clone() else {
        panic!("[metrics] missing")
    };
    assert_eq!(string(&metrics["port"]), s.http_addr.port().to_string());
    assert_eq!(string(&metrics["path"]), "/metrics");
}

#[test]
fn a_missing_database_ca_file_is_named_and_an_existing_one_is_kept() {
    let mut vars = good();
    vars.insert(
        "DATABASE_SSL_ROOT_CERT".into(),
        "/nonexistent/supabase-ca.crt".into(),
    );
    let err = Settings::from_map(&vars, None).unwrap_err();
    assert_eq!(err.key, "DATABASE_SSL_ROOT_CERT");
    let ca = std::env::temp_dir().join(format!("vyx-ca-{}.crt", std::process::id()));
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    vars.insert("DATABASE_SSL_ROOT_CERT".into(), ca.display().to_string());
    let s = Settings::from_map(&vars, None).unwrap();
    assert_eq!(s.database().ssl_root_cert.as_deref(), Some(ca.as_path()));
    std::fs::remove_file(ca).ok();
}
