//! The embedded migrations and how they wait on locks.

use std::time::Duration;

use sqlx::{Connection, PgPool};

use super::DbError;

/// The embedded migrations (`migrations/`).
pub fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!()
}

/// How the migrator waits on locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrateOptions {
    /// Longest wait for a lock (the billing table, the migrator's advisory lock). A migration that
    /// re-points or disables a trigger on `user_subscriptions` needs a lock every billing write
    /// conflicts with; queued behind a long billing transaction it would stall all billing writes
    /// behind itself. It gives up instead and tries again.
    pub lock_timeout: Duration,
    /// Attempts in all; only a lock timeout is retried.
    pub attempts: u32,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            lock_timeout: Duration::from_secs(5),
            attempts: 5,
        }
    }
}

/// Applies the embedded migrations. Safe to run on every start and from several replicas at once (the
/// migrator serialises on an advisory lock and skips what is applied).
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    migrate_with(pool, MigrateOptions::default()).await
}

/// [`migrate`] with explicit lock handling. Each migration runs in its own transaction, so one that
/// hit the lock timeout left nothing behind and is simply run again.
pub async fn migrate_with(pool: &PgPool, opts: MigrateOptions) -> Result<(), DbError> {
    let attempts = opts.attempts.max(1);
    for attempt in 1..=attempts {
        let mut conn = pool.acquire().await?;
        // No statement timeout: a migration may legitimately take long; only lock waits are bounded.
        let set = format!(
            "SET lock_timeout = '{}ms'; SET statement_timeout = 0",
            opts.lock_timeout.as_millis()
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(set))
            .execute(&mut *conn)
            .await?;
        let res = migrator().run(&mut *conn).await;
        // The session settings must not reach the pool's other users.
        let _ = conn.detach().close().await;
        match res {
            Ok(()) => return Ok(()),
            Err(e) if is_lock_timeout(&e) && attempt < attempts => {
                tracing::warn!(
                    attempt,
                    error = %e,
                    "migration waited too long for a lock (a long transaction on a table it changes?); retrying"
                );
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the last attempt returns")
}

/// SQLSTATE 55P03 `lock_not_available`: what `lock_timeout` raises.
fn is_lock_timeout(e: &sqlx::migrate::MigrateError) -> bool {
    use sqlx::migrate::MigrateError as M;
    let inner = match e {
        M::Execute(e) | M::ExecuteMigration(e, _) => e,
        _ => return false,
    };
    matches!(inner, sqlx::Error::Database(d) if d.code().as_deref() == Some("55P03"))
}
