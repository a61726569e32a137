//! Reads and fenced writes of `user_fly_apps`, its events, orphans and operator flags.
//!
//! Every write carries the leader's fencing term and changes nothing unless `vyx_fleet.fence(term)`
//! holds (ARCHITECTURE.md, "Fencing"); a row update and its event commit together.

mod deprovision;
mod progress;
mod read;

use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

pub(in crate::db) use read::select_rows;
pub use read::{load_desired_facts, load_row_for_user, load_rows};
pub(crate) use read::{load_desired_facts_for_user, load_orphans, load_row};

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
        let mut tx = crate::db::begin(&self.pool).await?;
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
    /// `extra` binds from `$3` on, and its events, in one statement (so one round trip, and one
    /// implicit transaction: the row and its events commit together or not at all).
    pub(in crate::db) async fn update(
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
        // The events' parameters follow the caller's; each event is stamped in its list order
        // (a microsecond apart at least), so a timeline sorted by time reads as they were written.
        let ev = 3 + binds.len();
        let sql = format!(
            "WITH u AS (UPDATE public.user_fly_apps a SET {set}, updated_at = now() \
                         WHERE a.id = $1 AND vyx_fleet.fence($2) AND ({guard}) \
                     RETURNING a.id, a.user_id, a.status), \
                  e AS (INSERT INTO public.user_fly_app_events \
                          (fly_app_id, user_id, event_type, status, metadata, error_details, created_at) \
                        SELECT u.id, u.user_id, ev.t, u.status, ev.m, ev.d, \
                               clock_timestamp() + (ev.n - 1) * interval '1 microsecond' \
                          FROM u, unnest(${ev}::text[], ${}::jsonb[], ${}::text[]) \
                               WITH ORDINALITY AS ev(t, m, d, n)) \
             SELECT user_id, status FROM u",
            ev + 1,
            ev + 2
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
                Bind::Json(v) => q.bind(v),
                Bind::Time(v) => q.bind(v),
            };
        }
        let q = q
            .bind(events.iter().map(|e| e.event_type).collect::<Vec<_>>())
            .bind(
                events
                    .iter()
                    .map(|e| e.metadata.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(|e| e.error_details.clone())
                    .collect::<Vec<_>>(),
            );
        match q.fetch_optional(&self.pool).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(self.explain_noop().await),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::NameRecorded)
            }
            Err(e) => Err(e.into()),
        }
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
}

/// Converged: `active`, healthy, backoff cleared (`mark_active`, and a rollout's verdict).
macro_rules! active {
    () => {
        "status = 'active', health_status = 'healthy', last_health_check = now(), \
         retry_count = 0, next_attempt_at = NULL, error_message = NULL, last_error_kind = NULL"
    };
}
pub(crate) use active;

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

pub(in crate::db) enum Bind {
    Text(Option<String>),
    TextList(Vec<String>),
    Int(Option<i64>),
    Float(Option<f64>),
    Json(Option<Value>),
    Time(Option<chrono::DateTime<chrono::Utc>>),
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
