//! What on-call needs on the dashboard, read in a few bounded statements: the active alerts, the
//! orphans and when each goes, the apps failing now, and the newest events across users.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// Rows shown in each on-call list (the full picture is one filter away in the app table).
pub(crate) const ONCALL_ROWS: i64 = 20;

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct ActiveAlert {
    pub kind: String,
    pub started_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Orphan {
    pub app_name: String,
    pub first_seen_at: DateTime<Utc>,
    pub delete_after: DateTime<Utc>,
}

/// A live app that needs a look now: in `error`, unhealthy, or waiting out a backoff.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Failing {
    pub user_id: Uuid,
    pub app_name: String,
    pub email: Option<String>,
    pub status: String,
    pub health: String,
    pub last_error_kind: Option<String>,
    pub retry_count: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct FeedEvent {
    pub created_at: DateTime<Utc>,
    pub user_id: Option<Uuid>,
    pub email: Option<String>,
    pub event_type: String,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct OnCall {
    pub alerts: Vec<ActiveAlert>,
    pub orphans: Vec<Orphan>,
    pub orphan_count: i64,
    pub failing: Vec<Failing>,
    pub failing_count: i64,
    pub feed: Vec<FeedEvent>,
}

pub(crate) async fn load(pool: &PgPool, orphan_grace_secs: f64) -> Result<OnCall, sqlx::Error> {
    let alerts = sqlx::query_as(
        "SELECT kind, started_at FROM vyx_fleet.alerts WHERE active ORDER BY started_at, kind",
    )
    .fetch_all(pool)
    .await?;
    let orphans = sqlx::query_as(
        "SELECT app_name, first_seen_at, first_seen_at + make_interval(secs => $1) AS delete_after
           FROM vyx_fleet.orphans ORDER BY first_seen_at, app_name LIMIT $2",
    )
    .bind(orphan_grace_secs)
    .bind(ONCALL_ROWS)
    .fetch_all(pool)
    .await?;
    let orphan_count = sqlx::query_scalar("SELECT count(*) FROM vyx_fleet.orphans")
        .fetch_one(pool)
        .await?;
    let failing = sqlx::query_as(
        "SELECT user_id, app_name, email, status, health, last_error_kind, retry_count,
                next_attempt_at
           FROM vyx_fleet.app_console
          WHERE deleted_at IS NULL
            AND (status = 'error' OR health = 'unhealthy' OR next_attempt_at > now())
          ORDER BY retry_count DESC, app_name LIMIT $1",
    )
    .bind(ONCALL_ROWS)
    .fetch_all(pool)
    .await?;
    let failing_count = sqlx::query_scalar(
        "SELECT count(*) FROM public.user_fly_apps
          WHERE deleted_at IS NULL
            AND (status = 'error' OR health_status = 'unhealthy' OR next_attempt_at > now())",
    )
    .fetch_one(pool)
    .await?;
    let feed = sqlx::query_as(
        "SELECT e.created_at, e.user_id, coalesce(p.email, u.email) AS email, e.event_type
           FROM (SELECT created_at, user_id, event_type FROM public.user_fly_app_events
                  ORDER BY created_at DESC LIMIT $1) e
           LEFT JOIN public.user_profiles p ON p.id = e.user_id
           LEFT JOIN auth.users u ON u.id = e.user_id
          ORDER BY e.created_at DESC",
    )
    .bind(ONCALL_ROWS)
    .fetch_all(pool)
    .await?;
    Ok(OnCall {
        alerts,
        orphans,
        orphan_count,
        failing,
        failing_count,
        feed,
    })
}
