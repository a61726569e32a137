//! Health probing and repair state (issue 7 item 6): the per-app columns of migration
//! `20261130000600_health_repair.sql`, read once per pass for the planner and written by the probe
//! and repair executors (fenced like every leader write).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::BTreeMap;
use uuid::Uuid;

use crate::db::apps::{Store, StoreError};

/// One live row's probe and repair state.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct HealthState {
    pub unhealthy_since: Option<DateTime<Utc>>,
    pub last_probed_at: Option<DateTime<Utc>>,
    pub repair_step: Option<String>,
    pub repair_step_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    #[sqlx(flatten)]
    state: HealthState,
}

/// Every live row's state, by row id.
pub async fn load(pool: &PgPool) -> Result<BTreeMap<Uuid, HealthState>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, unhealthy_since, last_probed_at, repair_step, repair_step_at \
           FROM public.user_fly_apps WHERE deleted_at IS NULL AND status <> 'deleted'",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.state)).collect())
}

impl Store {
    /// A probe read the app. `healthy` is its verdict: an unhealthy spell starts (kept if one is
    /// running) or ends (with its repair steps).
    pub async fn record_probe(&self, row_id: Uuid, healthy: bool) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE public.user_fly_apps SET last_probed_at = now(), \
                    unhealthy_since = CASE WHEN $2 THEN NULL ELSE coalesce(unhealthy_since, now()) END, \
                    repair_step = CASE WHEN $2 THEN NULL ELSE repair_step END, \
                    repair_step_at = CASE WHEN $2 THEN NULL ELSE repair_step_at END \
              WHERE id = $1 AND vyx_fleet.fence($3)",
        )
        .bind(row_id)
        .bind(healthy)
        .bind(self.term())
        .execute(self.pool())
        .await?;
        self.expect_one(done.rows_affected()).await
    }

    /// A repair step is about to be taken: recorded before its Fly calls, so a crash never takes
    /// it twice within one `REPAIR_AFTER`.
    pub async fn record_repair_step(&self, row_id: Uuid, step: &str) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE public.user_fly_apps SET repair_step = $2, repair_step_at = now() \
              WHERE id = $1 AND vyx_fleet.fence($3)",
        )
        .bind(row_id)
        .bind(step)
        .bind(self.term())
        .execute(self.pool())
        .await?;
        self.expect_one(done.rows_affected()).await
    }

    async fn expect_one(&self, affected: u64) -> Result<(), StoreError> {
        if affected == 1 {
            return Ok(());
        }
        match crate::db::lease::fence_holds(self.pool(), self.term()).await {
            Ok(false) => Err(StoreError::Fenced),
            _ => Err(StoreError::Conflict),
        }
    }
}
