//! Every setting read from the sources and validated, in the order of `KNOWN_KEYS`: the first
//! problem found is the one reported.

use crate::secret::Secret;

use super::database::ssl_root_cert_from;
use super::{
    ConfigError, DEFAULT_ALERT_REPEAT_INTERVAL, DEFAULT_ALERT_RETRY_THRESHOLD,
    DEFAULT_ALERT_UNHEALTHY_AFTER, DEFAULT_APP_NAME_PREFIX, DEFAULT_DEPROVISION_GRACE,
    DEFAULT_FLY_API_BASE_URL, DEFAULT_HTTP_ADDR, DEFAULT_MAX_CONCURRENCY, DEFAULT_ORPHAN_GRACE,
    DEFAULT_PAID_STATUSES, DEFAULT_PAID_TIERS, DEFAULT_RECONCILE_INTERVAL, DEFAULT_RESYNC_INTERVAL,
    DEFAULT_USER_APP_CPUS, DEFAULT_USER_APP_MEMORY_MB, DEFAULT_USER_APP_REGION, LogFormat,
    Settings, Sources, check, operations, parse_duration, rules,
};

impl Settings {
    pub(super) fn from_sources(src: &Sources<'_>) -> Result<Settings, ConfigError> {
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
