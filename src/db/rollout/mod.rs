//! The rollout's persisted state: `vyx_fleet.rollout` (one row per target, the current one
//! is the highest id) and the per-app progress columns of `user_fly_apps`.
//!
//! The leader's writes are fenced with `vyx_fleet.fence($term)` like `db::apps`: a deposed leader's
//! late write changes nothing and returns [`StoreError::Fenced`](crate::db::StoreError::Fenced).
//! An operator's `rollout resume` is not fenced (like `confirm-deletions`): it is a person's
//! write, read by the leader on its next pass.
//!
//! Reads feed the pure wave decision (`reconcile::rollout`); nothing here decides.

mod columns_set;
mod writes;

pub(crate) use columns_set::HealthySpec;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::model::app_row::AppRow;
use crate::model::desired::UserFacts;
use crate::model::rollout::{AppState, Halt, HaltReason, Rollout};

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

use columns;

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

/// `SELECT <an app's rollout progress> FROM user_fly_apps <tail>` as one literal (sqlx wants static
/// SQL): the columns [`AppProgress`] reads, for every read of them.
macro_rules! select_progress {
    ($tail:literal) => {
        concat!(
            "SELECT id AS row_id, user_id, spec_digest, rollout_id, rollout_state, rollout_wave, ",
            "rollout_state_at, rollout_machine_version, healthy_spec_digest, healthy_image ",
            "FROM public.user_fly_apps ",
            $tail
        )
    };
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
    sqlx::query_as(select_progress!(
        "WHERE deleted_at IS NULL AND status <> 'deleted' ORDER BY created_at, id"
    ))
    .fetch_all(pool)
    .await
}

/// The full pass's input: the state every live row recorded in `rollout`, by row id. Only rows of
/// that rollout are read (any other is pending or already on the target, which the planner tells
/// from the row), and each is judged as it arrives: holding every row's digests, version and image
/// at once cost the full pass about 50 MB at 100,000 rows for a map a tenth of that.
pub(crate) async fn load_recorded(
    pool: &PgPool,
    rollout: &RolloutRecord,
) -> Result<std::collections::BTreeMap<Uuid, AppState>, sqlx::Error> {
    use futures_util::TryStreamExt;
    let mut recorded = std::collections::BTreeMap::new();
    let mut rows = sqlx::query_as::<_, AppProgress>(select_progress!(
        "WHERE rollout_id = $1 AND deleted_at IS NULL AND status <> 'deleted'"
    ))
    .bind(rollout.id)
    .fetch(pool);
    while let Some(p) = rows.try_next().await? {
        recorded.insert(p.row_id, p.state_in(rollout));
    }
    Ok(recorded)
}

/// One user's live row's progress (a targeted run), by the `user_fly_apps_live_idx` index.
pub(crate) async fn load_user_progress(
    pool: &PgPool,
    user_id: Uuid,
) -> Result<Vec<AppProgress>, sqlx::Error> {
    sqlx::query_as(select_progress!(
        "WHERE user_id = $1 AND deleted_at IS NULL AND status <> 'deleted'"
    ))
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

/// What a rollout step starts from, read in one statement: the row, its rollout columns, and its
/// user's facts (subscription and override), so the step can tell whether the user is still wanted
/// without a read of its own.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct StepInputs {
    #[sqlx(flatten)]
    pub row: AppRow,
    #[sqlx(flatten)]
    pub progress: AppProgress,
    pub tier: Option<String>,
    pub sub_status: Option<String>,
    pub override_desired: Option<String>,
}

impl StepInputs {
    pub(crate) fn facts(&self) -> UserFacts {
        UserFacts {
            user_id: self.row.user_id,
            tier: self.tier.clone(),
            sub_status: self.sub_status.clone(),
            override_desired: self.override_desired.clone(),
        }
    }
}

/// [`StepInputs`] of one row (by primary key; the facts by the user's unique keys).
pub(crate) async fn load_step_inputs(
    pool: &PgPool,
    row_id: Uuid,
) -> Result<Option<StepInputs>, sqlx::Error> {
    sqlx::query_as(crate::db::apps::select_rows!(
        "a.id AS row_id, a.spec_digest, a.rollout_id, a.rollout_state, a.rollout_wave, \
         a.rollout_state_at, a.rollout_machine_version, a.healthy_spec_digest, a.healthy_image, \
         s.tier, s.status AS sub_status, o.desired AS override_desired, ",
        "LEFT JOIN public.user_subscriptions s ON s.user_id = a.user_id \
         LEFT JOIN vyx_fleet.user_fly_app_overrides o ON o.user_id = a.user_id \
         WHERE a.id = $1"
    ))
    .bind(row_id)
    .fetch_optional(pool)
    .await
}

/// One row's progress, for the executor that resumes or judges its move.
pub async fn load_row_progress(
    pool: &PgPool,
    row_id: Uuid,
) -> Result<Option<AppProgress>, sqlx::Error> {
    sqlx::query_as(select_progress!("WHERE id = $1"))
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
