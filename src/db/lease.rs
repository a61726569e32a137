//! Leader lease with a fencing term, kept in `vyx_fleet.lease` (row `'controller'`).
//!
//! Not a session advisory lock: through a pooler, or after a half-dead connection, such a lock can outlive
//! its holder or be held by nobody we can see. A row with an expiry can always be inspected and taken over.
//!
//! # Expected flow
//! 1. Every replica calls [`try_acquire`] every `renew_every`; the one that gets a term leads.
//! 2. The leader calls [`renew`] every `renew_every` (well under `ttl`); `false` means it lost the lease:
//!    it must stop writing at once and go back to 1.
//! 3. Every controller write carries `AND vyx_fleet.fence($term)`, so a deposed leader that has not yet
//!    noticed writes nothing. The fence locks the lease row FOR KEY SHARE: a change of term (FOR UPDATE,
//!    `term` being part of a key) waits for in-flight fenced writes; a renewal (FOR NO KEY UPDATE)
//!    does not.
//! 4. On shutdown the leader calls [`release`]; a standby's next [`try_acquire`] succeeds immediately.
//!
//! # Guarantees
//! - Each statement is atomic and judged on the database clock (`clock_timestamp()`): replicas' clocks
//!   do not matter.
//! - The term strictly increases whenever the holder changes or an expired lease is taken again, so at most
//!   one term is fenced-valid at any instant.
//!
//! - Every call here answers within [`CALL_TIMEOUT`] (an error otherwise): a stuck network or a
//!   lock held elsewhere cannot make a replica wait on the lease indefinitely. Server-side, the
//!   connection's `lock_timeout` (see `db::SessionLimits`) ends a statement waiting on a lock.
//!
//! # Assumptions
//! - Holder ids are unique per process (e.g. hostname, pid and a random suffix). Two processes sharing an
//!   id would share the lease.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::DbError;

/// The lease row's name.
pub(crate) const CONTROLLER_LEASE: &str = "controller";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long a granted or renewed lease lasts without renewal: the longest a dead leader blocks others.
    pub ttl: Duration,
    /// How often the leader renews (and a standby retries). Keep it at most `ttl / 3`.
    pub renew_every: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            ttl: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }
}

/// The lease row as the database sees it, with the database's own clock.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LeaseState {
    pub holder: Option<String>,
    pub term: i64,
    pub expires_at: Option<DateTime<Utc>>,
    /// `clock_timestamp()` when the row was read.
    pub db_now: DateTime<Utc>,
}

impl LeaseState {
    /// The holder, if the lease has not expired.
    pub fn live_holder(&self) -> Option<&str> {
        match self.expires_at {
            Some(exp) if exp > self.db_now => self.holder.as_deref(),
            _ => None,
        }
    }
}

/// The longest any lease call may take. Shorter than the default lease TTL, so a leader learns that
/// renewing is failing well before its lease could expire.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(5);

async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, DbError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(DbError::Timeout(CALL_TIMEOUT)),
    }
}

fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Takes the lease if it is free or expired (with a new term), or extends it if `holder` already holds
/// it (same term). Returns the term held, or `None` while someone else holds a live lease.
pub async fn try_acquire(
    pool: &PgPool,
    holder: &str,
    ttl: Duration,
) -> Result<Option<i64>, DbError> {
    // ON CONFLICT DO UPDATE locks the row and re-checks the WHERE on its latest version, so two
    // replicas racing for an expired lease cannot both win. The upsert also recreates a deleted row.
    //
    // It locks *before* judging its WHERE, and since the statement may change `term` (a key column)
    // that lock is FOR UPDATE: it waits for every in-flight write fenced with the current term (that
    // wait is what keeps a deposed leader's write from landing after a takeover). A standby asking
    // while someone else's lease is live must not queue there, bounded only by the same
    // `lock_timeout` as the writes it waits for: the `NOT EXISTS` reads the row without a lock and
    // offers no row to insert, so no conflict arises and nothing is locked. If the lease expires
    // between that read and the next attempt, the next attempt takes it.
    let term: Option<i64> = bounded(
        sqlx::query_scalar(
            "INSERT INTO vyx_fleet.lease AS l (name, holder, term, expires_at)
         SELECT $1::text, $2::text, 1, clock_timestamp() + $3 * interval '1 millisecond'
          WHERE NOT EXISTS (
                SELECT 1 FROM vyx_fleet.lease o
                 WHERE o.name = $1 AND o.holder IS DISTINCT FROM $2
                   AND o.expires_at > clock_timestamp())
         ON CONFLICT (name) DO UPDATE
            SET holder = EXCLUDED.holder,
                term = CASE
                    WHEN l.holder = EXCLUDED.holder AND l.expires_at > clock_timestamp() THEN l.term
                    ELSE l.term + 1
                END,
                expires_at = EXCLUDED.expires_at
            WHERE l.holder IS NULL
               OR l.holder = EXCLUDED.holder
               OR l.expires_at IS NULL
               OR l.expires_at <= clock_timestamp()
         RETURNING term",
        )
        .bind(CONTROLLER_LEASE)
        .bind(holder)
        .bind(ttl_millis(ttl))
        .fetch_optional(pool),
    )
    .await?;
    Ok(term)
}

/// Extends the lease held by `holder` under `term`. `false` means the lease was lost (taken over, released
/// or expired): the caller must stop writing and go back to [`try_acquire`].
///
/// It changes no key column, so it takes
/// FOR NO KEY UPDATE on the row, which does not conflict with the fence's FOR KEY SHARE: a renewal never
/// waits for a fenced write, however long that write is blocked elsewhere (see the fence's migration,
/// `20261207000100_fence_key_share.sql`). Leadership therefore does not depend on which of two equal
/// `lock_timeout`s fires first.
pub async fn renew(pool: &PgPool, holder: &str, term: i64, ttl: Duration) -> Result<bool, DbError> {
    let done = bounded(
        sqlx::query(
            "UPDATE vyx_fleet.lease
            SET expires_at = clock_timestamp() + $4 * interval '1 millisecond'
          WHERE name = $1 AND holder = $2 AND term = $3 AND expires_at > clock_timestamp()",
        )
        .bind(CONTROLLER_LEASE)
        .bind(holder)
        .bind(term)
        .bind(ttl_millis(ttl))
        .execute(pool),
    )
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives the lease up (expires it now) so a standby takes over at once. A no-op if `holder`/`term` no
/// longer hold it.
pub async fn release(pool: &PgPool, holder: &str, term: i64) -> Result<(), DbError> {
    bounded(
        sqlx::query(
            "UPDATE vyx_fleet.lease
            SET expires_at = clock_timestamp()
          WHERE name = $1 AND holder = $2 AND term = $3 AND expires_at > clock_timestamp()",
        )
        .bind(CONTROLLER_LEASE)
        .bind(holder)
        .bind(term)
        .execute(pool),
    )
    .await?;
    Ok(())
}

/// The lease row now (an absent row reads as never held).
pub async fn current(pool: &PgPool) -> Result<LeaseState, DbError> {
    bounded(sqlx::query_as(
        "SELECT l.holder, coalesce(l.term, 0) AS term, l.expires_at, clock_timestamp() AS db_now
           FROM (SELECT 1) AS one
           LEFT JOIN vyx_fleet.lease l ON l.name = $1",
    )
    .bind(CONTROLLER_LEASE)
    .fetch_one(pool))
    .await
}

/// `vyx_fleet.fence(term)`: whether writes fenced with `term` would go through right now.
pub async fn fence_holds(pool: &PgPool, term: i64) -> Result<bool, DbError> {
    bounded(
        sqlx::query_scalar("SELECT vyx_fleet.fence($1)")
            .bind(term)
            .fetch_one(pool),
    )
    .await
}
