//! The admin console's user page (the row, the override, the events) and the controls' writes. Every
//! write is one an admin could run by hand in SQL; the reconcile loop reads them on its next pass.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::admins::{self, Action};
use super::console::ConsoleRow;
use super::notify;

/// What an override asks for (`vyx_fleet.user_fly_app_overrides.desired`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Desired {
    /// Provision now, whatever the tier.
    Present,
    /// Deprovision, whatever the tier.
    Absent,
    /// Leave alone: observed and reported, never changed.
    Paused,
}

impl Desired {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Desired::Present => "present",
            Desired::Absent => "absent",
            Desired::Paused => "paused",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Desired> {
        match s {
            "present" => Some(Desired::Present),
            "absent" => Some(Desired::Absent),
            "paused" => Some(Desired::Paused),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Override {
    pub desired: String,
    pub reason: Option<String>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The user's facts outside the app row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct UserFacts {
    pub user_id: Uuid,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub tier: String,
    pub subscription_status: Option<String>,
}

/// What the controller last recorded about the user's Fly app (it does not poll Fly for the page).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct MachineRecord {
    pub fly_app_id: Option<String>,
    pub machine_id: Option<String>,
    pub machine_op_id: Option<String>,
    pub ips_ready: bool,
    pub deployed_at: Option<DateTime<Utc>>,
    pub last_health_check: Option<DateTime<Utc>>,
    pub config_digest: Option<String>,
    pub unwanted_since: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct EventRow {
    pub created_at: DateTime<Utc>,
    pub event_type: String,
    pub status: Option<String>,
    pub error_details: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Clone)]
pub(crate) struct UserPage {
    pub facts: UserFacts,
    pub row: Option<ConsoleRow>,
    pub machine: Option<MachineRecord>,
    pub override_: Option<Override>,
    pub events: Vec<EventRow>,
    /// What admins did about this user (override history included), newest first.
    pub actions: Vec<admins::ActionRow>,
}

/// Newest events shown on the user page.
pub(crate) const TIMELINE_LIMIT: i64 = 200;

/// `None` when no such user exists in `auth.users`.
pub(crate) async fn load_user(
    pool: &PgPool,
    user_id: Uuid,
) -> Result<Option<UserPage>, sqlx::Error> {
    let facts: Option<UserFacts> = sqlx::query_as(
        "SELECT u.id AS user_id, coalesce(p.email, u.email) AS email, p.display_name,
                coalesce(s.tier, 'free') AS tier, s.status AS subscription_status
           FROM auth.users u
           LEFT JOIN public.user_profiles p ON p.id = u.id
           LEFT JOIN public.user_subscriptions s ON s.user_id = u.id
          WHERE u.id = $1",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    let Some(facts) = facts else {
        return Ok(None);
    };
    // The live row if any, else the latest soft-deleted one (its history is still the user's story).
    let row: Option<ConsoleRow> = sqlx::query_as(
        "SELECT * FROM vyx_fleet.app_console WHERE user_id = $1
          ORDER BY deleted_at IS NULL DESC, last_change DESC LIMIT 1",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    let machine: Option<MachineRecord> = match &row {
        Some(r) => sqlx::query_as(
            "SELECT fly_app_id, machine_id, machine_op_id, ips_ready, deployed_at, last_health_check,
                    config_digest, unwanted_since, created_at
               FROM public.user_fly_apps WHERE id = $1",
        )
        .bind(r.row_id)
        .fetch_optional(pool)
        .await?,
        None => None,
    };
    let override_: Option<Override> = sqlx::query_as(
        "SELECT desired, reason, created_by, created_at
           FROM vyx_fleet.user_fly_app_overrides WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    let events: Vec<EventRow> = sqlx::query_as(
        "SELECT created_at, event_type, status, error_details, metadata
           FROM public.user_fly_app_events WHERE user_id = $1
          ORDER BY created_at DESC LIMIT $2",
    )
    .bind(user_id)
    .bind(TIMELINE_LIMIT)
    .fetch_all(pool)
    .await?;
    let actions = admins::user_actions(pool, user_id, TIMELINE_LIMIT).await?;
    Ok(Some(UserPage {
        facts,
        row,
        machine,
        override_,
        events,
        actions,
    }))
}

/// The override now in force for `user_id`, read under a row lock so the trail's "before" is what
/// the write replaced.
async fn current_override(
    tx: &mut Transaction<'_, Postgres>,
    user_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT desired FROM vyx_fleet.user_fly_app_overrides WHERE user_id = $1 FOR UPDATE",
    )
    .bind(user_id)
    .fetch_optional(&mut **tx)
    .await
}

/// Sets (or replaces) the user's override, and records who, why and what it replaced in the trail,
/// in one transaction; the table's NOTIFY trigger starts a pass at once.
pub(crate) async fn set_override(
    pool: &PgPool,
    user_id: Uuid,
    desired: Desired,
    reason: &str,
    by: &str,
    action: &'static str,
) -> Result<(), sqlx::Error> {
    let mut tx = crate::db::begin(pool).await?;
    let before = current_override(&mut tx, user_id).await?;
    sqlx::query(
        "INSERT INTO vyx_fleet.user_fly_app_overrides (user_id, desired, reason, created_by, created_at)
         VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (user_id) DO UPDATE
            SET desired = EXCLUDED.desired, reason = EXCLUDED.reason,
                created_by = EXCLUDED.created_by, created_at = EXCLUDED.created_at",
    )
    .bind(user_id)
    .bind(desired.as_str())
    .bind(reason)
    .bind(by)
    .execute(&mut *tx)
    .await?;
    let a = Action::new(by, action)
        .user(user_id)
        .reason(reason)
        .before(before.as_deref().unwrap_or(NO_OVERRIDE))
        .after(desired.as_str());
    admins::record(&mut tx, &a).await?;
    tx.commit().await
}

/// How the trail names "no override: follows the tier".
const NO_OVERRIDE: &str = "follows tier";

/// Removes the override (the user follows the tier again), recorded in the trail with what it was.
/// `false` if there was none (nothing is recorded then).
pub(crate) async fn clear_override(
    pool: &PgPool,
    user_id: Uuid,
    reason: Option<&str>,
    by: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = crate::db::begin(pool).await?;
    let Some(before) = current_override(&mut tx, user_id).await? else {
        return Ok(false);
    };
    sqlx::query("DELETE FROM vyx_fleet.user_fly_app_overrides WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    let mut a = Action::new(by, "override_clear")
        .user(user_id)
        .before(&before)
        .after(NO_OVERRIDE);
    if let Some(r) = reason {
        a = a.reason(r);
    }
    admins::record(&mut tx, &a).await?;
    tx.commit().await?;
    Ok(true)
}

/// "Retry now": ends the row's backoff, recorded in the trail. The row table has no NOTIFY trigger,
/// so one is sent by hand (delivered on commit) to wake the leader instead of waiting for the
/// interval. `false` if the live row was not waiting.
pub(crate) async fn retry_now(pool: &PgPool, user_id: Uuid, by: &str) -> Result<bool, sqlx::Error> {
    let mut tx = crate::db::begin(pool).await?;
    let was: Option<(String, DateTime<Utc>)> = sqlx::query_as(
        "UPDATE public.user_fly_apps a SET next_attempt_at = NULL
           FROM (SELECT id, next_attempt_at FROM public.user_fly_apps
                  WHERE user_id = $1 AND deleted_at IS NULL AND next_attempt_at IS NOT NULL
                  FOR UPDATE) old
          WHERE a.id = old.id
          RETURNING a.fly_app_name, old.next_attempt_at",
    )
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((app, next)) = was else {
        return Ok(false);
    };
    let a = Action::new(by, "retry_now")
        .user(user_id)
        .app(&app)
        .before(&format!(
            "backoff until {}",
            next.format("%Y-%m-%d %H:%M:%S UTC")
        ))
        .after("retry now");
    admins::record(&mut tx, &a).await?;
    notify::send(&mut tx, &user_id.to_string()).await?;
    tx.commit().await?;
    Ok(true)
}

pub(crate) async fn user_exists(pool: &PgPool, user_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM auth.users WHERE id = $1)")
        .bind(user_id)
        .fetch_one(pool)
        .await
}
