//! Wiring: settings → Fly client, database pool, executor context, pass config. Shared by the CLI,
//! the demo and the integration tests, so they all run the daemon the same way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::db::Store;
use crate::fly::{ClientOptions, DEFAULT_LIST_PAGE_SIZE, FlyClient, FlyError, RateLimits};
use crate::reconcile::{
    AppSpec, Ctx, ObserveCache, PaidPolicy, PassConfig, PlanSettingsTemplate, Slot, Timeouts,
    Wanted, WaveSettings, WorkQueue,
};

/// Name of the Fly secret that carries the Supabase service key into each app.
pub const SERVICE_KEY_SECRET: &str = "SUPABASE_SERVICE_ROLE_KEY";

/// The database pool `run` opens: `MAX_CONCURRENCY` for the actions, + 4 for the loop's own
/// statements, + 2 so the console and the alert loop never wait behind a busy pass.
pub fn pool_size(s: &Settings) -> u32 {
    (s.max_concurrency as u32).saturating_add(6)
}

pub fn app_spec(s: &Settings) -> AppSpec {
    let mut secrets = BTreeMap::new();
    if let Some(key) = &s.supabase_service_role_key {
        secrets.insert(SERVICE_KEY_SECRET.to_string(), key.clone());
    }
    for (name, value) in &s.user_app_secrets {
        secrets.insert(name.clone(), value.clone());
    }
    AppSpec {
        org_slug: s.fly_org_slug.clone(),
        image: s.user_app_image.clone(),
        region: s.user_app_region.clone(),
        cpus: s.user_app_cpus,
        memory_mb: s.user_app_memory_mb,
        supabase_url: s.supabase_url.clone(),
        secrets,
    }
}

/// The Fly client options the settings give. The list page size comes from the dev-only
/// `VYX_FLY_LIST_PAGE_SIZE` (tests set a few items so lists span pages), else 500.
pub fn client_options(s: &Settings, rate_limits: RateLimits) -> ClientOptions {
    let list_page_size = std::env::var("VYX_FLY_LIST_PAGE_SIZE")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|n| (1..=1000).contains(n))
        .unwrap_or(DEFAULT_LIST_PAGE_SIZE);
    ClientOptions {
        base_url: s.fly_api_base_url.clone(),
        token: s.fly_api_token.clone(),
        rate_limits,
        request_timeout: Duration::from_secs(30),
        max_retries: 4,
        user_agent: format!("vyx-fleet/{}", env!("CARGO_PKG_VERSION")),
        list_page_size,
    }
}

pub fn fly_client(s: &Settings, rate_limits: RateLimits) -> Result<FlyClient, FlyError> {
    FlyClient::new(client_options(s, rate_limits))
}

/// [`fly_client`] for a replica that may lead: its holder id rides in the `User-Agent`, so Fly's
/// request logs (and the simulator's call log) tell which replica made a call, e.g. that a deposed
/// leader made no write after a takeover.
pub fn fly_client_for(
    s: &Settings,
    rate_limits: RateLimits,
    holder: &str,
) -> Result<FlyClient, FlyError> {
    let mut opts = client_options(s, rate_limits);
    opts.user_agent = format!("{} holder/{holder}", opts.user_agent);
    FlyClient::new(opts)
}

/// Executor context with a placeholder term (0 never matches a real lease; the controller swaps in
/// its own `Store` when it leads).
pub fn ctx(s: &Settings, pool: sqlx::PgPool, fly: FlyClient) -> Ctx {
    Ctx {
        fly,
        store: Store::new(pool, 0),
        spec: Arc::new(app_spec(s)),
        prefix: s.app_name_prefix.clone(),
        timeouts: Timeouts::default(),
        backoff_base: Duration::from_secs(5),
        backoff_max: Duration::from_secs(600),
        observed: Arc::new(ObserveCache::new(s.resync_interval)),
        users: WorkQueue::new(),
        health_url_template: s.operations.health_url_template.as_str().into(),
        slot: Slot::default(),
        wanted: Wanted {
            policy: paid_policy(s),
            deprovision_grace: chrono_duration(s.deprovision_grace),
        },
    }
}

/// Who counts as paying: `PAID_TIERS` and `PAID_STATUSES`.
pub fn paid_policy(s: &Settings) -> PaidPolicy {
    PaidPolicy {
        tiers: s.paid_tiers.clone(),
        statuses: s.paid_statuses.clone(),
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

pub fn pass_config(s: &Settings) -> PassConfig {
    let chrono = chrono_duration;
    PassConfig {
        policy: paid_policy(s),
        plan: PlanSettingsTemplate {
            deprovision_grace: chrono(s.deprovision_grace),
            orphan_grace: chrono(s.orphan_grace),
            probe_interval: chrono(s.operations.health_probe_interval),
            reconcile_interval: chrono(s.reconcile_interval),
            repair_after: chrono(s.operations.repair_after),
            repair_max_per_pass: s.operations.repair_max_per_pass,
        },
        max_concurrency: s.max_concurrency,
        waves: WaveSettings {
            max_unavailable: s.operations.rollout_max_unavailable,
            failure_threshold: s.operations.rollout_failure_threshold,
            soak: chrono(s.operations.rollout_soak),
        },
    }
}

/// A holder id unique per process and readable in the lease row: Fly machine id or hostname, plus
/// a random suffix so two processes on one host differ.
pub fn holder_id() -> String {
    let host = std::env::var("FLY_MACHINE_ID")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "local".into());
    format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}
