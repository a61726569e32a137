//! The bench's world: one throwaway PostgreSQL cluster, and per scenario a fresh database, a Fly
//! simulator (child process) enforcing the documented limits, and the daemon wired exactly as
//! `vyx-fleet run` wires it, with every duration and rate scaled by `scale`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;
use vyx_fleet::config::Settings;
use vyx_fleet::db;
use vyx_fleet::fly::{BucketSpec, RateLimits, WindowSpec};
use vyx_fleet::liveness::Health;
use vyx_fleet::metrics::Metrics;
use vyx_fleet::pgtemp::{self, PgCluster};
use vyx_fleet::reconcile::{
    Controller, Ctx, LoopConfig, OVERLAP, ObserveCache, PassConfig, Timeouts, naming,
};
use vyx_fleet::sim::{RateLimitConfig, SimConfig, Timings};
use vyx_fleet::wiring;

use super::simproc::{Launcher, SimProc};
use super::stats::QueryCounter;

pub const ORG: &str = "vyx-test";
pub const IMAGE: &str = "registry.fly.io/vyx-screener:v1";
pub const PREFIX: &str = "vyx-user-";
/// The image a rollout measurement moves the fleet to.
pub const IMAGE_NEXT: &str = "registry.fly.io/vyx-screener:v2";

/// `HEALTH_URL_TEMPLATE`, pointed at the simulator's `GET /_sim/apps/{app}/health`: the prober's
/// probes are then direct HTTP GETs of each app, not Fly API calls, so they spend none of Fly's rate
/// limits and the bench counts them apart from the API's calls.
pub fn health_url_template(sim_base_url: &str) -> String {
    format!("{sim_base_url}/_sim/apps/{{app}}/health")
}

pub struct Bench {
    pub cluster: PgCluster,
    pub scale: f64,
    pub launcher: Launcher,
    pub counter: QueryCounter,
    /// `RESYNC_INTERVAL` for every fleet, if not the default (`--quick` shortens it).
    pub resync_interval: Option<String>,
    /// Whether steady-state figures first make the fleet's newest change a single machine
    /// (`Fleet::settle_watermark`, a minute of waiting per fleet; `--quick` does not: its fleets
    /// are one page anyway).
    pub settle_watermark: bool,
    seq: std::sync::atomic::AtomicU32,
}

/// The documented limits as the simulator enforces them (REFERENCE §6), rates times `scale`.
pub fn scaled_sim_limits(scale: f64) -> RateLimitConfig {
    let mut l = RateLimitConfig::default();
    if let Some(d) = l.default.as_mut() {
        d.per_second *= scale;
    }
    for b in l.classes.values_mut() {
        b.per_second *= scale;
    }
    l
}

/// The simulator's default delays, divided by `scale`.
pub fn scaled_timings(scale: f64) -> Timings {
    let t = Timings::default();
    let d = |x: Duration| x.div_f64(scale);
    Timings {
        machine_create: d(t.machine_create),
        machine_start: d(t.machine_start),
        machine_stop: d(t.machine_stop),
        machine_destroy: d(t.machine_destroy),
        machine_update: d(t.machine_update),
        checks_settle: d(t.checks_settle),
        app_delete: d(t.app_delete),
        app_visible_after: d(t.app_visible_after),
        apps_list_lag: d(t.apps_list_lag),
        machine_list_lag: d(t.machine_list_lag),
    }
}

impl Bench {
    pub async fn start(scale: f64, launcher: Launcher) -> Result<Bench, String> {
        let cluster = PgCluster::start().await.map_err(|e| e.to_string())?;
        let counter = enable_statements(&cluster).await;
        Ok(Bench {
            cluster,
            scale,
            launcher,
            counter,
            resync_interval: None,
            settle_watermark: true,
            seq: Default::default(),
        })
    }

    /// A Fly duration as the bench runs it.
    pub fn d(&self, d: Duration) -> Duration {
        d.div_f64(self.scale)
    }

    /// The daemon's own buckets (`RateLimits::with_margin`, what `run` uses), rates scaled.
    fn client_limits(&self) -> RateLimits {
        let l = RateLimits::with_margin();
        let s = |b: BucketSpec| BucketSpec::new(b.per_second * self.scale, b.burst);
        RateLimits {
            per_action: s(l.per_action),
            get_machine: s(l.get_machine),
            app_deletes: WindowSpec::new(l.app_deletes.max, self.d(l.app_deletes.window)),
            org_lists: s(l.org_lists),
            ..l
        }
    }

    pub async fn fleet(&self, label: &str) -> Result<Fleet, String> {
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("bench_{label}_{n}");
        let url = self
            .cluster
            .create_database(&name)
            .await
            .map_err(|e| e.to_string())?;
        let admin = db::connect(&url, 4).await.map_err(|e| e.to_string())?;
        pgtemp::apply_supabase_shape(&admin)
            .await
            .map_err(|e| e.to_string())?;
        db::migrate(&admin).await.map_err(|e| e.to_string())?;
        if self.counter == QueryCounter::Statements {
            let _ = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .execute(&admin)
                .await;
        }
        let sim_cfg = SimConfig {
            timings: scaled_timings(self.scale),
            rate_limits: scaled_sim_limits(self.scale),
            max_call_log: 4_000_000,
            ..SimConfig::default()
        };
        let sim = SimProc::start(&self.launcher, &sim_cfg)?;
        let health_url = health_url_template(&sim.base_url);
        let mut vars: HashMap<String, String> = [
            ("DATABASE_URL", url.as_str()),
            ("FLY_API_TOKEN", "bench-token"),
            ("FLY_ORG_SLUG", ORG),
            ("USER_APP_IMAGE", IMAGE),
            ("FLY_API_BASE_URL", sim.base_url.as_str()),
            ("APP_NAME_PREFIX", PREFIX),
            ("DEPROVISION_GRACE", "0s"),
            ("SUPABASE_URL", "https://bench.supabase.co"),
            ("SUPABASE_SERVICE_ROLE_KEY", "bench-service-key"),
            ("HEALTH_URL_TEMPLATE", health_url.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Some(r) = &self.resync_interval {
            vars.insert("RESYNC_INTERVAL".into(), r.clone());
        }
        let settings = Settings::from_map(&vars, None).map_err(|e| e.to_string())?;
        // The pool `run` opens (it was 10 here, fewer than `run`'s 14 at MAX_CONCURRENCY 8).
        let pool = db::connect(&url, wiring::pool_size(&settings))
            .await
            .map_err(|e| e.to_string())?;
        let fly = wiring::fly_client(&settings, self.client_limits()).map_err(|e| e.to_string())?;
        let mut ctx = wiring::ctx(&settings, pool, fly);
        let t = Timeouts::default();
        ctx.timeouts = Timeouts {
            app_visible: self.d(t.app_visible),
            machine_started: self.d(t.machine_started),
            healthy: self.d(t.healthy),
            checks_appear: self.d(t.checks_appear),
            machine_stopped: self.d(t.machine_stopped),
            app_gone: self.d(t.app_gone),
            list_lag: self.d(t.list_lag),
            not_found_confirm: self.d(t.not_found_confirm),
            rollout_look: self.d(t.rollout_look),
        };
        ctx.backoff_base = self.d(ctx.backoff_base);
        ctx.backoff_max = self.d(ctx.backoff_max);
        ctx.observed = Arc::new(ObserveCache::new(self.d(settings.resync_interval)));
        let mut pass_cfg = wiring::pass_config(&settings);
        let c = |d: chrono::Duration| {
            chrono::Duration::from_std(self.d(d.to_std().unwrap_or_default())).unwrap_or(d)
        };
        pass_cfg.plan.deprovision_grace = c(pass_cfg.plan.deprovision_grace);
        pass_cfg.plan.orphan_grace = c(pass_cfg.plan.orphan_grace);
        pass_cfg.plan.probe_interval = c(pass_cfg.plan.probe_interval);
        pass_cfg.plan.reconcile_interval = c(pass_cfg.plan.reconcile_interval);
        pass_cfg.plan.repair_after = c(pass_cfg.plan.repair_after);
        pass_cfg.waves.soak = c(pass_cfg.waves.soak);
        let d = LoopConfig::default();
        let loop_cfg = LoopConfig {
            interval: self.d(settings.reconcile_interval),
            notify_debounce: self.d(d.notify_debounce),
            ..d
        };
        Ok(Fleet {
            url,
            admin,
            sim,
            vars,
            settings,
            ctx,
            pass_cfg,
            loop_cfg,
            scale: self.scale,
            seeded_at: None,
        })
    }

    pub async fn stop(self) {
        self.cluster.stop().await;
    }
}

/// `pg_stat_statements` needs `shared_preload_libraries`, which only a restart applies. The
/// throwaway cluster's `pg_ctl restart` reuses its recorded options; if anything fails, count
/// transactions instead.
async fn enable_statements(cluster: &PgCluster) -> QueryCounter {
    let Ok(admin) = db::connect(&cluster.admin_url(), 1).await else {
        return QueryCounter::Transactions;
    };
    let set = sqlx::query("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        .execute(&admin)
        .await;
    admin.close().await;
    if set.is_err() {
        return QueryCounter::Transactions;
    }
    let data = cluster.data_dir().to_path_buf();
    let log = data.parent().unwrap_or(&data).join("server.log");
    let restarted = tokio::task::spawn_blocking(move || {
        let root =
            std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
        let mut cmd = if root.unwrap_or(false) {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", "pg_ctl"]);
            c
        } else {
            std::process::Command::new("pg_ctl")
        };
        cmd.arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["restart", "-w", "-m", "fast"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false);
    if restarted {
        QueryCounter::Statements
    } else {
        QueryCounter::Transactions
    }
}

pub struct Fleet {
    pub url: String,
    /// The bench's own connections (seeding, flips, statistics), apart from the daemon's pool.
    pub admin: PgPool,
    pub sim: SimProc,
    /// What `settings` were read from (a rollout measurement changes the image in it).
    pub vars: HashMap<String, String>,
    pub settings: Settings,
    /// The daemon's executor context (placeholder term; the controller swaps in its own).
    pub ctx: Ctx,
    pub pass_cfg: PassConfig,
    pub loop_cfg: LoopConfig,
    pub scale: f64,
    /// When `seed_converged` wrote the last machine (see `settle_watermark`).
    pub seeded_at: Option<std::time::Instant>,
}

/// Deterministic user ids: `n` in the low bits.
pub fn user_id(n: u64) -> Uuid {
    Uuid::from_u128(0xbe4c_0000_0000_4000_8000_0000_0000_0000 | u128::from(n))
}

pub fn app_name(user: Uuid) -> String {
    naming::candidate(PREFIX, user, 0)
}

impl Fleet {
    /// A new `USER_APP_IMAGE`, as an operator's settings change and restart would give the daemon:
    /// the next controller's pass starts a rollout to it.
    pub fn set_image(&mut self, image: &str) -> Result<(), String> {
        self.vars.insert("USER_APP_IMAGE".into(), image.into());
        self.settings = Settings::from_map(&self.vars, None).map_err(|e| e.to_string())?;
        self.ctx.spec = Arc::new(wiring::app_spec(&self.settings));
        Ok(())
    }

    /// Waits until the seeding is older than the daemon's delta overlap (`cache::OVERLAP`, 60 s of
    /// real time: not scaled, it is a constant of the daemon), so that a change made now is the only
    /// one a changed-machine list starting at it re-reads. Returns the seconds waited.
    pub async fn wait_out_overlap(&self) -> f64 {
        let Some(at) = self.seeded_at else { return 0.0 };
        let until = at + OVERLAP + Duration::from_secs(1);
        let wait = until.saturating_duration_since(std::time::Instant::now());
        tokio::time::sleep(wait).await;
        wait.as_secs_f64()
    }

    /// `RESYNC_INTERVAL` as this fleet runs it (scaled).
    pub fn ctx_resync(&self) -> Duration {
        self.settings.resync_interval.div_f64(self.scale)
    }

    pub fn start_controller(&self) -> (watch::Sender<bool>, JoinHandle<()>) {
        let controller = Controller {
            base: self.ctx.clone(),
            pass: self.pass_cfg.clone(),
            loop_cfg: self.loop_cfg.clone(),
            metrics: Metrics::new(),
            health: Health::new(Duration::from_secs(3600)),
            holder: wiring::holder_id(),
        };
        let (tx, rx) = watch::channel(false);
        (tx, tokio::spawn(async move { controller.run(rx).await }))
    }

    /// Users with a subscription row of `tier`/`active` (inserted, so NOTIFY fires per row).
    pub async fn seed_users(&self, ids: &[Uuid], tier: &str) -> Result<(), String> {
        for chunk in ids.chunks(10_000) {
            let emails: Vec<String> = chunk.iter().map(|u| format!("{u}@bench.test")).collect();
            sqlx::query(
                "INSERT INTO auth.users (id, email) SELECT * FROM unnest($1::uuid[], $2::text[])",
            )
            .bind(chunk)
            .bind(&emails)
            .execute(&self.admin)
            .await
            .map_err(|e| e.to_string())?;
            sqlx::query(
                "INSERT INTO public.user_subscriptions (user_id, tier, status) \
                 SELECT u, $2, 'active' FROM unnest($1::uuid[]) AS u",
            )
            .bind(chunk)
            .bind(tier)
            .execute(&self.admin)
            .await
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub async fn count_status(&self, status: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM public.user_fly_apps WHERE status = $1")
            .bind(status)
            .fetch_one(&self.admin)
            .await
            .unwrap_or(0)
    }

    /// Commits a tier change and returns the instant it was committed.
    pub async fn set_tier(&self, user: Uuid, tier: &str) -> chrono::DateTime<chrono::Utc> {
        let _ = sqlx::query("UPDATE public.user_subscriptions SET tier = $2 WHERE user_id = $1")
            .bind(user)
            .bind(tier)
            .execute(&self.admin)
            .await;
        chrono::Utc::now()
    }

    /// A subscription change whose NOTIFY is lost (the trigger switched off by [`Fleet::set_notify`]):
    /// the change log still records it in the same transaction, as the trigger does whether or not
    /// anyone listens. What a polling-only run measures is a missed notification, not a missing
    /// trigger.
    pub async fn set_tier_unheard(&self, user: Uuid, tier: &str) -> chrono::DateTime<chrono::Utc> {
        let _ = sqlx::query(
            "WITH u AS (UPDATE public.user_subscriptions SET tier = $2 WHERE user_id = $1 \
             RETURNING user_id) INSERT INTO vyx_fleet.changes (user_id) SELECT user_id FROM u",
        )
        .bind(user)
        .bind(tier)
        .execute(&self.admin)
        .await;
        chrono::Utc::now()
    }

    /// NOTIFY on subscription changes on or off (polling-only runs switch it off).
    pub async fn set_notify(&self, on: bool) {
        let sql = if on {
            "ALTER TABLE public.user_subscriptions ENABLE TRIGGER vyx_fleet_notify"
        } else {
            "ALTER TABLE public.user_subscriptions DISABLE TRIGGER vyx_fleet_notify"
        };
        sqlx::query(sql)
            .execute(&self.admin)
            .await
            .expect("toggle the notify trigger");
    }

    pub async fn stop(self) {
        self.admin.close().await;
        self.ctx.store.pool().close().await;
        self.sim.stop();
    }
}
