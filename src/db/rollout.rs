//! The rollout's persisted state: `vyx_fleet.rollout` (one row per target, the current one
//! is the highest id) and the per-app progress columns of `user_fly_apps`.
//!
//! The leader's writes are fenced with `vyx_fleet.fence($term)` like `db::apps`: a deposed leader's
//! late write changes nothing and returns [`StoreError::Fenced`]. An operator's `rollout resume` is not
//! fenced (like `confirm-deletions`): it is a person's write, read by the leader on its next pass.
//!
//! Reads feed the pure wave decision (`reconcile::rollout`); nothing here decides.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::apps::{Store, StoreError};
use crate::model::cost::monthly_cost_estimate_usd;
use crate::model::rollout::{AppState, Halt, HaltReason, Rollout, Tally};

/// One `vyx_fleet.rollout` row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RolloutRecord {
    pub id: i64,
    pub target_digest: String,
    pub target_image: String,
    pub started_at: DateTime<Utc>,
    pub waves_done: i32,
    pub moved: i32,
    pub failed: i32,
    pub rolled_back: i32,
    pub failures_forgiven: i32,
    pub halted: bool,
    pub halt_kind: Option<String>,
    pub halt_reason: Option<String>,
    pub halted_at: Option<DateTime<Utc>>,
    pub resumed_by: Option<String>,
    pub resumed_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// The target's non-secret spec (`StoredSpec`), and the last spec the fleet ran healthily
    /// before this rollout; `None` for rollouts recorded before they were kept.
    pub target_spec: Option<serde_json::Value>,
    pub base_spec: Option<serde_json::Value>,
}

impl RolloutRecord {
    /// The decision's view of this row.
    pub fn to_rollout(&self) -> Rollout {
        let halted = match (self.halted, &self.halt_reason, self.halted_at) {
            (true, Some(reason), Some(at)) => Some(Halt {
                reason: HaltReason::Recorded(reason.clone()),
                at,
            }),
            // The table's CHECK forbids a halt without reason and time; if one appears anyway, stay
            // halted rather than move apps.
            (true, _, at) => Some(Halt {
                reason: HaltReason::Recorded("halted (no reason recorded)".into()),
                at: at.unwrap_or(self.updated_at),
            }),
            (false, ..) => None,
        };
        Rollout {
            target: self.target_digest.clone(),
            halted,
            failures_forgiven: usize::try_from(self.failures_forgiven).unwrap_or(0),
        }
    }
}

/// The `vyx_fleet.rollout` columns as one literal (sqlx wants static SQL).
macro_rules! columns {
    () => {
        "id, target_digest, target_image, started_at, waves_done, moved, failed, rolled_back, \
         failures_forgiven, halted, halt_kind, halt_reason, halted_at, resumed_by, resumed_at, \
         completed_at, updated_at, target_spec, base_spec"
    };
}

/// The current rollout (highest id), if the fleet ever had one.
pub async fn load_current(pool: &PgPool) -> Result<Option<RolloutRecord>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM vyx_fleet.rollout ORDER BY id DESC LIMIT 1"
    ))
    .fetch_optional(pool)
    .await
}

/// The per-app rollout columns of one live row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AppProgress {
    pub row_id: Uuid,
    pub user_id: Uuid,
    pub spec_digest: Option<String>,
    pub rollout_id: Option<i64>,
    pub rollout_state: Option<String>,
    pub rollout_wave: Option<i32>,
    pub rollout_state_at: Option<DateTime<Utc>>,
    pub rollout_machine_version: Option<String>,
    pub healthy_spec_digest: Option<String>,
    pub healthy_image: Option<String>,
}

impl AppProgress {
    /// Where this app stands in `rollout`: its recorded state if it belongs to that rollout; else
    /// already done if it runs the target (provisioned on it), else pending.
    pub fn state_in(&self, rollout: &RolloutRecord) -> AppState {
        if self.rollout_id == Some(rollout.id) {
            let wave = self
                .rollout_wave
                .and_then(|w| u32::try_from(w).ok())
                .unwrap_or(0);
            let since = self.rollout_state_at.unwrap_or(rollout.started_at);
            match self.rollout_state.as_deref() {
                Some("moving") => return AppState::Moving { wave },
                Some("soaking") => return AppState::Soaking { wave, since },
                Some("healthy") => return AppState::Healthy { wave },
                Some("failed") => return AppState::Failed { wave },
                Some("rolled_back") => return AppState::RolledBack { wave },
                // A value this version never writes (the column has no CHECK: it is Vyx's
                // table). Read as still moving: never moved again, visible, holds the next wave.
                Some(_) => return AppState::Moving { wave },
                None => {}
            }
        }
        if self.spec_digest.as_deref() == Some(rollout.target_digest.as_str()) {
            AppState::Healthy { wave: 0 }
        } else {
            AppState::Pending
        }
    }
}

/// Every live row's progress, in the order canaries are picked (oldest app first: the longest
/// users, whose traders the team knows best, are not the point; a stable order is).
pub async fn load_progress(pool: &PgPool) -> Result<Vec<AppProgress>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id AS row_id, user_id, spec_digest, rollout_id, rollout_state, rollout_wave, \
                rollout_state_at, rollout_machine_version, healthy_spec_digest, healthy_image \
           FROM public.user_fly_apps \
          WHERE deleted_at IS NULL AND status <> 'deleted' \
          ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await
}

/// One user's live row's progress (a targeted run), by the `user_fly_apps_live_idx` index.
pub(crate) async fn load_user_progress(
    pool: &PgPool,
    user_id: Uuid,
) -> Result<Vec<AppProgress>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id AS row_id, user_id, spec_digest, rollout_id, rollout_state, rollout_wave, \
                rollout_state_at, rollout_machine_version, healthy_spec_digest, healthy_image \
           FROM public.user_fly_apps \
          WHERE user_id = $1 AND deleted_at IS NULL AND status <> 'deleted'",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
}

/// `vyx-fleet rollout resume`: clears the current rollout's halt and forgives the failures so far.
/// Returns the rollout it resumed, or `None` when nothing was halted.
pub async fn resume<'e>(
    db: impl sqlx::PgExecutor<'e>,
    by: &str,
) -> Result<Option<RolloutRecord>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE vyx_fleet.rollout \
            SET halted = false, halt_kind = NULL, halt_reason = NULL, halted_at = NULL, \
                failures_forgiven = failed, resumed_by = $1, resumed_at = now(), \
                updated_at = now() \
          WHERE id = (SELECT max(id) FROM vyx_fleet.rollout) AND halted \
          RETURNING ",
        columns!()
    ))
    .bind(by)
    .fetch_optional(db)
    .await
}

/// The per-app states a row can be written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowRolloutState {
    Moving,
    Soaking,
    Healthy,
    Failed,
    RolledBack,
}

impl RowRolloutState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Moving => "moving",
            Self::Soaking => "soaking",
            Self::Healthy => "healthy",
            Self::Failed => "failed",
            Self::RolledBack => "rolled_back",
        }
    }
}

/// The leader's fenced writes.
impl Store {
    /// Starts a rollout of `target` unless the current one already has it. Returns the current
    /// rollout either way (a restarted leader finds its rollout and carries on).
    pub async fn start_rollout(
        &self,
        target_digest: &str,
        target_image: &str,
    ) -> Result<RolloutRecord, StoreError> {
        self.start_rollout_of(target_digest, target_image, None)
            .await
    }

    /// [`start_rollout`](Self::start_rollout) recording the target's non-secret spec. The new
    /// rollout's base is the spec the fleet last ran healthily: the previous rollout's target if
    /// it completed unhalted, else that rollout's own base.
    pub(crate) async fn start_rollout_of(
        &self,
        target_digest: &str,
        target_image: &str,
        target_spec: Option<&serde_json::Value>,
    ) -> Result<RolloutRecord, StoreError> {
        let started: Option<RolloutRecord> = sqlx::query_as(concat!(
            "INSERT INTO vyx_fleet.rollout (target_digest, target_image, target_spec, base_spec) \
             SELECT $1, $2, $4, \
                    (SELECT CASE WHEN p.completed_at IS NOT NULL AND NOT p.halted \
                                 THEN p.target_spec ELSE p.base_spec END \
                       FROM vyx_fleet.rollout p \
                      WHERE p.id = (SELECT max(id) FROM vyx_fleet.rollout)) \
              WHERE vyx_fleet.fence($3) \
                AND NOT EXISTS (SELECT 1 FROM vyx_fleet.rollout \
                                 WHERE id = (SELECT max(id) FROM vyx_fleet.rollout) \
                                   AND target_digest = $1) \
             RETURNING ",
            columns!()
        ))
        .bind(target_digest)
        .bind(target_image)
        .bind(self.term())
        .bind(target_spec)
        .fetch_optional(self.pool())
        .await?;
        if let Some(r) = started {
            return Ok(r);
        }
        self.require_fence().await?;
        match load_current(self.pool()).await? {
            Some(r) if r.target_digest == target_digest => Ok(r),
            _ => Err(StoreError::Conflict),
        }
    }

    /// Records the decision's counts (and completion) for `status` and the metrics.
    pub async fn save_rollout_progress(
        &self,
        rollout_id: i64,
        tally: &Tally,
        complete: bool,
    ) -> Result<(), StoreError> {
        let n = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
        let done = sqlx::query(
            "UPDATE vyx_fleet.rollout \
                SET waves_done = $2, moved = $3, failed = $4, rolled_back = $5, \
                    completed_at = CASE WHEN $6 THEN coalesce(completed_at, now()) END, \
                    updated_at = now() \
              WHERE id = $1 AND vyx_fleet.fence($7)",
        )
        .bind(rollout_id)
        .bind(i32::try_from(tally.waves_done).unwrap_or(i32::MAX))
        .bind(n(tally.moved()))
        .bind(n(tally.failed + tally.rolled_back))
        .bind(n(tally.rolled_back))
        .bind(complete)
        .bind(self.term())
        .execute(self.pool())
        .await?;
        self.one_row(done.rows_affected()).await
    }

    /// Persists a halt the decision found (first one wins: an existing halt is kept as it was).
    pub async fn halt_rollout(&self, rollout_id: i64, halt: &Halt) -> Result<(), StoreError> {
        self.halt_rollout_because(rollout_id, halt, None).await
    }

    /// [`halt_rollout`](Self::halt_rollout) with what the failed app showed (`failed app: why`),
    /// so the table, `status` and the alert name the failure, not only the rule that tripped.
    pub(crate) async fn halt_rollout_because(
        &self,
        rollout_id: i64,
        halt: &Halt,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        let reason = match detail {
            Some(d) => format!("{}; {d}", halt.reason),
            None => halt.reason.to_string(),
        };
        let done = sqlx::query(
            "UPDATE vyx_fleet.rollout \
                SET halted = true, halt_kind = $2, halt_reason = $3, halted_at = $4, updated_at = now() \
              WHERE id = $1 AND NOT halted AND vyx_fleet.fence($5)",
        )
        .bind(rollout_id)
        .bind(halt.reason.kind())
        .bind(reason)
        .bind(halt.at)
        .bind(self.term())
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            self.require_fence().await?;
        }
        Ok(())
    }

    /// Records an app's progress in a rollout. Written *before* the Fly update for `Moving` (so a
    /// restarted leader never moves it again for this rollout) and after each verdict.
    ///
    /// The machine version belongs to one move: entering `moving` (or another rollout) replaces it
    /// with `machine_version`, even when that is `None`. Kept from an earlier move, a retry after a
    /// failed update would take the old version for the update's answer, skip the update and judge
    /// the machine on a spec it never received.
    pub async fn set_app_rollout_state(
        &self,
        row_id: Uuid,
        rollout_id: i64,
        wave: u32,
        state: RowRolloutState,
        at: DateTime<Utc>,
        machine_version: Option<&str>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE public.user_fly_apps \
                SET rollout_id = $2, rollout_wave = $3, rollout_state = $4, rollout_state_at = $5, \
                    rollout_machine_version = CASE \
                      WHEN rollout_id IS DISTINCT FROM $2 \
                        OR ($4 = 'moving' AND rollout_state IS DISTINCT FROM 'moving') THEN $6 \
                      ELSE coalesce($6, rollout_machine_version) END, \
                    updated_at = now() \
              WHERE id = $1 AND vyx_fleet.fence($7)",
        )
        .bind(row_id)
        .bind(rollout_id)
        .bind(i32::try_from(wave).unwrap_or(i32::MAX))
        .bind(state.as_str())
        .bind(at)
        .bind(machine_version)
        .bind(self.term())
        .execute(self.pool())
        .await?;
        self.one_row(done.rows_affected()).await
    }

    /// The machine runs `spec_digest` healthily: remember it as the spec to roll back to.
    pub async fn record_healthy_spec(
        &self,
        row_id: Uuid,
        spec_digest: &str,
        image: &str,
        spec: &serde_json::Value,
        image_digest: Option<&str>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE public.user_fly_apps \
                SET spec_digest = $2, healthy_spec_digest = $2, healthy_image = $3, healthy_spec = $4, \
                    image_digest = coalesce($5, image_digest), updated_at = now() \
              WHERE id = $1 AND vyx_fleet.fence($6)",
        )
        .bind(row_id)
        .bind(spec_digest)
        .bind(image)
        .bind(spec)
        .bind(image_digest)
        .bind(self.term())
        .execute(self.pool())
        .await?;
        self.one_row(done.rows_affected()).await
    }

    async fn require_fence(&self) -> Result<(), StoreError> {
        match crate::db::lease::fence_holds(self.pool(), self.term()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::Fenced),
            Err(crate::db::DbError::Query(e)) => Err(StoreError::Sql(e)),
            Err(_) => Err(StoreError::Conflict),
        }
    }

    async fn one_row(&self, affected: u64) -> Result<(), StoreError> {
        if affected == 1 {
            return Ok(());
        }
        self.require_fence().await?;
        Err(StoreError::Conflict)
    }
}

/// One row's progress, for the executor that resumes or judges its move.
pub async fn load_row_progress(
    pool: &PgPool,
    row_id: Uuid,
) -> Result<Option<AppProgress>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id AS row_id, user_id, spec_digest, rollout_id, rollout_state, rollout_wave, \
                rollout_state_at, rollout_machine_version, healthy_spec_digest, healthy_image \
           FROM public.user_fly_apps WHERE id = $1",
    )
    .bind(row_id)
    .fetch_optional(pool)
    .await
}

/// The spec a rollback restores: `healthy_image` and `healthy_spec` (region and machine config).
pub(crate) async fn load_rollback_point(
    pool: &PgPool,
    row_id: Uuid,
) -> Result<Option<(String, serde_json::Value)>, sqlx::Error> {
    let r: Option<(Option<String>, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT healthy_image, healthy_spec FROM public.user_fly_apps WHERE id = $1",
    )
    .bind(row_id)
    .fetch_optional(pool)
    .await?;
    Ok(match r {
        Some((Some(image), Some(spec))) => Some((image, spec)),
        _ => None,
    })
}

impl Store {
    /// The app runs healthily on a spec whose digest is unknown (before this version recorded
    /// digests): keep it as the rollback point without claiming a digest.
    pub(crate) async fn record_rollback_point(
        &self,
        row_id: Uuid,
        image: &str,
        spec: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE public.user_fly_apps SET healthy_image = $2, healthy_spec = $3, updated_at = now() \
              WHERE id = $1 AND vyx_fleet.fence($4)",
        )
        .bind(row_id)
        .bind(image)
        .bind(spec)
        .bind(self.term())
        .execute(self.pool())
        .await?;
        self.one_row(done.rows_affected()).await
    }
}

/// What a machine runs after a rollout step (move, rollback, replacement): the columns the admin
/// page and billing read follow the machine, not the settings of the day the row was made.
#[derive(Debug, Clone)]
pub(crate) struct Running<'a> {
    pub image: &'a str,
    pub config_digest: &'a str,
    pub region: &'a str,
    pub cpus: u32,
    pub memory_mb: u32,
}

impl Store {
    /// A rollback put the machine back on the row's rollback point: the row names that spec
    /// (`spec_digest` = `healthy_spec_digest`, possibly unknown) and no longer claims the target's
    /// `config_digest`, which the machine does not run. Claimed, it would hide an env-only change
    /// from the planner and keep the app on the work list's rollout reason every tick.
    pub(crate) async fn record_rolled_back(
        &self,
        row_id: Uuid,
        image: &str,
        region: &str,
        cpus: u32,
        memory_mb: u32,
    ) -> Result<(), StoreError> {
        let cost = monthly_cost_estimate_usd(cpus, memory_mb);
        let done = sqlx::query(
            "UPDATE public.user_fly_apps \
                SET docker_image = $2, config_digest = NULL, spec_digest = healthy_spec_digest, \
                    deployed_at = now(), region = $3, cpu_count = $4, memory_mb = $5, \
                    monthly_cost_estimate_usd = $6::float8::numeric, updated_at = now() \
              WHERE id = $1 AND vyx_fleet.fence($7)",
        )
        .bind(row_id)
        .bind(image)
        .bind(region)
        .bind(i32::try_from(cpus).unwrap_or(i32::MAX))
        .bind(i32::try_from(memory_mb).unwrap_or(i32::MAX))
        .bind(cost)
        .bind(self.term())
        .execute(self.pool())
        .await?;
        self.one_row(done.rows_affected()).await
    }

    pub(crate) async fn record_running(
        &self,
        row_id: Uuid,
        r: &Running<'_>,
    ) -> Result<(), StoreError> {
        let cost = monthly_cost_estimate_usd(r.cpus, r.memory_mb);
        let done = sqlx::query(
            "UPDATE public.user_fly_apps \
                SET docker_image = $2, config_digest = $3, deployed_at = now(), region = $4, \
                    cpu_count = $5, memory_mb = $6, monthly_cost_estimate_usd = $7::float8::numeric, \
                    updated_at = now() \
              WHERE id = $1 AND vyx_fleet.fence($8)",
        )
        .bind(row_id)
        .bind(r.image)
        .bind(r.config_digest)
        .bind(r.region)
        .bind(i32::try_from(r.cpus).unwrap_or(i32::MAX))
        .bind(i32::try_from(r.memory_mb).unwrap_or(i32::MAX))
        .bind(cost)
        .bind(self.term())
        .execute(self.pool())
        .await?;
        self.one_row(done.rows_affected()).await
    }
}

/// The latest app of `rollout_id` that failed, and why (its rollout failure event), for a halt's
/// reason: `vyx-user-ab12cd34: machine stopped on the new version (its process exited)`.
pub(crate) async fn last_failure(
    pool: &PgPool,
    rollout_id: i64,
    row: Option<Uuid>,
) -> Result<Option<String>, sqlx::Error> {
    let found: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT a.fly_app_name, \
                (SELECT e.metadata->>'reason' FROM public.user_fly_app_events e \
                  WHERE e.fly_app_id = a.id AND e.event_type = 'health_check_failed' \
                    AND e.metadata->>'operation' = 'rollout' \
                  ORDER BY e.created_at DESC LIMIT 1) \
           FROM public.user_fly_apps a \
          WHERE a.rollout_id = $1 AND a.rollout_state IN ('failed', 'rolled_back') \
            AND ($2::uuid IS NULL OR a.id = $2) \
          ORDER BY a.rollout_state_at DESC NULLS LAST LIMIT 1",
    )
    .bind(rollout_id)
    .bind(row)
    .fetch_optional(pool)
    .await?;
    Ok(found.map(|(app, why)| match why {
        Some(why) => format!("{app}: {why}"),
        None => app,
    }))
}
