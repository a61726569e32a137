//! The blast-radius breaker's persisted state (invariant 6): deletions performed, for the sliding
//! window, and the deletions held back when it tripped, which a confirmation covers exactly.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// How long a confirmation stays valid: it answers the alert an operator is looking at, not some
/// mass deletion days later.
pub const CONFIRMATION_TTL_MINUTES: i32 = 15;

/// One deletion the breaker holds back (`vyx_fleet.held_deletions`).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct HeldDeletion {
    pub app_name: String,
    /// The user whose app would be deprovisioned; `None` for an orphan.
    pub user_id: Option<Uuid>,
    /// `deprovision` or `orphan`.
    pub kind: String,
    pub held_at: DateTime<Utc>,
    /// Set while a confirmation is valid (younger than [`CONFIRMATION_TTL_MINUTES`]).
    pub confirmed_at: Option<DateTime<Utc>>,
    pub confirmed_by: Option<String>,
}

/// Every held deletion, oldest first; an expired confirmation reads as none.
pub async fn load_held(pool: &PgPool) -> Result<Vec<HeldDeletion>, sqlx::Error> {
    sqlx::query_as(
        "SELECT app_name, user_id, kind, held_at,
                CASE WHEN confirmed_at > now() - make_interval(mins => $1) THEN confirmed_at END
                    AS confirmed_at,
                CASE WHEN confirmed_at > now() - make_interval(mins => $1) THEN confirmed_by END
                    AS confirmed_by
           FROM vyx_fleet.held_deletions
          ORDER BY held_at, app_name",
    )
    .bind(CONFIRMATION_TTL_MINUTES)
    .fetch_all(pool)
    .await
}

/// An operator's confirmation (`confirm-deletions`, the dashboard): covers exactly the deletions held
/// now, and nothing that trips the breaker later. Returns how many it covers. Not fenced: it is an
/// operator's write, like an override, and the leader reads it on its next pass.
pub async fn confirm_held(pool: &PgPool, by: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE vyx_fleet.held_deletions
            SET confirmed_at = now(), confirmed_by = $1",
    )
    .bind(by)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
