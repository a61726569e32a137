//! Reads and fenced writes of `user_fly_apps`, its events, orphans and operator flags.
//!
//! Every write carries the leader's fencing term and changes nothing unless `vyx_fleet.fence(term)`
//! holds (ARCHITECTURE.md, "Fencing"); a row update and its event commit together.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::BTreeMap;
use uuid::Uuid;

use crate::model::app_row::{AppRow, RowStatus};
use crate::model::desired::{UserFacts, Wanted};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// This replica no longer holds the lease term it acts under; stop acting, a newer leader owns
    /// the fleet.
    #[error("fenced: the leader lease moved on; this replica must stop acting")]
    Fenced,
    /// The name is recorded for another user (`UNIQUE(fly_app_name)`); try the next candidate.
    #[error("app name already recorded for another user")]
    NameRecorded,
    /// The row changed under us (e.g. another writer inserted it first); re-read and retry.
    #[error("row changed concurrently")]
    Conflict,
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
}

/// `SELECT <row columns> FROM user_fly_apps a <tail>` as one literal (sqlx wants static SQL).
macro_rules! select_rows {
    ($tail:literal) => {
        concat!(
            "SELECT a.id, a.user_id, EXISTS (SELECT 1 FROM auth.users u WHERE u.id = a.user_id) AS user_exists, ",
            "a.fly_app_name, a.fly_org_slug, a.status, a.region, a.docker_image, a.health_status, ",
            "a.last_health_check, a.retry_count, a.deleted_at, a.fly_app_id, a.machine_id, a.machine_op_id, ",
            "a.secrets_version, a.secrets_digest, a.ips_ready, a.config_digest, a.next_attempt_at, ",
            "a.unwanted_since, a.last_error_kind FROM public.user_fly_apps a ",
            $tail
        )
    };
}

/// Every user with a subscription or an override, in one query.
pub async fn load_desired_facts(pool: &PgPool) -> Result<Vec<UserFacts>, sqlx::Error> {
    type FactRow = (Uuid, Option<String>, Option<String>, Option<String>);
    let rows: Vec<FactRow> = sqlx::query_as(
        "SELECT u.id, s.tier, s.status, o.desired \
         FROM auth.users u \
         LEFT JOIN public.user_subscriptions s ON s.user_id = u.id \
         LEFT JOIN vyx_fleet.user_fly_app_overrides o ON o.user_id = u.id \
         WHERE s.user_id IS NOT NULL OR o.user_id IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(user_id, tier, sub_status, override_desired)| UserFacts {
            user_id,
            tier,
            sub_status,
            override_desired,
        })
        .collect())
}

/// [`load_desired_facts`] for one user (a NOTIFY names one): three primary-key or unique-index
/// lookups, whatever the number of users.
pub(crate) async fn load_desired_facts_for_user(
    pool: &PgPool,
    user_id: Uuid,
) -> Result<Option<UserFacts>, sqlx::Error> {
    type FactRow = (Uuid, Option<String>, Option<String>, Option<String>);
    let row: Option<FactRow> = sqlx::query_as(
        "SELECT u.id, s.tier, s.status, o.desired \
         FROM auth.users u \
         LEFT JOIN public.user_subscriptions s ON s.user_id = u.id \
         LEFT JOIN vyx_fleet.user_fly_app_overrides o ON o.user_id = u.id \
         WHERE u.id = $1 AND (s.user_id IS NOT NULL OR o.user_id IS NOT NULL)",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    Ok(
        row.map(|(user_id, tier, sub_status, override_desired)| UserFacts {
            user_id,
            tier,
            sub_status,
            override_desired,
        }),
    )
}

pub async fn load_rows(pool: &PgPool) -> Result<Vec<AppRow>, sqlx::Error> {
    let mut rows: Vec<AppRow> = sqlx::query_as(select_rows!("ORDER BY a.created_at, a.id"))
        .fetch_all(pool)
        .await?;
    // Collected by doubling: up to a third of the capacity is empty (15 MB at 100,000 rows), and
    // the full pass holds these rows while it plans.
    rows.shrink_to_fit();
    Ok(rows)
}

pub(crate) async fn load_row(pool: &PgPool, row_id: Uuid) -> Result<Option<AppRow>, sqlx::Error> {
    sqlx::query_as(select_rows!("WHERE a.id = $1"))
        .bind(row_id)
        .fetch_optional(pool)
        .await
}

pub async fn load_row_for_user(
    pool: &PgPool,
    user_id: Uuid,
) -> Result<Option<AppRow>, sqlx::Error> {
    sqlx::query_as(select_rows!("WHERE a.user_id = $1"))
        .bind(user_id)
        .fetch_optional(pool)
        .await
}

pub(crate) async fn load_orphans(
    pool: &PgPool,
) -> Result<BTreeMap<String, DateTime<Utc>>, sqlx::Error> {
    let rows: Vec<(String, DateTime<Utc>)> =
        sqlx::query_as("SELECT app_name, first_seen_at FROM vyx_fleet.orphans")
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

/// An audit event (DESIGN §2 fixed list).
#[derive(Debug, Clone)]
pub struct Event {
    pub event_type: &'static str,
    pub metadata: Value,
    pub error_details: Option<String>,
}

impl Event {
    pub fn new(event_type: &'static str, metadata: Value) -> Self {
        Event {
            event_type,
            metadata,
            error_details: None,
        }
    }
    pub(crate) fn with_error(mut self, details: impl Into<String>) -> Self {
        self.error_details = Some(details.into());
        self
    }
}

/// The fields of a new row at reservation time.
#[derive(Debug, Clone)]
pub(crate) struct NewRow<'a> {
    pub user_id: Uuid,
    pub app_name: &'a str,
    pub org_slug: &'a str,
    pub region: &'a str,
    pub image: &'a str,
    pub cpus: i32,
    pub memory_mb: i32,
    pub monthly_cost_usd: f64,
}

/// A machine config as applied, with the size and place it runs at.
#[derive(Debug, Clone)]
pub(crate) struct Applied<'a> {
    pub image: &'a str,
    pub config_digest: &'a str,
    pub region: &'a str,
    pub cpus: i32,
    pub memory_mb: i32,
    pub monthly_cost_usd: f64,
}

/// Writes under one fencing term.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    term: i64,
}

impl Store {
    pub fn new(pool: PgPool, term: i64) -> Self {
        Store { pool, term }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn term(&self) -> i64 {
        self.term
    }

    async fn fence_holds(&self) -> Result<bool, StoreError> {
        let (ok,): (bool,) = sqlx::query_as("SELECT vyx_fleet.fence($1)")
            .bind(self.term)
            .fetch_one(&self.pool)
            .await?;
        Ok(ok)
    }

    /// `Err(Fenced)` unless this term still holds the lease: for a Fly write that follows a wait
    /// or a read rather than a fenced record (a replica frozen in the wait wakes up deposed).
    pub(crate) async fn check_fence(&self) -> Result<(), StoreError> {
        if self.fence_holds().await? {
            Ok(())
        } else {
            Err(StoreError::Fenced)
        }
    }

    /// Zero rows changed: tell a lost lease from a concurrent change.
    async fn explain_noop(&self) -> StoreError {
        match self.fence_holds().await {
            Ok(false) => StoreError::Fenced,
            Ok(true) => StoreError::Conflict,
            Err(e) => e,
        }
    }

    async fn event_in(
        tx: &mut Transaction<'_, Postgres>,
        row_id: Uuid,
        user_id: Uuid,
        status: &str,
        ev: &Event,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO public.user_fly_app_events \
               (fly_app_id, user_id, event_type, status, metadata, error_details, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp())",
        )
        .bind(row_id)
        .bind(user_id)
        .bind(ev.event_type)
        .bind(status)
        .bind(&ev.metadata)
        .bind(&ev.error_details)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Reserve a name for a user who never had a row: the row is the create-pending marker for the
    /// app (an app with this name in our org is ours from now on).
    pub(crate) async fn insert_row(
        &self,
        new: &NewRow<'_>,
        events: &[Event],
    ) -> Result<Uuid, StoreError> {
        let mut tx = self.pool.begin().await?;
        let res: Result<Option<(Uuid,)>, sqlx::Error> = sqlx::query_as(
            "INSERT INTO public.user_fly_apps \
               (user_id, fly_app_name, fly_org_slug, status, region, docker_image, cpu_count, memory_mb, \
                monthly_cost_estimate_usd, health_status, retry_count) \
             SELECT $1, $2, $3, 'provisioning', $4, $5, $6, $7, $8, 'unknown', 0 \
             WHERE vyx_fleet.fence($9) \
             ON CONFLICT (user_id) DO NOTHING \
             RETURNING id",
        )
        .bind(new.user_id)
        .bind(new.app_name)
        .bind(new.org_slug)
        .bind(new.region)
        .bind(new.image)
        .bind(new.cpus)
        .bind(new.memory_mb)
        .bind(new.monthly_cost_usd)
        .bind(self.term)
        .fetch_optional(&mut *tx)
        .await;
        let id = match res {
            Ok(Some((id,))) => id,
            Ok(None) => {
                drop(tx);
                return Err(self.explain_noop().await);
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::NameRecorded);
            }
            Err(e) => return Err(e.into()),
        };
        for ev in events {
            Self::event_in(&mut tx, id, new.user_id, "provisioning", ev).await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Run one fenced `UPDATE public.user_fly_apps SET <set> WHERE id = $1 AND fence($2)`, with
    /// `extra` binds from `$3` on, and its events, in one transaction.
    async fn update(
        &self,
        row_id: Uuid,
        set: &str,
        binds: Vec<Bind>,
        events: &[Event],
    ) -> Result<(), StoreError> {
        self.update_where(row_id, set, "true", binds, events).await
    }

    /// [`Self::update`] that also needs `guard` (a literal condition on `a`) to hold.
    async fn update_where(
        &self,
        row_id: Uuid,
        set: &str,
        guard: &str,
        binds: Vec<Bind>,
        events: &[Event],
    ) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE public.user_fly_apps a SET {set}, updated_at = now() \
             WHERE a.id = $1 AND vyx_fleet.fence($2) AND ({guard}) RETURNING a.user_id, a.status"
        );
        // `set` is always a literal from this module; every value is a bind parameter.
        let mut q = sqlx::query_as::<_, (Uuid, String)>(sqlx::AssertSqlSafe(sql))
            .bind(row_id)
            .bind(self.term);
        for b in binds {
            q = match b {
                Bind::Text(v) => q.bind(v),
                Bind::TextList(v) => q.bind(v),
                Bind::Int(v) => q.bind(v),
                Bind::Float(v) => q.bind(v),
            };
        }
        let mut tx = self.pool.begin().await?;
        let res = q.fetch_optional(&mut *tx).await;
        let (user_id, status) = match res {
            Ok(Some(r)) => r,
            Ok(None) => {
                drop(tx);
                return Err(self.explain_noop().await);
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::NameRecorded);
            }
            Err(e) => return Err(e.into()),
        };
        for ev in events {
            Self::event_in(&mut tx, row_id, user_id, &status, ev).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Re-upgrade: the soft-deleted row comes back with the same id and name; all progress markers
    /// reset because the old app is gone.
    pub(crate) async fn reuse_row(
        &self,
        row_id: Uuid,
        image: &str,
        events: &[Event],
    ) -> Result<(), StoreError> {
        self.update(
            row_id,
            concat!(
                "status = 'provisioning', deleted_at = NULL, docker_image = $3, ",
                reset_progress!()
            ),
            vec![Bind::Text(Some(image.to_string()))],
            events,
        )
        .await
    }

    /// Events only; the row's status stays as it is.
    pub(crate) async fn add_events(
        &self,
        row_id: Uuid,
        events: &[Event],
    ) -> Result<(), StoreError> {
        self.update(row_id, "status = a.status", vec![], events)
            .await
    }

    /// Resume an `error` row: back to `provisioning` while a converge runs.
    pub(crate) async fn mark_provisioning(
        &self,
        row_id: Uuid,
        events: &[Event],
    ) -> Result<(), StoreError> {
        self.update(row_id, "status = 'provisioning'", vec![], events)
            .await
    }

    /// A collision before the app existed: record the next candidate (DESIGN §3). Refused (zero
    /// rows, `Conflict`) once the row knows a Fly app id: a row that owned an app is never moved
    /// off it, or that app would be left behind as an orphan.
    pub(crate) async fn rename(&self, row_id: Uuid, name: &str) -> Result<(), StoreError> {
        self.update_where(
            row_id,
            concat!("fly_app_name = $3, ", reset_app_markers!()),
            "a.fly_app_id IS NULL",
            vec![Bind::Text(Some(name.to_string()))],
            &[],
        )
        .await
    }

    /// The Fly app behind the row. Called only when the id differs from the recorded one: a new
    /// app (created, adopted, or re-created after being deleted out of band), so every per-app
    /// progress marker describes another app and is reset in this same statement.
    pub(crate) async fn set_app_id(&self, row_id: Uuid, app_id: &str) -> Result<(), StoreError> {
        self.update(
            row_id,
            concat!("fly_app_id = $3, ", reset_app_markers!()),
            vec![Bind::Text(Some(app_id.to_string()))],
            &[],
        )
        .await
    }

    /// Secrets written to the app. The machine only sees them after its next update (REFERENCE
    /// §4.3), so the record of what the machine has applied (`config_digest`) is cleared in the
    /// same statement: until an update carrying this `min_secrets_version` is recorded, the
    /// planner sees config drift, whatever happens in between (crash, lost lease, failed update).
    pub(crate) async fn set_secrets(
        &self,
        row_id: Uuid,
        version: i64,
        digest: &str,
    ) -> Result<(), StoreError> {
        self.update(
            row_id,
            "secrets_version = $3, secrets_digest = $4, config_digest = NULL",
            vec![
                Bind::Int(Some(version)),
                Bind::Text(Some(digest.to_string())),
            ],
            &[],
        )
        .await
    }

    pub(crate) async fn set_ips_ready(&self, row_id: Uuid) -> Result<(), StoreError> {
        self.update(row_id, "ips_ready = true", vec![], &[]).await
    }

    /// Recorded *before* `POST machines`: the op id goes into the machine's metadata, so a create
    /// whose answer was lost is found by it instead of being repeated.
    pub async fn set_machine_op(&self, row_id: Uuid, op: &str) -> Result<(), StoreError> {
        self.update(
            row_id,
            "machine_op_id = $3",
            vec![Bind::Text(Some(op.to_string()))],
            &[],
        )
        .await
    }

    pub(crate) async fn set_machine(
        &self,
        row_id: Uuid,
        machine_id: Option<&str>,
    ) -> Result<(), StoreError> {
        self.update(
            row_id,
            "machine_id = $3",
            vec![Bind::Text(machine_id.map(String::from))],
            &[],
        )
        .await
    }

    /// The machine vanished or is being replaced: forget it and its create marker.
    pub(crate) async fn clear_machine(&self, row_id: Uuid) -> Result<(), StoreError> {
        self.update(
            row_id,
            "machine_id = NULL, machine_op_id = NULL, config_digest = NULL",
            vec![],
            &[],
        )
        .await
    }

    /// What the machine runs from now on. Region, size and cost go with it, so the columns the
    /// admin page and billing read describe the machine (after a region move, a resize, or the
    /// adoption of a row another program recorded), not the settings of the day the row was made.
    pub(crate) async fn set_applied_config(
        &self,
        row_id: Uuid,
        applied: &Applied<'_>,
    ) -> Result<(), StoreError> {
        self.update(
            row_id,
            "docker_image = $3, config_digest = $4, deployed_at = now(), region = $5, \
             cpu_count = $6, memory_mb = $7, monthly_cost_estimate_usd = $8",
            vec![
                Bind::Text(Some(applied.image.to_string())),
                Bind::Text(Some(applied.config_digest.to_string())),
                Bind::Text(Some(applied.region.to_string())),
                Bind::Int(Some(applied.cpus.into())),
                Bind::Int(Some(applied.memory_mb.into())),
                Bind::Float(Some(applied.monthly_cost_usd)),
            ],
            &[],
        )
        .await
    }

    /// Converged: `active`, healthy, backoff cleared.
    pub(crate) async fn mark_active(
        &self,
        row_id: Uuid,
        events: &[Event],
    ) -> Result<(), StoreError> {
        self.update(
            row_id,
            "status = 'active', health_status = 'healthy', last_health_check = now(), \
             retry_count = 0, next_attempt_at = NULL, error_message = NULL, last_error_kind = NULL",
            vec![],
            events,
        )
        .await
    }

    /// A failed attempt: per-user backoff stored in the row (invariant 7), so it survives restarts and
    /// leader changes. `status` is `error` for converges and stays `deprovisioning` for deprovisions.
    pub async fn mark_failure(
        &self,
        row_id: Uuid,
        status: RowStatus,
        kind: &str,
        message: &str,
        retry_in: std::time::Duration,
        events: &[Event],
    ) -> Result<(), StoreError> {
        self.update(
            row_id,
            "status = $3, last_error_kind = $4, error_message = $5, \
             next_attempt_at = now() + $6 * interval '1 millisecond', \
             retry_count = COALESCE(retry_count, 0) + 1",
            vec![
                Bind::Text(Some(status.as_str().to_string())),
                Bind::Text(Some(kind.to_string())),
                Bind::Text(Some(truncate(message, 500))),
                Bind::Int(Some(retry_millis(retry_in))),
            ],
            events,
        )
        .await
    }

    /// The app serves on the new config but fails its checks: keep it (a rollback is a new image),
    /// and let the planner count it towards halting the rollout.
    pub(crate) async fn mark_unhealthy(
        &self,
        row_id: Uuid,
        kind: &str,
        message: &str,
        retry_in: std::time::Duration,
        events: &[Event],
    ) -> Result<(), StoreError> {
        self.update(
            row_id,
            "status = 'error', health_status = 'unhealthy', last_health_check = now(), \
             last_error_kind = $3, error_message = $4, \
             next_attempt_at = now() + $5 * interval '1 millisecond', \
             retry_count = COALESCE(retry_count, 0) + 1",
            vec![
                Bind::Text(Some(kind.to_string())),
                Bind::Text(Some(truncate(message, 500))),
                Bind::Int(Some(retry_millis(retry_in))),
            ],
            events,
        )
        .await
    }

    pub(crate) async fn record_health(
        &self,
        row_id: Uuid,
        healthy: bool,
        events: &[Event],
    ) -> Result<(), StoreError> {
        self.update(
            row_id,
            "health_status = $3, last_health_check = now()",
            vec![Bind::Text(Some(
                if healthy { "healthy" } else { "unhealthy" }.to_string(),
            ))],
            events,
        )
        .await
    }

    /// A probe saw drift: clear what the row claims was applied so the planner converges it.
    pub(crate) async fn forget_applied(
        &self,
        row_id: Uuid,
        config: bool,
        ips: bool,
    ) -> Result<(), StoreError> {
        let set = match (config, ips) {
            (true, true) => "config_digest = NULL, ips_ready = false",
            (true, false) => "config_digest = NULL",
            (false, true) => "ips_ready = false",
            (false, false) => return Ok(()),
        };
        self.update(row_id, set, vec![], &[]).await
    }

    pub async fn mark_unwanted(&self, row_id: Uuid, events: &[Event]) -> Result<(), StoreError> {
        self.update(
            row_id,
            "unwanted_since = COALESCE(unwanted_since, now())",
            vec![],
            events,
        )
        .await
    }

    pub async fn cancel_unwanted(&self, row_id: Uuid, events: &[Event]) -> Result<(), StoreError> {
        self.update(row_id, "unwanted_since = NULL", vec![], events)
            .await
    }

    /// Starts a deprovision: the row → `deprovisioning`. Returns `false`, changing nothing, unless the
    /// row is, at this instant, a live row whose user is unwanted and whose grace is over:
    /// - `unwanted_since` is set and `unwanted_since + grace` has passed (a targeted run that cancelled
    ///   the deprovision cleared it; one that restarted it moved it);
    /// - no override keeps the user: `present`, `paused`, and any value nobody understands (read as
    ///   paused) all do; `absent` lets the deprovision go whatever the subscription;
    /// - without an override, no subscription is paid under `wanted.policy`.
    ///
    /// Why in SQL, in the fenced write itself: the deprovision was planned from a read of the fleet
    /// that may be minutes old when a slot frees up for it; the user may have re-upgraded, an admin
    /// may have paused them, since. The caller must not touch Fly when this returns `false`.
    pub async fn mark_deprovisioning(
        &self,
        row_id: Uuid,
        wanted: &Wanted,
        events: &[Event],
    ) -> Result<bool, StoreError> {
        let grace_ms = wanted
            .deprovision_grace
            .num_milliseconds()
            .clamp(0, i64::MAX / 2);
        let res = self
            .update_where(
                row_id,
                "status = 'deprovisioning'",
                "a.deleted_at IS NULL \
                 AND a.status IN ('active', 'provisioning', 'error') \
                 AND a.unwanted_since IS NOT NULL \
                 AND a.unwanted_since + $3 * interval '1 millisecond' <= now() \
                 AND NOT EXISTS (SELECT 1 FROM vyx_fleet.user_fly_app_overrides o \
                                  WHERE o.user_id = a.user_id AND o.desired IS DISTINCT FROM 'absent') \
                 AND (EXISTS (SELECT 1 FROM vyx_fleet.user_fly_app_overrides o \
                               WHERE o.user_id = a.user_id AND o.desired = 'absent') \
                      OR NOT EXISTS (SELECT 1 FROM public.user_subscriptions s \
                                      WHERE s.user_id = a.user_id \
                                        AND s.tier = ANY($4) AND s.status = ANY($5)))",
                vec![
                    Bind::Int(Some(grace_ms)),
                    Bind::TextList(wanted.policy.tiers.clone()),
                    Bind::TextList(wanted.policy.statuses.clone()),
                ],
                events,
            )
            .await;
        match res {
            Ok(()) => Ok(true),
            // The fence holds, so the guard (or the row's existence) said no.
            Err(StoreError::Conflict) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The app is confirmed gone (404): soft-delete. The row stays for `signals.fly_app_id` and for a
    /// later re-upgrade, which reuses it and its name.
    pub async fn mark_deleted(&self, row_id: Uuid, events: &[Event]) -> Result<(), StoreError> {
        self.update(
            row_id,
            concat!(
                "status = 'deleted', deleted_at = now(), ",
                reset_progress!()
            ),
            vec![],
            events,
        )
        .await
    }

    /// Managed apps no live row owns, as seen by this pass: first sightings recorded, apps no longer
    /// seen forgotten (the grace counts across consecutive observations only).
    pub async fn sync_orphans(&self, names: &[String]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let (ok,): (bool,) = sqlx::query_as("SELECT vyx_fleet.fence($1)")
            .bind(self.term)
            .fetch_one(&mut *tx)
            .await?;
        if !ok {
            return Err(StoreError::Fenced);
        }
        sqlx::query("DELETE FROM vyx_fleet.orphans WHERE NOT (app_name = ANY($1))")
            .bind(names)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO vyx_fleet.orphans (app_name, first_seen_at, last_seen_at) \
             SELECT n, now(), now() FROM unnest($1::text[]) AS n \
             ON CONFLICT (app_name) DO UPDATE SET last_seen_at = now()",
        )
        .bind(names)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn forget_orphan(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM vyx_fleet.orphans WHERE app_name = $1 AND vyx_fleet.fence($2)")
            .bind(name)
            .bind(self.term)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Is this name recorded for a different user? (Our own collision: DESIGN §3.)
    pub(crate) async fn name_recorded_for_other(
        &self,
        name: &str,
        user_id: Uuid,
    ) -> Result<bool, StoreError> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM public.user_fly_apps WHERE fly_app_name = $1 AND user_id <> $2",
        )
        .bind(name)
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }
}

/// The progress markers of an app that no longer exists (deleted, or about to be provisioned anew
/// on a reused row): both ends of a deprovision clear the same set.
macro_rules! reset_progress {
    () => {
        concat!(
            "fly_app_id = NULL, ",
            reset_app_markers!(),
            ", unwanted_since = NULL, next_attempt_at = NULL, retry_count = 0, \
             error_message = NULL, last_error_kind = NULL, health_status = 'unknown'"
        )
    };
}
use reset_progress;

/// What the row knows about the inside of one particular Fly app. Whenever the app behind the row
/// changes (new id, new name), all of it describes another app and is cleared in the same
/// statement: a crash can never leave a new app paired with the old app's secrets or IPs. The
/// rollout progress is part of it: a machine's `moving`/`failed` and the version an update returned
/// describe that machine in that rollout, and read on a re-provisioned app they would roll back,
/// or count toward a halt, an app that never ran the target.
macro_rules! reset_app_markers {
    () => {
        "machine_id = NULL, machine_op_id = NULL, secrets_version = NULL, secrets_digest = NULL, \
         ips_ready = false, config_digest = NULL, spec_digest = NULL, rollout_id = NULL, \
         rollout_state = NULL, rollout_wave = NULL, rollout_state_at = NULL, \
         rollout_machine_version = NULL"
    };
}
use reset_app_markers;

/// The backoff as milliseconds for SQL: stored as `now() + delay` on the database's clock, the clock
/// the planner judges it with (a replica's skewed clock would stretch or cut it).
fn retry_millis(retry_in: std::time::Duration) -> i64 {
    i64::try_from(retry_in.as_millis()).unwrap_or(3_600_000)
}

enum Bind {
    Text(Option<String>),
    TextList(Vec<String>),
    Int(Option<i64>),
    Float(Option<f64>),
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
