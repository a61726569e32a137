//! A whole fleet under test: a migrated database (real PostgreSQL), the in-process Fly simulator on a
//! loopback port, settings built exactly as the daemon builds them, and the leader lease taken.
//!
//! ```ignore
//! mod support;
//! mod fleet_support;
//! let fleet = fleet_support::Fleet::start().await;
//! let user = support::UserFixture::paid("pro").insert(&fleet.db.pool).await;
//! fleet.converge().await;
//! ```

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use uuid::Uuid;
use vyx_fleet::config::Settings;
use vyx_fleet::db::{Store, lease, load_row_for_user};
use vyx_fleet::fly::RateLimits;
use vyx_fleet::liveness::Health;
use vyx_fleet::metrics::Metrics;
use vyx_fleet::reconcile::plan::{Action, Plan};
use vyx_fleet::reconcile::{
    AppRow, Controller, Ctx, LoopConfig, PassConfig, PassReport, Timeouts, plan_pass, run_pass,
};
use vyx_fleet::sim::{AppSnapshot, CallRecord, Sim, SimConfig};
use vyx_fleet::wiring;

use crate::support::{TestDb, migrated_db};

pub const ORG: &str = "vyx-test";
pub const IMAGE: &str = "registry.fly.io/vyx-screener:v1";
pub const SERVICE_KEY: &str = "service-key-do-not-leak-7f3a";
pub const TOKEN: &str = "fm2_test-token-do-not-leak-91c2";

pub struct Fleet {
    pub db: TestDb,
    pub sim: Sim,
    pub vars: HashMap<String, String>,
    pub ctx: Ctx,
    pub pass_cfg: PassConfig,
    pub holder: String,
    pub term: i64,
    pub metrics: Metrics,
}

pub struct FleetBuilder {
    sim: SimConfig,
    vars: Vec<(String, String)>,
}

impl FleetBuilder {
    pub fn sim(mut self, f: impl FnOnce(&mut SimConfig)) -> Self {
        f(&mut self.sim);
        self
    }

    pub fn var(mut self, key: &str, value: &str) -> Self {
        self.vars.push((key.into(), value.into()));
        self
    }

    pub async fn start(self) -> Fleet {
        let db = migrated_db().await;
        let sim = Sim::start("127.0.0.1:0".parse().unwrap(), self.sim)
            .await
            .expect("simulator starts");
        // Each app's own health endpoint, as the simulator serves it (never the internet).
        let health_url = format!("{}/_sim/apps/{{app}}/health", sim.base_url());
        let mut vars: HashMap<String, String> = [
            ("DATABASE_URL", db.url.as_str()),
            ("FLY_API_TOKEN", TOKEN),
            ("FLY_ORG_SLUG", ORG),
            ("USER_APP_IMAGE", IMAGE),
            ("FLY_API_BASE_URL", &sim.base_url()),
            ("HEALTH_URL_TEMPLATE", &health_url),
            ("DEPROVISION_GRACE", "0s"),
            // Spec changes go through the rollout's waves; a token soak, so `converge` finishes them
            // in a few passes (tests/rollout.rs sets its own).
            ("ROLLOUT_SOAK", "1ms"),
            ("SUPABASE_URL", "https://project.supabase.co"),
            ("SUPABASE_SERVICE_ROLE_KEY", SERVICE_KEY),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        vars.extend(self.vars);
        let holder = wiring::holder_id();
        let term = lease::try_acquire(&db.pool, &holder, Duration::from_secs(600))
            .await
            .unwrap()
            .expect("lease is free in a fresh database");
        let mut fleet = Fleet {
            ctx: build_ctx(&vars, &db, term),
            pass_cfg: wiring::pass_config(&Settings::from_map(&vars, None).unwrap()),
            db,
            sim,
            vars,
            holder,
            term,
            metrics: Metrics::new(),
        };
        fleet.ctx.store = Store::new(fleet.db.pool.clone(), term);
        fleet
    }
}

fn build_ctx(vars: &HashMap<String, String>, db: &TestDb, term: i64) -> Ctx {
    let s = Settings::from_map(vars, None).expect("test settings are valid");
    let mut opts = wiring::client_options(&s, RateLimits::with_margin());
    // Lists of a few items per page, so small fleets span pages: `.var("VYX_FLY_LIST_PAGE_SIZE", "2")`.
    if let Some(n) = vars.get("VYX_FLY_LIST_PAGE_SIZE") {
        opts.list_page_size = n.parse().expect("VYX_FLY_LIST_PAGE_SIZE is a number");
    }
    let fly = vyx_fleet::fly::FlyClient::new(opts).unwrap();
    let mut ctx = wiring::ctx(&s, db.pool.clone(), fly);
    ctx.store = Store::new(db.pool.clone(), term);
    // Tests wait for convergence, so failed attempts come back quickly.
    ctx.backoff_base = Duration::from_millis(50);
    ctx.backoff_max = Duration::from_millis(400);
    ctx.timeouts = Timeouts {
        app_visible: Duration::from_secs(10),
        machine_started: Duration::from_secs(10),
        healthy: Duration::from_secs(10),
        checks_appear: Duration::from_secs(5),
        machine_stopped: Duration::from_secs(5),
        app_gone: Duration::from_secs(10),
        list_lag: Duration::from_secs(1),
        not_found_confirm: Duration::from_millis(100),
        rollout_look: Duration::from_secs(2),
    };
    ctx
}

impl Fleet {
    /// A controller over this fleet as the daemon wires it, with test-sized lease timings; a
    /// sweep every `interval` (an hour: only the leader's first tick and the NOTIFY queue act).
    pub fn controller(&self, interval: Duration) -> Controller {
        Controller {
            base: self.ctx.clone(),
            pass: self.pass_cfg.clone(),
            loop_cfg: LoopConfig {
                interval,
                lease_ttl: Duration::from_secs(6),
                renew_every: Duration::from_millis(500),
                act_margin: Duration::from_secs(4),
                standby_poll: Duration::from_millis(200),
                notify_debounce: Duration::from_millis(50),
                drain: Duration::from_secs(5),
            },
            metrics: self.metrics.clone(),
            health: Health::new(Duration::from_secs(60)),
            holder: format!("test-{}", Uuid::new_v4()),
        }
    }

    pub fn builder() -> FleetBuilder {
        FleetBuilder {
            sim: SimConfig::default(),
            vars: vec![],
        }
    }

    pub async fn start() -> Fleet {
        Self::builder().start().await
    }

    /// Change a setting, as an operator restarting the daemon with a new env would.
    pub fn reconfigure(&mut self, key: &str, value: &str) {
        self.vars.insert(key.into(), value.into());
        self.ctx = build_ctx(&self.vars, &self.db, self.term);
        self.pass_cfg = wiring::pass_config(&Settings::from_map(&self.vars, None).unwrap());
    }

    /// The Fly secrets every app should carry under the current settings: name → value.
    pub fn expected_secrets(&self) -> std::collections::BTreeMap<String, String> {
        let mut out = std::collections::BTreeMap::new();
        if let Some(v) = self.vars.get("SUPABASE_SERVICE_ROLE_KEY") {
            out.insert("SUPABASE_SERVICE_ROLE_KEY".to_string(), v.clone());
        }
        let names = self
            .vars
            .get("USER_APP_SECRETS")
            .cloned()
            .unwrap_or_default();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if let Some(v) = self.vars.get(name) {
                out.insert(name.to_string(), v.clone());
            }
        }
        out
    }

    /// IPs, secrets and machines-on-latest-secrets problems of every live row's app, one
    /// line each.
    pub async fn serving_problems(&self, users: &[Uuid]) -> Vec<String> {
        let want = self.expected_secrets();
        let mut out = Vec::new();
        for u in users {
            let row = self.row(*u).await;
            match self.app(&row.fly_app_name) {
                Some(app) => out.extend(crate::support::serving_problems(&app, &want)),
                None => out.push(format!("user {u}: no app {}", row.fly_app_name)),
            }
        }
        out
    }

    /// Bring the resync forward: a change made on Fly outside the controller that no machine shows
    /// (an app seeded or deleted by hand) is otherwise seen only at the next `RESYNC_INTERVAL`.
    pub async fn relist(&self) {
        self.ctx.observed.invalidate().await;
    }

    /// The health prober the leader runs beside its passes, on this fleet's term; stops when
    /// dropped. It probes the apps the passes' observation cache holds.
    pub fn prober(&self) -> vyx_fleet::reconcile::ProberHandle {
        vyx_fleet::reconcile::spawn_prober(self.ctx.clone(), &self.pass_cfg)
    }

    pub async fn pass(&self) -> PassReport {
        run_pass(&self.ctx, &self.pass_cfg, &self.metrics)
            .await
            .expect("pass runs")
    }

    pub async fn plan(&self) -> Plan {
        plan_pass(&self.ctx, &self.pass_cfg).await.expect("plan")
    }

    /// Run passes until a plan has nothing left but probes and orphan bookkeeping; panics after
    /// `max` passes. Between passes that made no progress (backoff pending) it waits for the
    /// earliest `next_attempt_at`.
    pub async fn converge(&self) -> usize {
        self.converge_within(60).await
    }

    pub async fn converge_within(&self, max: usize) -> usize {
        for n in 1..=max {
            // Backoff first: the planner's `now` is read before its Fly calls, so a backoff that expires
            // while it plans reads as "in backoff" to the plan and as over to a later query. Read the
            // other way round, "no backoff, no work" cannot be a backoff that just ran out.
            let backoff = self.earliest_backoff().await;
            let plan = self.plan().await;
            let work = plan
                .actions
                .iter()
                .any(|a| !matches!(a, Action::SyncOrphans { .. }));
            if !work && backoff.is_none() {
                return n;
            }
            if !work {
                if let Some(wait) = backoff {
                    tokio::time::sleep(wait).await;
                }
                continue;
            }
            self.pass().await;
        }
        panic!(
            "fleet did not converge within {max} passes: {:?}",
            self.plan().await
        );
    }

    async fn earliest_backoff(&self) -> Option<Duration> {
        let next: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
            "SELECT min(next_attempt_at) FROM public.user_fly_apps WHERE next_attempt_at > now()",
        )
        .fetch_one(&self.db.pool)
        .await
        .unwrap();
        next.map(|t| {
            (t - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(10)
        })
    }

    pub async fn row(&self, user: Uuid) -> AppRow {
        load_row_for_user(&self.db.pool, user)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no row for {user}"))
    }

    pub async fn maybe_row(&self, user: Uuid) -> Option<AppRow> {
        load_row_for_user(&self.db.pool, user).await.unwrap()
    }

    /// Apps in our org, as the simulator holds them (not as the controller sees them).
    pub fn apps(&self) -> Vec<AppSnapshot> {
        self.sim
            .snapshot()
            .apps
            .into_iter()
            .filter(|a| a.org == ORG && !a.deleting)
            .collect()
    }

    pub fn app(&self, name: &str) -> Option<AppSnapshot> {
        self.apps().into_iter().find(|a| a.name == name)
    }

    pub fn writes(&self) -> Vec<CallRecord> {
        self.sim
            .calls()
            .into_iter()
            .filter(|c| c.method != "GET")
            .collect()
    }

    pub async fn events(&self, user: Uuid) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT event_type FROM public.user_fly_app_events WHERE user_id = $1 ORDER BY created_at, id",
        )
        .bind(user)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    pub async fn set_override(&self, user: Uuid, desired: Option<&str>) {
        match desired {
            Some(d) => sqlx::query(
                "INSERT INTO vyx_fleet.user_fly_app_overrides (user_id, desired, reason, created_by) \
                 VALUES ($1, $2, 'test', 'test') ON CONFLICT (user_id) DO UPDATE SET desired = EXCLUDED.desired",
            )
            .bind(user)
            .bind(d)
            .execute(&self.db.pool)
            .await
            .unwrap(),
            None => sqlx::query("DELETE FROM vyx_fleet.user_fly_app_overrides WHERE user_id = $1")
                .bind(user)
                .execute(&self.db.pool)
                .await
                .unwrap(),
        };
    }
}
