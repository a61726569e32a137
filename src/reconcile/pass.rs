//! One reconcile pass: read desired and recorded state (a handful of queries), observe Fly (the
//! cache: one changed-machine list, or the full lists when due), plan, then execute with bounded concurrency. The controller only schedules passes.

use std::time::Instant;
use tracing::{Instrument, error, info, info_span, warn};

use super::desired::{PaidPolicy, desired};
use super::execute::{Ctx, Outcome};
use super::pass_execute::execute_plan;
use super::plan::{Finding, Plan, PlanInput, PlanSettings, plan};
use super::recorded::RowStatus;
use super::rollout::WaveSettings;
use super::spec::{config_digest, secrets_digest};
use crate::db::{apps, breaker};
use crate::fly::FlyError;
use crate::metrics::{ActionKind, AppStatus, Metrics, PassOutcome};
use crate::model::pass::PassFailure;

use super::pass_clock::Stages;
pub use super::pass_clock::{DbClock, PlanAt};

/// What a pass needs beyond the executor context.
#[derive(Clone)]
pub struct PassConfig {
    pub policy: PaidPolicy,
    pub plan: PlanSettingsTemplate,
    pub max_concurrency: usize,
    /// ROLLOUT_MAX_UNAVAILABLE, ROLLOUT_FAILURE_THRESHOLD, ROLLOUT_SOAK.
    pub waves: WaveSettings,
}

/// The settings part of [`PlanSettings`] that does not depend on the spec digests.
#[derive(Clone, Debug)]
pub struct PlanSettingsTemplate {
    pub deprovision_grace: chrono::Duration,
    pub orphan_grace: chrono::Duration,
    /// HEALTH_PROBE_INTERVAL, for the prober (`prober.rs`).
    pub probe_interval: chrono::Duration,
    pub reconcile_interval: chrono::Duration,
    /// REPAIR_AFTER and REPAIR_MAX_PER_PASS.
    pub repair_after: chrono::Duration,
    pub repair_max_per_pass: usize,
}

#[derive(Debug, Default, Clone)]
pub struct PassReport {
    pub plan: Plan,
    pub outcomes: Vec<(ActionKind, Outcome)>,
    pub fenced: bool,
    /// The database's clock as the plan read it (none for a pass that did not plan).
    pub clock: Option<DbClock>,
    /// When the pass's last rollout move ended: its verdict, and so its soak's start, came just
    /// before. The next wave is due a soak after it, however long the pass went on after it.
    pub last_move_done: Option<tokio::time::Instant>,
    /// How long the pass waited for its [`PlanAt`] before planning.
    pub held: std::time::Duration,
}

impl PassReport {
    pub(crate) fn failed(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Retry { .. } | Outcome::Fenced))
            .count()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("reading the database: {0}")]
    Db(#[from] sqlx::Error),
    /// Without a complete observation the planner could mistake unlisted apps for missing ones;
    /// the pass is skipped rather than acted on half-blind.
    #[error("observing Fly: {0}")]
    Observe(#[from] crate::fly::FlyError),
    /// The planner panicked (a bug): nothing was planned, so nothing is done.
    #[error("planning: {0}")]
    Planner(tokio::task::JoinError),
}

impl PassError {
    /// The cause the alerts and the dashboard name.
    pub(crate) fn failure(&self) -> PassFailure {
        match self {
            PassError::Observe(FlyError::Unauthorized { .. } | FlyError::Forbidden { .. }) => {
                PassFailure::FlyTokenRefused
            }
            PassError::Observe(_) => PassFailure::FlyUnavailable,
            PassError::Db(_) => PassFailure::Database,
            PassError::Planner(_) => PassFailure::Planner,
        }
    }
}

pub fn plan_settings(ctx: &Ctx, cfg: &PassConfig) -> PlanSettings {
    PlanSettings {
        prefix: ctx.prefix.clone(),
        org_slug: ctx.spec.org_slug.clone(),
        image: ctx.spec.image.clone(),
        region: ctx.spec.region.clone(),
        cpus: ctx.spec.cpus,
        memory_mb: ctx.spec.memory_mb,
        config_digest: config_digest(&ctx.spec),
        secrets_digest: secrets_digest(&ctx.spec.secrets),
        deprovision_grace: cfg.plan.deprovision_grace,
        orphan_grace: cfg.plan.orphan_grace,
        repair_after: cfg.plan.repair_after,
        repair_max_per_pass: cfg.plan.repair_max_per_pass,
    }
}

/// Counts for the gauges, from what the pass read anyway.
#[derive(Debug, Default, Clone)]
pub(crate) struct Census {
    pub rows_by_status: Vec<(String, i64)>,
    pub desired_present: usize,
    pub clock: Option<DbClock>,
    /// Where the pass's time went before it acted: the Fly observation, the database reads, a
    /// hold for a due time ([`PlanAt`]), the plan.
    pub took: Stages,
}

/// Read everything and plan; no writes anywhere.
pub async fn plan_pass(ctx: &Ctx, cfg: &PassConfig) -> Result<Plan, PassError> {
    Ok(plan_with_census(ctx, cfg, false, None).await?.0)
}

async fn plan_with_census(
    ctx: &Ctx,
    cfg: &PassConfig,
    start: bool,
    plan_at: Option<PlanAt>,
) -> Result<(Plan, Census), PassError> {
    let pool = ctx.store.pool();
    let mut took = Stages::default();
    let t0 = Instant::now();
    // Fly first: a full list takes minutes at 100,000 apps, and the rows read after it are the
    // fresher for it (and not held in memory while it pages). Every app we create has its row
    // written before the create call, so a row read after the list never misses an app it shows.
    let (observed, _) = ctx
        .observed
        .observe(&ctx.fly, &ctx.spec.org_slug, &ctx.prefix, ctx.store.term())
        .await?;
    took.observe = t0.elapsed();
    let t0 = Instant::now();
    let rollout = super::pass_rollout::load_rollout(ctx, cfg, start).await?;
    let health = crate::db::load_health(pool).await?;
    let facts = apps::load_desired_facts(pool).await?;
    // Each user's intent, then the facts go before the rows are read: the pass's peak memory holds
    // the rows and the intents, never the facts beside them (about 15 MB at 100,000 users).
    let policy = cfg.policy.clone();
    let span = tracing::Span::current();
    let desired = tokio::task::spawn_blocking(move || {
        let _in_pass = span.enter();
        let (desired, bad_overrides) = desired(&facts, &policy);
        for (user_id, value) in bad_overrides {
            warn!(%user_id, value = %value, "override with an unknown value; user frozen as if paused");
        }
        desired
    })
    .await
    .map_err(PassError::Planner)?;
    let rows = apps::load_rows(pool).await?;
    let orphans = apps::load_orphans(pool).await?;
    let breaker_state = breaker::load_state(pool).await?;
    took.read = t0.elapsed();
    if let Some(until) = plan_at.and_then(|p| p.hold_until(tokio::time::Instant::now())) {
        let t0 = Instant::now();
        tokio::time::sleep_until(until).await;
        took.hold = t0.elapsed();
    }
    let now = crate::db::now(pool).await?;
    let clock = DbClock {
        now,
        at: tokio::time::Instant::now(),
    };
    let settings = plan_settings(ctx, cfg);
    // Planning the fleet is CPU for a second at 100,000 rows: on a blocking thread, so the async
    // workers keep serving NOTIFYs and targeted runs meanwhile (a long poll on a worker also holds
    // the task it last woke, which no other worker may steal).
    let span = tracing::Span::current();
    let t0 = Instant::now();
    let planned = tokio::task::spawn_blocking(move || {
        let _in_pass = span.enter();
        let mut by_status: std::collections::BTreeMap<String, i64> = Default::default();
        for r in &rows {
            *by_status.entry(r.status.to_string()).or_default() += 1;
        }
        let census = Census {
            rows_by_status: by_status.into_iter().collect(),
            desired_present: desired
                .values()
                .filter(|i| i.intent == super::desired::Intent::Present)
                .count(),
            clock: Some(clock),
            took: Stages::default(),
        };
        let plan = plan(&PlanInput {
            now,
            settings: &settings,
            desired: &desired,
            rows: &rows,
            observed: &observed,
            orphans_first_seen: &orphans,
            recent_deletions: &breaker_state.recent,
            held_deletions: &breaker_state.held_map(),
            rollout: &rollout,
            health: &health,
        });
        (plan, census)
    });
    let (plan, mut census) = planned.await.map_err(PassError::Planner)?;
    took.plan = t0.elapsed();
    census.took = took;
    Ok((plan, census))
}

/// The gauge's status for a `user_fly_apps.status` as stored; a word the controller does not know
/// is counted as `other`.
fn status_label(status: &str) -> AppStatus {
    match RowStatus::parse(status) {
        Some(RowStatus::Provisioning) => AppStatus::Provisioning,
        Some(RowStatus::Active) => AppStatus::Active,
        Some(RowStatus::Error) => AppStatus::Error,
        Some(RowStatus::Deprovisioning) => AppStatus::Deprovisioning,
        Some(RowStatus::Deleted) => AppStatus::Deleted,
        None => AppStatus::Other,
    }
}

/// One full pass under the current lease term.
pub async fn run_pass(
    ctx: &Ctx,
    cfg: &PassConfig,
    metrics: &Metrics,
) -> Result<PassReport, PassError> {
    run_pass_at(ctx, cfg, metrics, None).await
}

/// [`run_pass`] that plans no sooner than `plan_at` (see [`PlanAt`]).
pub(crate) async fn run_pass_at(
    ctx: &Ctx,
    cfg: &PassConfig,
    metrics: &Metrics,
    plan_at: Option<PlanAt>,
) -> Result<PassReport, PassError> {
    let reconcile_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let span = info_span!("pass", reconcile_id = %reconcile_id, term = ctx.store.term());
    async move {
        let started = Instant::now();
        let (plan, clock, took) = match plan_with_census(ctx, cfg, true, plan_at).await {
            Ok((p, census)) => {
                let counts: Vec<(AppStatus, i64)> = census
                    .rows_by_status
                    .iter()
                    .map(|(s, n)| (status_label(s), *n))
                    .collect();
                metrics.set_app_counts(&counts);
                metrics.set_desired_apps(census.desired_present as i64);
                (p, census.clock, census.took)
            }
            Err(e) => {
                error!(error = %e, "pass skipped");
                metrics.record_pass(PassOutcome::Error, started.elapsed());
                return Err(e);
            }
        };
        report_findings(&plan.findings, metrics);
        if let Err(e) = super::pass_rollout::record_rollout(ctx, &plan, metrics).await {
            if matches!(e, apps::StoreError::Fenced) {
                warn!("lease lost before the pass could act; stopping");
                metrics.record_pass(PassOutcome::Fenced, started.elapsed());
                return Ok(PassReport {
                    plan,
                    fenced: true,
                    ..Default::default()
                });
            }
            warn!(error = %e, "could not record the rollout's progress");
        }
        info!(
            actions = plan.actions.len(),
            findings = plan.findings.len(),
            observe_ms = took.observe.as_millis() as u64,
            read_ms = took.read.as_millis() as u64,
            hold_ms = took.hold.as_millis() as u64,
            plan_ms = took.plan.as_millis() as u64,
            "planned"
        );
        // The held set is persisted before anything is deleted, so the operator confirms exactly
        // what the alert names.
        if !plan.held.is_empty() {
            let held = &plan.held;
            match breaker::apply_held(
                ctx.store.pool(),
                ctx.store.term(),
                &held.hold,
                &held.release,
            )
            .await
            {
                Ok(true) => {}
                Ok(false) => {
                    warn!("lease lost before the pass could act; stopping");
                    metrics.record_pass(PassOutcome::Fenced, started.elapsed());
                    return Ok(PassReport {
                        plan,
                        fenced: true,
                        ..Default::default()
                    });
                }
                Err(e) => {
                    error!(error = %e, "could not record the held deletions; pass skipped");
                    metrics.record_pass(PassOutcome::Error, started.elapsed());
                    return Err(e.into());
                }
            }
        }
        let mut report = execute_plan(ctx, cfg, metrics, plan).await;
        report.clock = clock;
        report.held = took.hold;
        let outcome = if report.fenced {
            PassOutcome::Fenced
        } else if report.failed() > 0 {
            PassOutcome::Partial
        } else {
            PassOutcome::Ok
        };
        metrics.record_pass(outcome, started.elapsed());
        info!(
            outcome = outcome.as_str(),
            actions = report.outcomes.len(),
            failed = report.failed(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "pass finished"
        );
        Ok(report)
    }
    .instrument(span)
    .await
}

fn report_findings(findings: &[Finding], metrics: &Metrics) {
    let mut blocked = false;
    for f in findings {
        match f {
            Finding::Paused { user_id, drift } => {
                info!(%user_id, drift, "user paused by override; not changed")
            }
            Finding::UnmanagedRowName { row_id, name } => {
                warn!(%row_id, app = %name, "row names an app without the managed prefix; skipped")
            }
            Finding::ForeignOrgRow { row_id, org } => {
                warn!(%row_id, org = %org, "row records another Fly org; skipped")
            }
            Finding::UnknownStatus { row_id, status } => {
                warn!(%row_id, status = %status, "row has an unknown status; skipped")
            }
            Finding::UserMissing { row_id, user_id } => {
                warn!(%row_id, %user_id, "row's user is missing from auth.users; skipped")
            }
            Finding::Orphan { app, since } => {
                warn!(app = %app, since = %since, "orphan app: managed prefix, no live row owns it")
            }
            // Logged as an ALERT once, by the pass that found it; a reminder on every later pass.
            Finding::RolloutHalted {
                image,
                reason,
                newly: true,
            } => {
                error!(image = %image, reason = %reason, "ALERT rollout halted: {reason}; failed apps are rolled back; `vyx-fleet rollout resume` or a new spec continues")
            }
            Finding::RolloutHalted { image, reason, .. } => {
                warn!(image = %image, reason = %reason, "rollout halted; waiting for `vyx-fleet rollout resume` or a new spec")
            }
            Finding::RegionsUnavailable { regions, held_back } => {
                warn!(
                    regions = %regions.join(","),
                    held_back,
                    "Fly could not list machines in these regions; their apps wait, the rest proceeds"
                )
            }
            Finding::DeletionsBlocked { would_delete, live } => {
                blocked = true;
                error!(
                    would_delete,
                    live,
                    "ALERT blast-radius breaker: deletions blocked; run `vyx-fleet confirm-deletions` to allow them"
                )
            }
        }
    }
    metrics.set_deletions_blocked(blocked);
}
