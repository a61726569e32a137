//! Alert state (`vyx_fleet.alerts`) and the conditions behind each alert, read from the database so
//! that every replica (the standby included) sees the same picture.
//!
//! # Guarantees
//! - Each start, update and clear is claimed by one conditional statement; when both replicas evaluate
//!   the same change, exactly one gets the row back and sends the message.
//! - A start within `repeat` of the kind's previous message is recorded but not announced, and then
//!   neither is its clear: a flapping condition sends at most one message per `repeat`. A suppressed
//!   start is announced once `repeat` has passed if the condition still holds.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// What a claim entitles the caller to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Nothing to send (another replica did, or the repeat interval forbids it).
    Nothing,
    /// The condition started (or was first announced): send a start message.
    Start,
    /// Still firing with different apps or users: send an update.
    Update,
    /// The announced condition ended: send a clear message.
    Clear,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The condition `kind` holds with `subject` (the names it concerns, in a stable order).
pub(crate) async fn claim_firing(
    pool: &PgPool,
    kind: &str,
    subject: &str,
    repeat: Duration,
) -> Result<Claim, sqlx::Error> {
    let started: Option<bool> = sqlx::query_scalar(
        "INSERT INTO vyx_fleet.alerts AS a
                (kind, active, subject, started_at, cleared_at, notified_at, start_notified)
         VALUES ($1, true, $2, now(), NULL, now(), true)
         ON CONFLICT (kind) DO UPDATE
            SET active = true, subject = EXCLUDED.subject, started_at = now(), cleared_at = NULL,
                start_notified = (a.notified_at IS NULL
                                  OR a.notified_at <= now() - make_interval(secs => $3)),
                notified_at = CASE
                    WHEN a.notified_at IS NULL OR a.notified_at <= now() - make_interval(secs => $3)
                    THEN now() ELSE a.notified_at END
          WHERE NOT a.active
         RETURNING start_notified",
    )
    .bind(kind)
    .bind(subject)
    .bind(secs(repeat))
    .fetch_optional(pool)
    .await?;
    match started {
        Some(true) => return Ok(Claim::Start),
        Some(false) => return Ok(Claim::Nothing),
        None => {}
    }
    // Already active: announce a changed subject, or a start the repeat limit held back, once the
    // limit allows.
    let updated: Option<bool> = sqlx::query_scalar(
        "UPDATE vyx_fleet.alerts AS a
            SET subject = $2, notified_at = now(), start_notified = true
           FROM (SELECT start_notified AS was FROM vyx_fleet.alerts WHERE kind = $1) AS old
          WHERE a.kind = $1 AND a.active
            AND (a.subject <> $2 OR NOT a.start_notified)
            AND (a.notified_at IS NULL OR a.notified_at <= now() - make_interval(secs => $3))
         RETURNING old.was",
    )
    .bind(kind)
    .bind(subject)
    .bind(secs(repeat))
    .fetch_optional(pool)
    .await?;
    Ok(match updated {
        Some(true) => Claim::Update,
        Some(false) => Claim::Start,
        None => Claim::Nothing,
    })
}

/// The condition `kind` does not hold.
pub(crate) async fn claim_resolved(pool: &PgPool, kind: &str) -> Result<Claim, sqlx::Error> {
    let announced: Option<bool> = sqlx::query_scalar(
        "UPDATE vyx_fleet.alerts
            SET active = false, cleared_at = now(),
                notified_at = CASE WHEN start_notified THEN now() ELSE notified_at END
          WHERE kind = $1 AND active
         RETURNING start_notified",
    )
    .bind(kind)
    .fetch_optional(pool)
    .await?;
    Ok(if announced == Some(true) {
        Claim::Clear
    } else {
        Claim::Nothing
    })
}

/// A live app and its user, as named in a message.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct AppRef {
    pub app_name: String,
    pub user_id: Uuid,
}

/// Live apps unhealthy for longer than `after`: since the first failed check after the last passed
/// check (or completed provision), or since the row's last change when no event says.
pub(crate) async fn unhealthy_apps(
    pool: &PgPool,
    after: Duration,
) -> Result<Vec<AppRef>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.fly_app_name AS app_name, a.user_id
           FROM public.user_fly_apps a
          WHERE a.deleted_at IS NULL AND a.health_status = 'unhealthy'
            AND coalesce(
                  (SELECT min(e.created_at) FROM public.user_fly_app_events e
                    WHERE e.fly_app_id = a.id AND e.event_type = 'health_check_failed'
                      AND e.created_at > coalesce(
                          (SELECT max(p.created_at) FROM public.user_fly_app_events p
                            WHERE p.fly_app_id = a.id
                              AND p.event_type IN ('health_check_passed', 'provision_completed')),
                          '-infinity')),
                  a.updated_at) <= now() - make_interval(secs => $1)
          ORDER BY a.fly_app_name",
    )
    .bind(secs(after))
    .fetch_all(pool)
    .await
}

/// Live rows whose converge or deprovision has failed `threshold` times in a row.
pub(crate) async fn failing_apps(
    pool: &PgPool,
    threshold: i32,
) -> Result<Vec<AppRef>, sqlx::Error> {
    sqlx::query_as(
        "SELECT fly_app_name AS app_name, user_id FROM public.user_fly_apps
          WHERE deleted_at IS NULL AND coalesce(retry_count, 0) >= $1
          ORDER BY fly_app_name",
    )
    .bind(threshold)
    .fetch_all(pool)
    .await
}

/// Apps under the managed prefix that no row owns, as the leader last recorded them.
pub(crate) async fn orphans(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT app_name FROM vyx_fleet.orphans ORDER BY app_name")
        .fetch_all(pool)
        .await
}

/// The database's clock, so staleness is judged like the lease: replicas' clocks do not matter.
pub(crate) async fn db_now(pool: &PgPool) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar("SELECT now()").fetch_one(pool).await
}
