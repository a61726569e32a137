use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

const TOKEN: &str = "FlyV1 fm2_TOPSECRETTOKEN";
const DB: &str = "postgres://vyx:DBPASSWORD@db.example.supabase.co:5432/postgres";

fn base() -> HashMap<String, String> {
    [
        ("DATABASE_URL", DB),
        ("FLY_API_TOKEN", TOKEN),
        ("FLY_ORG_SLUG", "vyx"),
        ("USER_APP_IMAGE", "registry.fly.io/vyx-app:v42"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn with(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    let mut m = base();
    for (k, v) in pairs {
        m.insert(k.to_string(), v.to_string());
    }
    m
}

/// A file under the system temp dir, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(contents: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "vyx-fleet-config-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn defaults() {
    let s = Settings::from_map(&base(), None).unwrap();
    assert_eq!(s.database_url.expose(), DB);
    assert_eq!(s.fly_api_token.expose(), TOKEN);
    assert_eq!(s.fly_api_base_url, "https://api.machines.dev");
    assert_eq!(s.user_app_region, "sin");
    assert_eq!((s.user_app_cpus, s.user_app_memory_mb), (2, 512));
    assert_eq!(s.app_name_prefix, "vyx-user-");
    assert_eq!(s.paid_tiers, ["pro", "elite"]);
    assert_eq!(s.paid_statuses, ["active", "past_due"]);
    assert_eq!(s.reconcile_interval, Duration::from_secs(30));
    assert_eq!(s.max_concurrency, 8);
    assert_eq!(s.deprovision_grace, Duration::from_secs(600));
    assert_eq!(s.orphan_grace, Duration::from_secs(3600));
    assert_eq!(s.operations, Operations::default());
    assert_eq!(
        s.operations.rollout_max_unavailable,
        CountOrPercent::Percent(2)
    );
    assert_eq!(
        s.operations.rollout_failure_threshold,
        CountOrPercent::Percent(1)
    );
    assert_eq!(s.operations.rollout_soak, Duration::from_secs(60));
    assert_eq!(s.operations.health_probe_interval, Duration::from_secs(300));
    assert_eq!(s.operations.repair_after, Duration::from_secs(300));
    assert_eq!(s.operations.repair_max_per_pass, 5);
    assert_eq!(s.supabase_url, None);
    assert!(s.supabase_service_role_key.is_none());
    assert!(s.user_app_secrets.is_empty());
    assert_eq!(s.http_addr, "0.0.0.0:9090".parse().unwrap());
    assert_eq!(s.log_format, LogFormat::Json);
    assert_eq!(s.heartbeat_staleness(), Duration::from_secs(150));
}

#[test]
fn empty_optional_values_mean_default_and_values_are_trimmed() {
    let s = Settings::from_map(
        &with(&[
            ("USER_APP_REGION", ""),
            ("USER_APP_CPUS", "  "),
            ("FLY_ORG_SLUG", " vyx \n"),
            ("FLY_API_TOKEN", "tok\n"),
            ("FLY_API_BASE_URL", "http://_api.internal:4280/"),
            ("LOG_FORMAT", "Pretty"),
        ]),
        None,
    )
    .unwrap();
    assert_eq!(s.user_app_region, "sin");
    assert_eq!(s.user_app_cpus, 2);
    assert_eq!(s.fly_org_slug, "vyx");
    assert_eq!(s.fly_api_token.expose(), "tok");
    assert_eq!(s.fly_api_base_url, "http://_api.internal:4280");
    assert_eq!(s.log_format, LogFormat::Pretty);
}

#[test]
fn user_app_secrets_are_copied_verbatim_in_order() {
    let s = Settings::from_map(
        &with(&[
            ("USER_APP_SECRETS", "GEMINI_API_KEY, OPENROUTER_API_KEY,"),
            ("GEMINI_API_KEY", "g-secret "),
            ("OPENROUTER_API_KEY", "or-secret"),
        ]),
        None,
    )
    .unwrap();
    let got: Vec<(&str, &str)> = s
        .user_app_secrets
        .iter()
        .map(|(n, v)| (n.as_str(), v.expose()))
        .collect();
    assert_eq!(
        got,
        [
            ("GEMINI_API_KEY", "g-secret "),
            ("OPENROUTER_API_KEY", "or-secret")
        ]
    );
    let debug = format!("{s:?}");
    for secret in ["g-secret", "or-secret", "TOPSECRETTOKEN", "DBPASSWORD"] {
        assert!(!debug.contains(secret), "{secret} leaked in {debug}");
    }
}

#[test]
fn file_provides_keys_and_env_wins() {
    let file = TempFile::new(
        r#"
FLY_ORG_SLUG = "from-file"
USER_APP_REGION = "ams"
USER_APP_CPUS = 4
USER_APP_MEMORY_MB = 2048
PAID_TIERS = ["elite"]
USER_APP_SECRETS = "GEMINI_API_KEY"
GEMINI_API_KEY = "file-gemini"
"#,
    );
    let mut vars = base();
    vars.remove("FLY_ORG_SLUG");
    vars.insert("USER_APP_REGION".into(), "iad".into());
    let s = Settings::from_map(&vars, Some(&file.0)).unwrap();
    assert_eq!(s.fly_org_slug, "from-file");
    assert_eq!(s.user_app_region, "iad");
    assert_eq!((s.user_app_cpus, s.user_app_memory_mb), (4, 2048));
    assert_eq!(s.paid_tiers, ["elite"]);
    assert_eq!(s.user_app_secrets[0].1.expose(), "file-gemini");

    // An environment variable set to empty still overrides the file.
    vars.insert("FLY_ORG_SLUG".into(), "".into());
    let err = Settings::from_map(&vars, Some(&file.0)).unwrap_err();
    assert_eq!(err.key, "FLY_ORG_SLUG");
    assert!(err.problem.contains("empty"), "{err}");
}

#[test]
fn file_errors_name_the_key_and_hide_values() {
    let cases: &[(&str, &str)] = &[
        ("FLY_ORG_SLOG = \"vyx\"\n", "FLY_ORG_SLOG"),
        ("fly_org_slug = \"vyx\"\n", "fly_org_slug"),
        ("[fly]\norg = \"vyx\"\n", "fly"),
        ("RUST_LOG = \"debug\"\n", "RUST_LOG"),
        ("PAID_TIERS = [[\"pro\"]]\n", "PAID_TIERS"),
        ("FLY_API_TOKEN = \"TOPSECRETTOKEN\nX = 1\n", "--config"),
        ("FLY_API_TOKEN = TOPSECRETTOKEN\n", "--config"),
        (
            "FLY_API_TOKEN = \"a\"\nFLY_API_TOKEN = \"TOPSECRETTOKEN\"\n",
            "--config",
        ),
    ];
    for (contents, key) in cases {
        let file = TempFile::new(contents);
        let err = Settings::from_map(&base(), Some(&file.0)).unwrap_err();
        assert_eq!(err.key, *key, "{contents:?} -> {err}");
        let line = err.to_string();
        assert!(!line.contains('\n'), "{line:?}");
        assert!(!line.contains("TOPSECRETTOKEN"), "{line}");
    }
    let file = TempFile::new("fly_org_slug = \"vyx\"\n");
    let err = Settings::from_map(&base(), Some(&file.0)).unwrap_err();
    assert!(err.problem.contains("FLY_ORG_SLUG"), "{err}");
    let file = TempFile::new("A1 = 1\nB2 = 2\n");
    let err = Settings::from_map(&base(), Some(&file.0)).unwrap_err();
    assert_eq!(err.key, "A1");
    assert!(err.problem.contains("B2"), "{err}");
}

#[test]
fn toml_syntax_errors_keep_position() {
    let file = TempFile::new("FLY_ORG_SLUG = \"vyx\"\nUSER_APP_CPUS = = 2\n");
    let err = Settings::from_map(&base(), Some(&file.0)).unwrap_err();
    assert_eq!(err.key, "--config");
    assert!(err.problem.contains("line 2"), "{err}");
}

#[test]
fn missing_file_is_an_error() {
    let path = std::env::temp_dir().join("vyx-fleet-no-such-file.toml");
    let err = Settings::from_map(&base(), Some(&path)).unwrap_err();
    assert_eq!(err.key, "--config");
    assert!(err.problem.contains("vyx-fleet-no-such-file.toml"), "{err}");
}

#[test]
fn database_url_alone() {
    let vars: HashMap<String, String> = [("DATABASE_URL".to_string(), DB.to_string())].into();
    assert_eq!(database_url_from_map(&vars, None).unwrap().expose(), DB);
    let err = database_url_from_map(&HashMap::new(), None).unwrap_err();
    assert_eq!(err.to_string(), "DATABASE_URL: is required but not set");
    let vars: HashMap<String, String> = [(
        "DATABASE_URL".to_string(),
        "postgres://u:DBPASSWORD@h:6543/p".to_string(),
    )]
    .into();
    let err = database_url_from_map(&vars, None).unwrap_err();
    assert_eq!(err.key, "DATABASE_URL");
    assert!(!err.to_string().contains("DBPASSWORD"));
}

#[test]
fn warnings_flag_suspicious_settings() {
    let s = Settings::from_map(
        &with(&[
            ("HTTP_ADDR", "127.0.0.1:9090"),
            ("PAID_TIERS", "free,pro"),
            ("FLY_API_BASE_URL", "http://fly.example.com"),
            ("DEPROVISION_GRACE", "0s"),
        ]),
        None,
    )
    .unwrap();
    let w = s.warnings().join("\n");
    assert!(w.contains("HTTP_ADDR"), "{w}");
    assert!(w.contains("PAID_TIERS"), "{w}");
    assert!(w.contains("FLY_API_BASE_URL"), "{w}");
    assert!(w.contains("DEPROVISION_GRACE"), "{w}");
    for image in [
        "localhost:5000/vyx-app:v1",
        "vyx-app@sha256:abc",
        "vyx-app:v2",
    ] {
        let s = Settings::from_map(&with(&[("USER_APP_IMAGE", image)]), None).unwrap();
        assert!(
            !s.warnings().join(" ").contains("USER_APP_IMAGE"),
            "{image}"
        );
    }
    let s = Settings::from_map(
        &with(&[
            ("SUPABASE_URL", "https://x.supabase.co"),
            ("SUPABASE_SERVICE_ROLE_KEY", "k"),
        ]),
        None,
    )
    .unwrap();
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());
}

#[test]
fn a_moving_image_reference_is_refused_not_warned_about() {
    for image in [
        "vyx-app:latest",
        "registry.fly.io/vyx-app:latest",
        "localhost:5000/vyx-app",
        "registry.fly.io/vyx-app",
    ] {
        let e = Settings::from_map(&with(&[("USER_APP_IMAGE", image)]), None).unwrap_err();
        assert_eq!(e.key, "USER_APP_IMAGE", "{image}: {e}");
    }
}

#[test]
fn operations_settings_take_counts_percentages_and_durations() {
    let s = Settings::from_map(
        &with(&[
            ("ROLLOUT_MAX_UNAVAILABLE", "50"),
            ("ROLLOUT_FAILURE_THRESHOLD", "0"),
            ("ROLLOUT_SOAK", "2m"),
            ("HEALTH_PROBE_INTERVAL", "1m"),
            ("REPAIR_AFTER", "10m"),
            ("REPAIR_MAX_PER_PASS", "20"),
        ]),
        None,
    )
    .unwrap();
    let o = &s.operations;
    assert_eq!(o.rollout_max_unavailable, CountOrPercent::Count(50));
    assert_eq!(o.rollout_failure_threshold, CountOrPercent::Count(0));
    assert_eq!(o.rollout_soak, Duration::from_secs(120));
    assert_eq!(o.health_probe_interval, Duration::from_secs(60));
    assert_eq!(o.repair_after, Duration::from_secs(600));
    assert_eq!(o.repair_max_per_pass, 20);
}

#[test]
fn a_max_unavailable_of_zero_is_refused_because_no_app_could_move() {
    for zero in ["0", "0%"] {
        let e = Settings::from_map(&with(&[("ROLLOUT_MAX_UNAVAILABLE", zero)]), None).unwrap_err();
        assert_eq!(e.key, "ROLLOUT_MAX_UNAVAILABLE", "{zero}: {e}");
    }
}

#[test]
fn the_resync_interval_defaults_to_ten_minutes_and_must_be_positive() {
    let s = Settings::from_map(&base(), None).unwrap();
    assert_eq!(s.resync_interval, Duration::from_secs(600));
    let e = Settings::from_map(&with(&[("RESYNC_INTERVAL", "0s")]), None).unwrap_err();
    assert_eq!(e.key, "RESYNC_INTERVAL", "{e}");
    // A long reconcile interval with the default resync is fine: every pass then lists in full.
    let s = Settings::from_map(&with(&[("RECONCILE_INTERVAL", "1h")]), None).unwrap();
    assert_eq!(s.resync_interval, Duration::from_secs(600));
}

#[test]
fn config_error_is_one_line() {
    let e = ConfigError::new("X", "a\nb\r\n  c");
    assert_eq!(e.to_string(), "X: a b c");
}

#[test]
fn a_token_that_cannot_be_an_http_header_is_a_config_error_that_hides_it() {
    let e = Settings::from_map(&with(&[("FLY_API_TOKEN", "fm2_TOPSECRET\u{7}bell")]), None)
        .unwrap_err();
    assert_eq!(e.key, "FLY_API_TOKEN");
    assert!(!e.to_string().contains("TOPSECRET"), "{e}");
}

#[test]
fn console_and_alert_settings_default_off_and_validate_without_echoing_secrets() {
    let s = Settings::from_map(&base(), None).unwrap();
    assert_eq!(s.admin_token, None);
    assert_eq!(s.alert_webhook_url, None);
    assert_eq!(s.alert_repeat_interval, Duration::from_secs(3600));
    assert_eq!(s.alert_unhealthy_after, Duration::from_secs(900));
    assert_eq!(s.alert_retry_threshold, 5);

    let token = "A".repeat(31) + "SHORTSECRET";
    let ok = Settings::from_map(&with(&[("ADMIN_TOKEN", &token)]), None).unwrap();
    assert_eq!(ok.admin_token.unwrap().expose(), token);

    let short = "TOOSHORTSECRET";
    let e = Settings::from_map(&with(&[("ADMIN_TOKEN", short)]), None).unwrap_err();
    assert_eq!(e.key, "ADMIN_TOKEN");
    assert!(
        e.problem.contains("32") && !e.to_string().contains(short),
        "{e}"
    );
    let spaced = format!("{token} x");
    let e = Settings::from_map(&with(&[("ADMIN_TOKEN", &spaced)]), None).unwrap_err();
    assert!(
        e.key == "ADMIN_TOKEN" && !e.to_string().contains("SHORTSECRET"),
        "{e}"
    );

    let hook = "https://hooks.slack.com/services/T0/B0/HOOKSECRET";
    let ok = Settings::from_map(&with(&[("ALERT_WEBHOOK_URL", hook)]), None).unwrap();
    assert_eq!(ok.alert_webhook_url.as_ref().unwrap().expose(), hook);
    assert!(!format!("{ok:?}").contains("HOOKSECRET"));
    for bad in [
        "ftp://x/HOOKSECRET",
        "hooks.slack.com/HOOKSECRET",
        "https://u:HOOKSECRET@h/x",
    ] {
        let e = Settings::from_map(&with(&[("ALERT_WEBHOOK_URL", bad)]), None).unwrap_err();
        assert_eq!(e.key, "ALERT_WEBHOOK_URL");
        assert!(!e.to_string().contains("HOOKSECRET"), "{e}");
    }
    let e = Settings::from_map(&with(&[("ALERT_RETRY_THRESHOLD", "0")]), None).unwrap_err();
    assert_eq!(e.key, "ALERT_RETRY_THRESHOLD");
    let e = Settings::from_map(&with(&[("ALERT_REPEAT_INTERVAL", "soon")]), None).unwrap_err();
    assert_eq!(e.key, "ALERT_REPEAT_INTERVAL");
}
