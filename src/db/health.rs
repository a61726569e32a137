//! Health probing and repair state: the per-app columns of migration
//! `20261130000600_health_repair.sql`, read once per pass for the planner, written by the prober
//! (transitions only, one statement per round) and the repair executor (fenced like every leader
//! write).

use sqlx::PgPool;
use std::collections::BTreeMap;
use uuid::Uuid;

use crate::db::apps::{Store, StoreError};

pub(crate) use crate::model::health::HealthState;

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    #[sqlx(flatten)]
    state: HealthState,
}

/// The state of every live row in an unhealthy spell, by row id. The repair ladder starts from
/// `unhealthy_since` (`plan_health::due_step`), so a row without one is due for nothing and is left
/// out: a healthy fleet of 100,000 apps costs the full pass an empty map, where every row's state
/// was about 12 MB held beside the rows while it planned.
pub async fn load(pool: &PgPool) -> Result<BTreeMap<Uuid, HealthState>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, unhealthy_since, last_probed_at, repair_step, repair_step_at \
           FROM public.user_fly_apps \
          WHERE deleted_at IS NULL AND status <> 'deleted' AND unhealthy_since IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.state)).collect())
}

/// An app the prober watches: an `active` live row, and what the row says of its health.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct ProbeTarget {
    pub row_id: Uuid,
    pub app: String,
    /// `Some(healthy)` when `health_status` and the unhealthy spell agree (healthy without a spell,
    /// unhealthy with one); `None` otherwise, so the first verdict is written whatever it is.
    pub known: Option<bool>,
}

/// Every `active` live row, for the prober (one read per `HEALTH_PROBE_INTERVAL`).
pub(crate) async fn probe_targets(pool: &PgPool) -> Result<Vec<ProbeTarget>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id AS row_id, fly_app_name AS app, \
                CASE WHEN health_status = 'healthy' AND unhealthy_since IS NULL THEN true \
                     WHEN health_status = 'unhealthy' AND unhealthy_since IS NOT NULL THEN false \
                END AS known \
           FROM public.user_fly_apps WHERE deleted_at IS NULL AND status = 'active'",
    )
    .fetch_all(pool)
    .await
}

/// A prober verdict that differs from what it last knew of the row.
#[derive(Debug, Clone)]
pub(crate) struct Verdict {
    pub row_id: Uuid,
    pub healthy: bool,
    /// The event's metadata (`machine_id`, `detail`), written only on a transition.
    pub metadata: serde_json::Value,
}

impl Store {
    /// Record `verdicts` in one statement: rows whose `health_status` or unhealthy spell disagree
    /// with their verdict are updated (`health_status`, `last_health_check`, `last_probed_at`, the
    /// spell and its repair steps) and a `health_check_passed`/`health_check_failed` event is
    /// written where `health_status` changes. Rows that already agree are not touched. Returns the
    /// rows whose status changed. Fenced: a deposed leader's round writes nothing.
    pub(crate) async fn record_verdicts(
        &self,
        verdicts: &[Verdict],
    ) -> Result<Vec<Uuid>, StoreError> {
        if verdicts.is_empty() {
            return Ok(vec![]);
        }
        let ids: Vec<Uuid> = verdicts.iter().map(|v| v.row_id).collect();
        let healthy: Vec<bool> = verdicts.iter().map(|v| v.healthy).collect();
        let meta: Vec<serde_json::Value> = verdicts.iter().map(|v| v.metadata.clone()).collect();
        let rows: Vec<(Uuid, bool)> = sqlx::query_as(
            "WITH v AS (SELECT * FROM unnest($1::uuid[], $2::bool[], $3::jsonb[]) AS v(id, healthy, meta)), \
             cur AS ( \
               SELECT a.id, a.health_status AS was, v.healthy, v.meta, \
                      CASE WHEN v.healthy THEN 'healthy' ELSE 'unhealthy' END AS now_status \
                 FROM public.user_fly_apps a JOIN v ON v.id = a.id \
                WHERE a.deleted_at IS NULL), \
             up AS ( \
               UPDATE public.user_fly_apps a SET health_status = cur.now_status, \
                      last_health_check = now(), last_probed_at = now(), updated_at = now(), \
                      unhealthy_since = CASE WHEN cur.healthy THEN NULL ELSE coalesce(a.unhealthy_since, now()) END, \
                      repair_step = CASE WHEN cur.healthy THEN NULL ELSE a.repair_step END, \
                      repair_step_at = CASE WHEN cur.healthy THEN NULL ELSE a.repair_step_at END \
                 FROM cur \
                WHERE a.id = cur.id AND vyx_fleet.fence($4) \
                  AND (a.health_status IS DISTINCT FROM cur.now_status \
                       OR (cur.healthy AND a.unhealthy_since IS NOT NULL) \
                       OR (NOT cur.healthy AND a.unhealthy_since IS NULL)) \
               RETURNING a.id, a.user_id, a.status, cur.was IS DISTINCT FROM cur.now_status AS changed, \
                         cur.healthy, cur.meta), \
             ev AS ( \
               INSERT INTO public.user_fly_app_events \
                      (fly_app_id, user_id, event_type, status, metadata, created_at) \
               SELECT id, user_id, \
                      CASE WHEN healthy THEN 'health_check_passed' ELSE 'health_check_failed' END, \
                      status, meta, clock_timestamp() \
                 FROM up WHERE changed RETURNING 1) \
             SELECT id, changed FROM up",
        )
        .bind(&ids)
        .bind(&healthy)
        .bind(&meta)
        .bind(self.term())
        .fetch_all(self.pool())
        .await?;
        if rows.is_empty()
            && matches!(
                crate::db::lease::fence_holds(self.pool(), self.term()).await,
                Ok(false)
            )
        {
            return Err(StoreError::Fenced);
        }
        Ok(rows
            .into_iter()
            .filter_map(|(id, changed)| changed.then_some(id))
            .collect())
    }

    /// A repair step is about to be taken: recorded before its Fly calls, so a crash never takes
    /// it twice within one `REPAIR_AFTER`.
    pub(crate) async fn record_repair_step(
        &self,
        row_id: Uuid,
        step: &str,
    ) -> Result<(), StoreError> {
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
